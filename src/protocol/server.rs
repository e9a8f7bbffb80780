//! Commands the server sends, and their wire form.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ErrorCode;
use super::types::{
    BlpSetting, Dialect, FriendlyName, GtcSetting, ListKind, PhoneKey, Status, TrId, UserHandle,
};

mod encode;
mod parse;
#[cfg(test)]
mod tests;

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
    /// The contact's groups, for an FL entry (MSNP7; written as `0` when empty).
    pub groups: Vec<u32>,
}

/// A command from the server. Each variant's wire form, in every dialect, is written in one
/// place: `encode.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCommand {
    /// `VER TrID dialect`, or `VER TrID 0` when nothing offered is spoken here. From MSNP3 on
    /// the chosen dialect is followed by the `others` the client offered and this server
    /// speaks, and `CVR0` when the client sent it.
    Ver {
        trid: TrId,
        dialect: Option<Dialect>,
        others: Vec<Dialect>,
        cvr0: bool,
    },
    /// The answer to `CVR`, or to `CVQ` (`query`).
    Cvr {
        trid: TrId,
        query: bool,
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
    /// `USR TrID OK handle name`; the notification server's (`verified` set) has the verified
    /// bit from MSNP6 on (always `1` here), the switchboard's never.
    UsrOk {
        trid: TrId,
        handle: UserHandle,
        name: FriendlyName,
        verified: Option<bool>,
    },
    /// `XFR TrID NS address`; MSNP3 adds `0`, MSNP7 then the server the client is on.
    XfrNs {
        trid: TrId,
        address: String,
        current: String,
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
    /// `ADD TrID list ser handle name`; an FL one in MSNP7 ends with its group (default 0).
    Add {
        trid: TrId,
        list: ListKind,
        serial: u32,
        handle: UserHandle,
        name: FriendlyName,
        group: Option<u32>,
    },
    /// `REM TrID list ser handle`; an FL one in MSNP7 ends with the group it left, if only one.
    Rem {
        trid: TrId,
        list: ListKind,
        serial: u32,
        handle: UserHandle,
        group: Option<u32>,
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
    /// `URL TrID redirect-url login-url`; MSNP3 adds the Passport site id.
    Url {
        trid: TrId,
        redirect: String,
        login_url: String,
        site_id: u32,
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
    /// `IMS TrID 0 ON|OFF` (MSNP3): instant messages on or off.
    Ims {
        trid: TrId,
        on: bool,
    },
    /// `PRP TrID ser key [value]` (MSNP5): one of the user's phone properties.
    Prp {
        trid: TrId,
        serial: u32,
        key: PhoneKey,
        value: Option<FriendlyName>,
    },
    /// `BPR ser handle key [value]` (MSNP5): a contact's phone property.
    Bpr {
        serial: u32,
        handle: UserHandle,
        key: PhoneKey,
        value: Option<FriendlyName>,
    },
    /// `SDC TrID OK` (MSNP5): an invitation by e-mail was accepted.
    Sdc {
        trid: TrId,
    },
    /// `CHL 0 challenge` (MSNP6).
    Chl {
        challenge: String,
    },
    /// `QRY TrID` (MSNP6): the challenge was answered right.
    Qry {
        trid: TrId,
    },
    /// `LSG TrID ser index total id name 0` (MSNP7): one group in `SYN`.
    Lsg {
        trid: TrId,
        serial: u32,
        index: usize,
        total: usize,
        id: u32,
        name: FriendlyName,
    },
    /// `ADG TrID ser name id 0` (MSNP7).
    Adg {
        trid: TrId,
        serial: u32,
        name: FriendlyName,
        id: u32,
    },
    /// `REG TrID ser id name 0` (MSNP7).
    Reg {
        trid: TrId,
        serial: u32,
        id: u32,
        name: FriendlyName,
    },
    /// `RMG TrID ser id` (MSNP7).
    Rmg {
        trid: TrId,
        serial: u32,
        id: u32,
    },
}

impl ServerCommand {
    /// The whole wire form in `dialect`: the line, CRLF, and for MSG the payload.
    pub fn to_bytes(&self, dialect: Dialect) -> Bytes {
        let mut out = BytesMut::new();
        self.write_to(dialect, &mut out);
        out.freeze()
    }

    /// Appends the whole wire form in `dialect` to `out`. The dialect is the receiving
    /// connection's; what differs between dialects is written by `encode.rs` and nowhere else.
    /// A line the dialect does not have (a contact's phone change for an MSNP2 client) is not
    /// written at all.
    pub fn write_to(&self, dialect: Dialect, out: &mut BytesMut) {
        use std::fmt::Write;
        if dialect < self.since() {
            return;
        }
        let _ = write!(out, "{}\r\n", self.line(dialect));
        if let ServerCommand::Msg { payload, .. } = self {
            out.put_slice(payload);
        }
    }

    /// The answer to `VER TrID offered...` and the dialect it chose (see [`Dialect::answer`]).
    pub fn version_answer(trid: TrId, offered: &[String]) -> (Option<Dialect>, ServerCommand) {
        match Dialect::answer(offered.iter().map(String::as_str)) {
            Some((dialect, others, cvr0)) => (
                Some(dialect),
                ServerCommand::Ver {
                    trid,
                    dialect: Some(dialect),
                    others,
                    cvr0,
                },
            ),
            None => (
                None,
                ServerCommand::Ver {
                    trid,
                    dialect: None,
                    others: Vec::new(),
                    cvr0: false,
                },
            ),
        }
    }

    /// The first dialect with this line.
    pub fn since(&self) -> Dialect {
        use ServerCommand::*;
        match self {
            Ims { .. } => Dialect::Msnp3,
            Prp { .. } | Bpr { .. } | Sdc { .. } => Dialect::Msnp5,
            Chl { .. } | Qry { .. } => Dialect::Msnp6,
            Lsg { .. } | Adg { .. } | Reg { .. } | Rmg { .. } => Dialect::Msnp7,
            _ => Dialect::Msnp2,
        }
    }

    /// The line in `dialect`, without its CRLF or payload.
    pub fn line(&self, dialect: Dialect) -> Line<'_> {
        Line {
            command: self,
            dialect,
        }
    }
}

/// A server line in one dialect, as [`ServerCommand::line`] makes it.
pub struct Line<'a> {
    command: &'a ServerCommand,
    dialect: Dialect,
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
