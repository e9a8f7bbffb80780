//! Commands the server sends, and their wire form.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ErrorCode;
use super::types::{
    BlpSetting, Dialect, FriendlyName, GtcSetting, ListKind, Status, TrId, UserHandle,
};

mod parse;

pub use parse::ServerParseError;

/// Why the server ends a notification session with `OUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutReason {
    /// The same account logged in elsewhere.
    OtherLogin,
    /// The server is shutting down.
    ServerShutdown,
}

/// One list entry in an `LST` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    pub index: usize,
    pub total: usize,
    pub handle: UserHandle,
    pub name: FriendlyName,
}

/// A command from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCommand {
    /// `VER TrID dialect`, or `VER TrID 0` when nothing offered is spoken here.
    Ver {
        trid: TrId,
        dialect: Option<Dialect>,
    },
    Cvr {
        trid: TrId,
        recommended: String,
        minimum: String,
        download_url: String,
        info_url: String,
    },
    Inf {
        trid: TrId,
    },
    UsrChallenge {
        trid: TrId,
        challenge: String,
    },
    UsrOk {
        trid: TrId,
        handle: UserHandle,
        name: FriendlyName,
    },
    XfrNs {
        trid: TrId,
        address: String,
    },
    XfrSb {
        trid: TrId,
        address: String,
        cookie: String,
    },
    Syn {
        trid: TrId,
        serial: u32,
    },
    Gtc {
        trid: TrId,
        serial: u32,
        setting: GtcSetting,
    },
    Blp {
        trid: TrId,
        serial: u32,
        setting: BlpSetting,
    },
    Lst {
        trid: TrId,
        list: ListKind,
        serial: u32,
        item: Option<ListItem>,
    },
    Add {
        trid: TrId,
        list: ListKind,
        serial: u32,
        handle: UserHandle,
        name: FriendlyName,
    },
    Rem {
        trid: TrId,
        list: ListKind,
        serial: u32,
        handle: UserHandle,
    },
    Chg {
        trid: TrId,
        status: Status,
    },
    Iln {
        trid: TrId,
        status: Status,
        handle: UserHandle,
        name: FriendlyName,
    },
    Nln {
        status: Status,
        handle: UserHandle,
        name: FriendlyName,
    },
    Fln {
        handle: UserHandle,
    },
    Rea {
        trid: TrId,
        serial: u32,
        handle: UserHandle,
        name: FriendlyName,
    },
    /// `URL TrID redirect-url login-url`: the MSNP2 form (the site id came with MSNP3).
    Url {
        trid: TrId,
        redirect: String,
        login_url: String,
    },
    /// The answer to `PNG`; MSNP2 to MSNP8 send it without parameters.
    Qng,
    /// `FND TrID index total fields...`; `FND TrID 0 0` when nothing was found.
    Fnd {
        trid: TrId,
        index: usize,
        total: usize,
        fields: Vec<String>,
    },
    Snd {
        trid: TrId,
    },
    Out {
        reason: Option<OutReason>,
    },
    Error {
        code: ErrorCode,
        trid: TrId,
    },
    Rng {
        session_id: u32,
        address: String,
        cookie: String,
        caller: UserHandle,
        caller_name: FriendlyName,
    },
    Cal {
        trid: TrId,
        session_id: u32,
    },
    Iro {
        trid: TrId,
        index: usize,
        total: usize,
        handle: UserHandle,
        name: FriendlyName,
    },
    AnsOk {
        trid: TrId,
    },
    Joi {
        handle: UserHandle,
        name: FriendlyName,
    },
    Bye {
        handle: UserHandle,
    },
    /// `MSG sender name length` followed by the payload; the sender is `Hotmail` for
    /// messages from the server itself, so it is not a [`UserHandle`].
    Msg {
        sender: String,
        sender_name: String,
        payload: Bytes,
    },
    Ack {
        trid: TrId,
    },
    Nak {
        trid: TrId,
    },
}

impl ServerCommand {
    /// The whole wire form in `dialect`: the line, CRLF, and for MSG the payload.
    pub fn to_bytes(&self, dialect: Dialect) -> Bytes {
        let mut out = BytesMut::new();
        self.write_to(dialect, &mut out);
        out.freeze()
    }

    /// Appends the whole wire form in `dialect` to `out`. (Every dialect this server speaks
    /// writes these lines alike so far; the dialect is the receiving connection's, so a later
    /// one that differs is written here and nowhere else.)
    pub fn write_to(&self, dialect: Dialect, out: &mut BytesMut) {
        use std::fmt::Write;
        match dialect {
            Dialect::Msnp2 => {
                let _ = write!(out, "{self}\r\n");
                if let ServerCommand::Msg { payload, .. } = self {
                    out.put_slice(payload);
                }
            }
        }
    }
}

