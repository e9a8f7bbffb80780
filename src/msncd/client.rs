//! The MSN client inside the server that an msncd connection drives.
//!
//! It logs in to msngate's own notification server over loopback exactly as MSN Messenger 1.0
//! does (VER, INF, USR MD5 I/S, SYN, CHG), chats through the switchboard (XFR SB + USR + CAL,
//! or ANS to a RNG), and turns what the server says into msncd [`Event`]s. So msncd reaches
//! local and mapped accounts through the same code paths as any MSN client, and the server
//! checks the password.
//!
//! One task reads and writes the notification connection (`notification.rs`); one task per
//! chat owns its switchboard connection (`switchboard.rs`). The msncd connection talks to them
//! through [`MsnClient`]. `wire.rs` reads and writes lines, `message.rs` is the MSG payloads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::{Event, EventQueue};
use crate::protocol::{
    Dialect, FriendlyName, ListItem, ListKind, ServerCommand, Status, UserHandle,
};
use crate::store::password::md5_hex;
use notification::run_notification;
use switchboard::{run_switchboard, Start};
use wire::{into_result, send_line, unexpected, LineReader};

/// How long the server may take to answer one command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a called contact may take to join a chat.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages that may wait for one chat to open.
const SESSION_QUEUE: usize = 32;

mod message;
mod notification;
mod switchboard;
mod wire;

pub use message::text_payload;

/// What the script can know about one contact.
#[derive(Debug, Clone)]
pub struct Contact {
    pub name: FriendlyName,
    pub lists: BTreeSet<ListKind>,
    pub status: Status,
}

/// State shared by the msncd connection and the client's tasks. Locked only briefly, never
/// across an `.await`.
#[derive(Debug)]
pub struct Shared {
    pub events: EventQueue,
    pub contacts: BTreeMap<UserHandle, Contact>,
    pub own_name: FriendlyName,
    pub own_status: Status,
    /// Whether the notification connection is up.
    pub connected: bool,
    sessions: HashMap<UserHandle, mpsc::Sender<Bytes>>,
}

/// Locks `shared`; a panic elsewhere while it was held leaves plain data, still usable.
pub fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a command could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("{code} {}", describe(*code))]
    Msn { code: u16 },
    #[error("0 not connected to the server")]
    Disconnected,
    #[error("0 the server did not answer in time")]
    Timeout,
    #[error("0 {0}")]
    Failed(String),
}

/// What an MSN error code means, for scripts.
pub fn describe(code: u16) -> &'static str {
    match code {
        200 => "syntax error",
        201 => "invalid parameter",
        205 => "no such user",
        208 => "invalid e-mail address",
        209 => "invalid nick",
        210 => "contact list full",
        215 => "already on the list",
        216 => "not on the list",
        217 => "contact is not online",
        218 => "already in that mode",
        219 => "on the opposite list (allow/block)",
        280 | 281 => "chat could not be opened",
        302 => "not logged in",
        500 | 501 => "server error",
        600 | 601 | 604 => "server busy or going down",
        712..=715 => "too many sessions or requests",
        911 => "authentication failed (wrong e-mail or password)",
        913 => "not allowed while offline",
        _ => "MSN error",
    }
}

/// A command for the notification task: `verb TrID args`, and where its reply goes.
struct Request {
    verb: &'static str,
    args: String,
    reply: oneshot::Sender<ServerCommand>,
}

/// What the client's tasks share.
struct Link {
    handle: UserHandle,
    switchboard: SocketAddr,
    requests: mpsc::Sender<Request>,
    shared: Arc<Mutex<Shared>>,
    /// Cancelled at LOGOFF or when the notification connection is gone: every task ends.
    done: CancellationToken,
    tracker: TaskTracker,
}

impl Link {
    async fn request(
        &self,
        verb: &'static str,
        args: String,
    ) -> Result<ServerCommand, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { verb, args, reply })
            .await
            .map_err(|_| ClientError::Disconnected)?;
        match tokio::time::timeout(REPLY_TIMEOUT, answer).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(_)) => Err(ClientError::Disconnected),
            Ok(Ok(line)) => into_result(line),
        }
    }

    fn push(&self, event: Event) {
        lock(&self.shared).events.push(event);
    }
}

