//! Commands a client sends, parsed from a framed line into typed values.
//!
//! Parsing checks the shape of a command and the syntax of each parameter. A parameter that is
//! well-formed but wrong for the situation (a list a client may not change, a cookie that is not
//! valid) is left to the role that handles the command.

use std::fmt;

use bytes::Bytes;

use super::error::ErrorCode;
use super::frame::Frame;
use super::types::{
    AckMode, BlpSetting, Dialect, FriendlyName, GtcSetting, ListKind, PhoneKey, Status, TrId,
    UserHandle, MAX_GROUP_NAME_BYTES, MAX_PHONE_BYTES,
};

/// The stage of an MD5 login (`USR TrID MD5 I handle` / `USR TrID MD5 S response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStage {
    Initial(UserHandle),
    Subsequent(String),
}

/// A command from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    Ver {
        trid: TrId,
        dialects: Vec<String>,
    },
    /// `CVR TrID info...`, or `CVQ TrID info...` (`query`), the version query of the CVR0
    /// path; MSNP4 added a parameter to both, so any number is taken.
    Cvr {
        trid: TrId,
        info: Vec<String>,
        query: bool,
    },
    Inf {
        trid: TrId,
    },
    /// Notification server login: `USR TrID SP I|S data`.
    UsrAuth {
        trid: TrId,
        package: String,
        stage: AuthStage,
    },
    /// Switchboard login: `USR TrID handle cookie`.
    UsrCookie {
        trid: TrId,
        handle: UserHandle,
        cookie: String,
    },
    Syn {
        trid: TrId,
        serial: u32,
    },
    Lst {
        trid: TrId,
        list: ListKind,
    },
    Gtc {
        trid: TrId,
        setting: GtcSetting,
    },
    Blp {
        trid: TrId,
        setting: BlpSetting,
    },
    /// `ADD TrID list handle name [group]` (the group: MSNP7, FL only).
    Add {
        trid: TrId,
        list: ListKind,
        handle: UserHandle,
        name: FriendlyName,
        group: Option<u32>,
    },
    /// `REM TrID list handle [group]` (the group: MSNP7, FL only).
    Rem {
        trid: TrId,
        list: ListKind,
        handle: UserHandle,
        group: Option<u32>,
    },
    /// `CHG TrID state`; FLN parses, and the notification server refuses it.
    Chg {
        trid: TrId,
        status: Status,
    },
    Rea {
        trid: TrId,
        handle: UserHandle,
        name: FriendlyName,
    },
    Xfr {
        trid: TrId,
        kind: String,
    },
    Url {
        trid: TrId,
        args: Vec<String>,
    },
    Fnd {
        trid: TrId,
        args: Vec<String>,
    },
    Snd {
        trid: TrId,
        args: Vec<String>,
    },
    Out,
    /// `PNG`: a keep-alive, answered with `QNG` (MSNP2, not in the draft).
    Png,
    Cal {
        trid: TrId,
        handle: UserHandle,
    },
    Ans {
        trid: TrId,
        handle: UserHandle,
        cookie: String,
        session_id: u32,
    },
    Msg {
        trid: TrId,
        mode: AckMode,
        payload: Bytes,
    },
    /// `IMS TrID ON|OFF` (MSNP3).
    Ims {
        trid: TrId,
        on: bool,
    },
    /// `PRP TrID key [value]` (MSNP5): sets or clears a phone property.
    Prp {
        trid: TrId,
        key: PhoneKey,
        value: Option<FriendlyName>,
    },
    /// `SDC TrID address lcid library codebase X X name length` + payload (MSNP5).
    Sdc {
        trid: TrId,
        args: Vec<String>,
        payload: Bytes,
    },
    /// `PAG TrID handle length` + payload (MSNP5): a page to a contact's pager.
    Pag {
        trid: TrId,
        handle: UserHandle,
        payload: Bytes,
    },
    /// `QRY TrID client-id 32` + the 32-byte answer to a `CHL` (MSNP6).
    Qry {
        trid: TrId,
        client_id: String,
        payload: Bytes,
    },
    /// `ADG TrID name 0` (MSNP7).
    Adg {
        trid: TrId,
        name: FriendlyName,
    },
    /// `REG TrID id name 0` (MSNP7).
    Reg {
        trid: TrId,
        id: u32,
        name: FriendlyName,
    },
    /// `RMG TrID id` (MSNP7).
    Rmg {
        trid: TrId,
        id: u32,
    },
}

