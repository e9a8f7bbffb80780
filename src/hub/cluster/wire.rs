//! What nodes say to each other over NATS, and on which subjects.
//!
//! Broadcasts (heartbeats, who logged in, changed state or name, logged out) are JSON on
//! [`BROADCAST`]. What one node sends another (a line for one of its users, a request for its
//! directory and the answer) goes to `msngate.node.NAME.deliver`. A line for a user travels in
//! one canonical form: written in the newest dialect and parsed back on the other side, where
//! the user's connection writes it in its own dialect. [`encode_delivery`] and
//! [`decode_delivery`] keep that round trip, which the tests check for every line a node sends
//! another.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::protocol::{decode, Dialect, ServerCommand, UserHandle};

/// The subject every node hears.
pub const BROADCAST: &str = "msngate.cluster";

/// The subject of the node `node`'s direct messages.
pub fn node_subject(node: &str) -> String {
    format!("msngate.node.{node}.deliver")
}

/// The dialect lines cross the cluster in: the newest, the one with the most fields.
pub const CANONICAL: Dialect = Dialect::Msnp7;

/// One logged-in user as the other nodes know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    pub handle: String,
    /// The state's code (`NLN`, `FLN` before the first CHG...).
    pub status: String,
    /// The friendly name, decoded.
    pub name: String,
    /// The dialect of the user's notification connection (switchboards lend it).
    pub dialect: String,
    /// When the login happened (microseconds since the epoch on its node): of two logins of
    /// one handle, the later one stays and the other gets `OUT OTH`.
    pub stamp: u64,
}

/// Heard by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Broadcast {
    /// Every second: this node is alive, where clients reach it, and how many are online.
    Heartbeat {
        node: String,
        /// Random per process: a node restarted under the same name is a new member.
        instance: u64,
        /// The notification server's `public_host:port`.
        address: String,
        load: usize,
    },
    /// A login, or a change of a logged-in user's state or name.
    Online {
        node: String,
        instance: u64,
        user: UserEntry,
    },
    /// A logout (only of the login with this stamp).
    Offline {
        node: String,
        instance: u64,
        handle: String,
        stamp: u64,
    },
    /// The node is shutting down: drop it now rather than after the silence.
    Bye { node: String, instance: u64 },
}

/// Sent to one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Direct {
    /// Asks for the node's logged-in users.
    Sync { from: String },
    /// The answer to [`Direct::Sync`] (in parts for many users).
    Snapshot {
        node: String,
        instance: u64,
        users: Vec<UserEntry>,
    },
}

/// A line for users of the receiving node (presence: every watcher there at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub to: Vec<UserHandle>,
    /// Presence (NLN, FLN): only for a user past the first CHG.
    pub presence: bool,
    pub command: ServerCommand,
}

/// Why a message from another node was not understood.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed cluster message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed delivery: {0}")]
    Delivery(&'static str),
}

/// Direct messages that are not JSON start with this, then the delivery's header line.
const DELIVERY_TAG: &[u8] = b"D ";

/// `D P|C handle...\r\n` then the line (with its payload) in [`CANONICAL`]. `None` when the
/// line does not exist in the canonical dialect or there is nobody to send it to.
pub fn encode_delivery(
    to: &[UserHandle],
    presence: bool,
    command: &ServerCommand,
) -> Option<Bytes> {
    let line = command.to_bytes(CANONICAL);
    if line.is_empty() || to.is_empty() {
        return None;
    }
    let handles: usize = to.iter().map(|h| h.as_str().len() + 1).sum();
    let mut out = BytesMut::with_capacity(line.len() + handles + 8);
    out.put_slice(DELIVERY_TAG);
    out.put_slice(if presence { b"P" } else { b"C" });
    for handle in to {
        out.put_slice(b" ");
        out.put_slice(handle.as_str().as_bytes());
    }
    out.put_slice(b"\r\n");
    out.put_slice(&line);
    Some(out.freeze())
}

/// What came on a node's subject.
#[derive(Debug)]
pub enum Incoming {
    Delivery(Delivery),
    Direct(Direct),
}