/// A logged-in MSN client. Dropping it without [`MsnClient::logoff`] also logs off.
pub struct MsnClient {
    link: Arc<Link>,
}

impl Drop for MsnClient {
    fn drop(&mut self) {
        self.link.done.cancel();
    }
}

/// Where the internal client connects: the addresses the server actually bound.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub notification: SocketAddr,
    pub switchboard: SocketAddr,
}

impl MsnClient {
    /// Logs in, synchronizes the lists, and comes online as HDN (invisible: presence of
    /// contacts flows, but others see the script offline until its first STATUS).
    pub async fn login(
        addresses: Addresses,
        handle: UserHandle,
        password: &str,
        max_events: usize,
        tracker: TaskTracker,
    ) -> Result<MsnClient, ClientError> {
        let connect = TcpStream::connect(addresses.notification);
        let stream = tokio::time::timeout(REPLY_TIMEOUT, connect)
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|e| ClientError::Failed(format!("cannot reach the server: {e}")))?;
        // A command written before the last one was acknowledged must not wait for the
        // server's delayed ACK (Nagle's algorithm).
        let _ = stream.set_nodelay(true);
        let (read, mut writer) = stream.into_split();
        let mut reader = LineReader::new(read);

        send_line(&mut writer, "VER 1 MSNP2 CVR0").await?;
        let ver = reader.reply(1).await?;
        if !matches!(
            ver,
            ServerCommand::Ver {
                dialect: Some(Dialect::Msnp2),
                ..
            }
        ) {
            return Err(ClientError::Failed("the server refused MSNP2".into()));
        }
        send_line(&mut writer, "INF 2").await?;
        reader.reply(2).await?;
        send_line(&mut writer, &format!("USR 3 MD5 I {handle}")).await?;
        let ServerCommand::UsrChallenge { challenge, .. } = reader.reply(3).await? else {
            return Err(unexpected("USR MD5 I"));
        };
        let response = md5_hex(&format!("{challenge}{password}"));
        send_line(&mut writer, &format!("USR 4 MD5 S {response}")).await?;
        let ok = reader.reply(4).await?;
        let own_name = match ok {
            ServerCommand::UsrOk { name, .. } => name,
            _ => FriendlyName::from_handle(&handle),
        };

        send_line(&mut writer, "SYN 5 0").await?;
        let mut contacts: BTreeMap<UserHandle, Contact> = BTreeMap::new();
        let syn = reader.reply(5).await?;
        if !matches!(syn, ServerCommand::Syn { serial: 0, .. }) {
            loop {
                let ServerCommand::Lst { list, item, .. } = reader.reply(5).await? else {
                    continue;
                };
                // An empty list is `LST ... 0 0`: its last line too.
                let last = match item {
                    None => true,
                    Some(ListItem {
                        index,
                        total,
                        handle,
                        name,
                        ..
                    }) => {
                        record(&mut contacts, handle, list, name);
                        index == total
                    }
                };
                if list == ListKind::Reverse && last {
                    break;
                }
            }
        }

