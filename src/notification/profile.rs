//! The profile message sent right after `USR OK`: MSN 1.0 (MSNP2) gets the login time only;
//! MSNP3-7 clients get the Passport-era fields they read (gaim reads `kv`, `sid` and `MSPAuth`
//! for Hotmail logins; old Adium waits for this message before its SYN).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::protocol::{Dialect, ServerCommand, UserHandle};

/// The profile message for a client of `dialect` logged in as `handle`.
pub fn message(dialect: Dialect, handle: &UserHandle) -> ServerCommand {
    let login_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut payload = format!(
        "MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile; charset=UTF-8\r\nLoginTime: {login_time}\r\n"
    );
    if dialect >= Dialect::Msnp3 {
        // No Hotmail, no wallet, no Passport: the fields say so. The member id is made from
        // the handle so it stays the same across logins.
        let member_id = member_id(handle);
        payload.push_str(&format!(
            "EmailEnabled: 0\r\nMemberIdHigh: {}\r\nMemberIdLow: {}\r\nlang_preference: 1033\r\n\
             preferredEmail: {handle}\r\ncountry: \r\nPostalCode: \r\nGender: \r\nKid: 0\r\n\
             Age: \r\nBDayPre: \r\nBirthday: \r\nWallet: \r\nFlags: 1027\r\nsid: 507\r\n\
             kv: 1\r\nMSPAuth: 0\r\n",
            member_id >> 32,
            member_id & 0xffff_ffff,
        ));
    }
    payload.push_str("\r\n");
    ServerCommand::Msg {
        sender: "Hotmail".into(),
        sender_name: "Hotmail".into(),
        payload: Bytes::from(payload),
    }
}

/// A stable 64-bit number for a handle (FNV-1a).
fn member_id(handle: &UserHandle) -> u64 {
    handle.as_str().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(dialect: Dialect) -> String {
        let h: UserHandle = "a@b.c".parse().unwrap();
        match message(dialect, &h) {
            ServerCommand::Msg { payload, .. } => String::from_utf8(payload.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn msnp2_gets_the_login_time_only_and_later_dialects_the_passport_fields() {
        let two = text(Dialect::Msnp2);
        assert!(two.ends_with("\r\n\r\n") && !two.contains("MSPAuth"));
        assert_eq!(two.lines().count(), 4);
        let seven = text(Dialect::Msnp7);
        for field in [
            "EmailEnabled: 0",
            "MemberIdHigh:",
            "sid: 507",
            "kv: 1",
            "MSPAuth: ",
        ] {
            assert!(seven.contains(field), "{field}");
        }
        assert!(seven.ends_with("\r\n\r\n"));
    }
}
