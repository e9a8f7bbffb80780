//! Server lines read back into [`ServerCommand`]s, for the MSN clients in this project: msncd's
//! client, the load generator and the test client.

use super::{ListItem, OutReason, ServerCommand};
use crate::protocol::error::ErrorCode;
use crate::protocol::frame::Frame;
use crate::protocol::types::{Dialect, FriendlyName, PhoneKey, TrId};

/// Why a framed server line is not a [`ServerCommand`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerParseError {
    #[error("server line is not UTF-8")]
    NotUtf8,
    /// An unknown verb, or a known one with parameters it never has.
    #[error("malformed or unknown server line starting with `{verb}`")]
    Malformed { verb: String },
    #[error("MSG without its announced payload")]
    BadPayload,
}

impl ServerCommand {
    /// Parses one framed line from a server, the inverse of [`ServerCommand::write_to`]: the
    /// clients of msncd, the load generator and the test client read server lines with it.
    ///
    /// Strict, so that what parses writes back the same: a line only parses if every token is
    /// where this server's encoder puts it.
    pub fn parse(frame: Frame) -> Result<ServerCommand, ServerParseError> {
        let Frame { line, payload } = frame;
        let text = std::str::from_utf8(&line).map_err(|_| ServerParseError::NotUtf8)?;
        let tokens: Vec<&str> = text.split(' ').collect();
        let verb = tokens.first().copied().unwrap_or_default();
        if verb == "MSG" {
            return match (tokens.as_slice(), payload) {
                ([_, sender, sender_name, len], Some(payload))
                    if len
                        .parse::<TrId>()
                        .is_ok_and(|n| n.0 as usize == payload.len()) =>
                {
                    Ok(ServerCommand::Msg {
                        sender: sender.to_string(),
                        sender_name: sender_name.to_string(),
                        payload,
                    })
                }
                _ => Err(ServerParseError::BadPayload),
            };
        }
        parse_line(&tokens).ok_or_else(|| ServerParseError::Malformed {
            verb: verb.chars().take(16).collect(),
        })
    }

    /// The TrID of the client command this answers, if it is an answer (`0` for changes the
    /// server reports by itself, such as `ADD 0 RL`).
    pub fn trid(&self) -> Option<TrId> {
        use ServerCommand::*;
        match self {
            Ver { trid, .. }
            | Cvr { trid, .. }
            | Inf { trid }
            | UsrChallenge { trid, .. }
            | UsrOk { trid, .. }
            | XfrNs { trid, .. }
            | XfrSb { trid, .. }
            | Syn { trid, .. }
            | Gtc { trid, .. }
            | Blp { trid, .. }
            | Lst { trid, .. }
            | Add { trid, .. }
            | Rem { trid, .. }
            | Chg { trid, .. }
            | Iln { trid, .. }
            | Rea { trid, .. }
            | Url { trid, .. }
            | Fnd { trid, .. }
            | Snd { trid }
            | Error { trid, .. }
            | Cal { trid, .. }
            | Iro { trid, .. }
            | AnsOk { trid }
            | Ack { trid }
            | Nak { trid }
            | Ims { trid, .. }
            | Prp { trid, .. }
            | Sdc { trid }
            | Qry { trid }
            | Lsg { trid, .. }
            | Adg { trid, .. }
            | Reg { trid, .. }
            | Rmg { trid, .. } => Some(*trid),
            Qng
            | Nln { .. }
            | Fln { .. }
            | Out { .. }
            | Rng { .. }
            | Joi { .. }
            | Bye { .. }
            | Msg { .. }
            | Bpr { .. }
            | Chl { .. } => None,
        }
    }
}