pub fn decode_direct(body: &[u8]) -> Result<Incoming, WireError> {
    let Some(rest) = body.strip_prefix(DELIVERY_TAG) else {
        return Ok(Incoming::Direct(serde_json::from_slice(body)?));
    };
    let bad = WireError::Delivery;
    let end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(bad("no header line"))?;
    let header = std::str::from_utf8(&rest[..end]).map_err(|_| bad("header not UTF-8"))?;
    let (kind, to) = header.split_once(' ').ok_or(bad("no handle"))?;
    let presence = match kind {
        "P" => true,
        "C" => false,
        _ => return Err(bad("unknown kind")),
    };
    let to = to
        .split(' ')
        .map(|h| h.parse().map_err(|_| bad("invalid handle")))
        .collect::<Result<Vec<UserHandle>, _>>()?;
    let mut line = BytesMut::from(&rest[end + 2..]);
    let frame = decode(&mut line)
        .map_err(|_| bad("unframeable line"))?
        .ok_or(bad("incomplete line"))?;
    if !line.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let command = ServerCommand::parse(frame).map_err(|_| bad("unparseable line"))?;
    Ok(Incoming::Delivery(Delivery {
        to,
        presence,
        command,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FriendlyName, ListKind, OutReason, PhoneKey, Status, TrId};

    fn handle(s: &str) -> UserHandle {
        s.parse().unwrap()
    }

    fn name(s: &str) -> FriendlyName {
        FriendlyName::new(s).unwrap()
    }

    /// Every line one node hands another for a user: presence, list changes to the RL, rings,
    /// privacy-driven NLN/FLN, phone numbers, and a MSG with a payload.
    fn lines_sent_across() -> Vec<ServerCommand> {
        let alice = handle("alice@example.com");
        let mut lines = vec![
            ServerCommand::Fln {
                handle: alice.clone(),
            },
            ServerCommand::Add {
                trid: TrId(0),
                list: ListKind::Reverse,
                serial: 17,
                handle: alice.clone(),
                name: name("Alice Ä 100% &"),
                group: None,
            },
            ServerCommand::Rem {
                trid: TrId(0),
                list: ListKind::Reverse,
                serial: 18,
                handle: alice.clone(),
                group: None,
            },
            ServerCommand::Rng {
                session_id: 77,
                address: "127.0.0.1:1864".into(),
                cookie: "1234.5678".into(),
                caller: alice.clone(),
                caller_name: name("Alice Liddell"),
            },
            ServerCommand::Out {
                reason: Some(OutReason::OtherLogin),
            },
            ServerCommand::Msg {
                sender: alice.to_string(),
                sender_name: name("Alice").to_string(),
                payload: Bytes::from_static(
                    b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhi \xff\r\nthere",
                ),
            },
        ];
        for status in Status::ALL.into_iter().filter(|s| s.is_visible()) {
            lines.push(ServerCommand::Nln {
                status,
                handle: alice.clone(),
                name: name("Alice"),
            });
        }
        for key in PhoneKey::ALL {
            lines.push(ServerCommand::Bpr {
                serial: 5,
                handle: alice.clone(),
                key,
                value: Some(name("555 1234")),
            });
        }
        lines
    }

    #[test]
    fn every_line_sent_across_survives_the_round_trip() {
        let bob = handle("bob@example.com");
        let watchers = vec![bob.clone(), handle("carol@example.com")];
        for line in lines_sent_across() {
            for (presence, to) in [(false, vec![bob.clone()]), (true, watchers.clone())] {
                let Some(body) = encode_delivery(&to, presence, &line) else {
                    continue;
                };
                let Incoming::Delivery(d) = decode_direct(&body).unwrap() else {
                    panic!("not a delivery: {line:?}");
                };
                assert_eq!(d.to, to);
                assert_eq!(d.presence, presence);
                assert_eq!(d.command, line, "round trip of {line:?}");
                // Whatever dialect the receiver speaks, it writes what the sender would have.
                for dialect in Dialect::ALL {
                    assert_eq!(d.command.to_bytes(dialect), line.to_bytes(dialect));
                }
            }
        }
    }

    #[test]
    fn json_messages_round_trip() {
        let user = UserEntry {
            handle: "a@b.c".into(),
            status: "NLN".into(),
            name: "A b".into(),
            dialect: "MSNP7".into(),
            stamp: 3,
        };
        let direct = Direct::Snapshot {
            node: "n1".into(),
            instance: 9,
            users: vec![user.clone()],
        };
        let body = serde_json::to_vec(&direct).unwrap();
        let Incoming::Direct(back) = decode_direct(&body).unwrap() else {
            panic!("not a direct message");
        };
        assert_eq!(back, direct);
        let online = Broadcast::Online {
            node: "n1".into(),
            instance: 9,
            user,
        };
        let text = serde_json::to_string(&online).unwrap();
        assert_eq!(serde_json::from_str::<Broadcast>(&text).unwrap(), online);
    }

    #[test]
    fn malformed_deliveries_are_refused() {
        for body in [
            &b"D X a@b.c\r\nFLN a@b.c\r\n"[..],
            b"D P not-a-handle\r\nFLN a@b.c\r\n",
            b"D P a@b.c\r\nFLN a@b.c",
            b"D P a@b.c\r\nNOPE 1 2\r\n",
            b"D P a@b.c\r\nFLN a@b.c\r\nFLN a@b.c\r\n",
            b"D P a@b.c",
            b"D P a@b.c  b@c.d\r\nFLN a@b.c\r\n",
            b"D P\r\nFLN a@b.c\r\n",
            b"{not json",
        ] {
            assert!(decode_direct(body).is_err(), "{body:?}");
        }
    }
}
