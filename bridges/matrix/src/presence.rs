//! MSN states to Matrix presence (`online` / `unavailable` / `offline` + `status_msg`) and back.
//!
//! Matrix has three states; the MSN away-like states all become `unavailable` with a fixed
//! status message, which maps back exactly, so two msngate users see each other's MSN state.
//! Other status messages (set by ordinary Matrix clients) are not interpreted.

use msngate_bridge_api::PresenceState;

/// Matrix's three presence states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixPresence {
    Online,
    Unavailable,
    Offline,
}

const MESSAGES: &[(PresenceState, &str)] = &[
    (PresenceState::Busy, "Busy"),
    (PresenceState::Idle, "Idle"),
    (PresenceState::BeRightBack, "Be Right Back"),
    (PresenceState::Away, "Away"),
    (PresenceState::OnThePhone, "On the Phone"),
    (PresenceState::OutToLunch, "Out to Lunch"),
];

/// What a Matrix user in `state` publishes.
pub fn to_matrix(state: PresenceState) -> (MatrixPresence, Option<&'static str>) {
    match state {
        PresenceState::Online => (MatrixPresence::Online, None),
        PresenceState::Hidden | PresenceState::Offline => (MatrixPresence::Offline, None),
        other => {
            let message = MESSAGES.iter().find(|(s, _)| *s == other).map(|(_, m)| *m);
            (MatrixPresence::Unavailable, message)
        }
    }
}

/// How a contact's Matrix presence shows on MSN.
pub fn from_matrix(presence: MatrixPresence, status_msg: Option<&str>) -> PresenceState {
    let named = status_msg.and_then(|msg| {
        MESSAGES
            .iter()
            .find(|(_, m)| m.eq_ignore_ascii_case(msg.trim()))
            .map(|(s, _)| *s)
    });
    match presence {
        MatrixPresence::Offline => PresenceState::Offline,
        // Matrix clients often stay "online" with a "Busy" message: show it.
        MatrixPresence::Online => named.unwrap_or(PresenceState::Online),
        MatrixPresence::Unavailable => named.unwrap_or(PresenceState::Away),
    }
}

/// Parses an option value such as "Online" or "away" (for `presence_fallback`).
pub fn parse_state(name: &str) -> Option<PresenceState> {
    let state = match name
        .to_ascii_lowercase()
        .replace([' ', '_', '-'], "")
        .as_str()
    {
        "online" => PresenceState::Online,
        "busy" => PresenceState::Busy,
        "idle" => PresenceState::Idle,
        "berightback" | "brb" => PresenceState::BeRightBack,
        "away" => PresenceState::Away,
        "onthephone" | "phone" => PresenceState::OnThePhone,
        "outtolunch" | "lunch" => PresenceState::OutToLunch,
        "offline" => PresenceState::Offline,
        _ => return None,
    };
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_state_round_trips() {
        for state in PresenceState::VISIBLE
            .into_iter()
            .chain([PresenceState::Offline])
        {
            let (presence, msg) = to_matrix(state);
            assert_eq!(from_matrix(presence, msg), state, "{state:?}");
        }
    }

    #[test]
    fn hidden_publishes_offline() {
        assert_eq!(
            to_matrix(PresenceState::Hidden),
            (MatrixPresence::Offline, None)
        );
    }

    #[test]
    fn foreign_status_messages_keep_the_matrix_state() {
        assert_eq!(
            from_matrix(MatrixPresence::Unavailable, Some("in a meeting")),
            PresenceState::Away
        );
        assert_eq!(
            from_matrix(MatrixPresence::Online, Some("hello")),
            PresenceState::Online
        );
        assert_eq!(
            from_matrix(MatrixPresence::Online, Some("busy")),
            PresenceState::Busy
        );
        assert_eq!(
            from_matrix(MatrixPresence::Offline, Some("Busy")),
            PresenceState::Offline
        );
    }

    #[test]
    fn option_values_parse() {
        assert_eq!(parse_state("Online"), Some(PresenceState::Online));
        assert_eq!(
            parse_state("be right back"),
            Some(PresenceState::BeRightBack)
        );
        assert_eq!(parse_state("hidden"), None);
        assert_eq!(parse_state(""), None);
    }
}