/// A server line one task sends to other connections (presence to every watcher, a chat
/// message to everyone in a session). It is shared, not copied, between its receivers; each
/// receiver takes the wire form for its own dialect, which is made once per dialect however
/// many receivers take it.
#[derive(Clone)]
pub struct SharedLine(Arc<SharedInner>);

struct SharedInner {
    command: ServerCommand,
    encoded: [OnceLock<Bytes>; Dialect::ALL.len()],
}

impl SharedLine {
    pub fn new(command: ServerCommand) -> SharedLine {
        SharedLine(Arc::new(SharedInner {
            command,
            encoded: Default::default(),
        }))
    }

    pub fn command(&self) -> &ServerCommand {
        &self.0.command
    }

    /// The wire form in `dialect`, made on first use.
    pub fn encoded(&self, dialect: Dialect) -> Bytes {
        self.0.encoded[dialect.index()]
            .get_or_init(|| self.0.command.to_bytes(dialect))
            .clone()
    }
}

impl From<ServerCommand> for SharedLine {
    fn from(command: ServerCommand) -> SharedLine {
        SharedLine::new(command)
    }
}

impl fmt::Debug for SharedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.command.fmt(f)
    }
}

impl fmt::Display for ServerCommand {
    /// The line without its CRLF or payload.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ServerCommand::*;
        match self {
            Ver {
                trid,
                dialect: Some(d),
            } => write!(f, "VER {trid} {d}"),
            Ver {
                trid,
                dialect: None,
            } => write!(f, "VER {trid} 0"),
            Cvr {
                trid,
                recommended,
                minimum,
                download_url,
                info_url,
            } => {
                write!(
                    f,
                    "CVR {trid} {recommended} {recommended} {minimum} {download_url} {info_url}"
                )
            }
            Inf { trid } => write!(f, "INF {trid} MD5"),
            UsrChallenge { trid, challenge } => write!(f, "USR {trid} MD5 S {challenge}"),
            UsrOk { trid, handle, name } => write!(f, "USR {trid} OK {handle} {name}"),
            XfrNs { trid, address } => write!(f, "XFR {trid} NS {address}"),
            XfrSb {
                trid,
                address,
                cookie,
            } => write!(f, "XFR {trid} SB {address} CKI {cookie}"),
            Syn { trid, serial } => write!(f, "SYN {trid} {serial}"),
            Gtc {
                trid,
                serial,
                setting,
            } => write!(f, "GTC {trid} {serial} {setting}"),
            Blp {
                trid,
                serial,
                setting,
            } => write!(f, "BLP {trid} {serial} {setting}"),
            Lst {
                trid,
                list,
                serial,
                item: None,
            } => write!(f, "LST {trid} {list} {serial} 0 0"),
            Lst {
                trid,
                list,
                serial,
                item:
                    Some(ListItem {
                        index,
                        total,
                        handle,
                        name,
                    }),
            } => {
                write!(
                    f,
                    "LST {trid} {list} {serial} {index} {total} {handle} {name}"
                )
            }
            Add {
                trid,
                list,
                serial,
                handle,
                name,
            } => {
                write!(f, "ADD {trid} {list} {serial} {handle} {name}")
            }
            Rem {
                trid,
                list,
                serial,
                handle,
            } => write!(f, "REM {trid} {list} {serial} {handle}"),
            Chg { trid, status } => write!(f, "CHG {trid} {status}"),
            Iln {
                trid,
                status,
                handle,
                name,
            } => write!(f, "ILN {trid} {status} {handle} {name}"),
            Nln {
                status,
                handle,
                name,
            } => write!(f, "NLN {status} {handle} {name}"),
            Fln { handle } => write!(f, "FLN {handle}"),
            Rea {
                trid,
                serial,
                handle,
                name,
            } => write!(f, "REA {trid} {serial} {handle} {name}"),
            Url {
                trid,
                redirect,
                login_url,
            } => write!(f, "URL {trid} {redirect} {login_url}"),
            Qng => f.write_str("QNG"),
            Fnd {
                trid,
                index,
                total,
                fields,
            } => {
                write!(f, "FND {trid} {index} {total}")?;
                fields.iter().try_for_each(|x| write!(f, " {x}"))
            }
            Snd { trid } => write!(f, "SND {trid} OK"),
            Out { reason: None } => f.write_str("OUT"),
            Out {
                reason: Some(OutReason::OtherLogin),
            } => f.write_str("OUT OTH"),
            Out {
                reason: Some(OutReason::ServerShutdown),
            } => f.write_str("OUT SSD"),
            Error { code, trid } => write!(f, "{code} {trid}"),
            Rng {
                session_id,
                address,
                cookie,
                caller,
                caller_name,
            } => {
                write!(
                    f,
                    "RNG {session_id} {address} CKI {cookie} {caller} {caller_name}"
                )
            }
            Cal { trid, session_id } => write!(f, "CAL {trid} RINGING {session_id}"),
            Iro {
                trid,
                index,
                total,
                handle,
                name,
            } => {
                write!(f, "IRO {trid} {index} {total} {handle} {name}")
            }
            AnsOk { trid } => write!(f, "ANS {trid} OK"),
            Joi { handle, name } => write!(f, "JOI {handle} {name}"),
            Bye { handle } => write!(f, "BYE {handle}"),
            Msg {
                sender,
                sender_name,
                payload,
            } => {
                write!(f, "MSG {sender} {sender_name} {}", payload.len())
            }
            Ack { trid } => write!(f, "ACK {trid}"),
            Nak { trid } => write!(f, "NAK {trid}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn h(s: &str) -> UserHandle {
        s.parse().unwrap()
    }

    pub(super) fn n(s: &str) -> FriendlyName {
        FriendlyName::new(s).unwrap()
    }

    /// One of each variant (two or three where the wire form has shapes), with its line.
    pub(super) fn cases() -> Vec<(ServerCommand, &'static str)> {
        let t = TrId(7);
        vec![
            (
                ServerCommand::Ver {
                    trid: t,
                    dialect: Some(Dialect::Msnp2),
                },
                "VER 7 MSNP2",
            ),
            (
                ServerCommand::Ver {
                    trid: t,
                    dialect: None,
                },
                "VER 7 0",
            ),
            (
                ServerCommand::Cvr {
                    trid: t,
                    recommended: "1.0.0863".into(),
                    minimum: "1.0.0863".into(),
                    download_url: "http://x/dl".into(),
                    info_url: "http://x/info".into(),
                },
                "CVR 7 1.0.0863 1.0.0863 1.0.0863 http://x/dl http://x/info",
            ),
            (ServerCommand::Inf { trid: t }, "INF 7 MD5"),
            (
                ServerCommand::UsrChallenge {
                    trid: t,
                    challenge: "123".into(),
                },
                "USR 7 MD5 S 123",
            ),
            (
                ServerCommand::UsrOk {
                    trid: t,
                    handle: h("a@b.c"),
                    name: n("A B"),
                },
                "USR 7 OK a@b.c A%20B",
            ),
            (
                ServerCommand::XfrNs {
                    trid: t,
                    address: "127.0.0.1:1863".into(),
                },
                "XFR 7 NS 127.0.0.1:1863",
            ),
            (
                ServerCommand::XfrSb {
                    trid: t,
                    address: "h:1864".into(),
                    cookie: "ck".into(),
                },
                "XFR 7 SB h:1864 CKI ck",
            ),
            (ServerCommand::Syn { trid: t, serial: 3 }, "SYN 7 3"),
            (
                ServerCommand::Gtc {
                    trid: t,
                    serial: 3,
                    setting: GtcSetting::Ask,
                },
                "GTC 7 3 A",
            ),
            (
                ServerCommand::Blp {
                    trid: t,
                    serial: 3,
                    setting: BlpSetting::AllowAll,
                },
                "BLP 7 3 AL",
            ),
            (
                ServerCommand::Lst {
                    trid: t,
                    list: ListKind::Reverse,
                    serial: 3,
                    item: None,
                },
                "LST 7 RL 3 0 0",
            ),
            (
                ServerCommand::Lst {
                    trid: t,
                    list: ListKind::Forward,
                    serial: 3,
                    item: Some(ListItem {
                        index: 1,
                        total: 2,
                        handle: h("b@c.d"),
                        name: n("Bé"),
                    }),
                },
                "LST 7 FL 3 1 2 b@c.d B%C3%A9",
            ),
            (
                ServerCommand::Add {
                    trid: TrId(0),
                    list: ListKind::Reverse,
                    serial: 4,
                    handle: h("a@b.c"),
                    name: n("A"),
                },
                "ADD 0 RL 4 a@b.c A",
            ),
            (
                ServerCommand::Rem {
                    trid: t,
                    list: ListKind::Block,
                    serial: 5,
                    handle: h("a@b.c"),
                },
                "REM 7 BL 5 a@b.c",
            ),
            (
                ServerCommand::Chg {
                    trid: t,
                    status: Status::Hidden,
                },
                "CHG 7 HDN",
            ),
            (
                ServerCommand::Iln {
                    trid: t,
                    status: Status::Away,
                    handle: h("a@b.c"),
                    name: n("A"),
                },
                "ILN 7 AWY a@b.c A",
            ),
            (
                ServerCommand::Nln {
                    status: Status::Busy,
                    handle: h("a@b.c"),
                    name: n("A"),
                },
                "NLN BSY a@b.c A",
            ),
            (ServerCommand::Fln { handle: h("a@b.c") }, "FLN a@b.c"),
            (
                ServerCommand::Rea {
                    trid: t,
                    serial: 9,
                    handle: h("a@b.c"),
                    name: n("New"),
                },
                "REA 7 9 a@b.c New",
            ),
            (
                ServerCommand::Url {
                    trid: t,
                    redirect: "/inbox".into(),
                    login_url: "http://x/".into(),
                },
                "URL 7 /inbox http://x/",
            ),
            (
                ServerCommand::Fnd {
                    trid: t,
                    index: 0,
                    total: 0,
                    fields: vec![],
                },
                "FND 7 0 0",
            ),
            (ServerCommand::Snd { trid: t }, "SND 7 OK"),
            (ServerCommand::Qng, "QNG"),
            (ServerCommand::Out { reason: None }, "OUT"),
            (
                ServerCommand::Out {
                    reason: Some(OutReason::OtherLogin),
                },
                "OUT OTH",
            ),
            (
                ServerCommand::Out {
                    reason: Some(OutReason::ServerShutdown),
                },
                "OUT SSD",
            ),
            (
                ServerCommand::Error {
                    code: ErrorCode::NotLoggedIn,
                    trid: t,
                },
                "302 7",
            ),
            (
                ServerCommand::Rng {
                    session_id: 11,
                    address: "h:1864".into(),
                    cookie: "ck".into(),
                    caller: h("a@b.c"),
                    caller_name: n("A"),
                },
                "RNG 11 h:1864 CKI ck a@b.c A",
            ),
            (
                ServerCommand::Cal {
                    trid: t,
                    session_id: 11,
                },
                "CAL 7 RINGING 11",
            ),
            (
                ServerCommand::Iro {
                    trid: t,
                    index: 1,
                    total: 2,
                    handle: h("a@b.c"),
                    name: n("A"),
                },
                "IRO 7 1 2 a@b.c A",
            ),
            (ServerCommand::AnsOk { trid: t }, "ANS 7 OK"),
            (
                ServerCommand::Joi {
                    handle: h("a@b.c"),
                    name: n("A"),
                },
                "JOI a@b.c A",
            ),
            (ServerCommand::Bye { handle: h("a@b.c") }, "BYE a@b.c"),
            (ServerCommand::Ack { trid: t }, "ACK 7"),
            (ServerCommand::Nak { trid: t }, "NAK 7"),
            (
                ServerCommand::Fnd {
                    trid: t,
                    index: 1,
                    total: 2,
                    fields: vec!["fname=A".into(), "lname=B".into()],
                },
                "FND 7 1 2 fname=A lname=B",
            ),
        ]
    }

    #[test]
    fn wire_forms() {
        for (cmd, line) in cases() {
            assert_eq!(cmd.to_string(), line);
            assert_eq!(
                cmd.to_bytes(Dialect::Msnp2),
                format!("{line}\r\n").as_bytes()
            );
        }
    }

    #[test]
    fn msg_length_counts_bytes() {
        let payload = Bytes::from("MIME-Version: 1.0\r\n\r\nhé");
        let cmd = ServerCommand::Msg {
            sender: "a@b.c".into(),
            sender_name: "A".into(),
            payload: payload.clone(),
        };
        let mut expected = b"MSG a@b.c A 24\r\n".to_vec();
        expected.extend_from_slice(&payload);
        assert_eq!(cmd.to_bytes(Dialect::Msnp2), expected);
    }

    #[test]
    fn a_shared_line_is_written_once_per_dialect() {
        let line = SharedLine::new(ServerCommand::Fln { handle: h("a@b.c") });
        for dialect in Dialect::ALL {
            let first = line.encoded(dialect);
            let again = line.clone().encoded(dialect);
            assert_eq!(first, line.command().to_bytes(dialect));
            // The same bytes, not a second encoding: fan-out costs one encoding per dialect.
            assert_eq!(first.as_ptr(), again.as_ptr());
        }
        assert_eq!(line.encoded(Dialect::Msnp2), &b"FLN a@b.c\r\n"[..]);
    }

    #[test]
    fn dialects_have_distinct_indexes() {
        for (i, dialect) in Dialect::ALL.into_iter().enumerate() {
            assert_eq!(dialect.index(), i);
            assert_eq!(Dialect::from_index(i), Some(dialect));
        }
        assert_eq!(Dialect::from_index(Dialect::ALL.len()), None);
    }
}
