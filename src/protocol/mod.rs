//! MSNP2 wire protocol: framing, typed commands, error codes. No I/O and no tokio here.

pub mod client;
pub mod error;
pub mod frame;
#[cfg(test)]
mod properties;
pub mod server;
pub mod types;

pub use client::{AuthStage, ClientCommand, ParseError};
pub use error::ErrorCode;
pub use frame::{decode, Frame, FrameError, MAX_LINE_BYTES, MAX_PAYLOAD_BYTES};
pub use server::{ListItem, OutReason, ServerCommand, ServerParseError, SharedLine};
pub use types::{
    AckMode, BlpSetting, Dialect, FriendlyName, GtcSetting, HandleError, ListKind, NameError,
    PhoneKey, Status, TrId, UserHandle, MAX_GROUPS, MAX_GROUP_NAME_BYTES, MAX_PHONE_BYTES,
};

/// A line for the debug log: secrets (challenge responses, cookies) are cut off after the
/// verb and TrID, and the line is truncated.
pub fn loggable_line(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut tokens = text.split_ascii_whitespace();
    let verb = tokens.next().unwrap_or("");
    if matches!(verb, "USR" | "ANS" | "RNG" | "XFR") {
        let trid = tokens.next().unwrap_or("");
        return format!("{verb} {trid} [redacted]");
    }
    let mut s: String = text.chars().take(200).collect();
    if text.len() > s.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod robustness {
    use bytes::BytesMut;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Feeds random and mutated input through framing and parsing (client and server lines):
    /// nothing may panic, and every frame either parses or yields an error code.
    #[test]
    fn arbitrary_input_never_panics() {
        let seeds: &[&[u8]] = &[
            b"VER 1 MSNP2 CVR0\r\n",
            b"USR 3 MD5 I alice@example.com\r\n",
            b"ADD 4 FL bob@example.com Bob%20B\r\n",
            b"MSG 5 A 5\r\nhello",
            b"ANS 6 bob@example.com 1234abcd 42\r\n",
            b"REA 7 alice@example.com %E2%98%BA\r\n",
            b"CHG 8 NLN\r\n",
            b"ADD 9 FL bob@example.com Bob 1\r\n",
            b"PRP 10 PHH 1%20(222)%203333\r\n",
            b"ADG 11 New%20Group 0\r\n",
            b"QRY 12 msmsgs@msnmsgr.com 32\r\n8f2f5a91b72102cd28355e9fc9000d6e",
            b"SDC 13 a@b.c 0x0409 MSMSGS MSMSGS X X Me 2\r\nhi",
            b"LST 14 FL 3 1 1 a@b.c A 0,1\r\nLSG 15 3 1 1 0 ~ 0\r\n",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x4d534e50);
        let alphabet = b"VERUSRADDMSG 0123456789%\r\n@.AFLN\xff\x00\t";
        for round in 0..50_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..rng.random_range(0..6) {
                let pos = rng.random_range(0..=input.len());
                match rng.random_range(0..4) {
                    0 if !input.is_empty() => {
                        input.remove(pos.min(input.len() - 1));
                    }
                    1 => input.insert(pos, alphabet[rng.random_range(0..alphabet.len())]),
                    2 => input.insert(pos, rng.random()),
                    _ => input.truncate(pos),
                }
            }
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(frame)) = decode(&mut buf) {
                // Clients of this server read its lines with the same care.
                let _ = ServerCommand::parse(frame.clone());
                if let Err(e) = ClientCommand::parse(frame) {
                    assert!(e.code.code() >= 200);
                }
            }
        }
    }

    #[test]
    fn loggable_lines_hide_secrets() {
        assert_eq!(loggable_line(b"USR 5 MD5 S 0123abcd"), "USR 5 [redacted]");
        assert_eq!(
            loggable_line(b"XFR 6 SB 1.2.3.4:1864 CKI cookie"),
            "XFR 6 [redacted]"
        );
        assert_eq!(
            loggable_line(b"RNG 7 1.2.3.4:1864 CKI cookie a@b.c A"),
            "RNG 7 [redacted]"
        );
        assert_eq!(loggable_line(b"ANS 8 a@b.c cookie 7"), "ANS 8 [redacted]");
        assert_eq!(loggable_line(b"SYN 9 0"), "SYN 9 0");
        assert!(loggable_line(&[b'A'; 500]).chars().count() <= 201);
    }
}