/// Every line but MSG, token by token; `None` for anything the encoder would not write.
fn parse_line(tokens: &[&str]) -> Option<ServerCommand> {
    use ServerCommand::*;
    fn p<T: std::str::FromStr>(s: &str) -> Option<T> {
        s.parse().ok()
    }
    // Counts and serials are plain decimal numbers, like TrIDs (no sign, no spaces).
    fn num(s: &str) -> Option<u32> {
        p::<TrId>(s).map(|t| t.0)
    }
    fn index(s: &str) -> Option<usize> {
        num(s).map(|n| n as usize)
    }
    // A contact's groups: `0` or `0,1,...`.
    fn groups(s: &str) -> Option<Vec<u32>> {
        s.split(',').map(num).collect()
    }
    // An optional last value (PRP, BPR: an unset property has none).
    fn value(rest: &[&str]) -> Option<Option<FriendlyName>> {
        match rest {
            [] => Some(None),
            [v] => Some(Some(p(v)?)),
            _ => None,
        }
    }
    let string = |s: &str| s.to_string();
    let command = match *tokens {
        ["VER", t, "0"] => Ver {
            trid: p(t)?,
            dialect: None,
            others: vec![],
            cvr0: false,
        },
        ["VER", t, d, ref rest @ ..] => {
            let (rest, cvr0) = match rest {
                [others @ .., "CVR0"] => (others, true),
                others => (others, false),
            };
            Ver {
                trid: p(t)?,
                dialect: Some(Dialect::from_name(d)?),
                others: rest
                    .iter()
                    .map(|o| Dialect::from_name(o))
                    .collect::<Option<_>>()?,
                cvr0,
            }
        }
        [verb @ ("CVR" | "CVQ"), t, recommended, again, minimum, download_url, info_url]
            if recommended == again =>
        {
            Cvr {
                trid: p(t)?,
                query: verb == "CVQ",
                recommended: string(recommended),
                minimum: string(minimum),
                download_url: string(download_url),
                info_url: string(info_url),
            }
        }
        ["INF", t, "MD5"] => Inf { trid: p(t)? },
        ["USR", t, "MD5", "S", challenge] => UsrChallenge {
            trid: p(t)?,
            challenge: string(challenge),
        },
        ["USR", t, "OK", handle, name, ref rest @ ..] => UsrOk {
            trid: p(t)?,
            handle: p(handle)?,
            name: p(name)?,
            verified: match rest {
                [] => None,
                ["1"] => Some(true),
                ["0"] => Some(false),
                _ => return None,
            },
        },
        ["XFR", t, "NS", address] | ["XFR", t, "NS", address, "0"] => XfrNs {
            trid: p(t)?,
            address: string(address),
            current: String::new(),
        },
        ["XFR", t, "NS", address, "0", current] => XfrNs {
            trid: p(t)?,
            address: string(address),
            current: string(current),
        },
        ["XFR", t, "SB", address, "CKI", cookie] => XfrSb {
            trid: p(t)?,
            address: string(address),
            cookie: string(cookie),
        },
        ["SYN", t, serial] => Syn {
            trid: p(t)?,
            serial: num(serial)?,
        },
        ["GTC", t, serial, setting] => Gtc {
            trid: p(t)?,
            serial: num(serial)?,
            setting: p(setting)?,
        },
        ["BLP", t, serial, setting] => Blp {
            trid: p(t)?,
            serial: num(serial)?,
            setting: p(setting)?,
        },
        ["LST", t, list, serial, "0", "0"] => Lst {
            trid: p(t)?,
            list: p(list)?,
            serial: num(serial)?,
            item: None,
        },
        ["LST", t, list, serial, i, total, handle, name, ref rest @ ..] => Lst {
            trid: p(t)?,
            list: p(list)?,
            serial: num(serial)?,
            item: Some(ListItem {
                index: index(i)?,
                total: index(total)?,
                handle: p(handle)?,
                name: p(name)?,
                groups: match rest {
                    [] => vec![],
                    [g] if list == "FL" => groups(g)?,
                    _ => return None,
                },
            }),
        },
        ["ADD", t, list, serial, handle, name, ref rest @ ..] => Add {
            trid: p(t)?,
            list: p(list)?,
            serial: num(serial)?,
            handle: p(handle)?,
            name: p(name)?,
            group: match rest {
                [] => None,
                [g] if list == "FL" => Some(num(g)?),
                _ => return None,
            },
        },
        ["REM", t, list, serial, handle, ref rest @ ..] => Rem {
            trid: p(t)?,
            list: p(list)?,
            serial: num(serial)?,
            handle: p(handle)?,
            group: match rest {
                [] => None,
                [g] if list == "FL" => Some(num(g)?),
                _ => return None,
            },
        },
        ["CHG", t, status] => Chg {
            trid: p(t)?,
            status: p(status)?,
        },
        ["ILN", t, status, handle, name] => Iln {
            trid: p(t)?,
            status: p(status)?,
            handle: p(handle)?,
            name: p(name)?,
        },
        ["NLN", status, handle, name] => Nln {
            status: p(status)?,
            handle: p(handle)?,
            name: p(name)?,
        },
        ["FLN", handle] => Fln { handle: p(handle)? },
        ["REA", t, serial, handle, name] => Rea {
            trid: p(t)?,
            serial: num(serial)?,
            handle: p(handle)?,
            name: p(name)?,
        },
        ["URL", t, redirect, login_url] => Url {
            trid: p(t)?,
            redirect: string(redirect),
            login_url: string(login_url),
            site_id: 0,
        },
        ["URL", t, redirect, login_url, site_id] => Url {
            trid: p(t)?,
            redirect: string(redirect),
            login_url: string(login_url),
            site_id: num(site_id)?,
        },
        ["QNG"] => Qng,
        ["FND", t, i, total, ref fields @ ..] if fields.iter().all(|f| !f.is_empty()) => Fnd {
            trid: p(t)?,
            index: index(i)?,
            total: index(total)?,
            fields: fields.iter().map(|f| f.to_string()).collect(),
        },
        ["SND", t, "OK"] => Snd { trid: p(t)? },
        ["OUT"] => Out { reason: None },
        ["OUT", "OTH"] => Out {
            reason: Some(OutReason::OtherLogin),
        },
        ["OUT", "SSD"] => Out {
            reason: Some(OutReason::ServerShutdown),
        },
        ["RNG", session_id, address, "CKI", cookie, caller, caller_name] => Rng {
            session_id: num(session_id)?,
            address: string(address),
            cookie: string(cookie),
            caller: p(caller)?,
            caller_name: p(caller_name)?,
        },
        ["CAL", t, "RINGING", session_id] => Cal {
            trid: p(t)?,
            session_id: num(session_id)?,
        },
        ["IRO", t, i, total, handle, name] => Iro {
            trid: p(t)?,
            index: index(i)?,
            total: index(total)?,
            handle: p(handle)?,
            name: p(name)?,
        },
        ["ANS", t, "OK"] => AnsOk { trid: p(t)? },
        ["JOI", handle, name] => Joi {
            handle: p(handle)?,
            name: p(name)?,
        },
        ["BYE", handle] => Bye { handle: p(handle)? },
        ["ACK", t] => Ack { trid: p(t)? },
        ["NAK", t] => Nak { trid: p(t)? },
        ["IMS", t, "0", on @ ("ON" | "OFF")] => Ims {
            trid: p(t)?,
            on: on == "ON",
        },
        ["PRP", t, serial, key, ref rest @ ..] => Prp {
            trid: p(t)?,
            serial: num(serial)?,
            key: p::<PhoneKey>(key)?,
            value: value(rest)?,
        },
        ["BPR", serial, handle, key, ref rest @ ..] => Bpr {
            serial: num(serial)?,
            handle: p(handle)?,
            key: p::<PhoneKey>(key)?,
            value: value(rest)?,
        },
        ["SDC", t, "OK"] => Sdc { trid: p(t)? },
        ["CHL", "0", challenge] => Chl {
            challenge: string(challenge),
        },
        ["QRY", t] => Qry { trid: p(t)? },
        ["LSG", t, serial, i, total, id, name, "0"] => Lsg {
            trid: p(t)?,
            serial: num(serial)?,
            index: index(i)?,
            total: index(total)?,
            id: num(id)?,
            name: p(name)?,
        },
        ["ADG", t, serial, name, id, "0"] => Adg {
            trid: p(t)?,
            serial: num(serial)?,
            name: p(name)?,
            id: num(id)?,
        },
        ["REG", t, serial, id, name, "0"] => Reg {
            trid: p(t)?,
            serial: num(serial)?,
            id: num(id)?,
            name: p(name)?,
        },
        ["RMG", t, serial, id] => Rmg {
            trid: p(t)?,
            serial: num(serial)?,
            id: num(id)?,
        },
        [code, t] if code.len() == 3 => Error {
            code: ErrorCode::from_code(num(code)?.try_into().ok()?)?,
            trid: p(t)?,
        },
        _ => return None,
    };
    // Tokens the encoder never writes empty (addresses, cookies, URLs) must not be.
    tokens.iter().all(|t| !t.is_empty()).then_some(command)
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::protocol::server::tests::{cases, dialect_cases};

    fn frame(bytes: &[u8]) -> Frame {
        let mut buf = BytesMut::from(bytes);
        let frame = crate::protocol::decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "one frame");
        frame
    }

    fn parse(line: &str) -> Result<ServerCommand, ServerParseError> {
        ServerCommand::parse(frame(format!("{line}\r\n").as_bytes()))
    }

    /// The variant's name; a new variant fails to compile here until the tests cover it.
    fn variant(cmd: &ServerCommand) -> &'static str {
        use ServerCommand::*;
        match cmd {
            Ver { .. } => "Ver",
            Cvr { .. } => "Cvr",
            Inf { .. } => "Inf",
            UsrChallenge { .. } => "UsrChallenge",
            UsrOk { .. } => "UsrOk",
            XfrNs { .. } => "XfrNs",
            XfrSb { .. } => "XfrSb",
            Syn { .. } => "Syn",
            Gtc { .. } => "Gtc",
            Blp { .. } => "Blp",
            Lst { .. } => "Lst",
            Add { .. } => "Add",
            Rem { .. } => "Rem",
            Chg { .. } => "Chg",
            Iln { .. } => "Iln",
            Nln { .. } => "Nln",
            Fln { .. } => "Fln",
            Rea { .. } => "Rea",
            Url { .. } => "Url",
            Qng => "Qng",
            Fnd { .. } => "Fnd",
            Snd { .. } => "Snd",
            Out { .. } => "Out",
            Error { .. } => "Error",
            Rng { .. } => "Rng",
            Cal { .. } => "Cal",
            Iro { .. } => "Iro",
            AnsOk { .. } => "AnsOk",
            Joi { .. } => "Joi",
            Bye { .. } => "Bye",
            Msg { .. } => "Msg",
            Ack { .. } => "Ack",
            Nak { .. } => "Nak",
            Ims { .. } => "Ims",
            Prp { .. } => "Prp",
            Bpr { .. } => "Bpr",
            Sdc { .. } => "Sdc",
            Chl { .. } => "Chl",
            Qry { .. } => "Qry",
            Lsg { .. } => "Lsg",
            Adg { .. } => "Adg",
            Reg { .. } => "Reg",
            Rmg { .. } => "Rmg",
        }
    }

    fn msg() -> ServerCommand {
        ServerCommand::Msg {
            sender: "a@b.c".into(),
            sender_name: "A%20B".into(),
            payload: Bytes::from("MIME-Version: 1.0\r\n\r\nhé\r\nOUT\r\n"),
        }
    }

    #[test]
    fn every_variant_parses_back_from_its_wire_form() {
        let mut all = cases();
        all.push((msg(), "MSG a@b.c A%20B 31"));
        let mut seen = std::collections::BTreeSet::new();
        for (cmd, line) in all {
            let parsed = ServerCommand::parse(frame(&cmd.to_bytes(Dialect::Msnp2)));
            assert_eq!(parsed.as_ref(), Ok(&cmd), "{line}");
            assert_eq!(parsed.unwrap().to_string(), line);
            seen.insert(variant(&cmd));
        }
        for (cmd, dialect, line) in dialect_cases() {
            // What parses writes back the same in the dialect it came in.
            let parsed = ServerCommand::parse(frame(&cmd.to_bytes(dialect))).expect(line);
            assert_eq!(parsed.line(dialect).to_string(), line, "{dialect}");
            seen.insert(variant(&cmd));
        }
        assert_eq!(seen.len(), 43, "every variant has a case: {seen:?}");
    }

    #[test]
    fn every_error_code_parses_back() {
        for code in ErrorCode::ALL {
            let cmd = ServerCommand::Error {
                code,
                trid: TrId(9),
            };
            assert_eq!(
                ServerCommand::parse(frame(&cmd.to_bytes(Dialect::Msnp2))),
                Ok(cmd)
            );
        }
    }

    #[test]
    fn trids_of_answers_only() {
        assert_eq!(parse("ADD 0 RL 4 a@b.c A").unwrap().trid(), Some(TrId(0)));
        assert_eq!(parse("217 5").unwrap().trid(), Some(TrId(5)));
        assert_eq!(parse("ILN 3 NLN a@b.c A").unwrap().trid(), Some(TrId(3)));
        assert_eq!(parse("RNG 11 h:1864 CKI ck a@b.c A").unwrap().trid(), None);
        assert_eq!(parse("NLN NLN a@b.c A").unwrap().trid(), None);
        assert_eq!(ServerCommand::Qng.trid(), None);
    }

    #[test]
    fn lines_the_encoder_never_writes_are_refused() {
        let malformed = |verb: &str| {
            Err(ServerParseError::Malformed {
                verb: verb.to_string(),
            })
        };
        for line in [
            "VER 7 MSNP9",
            "VER 7 MSNP7 CVR0 MSNP6",
            "LST 7 AL 3 1 1 a@b.c A 0",
            "LST 7 FL 3 1 1 a@b.c A 0,x",
            "ADD 7 RL 3 a@b.c A 0",
            "PRP 7 3 XXX",
            "BPR 3 a@b.c PHH 1 2",
            "LSG 7 3 1 1 0 ~",
            "CHL 1 123",
            "VER x MSNP2",
            "CVR 7 1 2 3 http://a http://b",
            "USR 7 OK not-a-handle A",
            "USR 7 OK a@b.c bad%0Aname",
            "SYN 7 -1",
            "SYN 7 +1",
            "LST 7 XL 3 0 0",
            "LST 7 FL 3 1 2 a@b.c",
            "CHG 7 XXX",
            "XFR 7 SB h:1 CKI",
            "XFR 7 SB  CKI ck",
            "OUT XYZ",
            "QNG 1",
            "999 7",
            "20 7",
            "ACK",
            "HELLO",
            "",
        ] {
            let verb = line.split(' ').next().unwrap();
            assert_eq!(parse(line), malformed(verb), "{line:?}");
        }
        assert_eq!(
            ServerCommand::parse(frame(b"NLN NLN a@b.c \xff\r\n")),
            Err(ServerParseError::NotUtf8)
        );
        let without_payload = Frame {
            line: Bytes::from("MSG a@b.c A 3"),
            payload: None,
        };
        assert_eq!(
            ServerCommand::parse(without_payload),
            Err(ServerParseError::BadPayload)
        );
        let short_payload = Frame {
            line: Bytes::from("MSG a@b.c A 3"),
            payload: Some(Bytes::from("ab")),
        };
        assert_eq!(
            ServerCommand::parse(short_payload),
            Err(ServerParseError::BadPayload)
        );
    }
}
