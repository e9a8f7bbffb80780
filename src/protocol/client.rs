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
#[path = "client_tests.rs"]
mod tests;