        let shared = Arc::new(Mutex::new(Shared {
            events: EventQueue::new(max_events),
            contacts,
            own_name,
            own_status: Status::Hidden,
            connected: true,
            sessions: HashMap::new(),
        }));
        let (requests, inbox) = mpsc::channel(16);
        let link = Arc::new(Link {
            handle,
            switchboard: addresses.switchboard,
            requests,
            shared,
            done: CancellationToken::new(),
            tracker: tracker.clone(),
        });
        tracker.spawn(run_notification(link.clone(), reader, writer, inbox, 5));
        let client = MsnClient { link };
        client.set_status(Status::Hidden).await?;
        Ok(client)
    }

    pub fn handle(&self) -> &UserHandle {
        &self.link.handle
    }

    pub fn shared(&self) -> &Arc<Mutex<Shared>> {
        &self.link.shared
    }

    pub fn is_connected(&self) -> bool {
        lock(&self.link.shared).connected
    }

    pub async fn set_status(&self, status: Status) -> Result<(), ClientError> {
        self.link.request("CHG", status.to_string()).await?;
        lock(&self.link.shared).own_status = status;
        Ok(())
    }

    pub async fn set_name(&self, name: &FriendlyName) -> Result<(), ClientError> {
        let args = format!("{} {name}", self.link.handle);
        self.link.request("REA", args).await?;
        lock(&self.link.shared).own_name = name.clone();
        Ok(())
    }

    /// Adds a contact to the forward list and allows it (as msnlib did): the allow-list step
    /// may fail harmlessly (already there, or blocked) and is not reported.
    pub async fn add(&self, handle: &UserHandle, name: &FriendlyName) -> Result<(), ClientError> {
        self.link
            .request("ADD", format!("FL {handle} {name}"))
            .await?;
        let _ = self
            .link
            .request("ADD", format!("AL {handle} {name}"))
            .await;
        Ok(())
    }

    pub async fn remove(&self, handle: &UserHandle) -> Result<(), ClientError> {
        self.link.request("REM", format!("FL {handle}")).await?;
        Ok(())
    }

    /// `PRIV public auth`: public lets everyone not blocked see us and talk (BLP AL) rather
    /// than only the allow list (BLP BL); auth asks before someone adds us (GTC A).
    pub async fn privacy(&self, public: bool, auth: bool) -> Result<(), ClientError> {
        let already = |r: Result<ServerCommand, ClientError>| match r {
            Err(ClientError::Msn { code: 218 }) => Ok(()),
            other => other.map(|_| ()),
        };
        already(
            self.link
                .request("BLP", if public { "AL" } else { "BL" }.into())
                .await,
        )?;
        already(
            self.link
                .request("GTC", if auth { "A" } else { "N" }.into())
                .await,
        )
    }

    /// Sends a MIME payload to `to`: at once on an open chat, or after the chat being opened
    /// is joined (then `MFLUSH`); a chat that cannot be opened ends with `SCLOSE USER`.
    pub fn send_message(&self, to: &UserHandle, payload: Bytes) -> Result<(), ClientError> {
        let link = &self.link;
        let mut shared = lock(&link.shared);
        if !shared.connected {
            return Err(ClientError::Disconnected);
        }
        let mut payload = payload;
        if let Some(session) = shared.sessions.get(to) {
            match session.try_send(payload) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(ClientError::Failed(format!(
                        "{SESSION_QUEUE} messages to {to} are already waiting"
                    )))
                }
                Err(mpsc::error::TrySendError::Closed(p)) => payload = p,
            }
        }
        let (sender, receiver) = mpsc::channel(SESSION_QUEUE);
        // A new channel has room.
        let _ = sender.try_send(payload);
        shared.sessions.insert(to.clone(), sender.clone());
        drop(shared);
        link.tracker.spawn(run_switchboard(
            link.clone(),
            Start::Call(to.clone()),
            sender,
            receiver,
        ));
        Ok(())
    }

    /// Logs off (OUT) and closes every chat.
    pub fn logoff(self) {
        self.link.done.cancel();
    }
}

fn record(
    contacts: &mut BTreeMap<UserHandle, Contact>,
    handle: UserHandle,
    list: ListKind,
    name: FriendlyName,
) {
    let contact = contacts.entry(handle).or_insert_with(|| Contact {
        name: name.clone(),
        lists: BTreeSet::new(),
        status: Status::Offline,
    });
    contact.name = name;
    contact.lists.insert(list);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_code_and_description() {
        assert_eq!(
            ClientError::Msn { code: 911 }.to_string(),
            "911 authentication failed (wrong e-mail or password)"
        );
        assert_eq!(
            ClientError::Disconnected.to_string(),
            "0 not connected to the server"
        );
    }
}