/// A line that is not a command this server understands, with the code to answer it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The TrID, when the line had a readable one.
    pub trid: Option<TrId>,
    pub code: ErrorCode,
}

impl ClientCommand {
    /// The TrID the reply to this command carries, if it has one.
    pub fn trid(&self) -> Option<TrId> {
        use ClientCommand::*;
        match self {
            Ver { trid, .. }
            | Cvr { trid, .. }
            | Inf { trid }
            | UsrAuth { trid, .. }
            | UsrCookie { trid, .. }
            | Syn { trid, .. }
            | Lst { trid, .. }
            | Gtc { trid, .. }
            | Blp { trid, .. }
            | Add { trid, .. }
            | Rem { trid, .. }
            | Chg { trid, .. }
            | Rea { trid, .. }
            | Xfr { trid, .. }
            | Url { trid, .. }
            | Fnd { trid, .. }
            | Snd { trid, .. }
            | Cal { trid, .. }
            | Ans { trid, .. }
            | Msg { trid, .. }
            | Ims { trid, .. }
            | Prp { trid, .. }
            | Sdc { trid, .. }
            | Pag { trid, .. }
            | Qry { trid, .. }
            | Adg { trid, .. }
            | Reg { trid, .. }
            | Rmg { trid, .. } => Some(*trid),
            Out | Png => None,
        }
    }

