//! MSN error codes (draft section 7.11, plus 217 which MSN servers used for CAL).

use std::fmt;

/// An MSN error code as sent on the wire: `eee TrID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    SyntaxError = 200,
    InvalidParameter = 201,
    InvalidUser = 205,
    FqdnMissing = 206,
    AlreadyLoggedIn = 207,
    InvalidUsername = 208,
    InvalidFriendlyName = 209,
    ListFull = 210,
    AlreadyThere = 215,
    NotOnList = 216,
    /// Not in the draft; the code MSN servers answered a CAL to someone offline or hidden with.
    NotOnline = 217,
    AlreadyInMode = 218,
    AlreadyInOppositeList = 219,
    /// MSNP7: the account has as many groups as it may.
    TooManyGroups = 223,
    /// MSNP7: no group with that id.
    InvalidGroup = 224,
    /// MSNP7: the contact is not in that group.
    NotInGroup = 225,
    /// MSNP7: a group with that name exists.
    GroupExists = 228,
    /// MSNP7: the group name is too long.
    GroupNameTooLong = 229,
    /// MSNP7: group 0 cannot be removed.
    CannotRemoveGroupZero = 230,
    SwitchboardFailed = 280,
    NotifyXfrFailed = 281,
    RequiredFieldsMissing = 300,
    NotLoggedIn = 302,
    InternalServer = 500,
    DbServer = 501,
    ServerBusy = 600,
    ServerUnavailable = 601,
    /// MSNP6: the answer to a challenge (`QRY`) is wrong.
    ChallengeFailed = 540,
    ServerGoingDown = 604,
    SessionOverload = 712,
    UserTooActive = 713,
    TooManySessions = 714,
    NotExpected = 715,
    AuthenticationFailed = 911,
    NotAllowedWhenOffline = 913,
    NotAcceptingNewUsers = 920,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 36] = [
        ErrorCode::SyntaxError,
        ErrorCode::InvalidParameter,
        ErrorCode::InvalidUser,
        ErrorCode::FqdnMissing,
        ErrorCode::AlreadyLoggedIn,
        ErrorCode::InvalidUsername,
        ErrorCode::InvalidFriendlyName,
        ErrorCode::ListFull,
        ErrorCode::AlreadyThere,
        ErrorCode::NotOnList,
        ErrorCode::NotOnline,
        ErrorCode::AlreadyInMode,
        ErrorCode::AlreadyInOppositeList,
        ErrorCode::TooManyGroups,
        ErrorCode::InvalidGroup,
        ErrorCode::NotInGroup,
        ErrorCode::GroupExists,
        ErrorCode::GroupNameTooLong,
        ErrorCode::CannotRemoveGroupZero,
        ErrorCode::SwitchboardFailed,
        ErrorCode::NotifyXfrFailed,
        ErrorCode::RequiredFieldsMissing,
        ErrorCode::NotLoggedIn,
        ErrorCode::InternalServer,
        ErrorCode::DbServer,
        ErrorCode::ChallengeFailed,
        ErrorCode::ServerBusy,
        ErrorCode::ServerUnavailable,
        ErrorCode::ServerGoingDown,
        ErrorCode::SessionOverload,
        ErrorCode::UserTooActive,
        ErrorCode::TooManySessions,
        ErrorCode::NotExpected,
        ErrorCode::AuthenticationFailed,
        ErrorCode::NotAllowedWhenOffline,
        ErrorCode::NotAcceptingNewUsers,
    ];

    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code with this number, if it is one of ours.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_draft() {
        assert_eq!(ErrorCode::SyntaxError.to_string(), "200");
        assert_eq!(ErrorCode::NotLoggedIn.code(), 302);
        assert_eq!(ErrorCode::AuthenticationFailed.code(), 911);
        assert_eq!(ErrorCode::NotAllowedWhenOffline.code(), 913);
        assert_eq!(ErrorCode::AlreadyInOppositeList.code(), 219);
    }

    #[test]
    fn codes_read_back_from_their_numbers() {
        assert!(ErrorCode::ALL.windows(2).all(|w| w[0].code() < w[1].code()));
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
        assert_eq!(ErrorCode::from_code(0), None);
        assert_eq!(ErrorCode::from_code(999), None);
    }
}
