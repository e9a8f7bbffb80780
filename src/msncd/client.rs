//! The MSN client inside the server that an msncd connection drives.
//!
//! It logs in to msngate's own notification server over loopback exactly as MSN Messenger 1.0
//! does (VER, INF, USR MD5 I/S, SYN, CHG), chats through the switchboard (XFR SB + USR + CAL,
//! or ANS to a RNG), and turns what the server says into msncd [`Event`]s. So msncd reaches
//! local and mapped accounts through the same code paths as any MSN client, and the server
//! checks the password.
//!
//! One task reads and writes the notification connection; one task per chat owns its
//! switchboard connection. The msncd connection talks to them through [`MsnClient`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::events::{Event, EventQueue};
use crate::protocol::{
    decode, Dialect, FriendlyName, ListItem, ListKind, ServerCommand, Status, TrId, UserHandle,
};
use crate::store::password::md5_hex;

/// How long the server may take to answer one command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a called contact may take to join a chat.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages that may wait for one chat to open.
const SESSION_QUEUE: usize = 32;

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

/// A reply as a result: an error line (`217 5`) becomes [`ClientError::Msn`].
fn into_result(line: ServerCommand) -> Result<ServerCommand, ClientError> {
    match line {
        ServerCommand::Error { code, .. } => Err(ClientError::Msn { code: code.code() }),
        line => Ok(line),
    }
}

/// A reply that is not an error but not the one the command has either.
fn unexpected(command: &str) -> ClientError {
    ClientError::Failed(format!("unexpected answer to {command}"))
}

/// Frames a server connection with the crate's own decoder.
struct LineReader {
    half: OwnedReadHalf,
    buf: BytesMut,
}

impl LineReader {
    fn new(half: OwnedReadHalf) -> LineReader {
        LineReader {
            half,
            buf: BytesMut::new(),
        }
    }