    /// The three-letter verb.
    pub fn verb(&self) -> &'static str {
        use ClientCommand::*;
        match self {
            Ver { .. } => "VER",
            Cvr { query: false, .. } => "CVR",
            Cvr { query: true, .. } => "CVQ",
            Inf { .. } => "INF",
            UsrAuth { .. } | UsrCookie { .. } => "USR",
            Syn { .. } => "SYN",
            Lst { .. } => "LST",
            Gtc { .. } => "GTC",
            Blp { .. } => "BLP",
            Add { .. } => "ADD",
            Rem { .. } => "REM",
            Chg { .. } => "CHG",
            Rea { .. } => "REA",
            Xfr { .. } => "XFR",
            Url { .. } => "URL",
            Fnd { .. } => "FND",
            Snd { .. } => "SND",
            Out => "OUT",
            Png => "PNG",
            Cal { .. } => "CAL",
            Ans { .. } => "ANS",
            Msg { .. } => "MSG",
            Ims { .. } => "IMS",
            Prp { .. } => "PRP",
            Sdc { .. } => "SDC",
            Pag { .. } => "PAG",
            Qry { .. } => "QRY",
            Adg { .. } => "ADG",
            Reg { .. } => "REG",
            Rmg { .. } => "RMG",
        }
    }

    /// The first dialect with this command (or this form of it). A connection in an older
    /// dialect answers it as an unknown command (200), as that dialect's server did.
    pub fn since(&self) -> Dialect {
        use ClientCommand::*;
        match self {
            Ims { .. } => Dialect::Msnp3,
            Prp { .. } | Sdc { .. } | Pag { .. } => Dialect::Msnp5,
            Qry { .. } => Dialect::Msnp6,
            Adg { .. } | Reg { .. } | Rmg { .. } => Dialect::Msnp7,
            Add { group: Some(_), .. } | Rem { group: Some(_), .. } => Dialect::Msnp7,
            _ => Dialect::Msnp2,
        }
    }

    /// Parses one framed line.
    pub fn parse(frame: Frame) -> Result<ClientCommand, ParseError> {
        let Frame { line, payload } = frame;
        let text = std::str::from_utf8(&line).unwrap_or("");
        let mut tokens = text.split_ascii_whitespace();
        let verb = tokens.next().unwrap_or("");
        let trid_token = tokens.next();
        let trid = trid_token.and_then(|t| t.parse::<TrId>().ok());
        let args: Vec<&str> = tokens.collect();
        let fail = |code| Err(ParseError { trid, code });
        if std::str::from_utf8(&line).is_err() {
            // Command lines are ASCII with URL-encoded parameters; raw bytes are a syntax error.
            let trid = line
                .split(|b| *b == b' ')
                .nth(1)
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.parse().ok());
            return Err(ParseError {
                trid,
                code: ErrorCode::SyntaxError,
            });
        }
        if verb == "OUT" {
            return Ok(ClientCommand::Out);
        }
        if verb == "PNG" {
            return Ok(ClientCommand::Png);
        }
        let Some(trid_value) = trid else {
            return fail(ErrorCode::SyntaxError);
        };
        let trid = Some(trid_value);
        let t = trid_value;
        let handle = |s: &str| {
            s.parse::<UserHandle>()
                .map_err(|_| ErrorCode::InvalidUsername)
        };
        let name = |s: &str| {
            s.parse::<FriendlyName>()
                .map_err(|_| ErrorCode::InvalidFriendlyName)
        };
        let list = |s: &str| {
            s.parse::<ListKind>()
                .map_err(|_| ErrorCode::InvalidParameter)
        };
        let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let group = |s: &str| parse_serial(s).ok_or(ErrorCode::InvalidGroup);
        // Bounds apply to the form this server writes back (a stray `%` comes back as `%25`),
        // not only to what the client sent: found by fuzzing (docs/SECURITY.md).
        let group_name = |s: &str| {
            if s.len() > MAX_GROUP_NAME_BYTES {
                return Err(ErrorCode::GroupNameTooLong);
            }
            let parsed = name(s)?;
            if parsed.to_string().len() > MAX_GROUP_NAME_BYTES {
                return Err(ErrorCode::GroupNameTooLong);
            }
            Ok(parsed)
        };
        let result: Result<ClientCommand, ErrorCode> = match (verb, args.as_slice()) {
            ("VER", dialects) if !dialects.is_empty() => Ok(ClientCommand::Ver {
                trid: t,
                dialects: owned(dialects),
            }),
            ("CVR" | "CVQ", info) => Ok(ClientCommand::Cvr {
                trid: t,
                info: owned(info),
                query: verb == "CVQ",
            }),
            ("INF", []) => Ok(ClientCommand::Inf { trid: t }),
            ("USR", [package, "I", h]) => handle(h).map(|h| ClientCommand::UsrAuth {
                trid: t,
                package: package.to_string(),
                stage: AuthStage::Initial(h),
            }),
            ("USR", [package, "S", response]) => Ok(ClientCommand::UsrAuth {
                trid: t,
                package: package.to_string(),
                stage: AuthStage::Subsequent(response.to_string()),
            }),
            ("USR", [h, cookie]) => handle(h).map(|h| ClientCommand::UsrCookie {
                trid: t,
                handle: h,
                cookie: cookie.to_string(),
            }),
            ("SYN", [serial]) => parse_serial(serial)
                .map(|serial| ClientCommand::Syn { trid: t, serial })
                .ok_or(ErrorCode::InvalidParameter),
            ("LST", [l]) => list(l).map(|list| ClientCommand::Lst { trid: t, list }),
            ("GTC", [s]) => s
                .parse()
                .map(|setting| ClientCommand::Gtc { trid: t, setting })
                .map_err(|_| ErrorCode::InvalidParameter),
            ("BLP", [s]) => s
                .parse()
                .map(|setting| ClientCommand::Blp { trid: t, setting })
                .map_err(|_| ErrorCode::InvalidParameter),
            ("ADD", [l, h, n, rest @ ..]) if rest.len() <= 1 => list(l).and_then(|list| {
                Ok(ClientCommand::Add {
                    trid: t,
                    list,
                    handle: handle(h)?,
                    name: name(n)?,
                    group: rest.first().map(|g| group(g)).transpose()?,
                })
            }),
            ("REM", [l, h, rest @ ..]) if rest.len() <= 1 => list(l).and_then(|list| {
                Ok(ClientCommand::Rem {
                    trid: t,
                    list,
                    handle: handle(h)?,
                    group: rest.first().map(|g| group(g)).transpose()?,
                })
            }),
            ("IMS", [on @ ("ON" | "OFF")]) => Ok(ClientCommand::Ims {
                trid: t,
                on: *on == "ON",
            }),
            ("PRP", [key, rest @ ..]) if rest.len() <= 1 => {
                match (key.parse::<PhoneKey>(), rest.first()) {
                    (Err(()), _) => Err(ErrorCode::NotExpected),
                    (Ok(_), Some(v)) if v.len() > MAX_PHONE_BYTES => {
                        Err(ErrorCode::InvalidParameter)
                    }
                    (Ok(key), v) => v
                        .map(|v| v.parse::<FriendlyName>())
                        .transpose()
                        .ok()
                        .filter(|value| {
                            value
                                .as_ref()
                                .is_none_or(|v| v.to_string().len() <= MAX_PHONE_BYTES)
                        })
                        .map(|value| ClientCommand::Prp {
                            trid: t,
                            key,
                            value,
                        })
                        .ok_or(ErrorCode::InvalidParameter),
                }
            }
            ("SDC", [a @ .., _len]) if !a.is_empty() => match payload {
                Some(payload) => Ok(ClientCommand::Sdc {
                    trid: t,
                    args: owned(a),
                    payload,
                }),
                None => Err(ErrorCode::InvalidParameter),
            },
            ("PAG", [h, _len]) => match payload {
                Some(payload) => handle(h).map(|handle| ClientCommand::Pag {
                    trid: t,
                    handle,
                    payload,
                }),
                None => Err(ErrorCode::InvalidParameter),
            },
            ("QRY", [client_id, _len]) => match payload {
                Some(payload) => Ok(ClientCommand::Qry {
                    trid: t,
                    client_id: client_id.to_string(),
                    payload,
                }),
                None => Err(ErrorCode::InvalidParameter),
            },
            ("ADG", [n, rest @ ..]) if rest.len() <= 1 => {
                group_name(n).map(|name| ClientCommand::Adg { trid: t, name })
            }
            ("REG", [id, n, rest @ ..]) if rest.len() <= 1 => group(id).and_then(|id| {
                Ok(ClientCommand::Reg {
                    trid: t,
                    id,
                    name: group_name(n)?,
                })
            }),
            ("RMG", [id]) => group(id).map(|id| ClientCommand::Rmg { trid: t, id }),
            ("CHG", [s]) => s
                .parse()
                .map(|status| ClientCommand::Chg { trid: t, status })
                .map_err(|_| ErrorCode::InvalidParameter),
            ("REA", [h, n]) => handle(h).and_then(|handle| {
                Ok(ClientCommand::Rea {
                    trid: t,
                    handle,
                    name: name(n)?,
                })
            }),
            ("XFR", [kind]) => Ok(ClientCommand::Xfr {
                trid: t,
                kind: kind.to_string(),
            }),
            ("URL", a) => Ok(ClientCommand::Url {
                trid: t,
                args: owned(a),
            }),
            ("FND", a) => Ok(ClientCommand::Fnd {
                trid: t,
                args: owned(a),
            }),
            ("SND", a) => Ok(ClientCommand::Snd {
                trid: t,
                args: owned(a),
            }),
            ("CAL", [h]) => handle(h).map(|handle| ClientCommand::Cal { trid: t, handle }),
            ("ANS", [h, cookie, sid]) => handle(h).and_then(|handle| {
                Ok(ClientCommand::Ans {
                    trid: t,
                    handle,
                    cookie: cookie.to_string(),
                    session_id: parse_serial(sid).ok_or(ErrorCode::InvalidParameter)?,
                })
            }),
            ("MSG", [mode, _len]) => match (mode.parse(), payload) {
                (Ok(mode), Some(payload)) => Ok(ClientCommand::Msg {
                    trid: t,
                    mode,
                    payload,
                }),
                _ => Err(ErrorCode::InvalidParameter),
            },
            _ => Err(ErrorCode::SyntaxError),
        };
        result.map_err(|code| ParseError { trid, code })
    }
}