    /// The next line, `None` at end of stream or when the stream cannot be framed. A line
    /// that is not a server command is skipped.
    async fn next(&mut self) -> Option<ServerCommand> {
        loop {
            match decode(&mut self.buf) {
                Ok(Some(frame)) => match ServerCommand::parse(frame) {
                    Ok(line) => return Some(line),
                    Err(e) => {
                        debug!(error = %e, "unreadable line from the server");
                        continue;
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    debug!(error = %e, "unframeable line from the server");
                    return None;
                }
            }
            self.buf.reserve(4096);
            match self.half.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The reply to `trid`, skipping anything else, within [`REPLY_TIMEOUT`].
    async fn reply(&mut self, trid: u32) -> Result<ServerCommand, ClientError> {
        let wait = async {
            loop {
                let line = self.next().await.ok_or(ClientError::Disconnected)?;
                if line.trid() == Some(TrId(trid)) {
                    return into_result(line);
                }
            }
        };
        tokio::time::timeout(REPLY_TIMEOUT, wait)
            .await
            .map_err(|_| ClientError::Timeout)?
    }
}

async fn send_line(writer: &mut OwnedWriteHalf, line: &str) -> Result<(), ClientError> {
    let bytes = format!("{line}\r\n");
    let write = writer.write_all(bytes.as_bytes());
    match tokio::time::timeout(REPLY_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(ClientError::Disconnected),
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

/// The notification connection's task: writes requests with fresh TrIDs, routes replies,
/// and turns presence, list changes and rings into events.
async fn run_notification(
    link: Arc<Link>,
    mut reader: LineReader,
    mut writer: OwnedWriteHalf,
    mut inbox: mpsc::Receiver<Request>,
    mut trid: u32,
) {
    let mut pending: HashMap<u32, oneshot::Sender<ServerCommand>> = HashMap::new();
    loop {
        tokio::select! {
            _ = link.done.cancelled() => {
                let _ = send_line(&mut writer, "OUT").await;
                break;
            }
            request = inbox.recv() => {
                let Some(request) = request else { break };
                trid += 1;
                let line = if request.args.is_empty() {
                    format!("{} {trid}", request.verb)
                } else {
                    format!("{} {trid} {}", request.verb, request.args)
                };
                if send_line(&mut writer, &line).await.is_err() {
                    break;
                }
                pending.insert(trid, request.reply);
            }
            line = reader.next() => {
                let Some(line) = line else { break };
                if matches!(line, ServerCommand::Out { .. }) {
                    break;
                }
                on_notification_line(&link, line, &mut pending);
            }
        }
    }
    let mut shared = lock(&link.shared);
    shared.connected = false;
    shared.sessions.clear();
    if !link.done.is_cancelled() {
        shared.events.push(Event::ClosedMain);
    }
    drop(shared);
    link.done.cancel();
}

fn on_notification_line(
    link: &Arc<Link>,
    line: ServerCommand,
    pending: &mut HashMap<u32, oneshot::Sender<ServerCommand>>,
) {
    let mut shared = lock(&link.shared);
    match &line {
        ServerCommand::Nln {
            status,
            handle,
            name,
        }
        | ServerCommand::Iln {
            status,
            handle,
            name,
            ..
        } => {
            if let Some(c) = shared.contacts.get_mut(handle) {
                c.status = *status;
                c.name = name.clone();
            }
            shared.events.push(Event::StatusChange {
                handle: handle.clone(),
                status: *status,
            });
            return;
        }
        ServerCommand::Fln { handle } => {
            if let Some(c) = shared.contacts.get_mut(handle) {
                c.status = Status::Offline;
            }
            shared.events.push(Event::StatusChange {
                handle: handle.clone(),
                status: Status::Offline,
            });
            return;
        }
        ServerCommand::Add {
            trid,
            list,
            handle,
            name,
            ..
        } => {
            let h = handle.clone();
            record(&mut shared.contacts, h.clone(), *list, name.clone());
            match list {
                ListKind::Forward => shared.events.push(Event::ForwardAdded(h)),
                ListKind::Reverse if *trid == TrId(0) => shared.events.push(Event::AddedBy(h)),
                _ => {}
            }
        }
        ServerCommand::Rem {
            trid, list, handle, ..
        } => {
            let h = handle.clone();
            if let Some(c) = shared.contacts.get_mut(&h) {
                c.lists.remove(list);
                if c.lists.is_empty() {
                    shared.contacts.remove(&h);
                }
            }
            match list {
                ListKind::Forward => shared.events.push(Event::ForwardRemoved(h)),
                ListKind::Reverse if *trid == TrId(0) => shared.events.push(Event::RemovedBy(h)),
                _ => {}
            }
        }
        ServerCommand::Rea { handle, name, .. } if *handle == link.handle => {
            shared.own_name = name.clone();
        }
        ServerCommand::Rng {
            session_id,
            cookie,
            caller,
            ..
        } => {
            let (sender, receiver) = mpsc::channel(SESSION_QUEUE);
            shared.sessions.insert(caller.clone(), sender.clone());
            let start = Start::Answer {
                session_id: *session_id,
                cookie: cookie.clone(),
                caller: caller.clone(),
            };
            drop(shared);
            link.tracker
                .spawn(run_switchboard(link.clone(), start, sender, receiver));
            return;
        }
        _ => {}
    }
    drop(shared);
    if let Some(reply) = line.trid().and_then(|t| pending.remove(&t.0)) {
        let _ = reply.send(line);
    }
}

/// How a chat begins: we call someone, or we answer a ring.
enum Start {
    Call(UserHandle),
    Answer {
        session_id: u32,
        cookie: String,
        caller: UserHandle,
    },
}

/// One chat with one contact on its own switchboard connection.
async fn run_switchboard(
    link: Arc<Link>,
    start: Start,
    sender: mpsc::Sender<Bytes>,
    mut messages: mpsc::Receiver<Bytes>,
) {
    let peer = match &start {
        Start::Call(h) => h.clone(),
        Start::Answer { caller, .. } => caller.clone(),
    };
    let result = tokio::select! {
        r = switchboard_session(&link, start, &peer, &mut messages) => r,
        _ = link.done.cancelled() => Ok(()),
    };
    let mut shared = lock(&link.shared);
    if shared
        .sessions
        .get(&peer)
        .is_some_and(|s| s.same_channel(&sender))
    {
        shared.sessions.remove(&peer);
    }
    messages.close();
    let mut discarded = 0;
    while messages.try_recv().is_ok() {
        discarded += 1;
    }
    if link.done.is_cancelled() {
        return;
    }
    if let Err(e) = result {
        let text = e.to_string();
        let (code, description) = text.split_once(' ').unwrap_or(("0", &text));
        shared.events.push(Event::Error {
            code: code.parse().unwrap_or(0),
            description: format!("chat with {peer}: {description}"),
        });
    }
    shared.events.push(Event::ClosedUser {
        handle: peer,
        discarded,
    });
}

async fn switchboard_session(
    link: &Arc<Link>,
    start: Start,
    peer: &UserHandle,
    messages: &mut mpsc::Receiver<Bytes>,
) -> Result<(), ClientError> {
    let me = &link.handle;
    // The XFR/RNG address carries the public host, which need not be reachable from here;
    // the switchboard's own bound address always is.
    let cookie_for_call = match &start {
        Start::Call(_) => match link.request("XFR", "SB".into()).await? {
            ServerCommand::XfrSb { cookie, .. } => Some(cookie),
            _ => return Err(unexpected("XFR SB")),
        },
        Start::Answer { .. } => None,
    };
    let connect = TcpStream::connect(link.switchboard);
    let stream = tokio::time::timeout(REPLY_TIMEOUT, connect)
        .await
        .map_err(|_| ClientError::Timeout)?
        .map_err(|_| ClientError::Disconnected)?;
    let (read, mut writer) = stream.into_split();
    let mut reader = LineReader::new(read);
    let mut participants: BTreeSet<UserHandle> = BTreeSet::new();
    match start {
        Start::Call(to) => {
            let cookie = cookie_for_call.unwrap_or_default();
            send_line(&mut writer, &format!("USR 1 {me} {cookie}")).await?;
            reader.reply(1).await?;
            send_line(&mut writer, &format!("CAL 2 {to}")).await?;
            reader.reply(2).await?;
            let join = async {
                loop {
                    let line = reader.next().await.ok_or(ClientError::Disconnected)?;
                    if let ServerCommand::Joi { handle, .. } = line {
                        let joined = handle == to;
                        participants.insert(handle);
                        if joined {
                            return Ok(());
                        }
                    }
                }
            };
            tokio::time::timeout(JOIN_TIMEOUT, join)
                .await
                .map_err(|_| ClientError::Failed(format!("{to} did not answer")))??;
        }
        Start::Answer {
            session_id,
            cookie,
            caller: _,
        } => {
            send_line(&mut writer, &format!("ANS 1 {me} {cookie} {session_id}")).await?;
            let answered = async {
                loop {
                    let line = reader.next().await.ok_or(ClientError::Disconnected)?;
                    if let ServerCommand::Iro { handle, .. } = line {
                        participants.insert(handle);
                    } else if line.trid() == Some(TrId(1)) {
                        return into_result(line).map(|_| ());
                    }
                }
            };
            tokio::time::timeout(REPLY_TIMEOUT, answered)
                .await
                .map_err(|_| ClientError::Timeout)??;
        }
    }

    let mut trid = 2;
    let mut flushed = 0;
    while let Ok(payload) = messages.try_recv() {
        trid += 1;
        send_message(&mut writer, trid, &payload).await?;
        flushed += 1;
    }
    if flushed > 0 {
        link.push(Event::Flushed(peer.clone()));
    }
    loop {
        tokio::select! {
            payload = messages.recv() => {
                let Some(payload) = payload else { return Ok(()) };
                trid += 1;
                send_message(&mut writer, trid, &payload).await?;
            }
            line = reader.next() => {
                let Some(line) = line else { return Ok(()) };
                match line {
                    ServerCommand::Msg { sender, payload, .. } => {
                        if let Ok(from) = sender.parse::<UserHandle>() {
                            if let Some(event) = incoming_message(from, &payload) {
                                link.push(event);
                            }
                        }
                    }
                    ServerCommand::Joi { handle, .. } => {
                        participants.insert(handle);
                    }
                    ServerCommand::Bye { handle } => {
                        participants.remove(&handle);
                        if participants.is_empty() {
                            let _ = send_line(&mut writer, "OUT").await;
                            return Ok(());
                        }
                    }
                    ServerCommand::Nak { .. } => link.push(Event::Error {
                        code: 0,
                        description: format!("a message to {peer} was not delivered"),
                    }),
                    _ => {}
                }
            }
        }
    }
}

async fn send_message(
    writer: &mut OwnedWriteHalf,
    trid: u32,
    payload: &[u8],
) -> Result<(), ClientError> {
    // N: the switchboard answers only when a message could not be delivered (NAK).
    let mut bytes = format!("MSG {trid} N {}\r\n", payload.len()).into_bytes();
    bytes.extend_from_slice(payload);
    match tokio::time::timeout(REPLY_TIMEOUT, writer.write_all(&bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(ClientError::Disconnected),
    }
}

/// The MIME payload msncd sends for a script's lines.
pub fn text_payload(lines: &[String]) -> Vec<u8> {
    let mut payload =
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n".to_vec();
    payload.extend_from_slice(lines.join("\r\n").as_bytes());
    payload
}

/// An incoming MSG as an event: text as `MSG`, typing notifications as `TYPING`, anything
/// else (client capabilities, invitations) not at all.
fn incoming_message(from: UserHandle, payload: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(payload);
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    let blank = lines.iter().position(|l| l.is_empty());
    let headers = &lines[..blank.unwrap_or(lines.len())];
    let content_type = headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "text/plain".into());
    if content_type.starts_with("text/x-msmsgscontrol") {
        return Some(Event::Typing(from));
    }
    if !content_type.starts_with("text/plain") {
        return None;
    }
    let end_of_header = blank.map_or(lines.len(), |b| b + 1);
    Some(Event::Message {
        from,
        lines,
        end_of_header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> UserHandle {
        "bob@example.com".parse().unwrap()
    }

    #[test]
    fn text_messages_keep_their_lines_and_header_end() {
        let payload = text_payload(&["héllo".into(), "".into(), "two".into()]);
        let Some(Event::Message {
            lines,
            end_of_header,
            ..
        }) = incoming_message(bob(), &payload)
        else {
            panic!("not a message");
        };
        assert_eq!(end_of_header, 3);
        assert_eq!(&lines[end_of_header..], ["héllo", "", "two"]);
        assert_eq!(lines[1], "Content-Type: text/plain; charset=UTF-8");
    }

    #[test]
    fn typing_and_other_payloads() {
        let typing = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: bob@example.com\r\n\r\n\r\n";
        assert_eq!(incoming_message(bob(), typing), Some(Event::Typing(bob())));
        let caps =
            b"MIME-Version: 1.0\r\nContent-Type: text/x-clientcaps\r\n\r\nClient-Name: x\r\n";
        assert_eq!(incoming_message(bob(), caps), None);
    }

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