fn parse_serial(s: &str) -> Option<u32> {
    s.parse::<TrId>().ok().map(|t| t.0)
}

impl fmt::Display for ClientCommand {
    /// The wire line, without line ending or MSG payload.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ClientCommand::*;
        let verb = self.verb();
        match self {
            Ver { trid, dialects } => write!(f, "{verb} {trid} {}", dialects.join(" ")),
            Cvr { trid, info, .. }
            | Url { trid, args: info }
            | Fnd { trid, args: info }
            | Snd { trid, args: info } => {
                write!(f, "{verb} {trid}")?;
                info.iter().try_for_each(|a| write!(f, " {a}"))
            }
            Inf { trid } => write!(f, "{verb} {trid}"),
            UsrAuth {
                trid,
                package,
                stage: AuthStage::Initial(h),
            } => {
                write!(f, "{verb} {trid} {package} I {h}")
            }
            UsrAuth {
                trid,
                package,
                stage: AuthStage::Subsequent(r),
            } => {
                write!(f, "{verb} {trid} {package} S {r}")
            }
            UsrCookie {
                trid,
                handle,
                cookie,
            } => write!(f, "{verb} {trid} {handle} {cookie}"),
            Syn { trid, serial } => write!(f, "{verb} {trid} {serial}"),
            Lst { trid, list } => write!(f, "{verb} {trid} {list}"),
            Gtc { trid, setting } => write!(f, "{verb} {trid} {setting}"),
            Blp { trid, setting } => write!(f, "{verb} {trid} {setting}"),
            Add {
                trid,
                list,
                handle,
                name,
                group,
            } => {
                write!(f, "{verb} {trid} {list} {handle} {name}")?;
                group.iter().try_for_each(|g| write!(f, " {g}"))
            }
            Rem {
                trid,
                list,
                handle,
                group,
            } => {
                write!(f, "{verb} {trid} {list} {handle}")?;
                group.iter().try_for_each(|g| write!(f, " {g}"))
            }
            Ims { trid, on } => write!(f, "{verb} {trid} {}", if *on { "ON" } else { "OFF" }),
            Prp { trid, key, value } => {
                write!(f, "{verb} {trid} {key}")?;
                value.iter().try_for_each(|v| write!(f, " {v}"))
            }
            Sdc {
                trid,
                args,
                payload,
            } => {
                write!(f, "{verb} {trid}")?;
                args.iter().try_for_each(|a| write!(f, " {a}"))?;
                write!(f, " {}", payload.len())
            }
            Pag {
                trid,
                handle,
                payload,
            } => write!(f, "{verb} {trid} {handle} {}", payload.len()),
            Qry {
                trid,
                client_id,
                payload,
            } => write!(f, "{verb} {trid} {client_id} {}", payload.len()),
            Adg { trid, name } => write!(f, "{verb} {trid} {name} 0"),
            Reg { trid, id, name } => write!(f, "{verb} {trid} {id} {name} 0"),
            Rmg { trid, id } => write!(f, "{verb} {trid} {id}"),
            Chg { trid, status } => write!(f, "{verb} {trid} {status}"),
            Rea { trid, handle, name } => write!(f, "{verb} {trid} {handle} {name}"),
            Xfr { trid, kind } => write!(f, "{verb} {trid} {kind}"),
            Out | Png => f.write_str(verb),
            Cal { trid, handle } => write!(f, "{verb} {trid} {handle}"),
            Ans {
                trid,
                handle,
                cookie,
                session_id,
            } => {
                write!(f, "{verb} {trid} {handle} {cookie} {session_id}")
            }
            Msg {
                trid,
                mode,
                payload,
            } => write!(f, "{verb} {trid} {mode} {}", payload.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn parse(line: &str) -> Result<ClientCommand, ParseError> {
        let mut buf = BytesMut::from(format!("{line}\r\n").as_bytes());
        let frame = crate::protocol::frame::decode(&mut buf).unwrap().unwrap();
        ClientCommand::parse(frame)
    }

    fn round_trip(line: &str) -> ClientCommand {
        let cmd = parse(line).unwrap_or_else(|e| panic!("{line}: {e:?}"));
        assert_eq!(cmd.to_string(), line);
        cmd
    }

    fn err(line: &str) -> (Option<u32>, u16) {
        let e = parse(line).expect_err(line);
        (e.trid.map(|t| t.0), e.code.code())
    }

    #[test]
    fn every_command_round_trips() {
        for line in [
            "VER 1 MSNP2 CVR0",
            "CVR 2 0x0409 win 4.10 i386 MSMSGS 1.0.0863 MSMSGS",
            "CVR 2",
            "CVQ 2 0x0409 win 4.10 i386 MSMSGS 2.2.1053 MSMSGS",
            "CVR 2 0x0409 win 4.10 i386 MSMSGS 2.2.1053 MSMSGS MSMSGS",
            "INF 3",
            "USR 4 MD5 I alice@example.com",
            "USR 5 MD5 S 0123456789abcdef0123456789abcdef",
            "USR 6 alice@example.com 1234.5678",
            "SYN 7 0",
            "SYN 7 4294967295",
            "LST 8 RL",
            "GTC 9 N",
            "BLP 10 BL",
            "ADD 11 FL bob@example.com Bob%20B",
            "REM 12 AL bob@example.com",
            "CHG 13 BSY",
            "CHG 13 FLN",
            "REA 14 alice@example.com Alice%E2%98%BA",
            "XFR 15 SB",
            "URL 16 INBOX",
            "FND 17 fname=A lname=B city=* state=* country=*",
            "SND 18 friend@example.com",
            "OUT",
            "PNG",
            "CAL 19 bob@example.com",
            "ANS 20 bob@example.com 99.abc 12345",
            "ADD 21 FL bob@example.com Bob 3",
            "REM 22 FL bob@example.com 0",
            "IMS 23 OFF",
            "PRP 24 PHH 1%20(222)%203333",
            "PRP 25 PHW",
            "ADG 26 New%20Group 0",
            "REG 27 3 Friends 0",
            "RMG 28 3",
        ] {
            round_trip(line);
        }
    }

    #[test]
    fn typed_values() {
        let cmd = parse("ADD 11 FL Bob@Example.com Bob").unwrap();
        let expected = ClientCommand::Add {
            trid: TrId(11),
            list: ListKind::Forward,
            handle: "bob@example.com".parse().unwrap(),
            name: FriendlyName::new("Bob").unwrap(),
            group: None,
        };
        assert_eq!(cmd, expected);
        assert_eq!(cmd.since(), Dialect::Msnp2);
        assert_eq!(parse("ADD 1 FL a@b.c A 2").unwrap().since(), Dialect::Msnp7);
        assert_eq!(parse("IMS 1 ON").unwrap().since(), Dialect::Msnp3);
        assert_eq!(parse("PRP 1 MOB Y").unwrap().since(), Dialect::Msnp5);
    }

    #[test]
    fn msg_carries_its_payload() {
        let mut buf = BytesMut::from(&b"MSG 3 A 6\r\nh\xc3\xa9llo"[..]);
        let frame = crate::protocol::frame::decode(&mut buf).unwrap().unwrap();
        let cmd = ClientCommand::parse(frame).unwrap();
        assert_eq!(cmd.to_string(), "MSG 3 A 6");
        match cmd {
            ClientCommand::Msg { mode, payload, .. } => {
                assert_eq!(mode, AckMode::Acknowledged);
                assert_eq!(&payload[..], "héllo".as_bytes());
            }
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::from(&b"MSG 3 B 1\r\nx"[..]);
        let frame = crate::protocol::frame::decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            ClientCommand::parse(frame).unwrap_err().code,
            ErrorCode::InvalidParameter
        );
    }

    #[test]
    fn rejections_carry_the_trid_and_a_code() {
        assert_eq!(err("FOO 5 bar"), (Some(5), 200));
        assert_eq!(err("ver 5 MSNP2"), (Some(5), 200)); // verbs are case-sensitive
        assert_eq!(err("VER 6"), (Some(6), 200));
        assert_eq!(err("INF 7 extra"), (Some(7), 200));
        assert_eq!(err("ADD 8 XL bob@example.com Bob"), (Some(8), 201));
        assert_eq!(err("ADD 9 FL bob Bob"), (Some(9), 208));
        assert_eq!(err("ADD 10 FL bob@example.com %FF"), (Some(10), 209));
        assert_eq!(err("ADD 11 FL bob@example.com"), (Some(11), 200));
        assert_eq!(err("CHG 12 XYZ"), (Some(12), 201));
        assert_eq!(err("GTC 13 B"), (Some(13), 201));
        assert_eq!(err("BLP 14 FL"), (Some(14), 201));
        assert_eq!(err("SYN 15 x"), (Some(15), 201));
        assert_eq!(err("CAL 16 nobody"), (Some(16), 208));
        assert_eq!(err("REA 17 alice@example.com a%0Db"), (Some(17), 209));
        assert_eq!(err("ANS 18 a@b.c cookie notanumber"), (Some(18), 201));
        assert_eq!(err("ADD 19 FL a@b.c A x"), (Some(19), 224));
        assert_eq!(err("ADD 19 FL a@b.c A 1 2"), (Some(19), 200));
        assert_eq!(err("PRP 20 XYZ 1"), (Some(20), 715));
        assert_eq!(
            err(&format!("PRP 21 PHH {}", "1".repeat(96))),
            (Some(21), 201)
        );
        assert_eq!(
            err(&format!("ADG 22 {} 0", "g".repeat(62))),
            (Some(22), 229)
        );
        assert_eq!(err("RMG 23 -1"), (Some(23), 224));
        assert_eq!(err("IMS 24 MAYBE"), (Some(24), 200));
    }

    #[test]
    fn unreadable_trids() {
        assert_eq!(err("INF"), (None, 200));
        assert_eq!(err("INF x"), (None, 200));
        assert_eq!(err("INF 4294967296"), (None, 200));
        assert_eq!(err(""), (None, 200));
        let frame = Frame {
            line: Bytes::from_static(b"INF 3 \xff"),
            payload: None,
        };
        assert_eq!(
            ClientCommand::parse(frame).unwrap_err(),
            ParseError {
                trid: Some(TrId(3)),
                code: ErrorCode::SyntaxError
            }
        );
    }

    #[test]
    fn payload_commands_carry_their_payload() {
        for (bytes, line) in [
            (
                &b"QRY 10 msmsgs@msnmsgr.com 32\r\n8f2f5a91b72102cd28355e9fc9000d6e"[..],
                "QRY 10 msmsgs@msnmsgr.com 32",
            ),
            (&b"PAG 5 a@b.c 3\r\nabc"[..], "PAG 5 a@b.c 3"),
            (
                &b"SDC 6 x@y.z 0x0409 MSMSGS MSMSGS X X My%20Name 2\r\nhi"[..],
                "SDC 6 x@y.z 0x0409 MSMSGS MSMSGS X X My%20Name 2",
            ),
        ] {
            let mut buf = BytesMut::from(bytes);
            let frame = crate::protocol::frame::decode(&mut buf).unwrap().unwrap();
            assert!(buf.is_empty());
            assert_eq!(ClientCommand::parse(frame).unwrap().to_string(), line);
        }
    }

    #[test]
    fn whitespace_runs_separate_parameters() {
        assert_eq!(parse("VER  1\tMSNP2").unwrap().to_string(), "VER 1 MSNP2");
    }

    /// Found by fuzzing: a stray `%` is kept as text and written back as `%25`, so a value
    /// within the bound as sent could be over it as written. Bounds are on the written form.
    #[test]
    fn bounds_hold_for_the_form_written_back() {
        let phone = format!("1%{}", "t".repeat(MAX_PHONE_BYTES - 2));
        assert_eq!(phone.len(), MAX_PHONE_BYTES);
        assert_eq!(
            parse(&format!("PRP 5 PHH {phone}")).map_err(|e| e.code),
            Err(ErrorCode::InvalidParameter)
        );
        let fits = "1%25tt";
        assert!(parse(&format!("PRP 5 PHH {fits}")).is_ok());
        let group = format!("%{}", "g".repeat(MAX_GROUP_NAME_BYTES - 1));
        assert_eq!(
            parse(&format!("ADG 6 {group} 0")).map_err(|e| e.code),
            Err(ErrorCode::GroupNameTooLong)
        );
    }
}
