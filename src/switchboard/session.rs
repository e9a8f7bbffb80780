//! A switchboard session: one task (an actor) per session that owns the participant list and
//! relays everything in the order it arrives.
//!
//! Participants are local (an MSN client's switchboard connection) or remote (a contact of a
//! bridged user, reached through the user's backend session). A session lives while it has a
//! local participant; one opened by an incoming backend message waits for the rung user to
//! answer, holding the messages, until the ring expires.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use msngate_bridge_api::{ChatId, OutgoingMessage};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::bridge::{mime, Account};
use crate::connection::Peer;
use crate::protocol::{ErrorCode, FriendlyName, ServerCommand, UserHandle};
use crate::server::Services;

/// The most people in one session; a CAL or ANS past it gets error 712.
pub const MAX_PARTICIPANTS: usize = 32;
/// Requests that may wait for a session's task before senders wait.
const INBOX: usize = 256;
/// Messages from remote contacts held while no local participant is there to read them: at
/// most this many, and this many bytes.
const MAX_HELD: usize = 200;
const MAX_HELD_BYTES: usize = 512 * 1024;
/// How long an A- or N-mode message waits for the backends. A backend resolves every message
/// within SEND_DEADLINE, as sent or as never to be sent, and the ACK or NAK follows that
/// answer; the margin only guards against a backend that breaks its deadline (the message
/// then counts as failed, and the log says so).
const BACKEND_SEND_TIMEOUT: Duration =
    Duration::from_secs(msngate_bridge_api::SEND_DEADLINE.as_secs() + 5);

/// A contact of a bridged user, in a session through the user's backend.
#[derive(Debug, Clone)]
pub struct Remote {
    pub chat: ChatId,
    pub bridge: Arc<Account>,
}

/// How a participant is reached.
#[derive(Debug, Clone)]
pub enum Member {
    Local(Peer),
    Remote(Remote),
}

/// Someone in a session.
#[derive(Debug, Clone)]
pub struct Participant {
    pub handle: UserHandle,
    pub name: FriendlyName,
    pub member: Member,
}

impl Participant {
    fn peer(&self) -> Option<&Peer> {
        match &self.member {
            Member::Local(peer) => Some(peer),
            Member::Remote(_) => None,
        }
    }
}

type Roster = Vec<(UserHandle, FriendlyName)>;

enum Request {
    Join {
        participant: Participant,
        reply: oneshot::Sender<Result<Roster, ErrorCode>>,
    },
    Leave {
        peer_id: u64,
    },
    CanCall {
        callee: UserHandle,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
    },
    AddRemote {
        participant: Participant,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
    },
    Message {
        sender_peer: u64,
        line: Bytes,
        payload: Bytes,
        reply: Option<oneshot::Sender<bool>>,
    },
    RemoteLeft {
        handle: UserHandle,
    },
    AttachRoom {
        bridge: Arc<Account>,
        chat: ChatId,
    },
    RemoteMessage {
        handle: UserHandle,
        name: FriendlyName,
        payload: Bytes,
        reply: oneshot::Sender<bool>,
    },
}

/// How connections reach a session's task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    id: u32,
    requests: mpsc::Sender<Request>,
}

impl SessionHandle {
    pub fn id(&self) -> u32 {
        self.id
    }

    fn spawn(
        services: &Arc<Services>,
        participants: Vec<Participant>,
        held: VecDeque<Bytes>,
    ) -> SessionHandle {
        let (requests, inbox) = mpsc::channel(INBOX);
        let id = loop {
            let candidate = rand::random::<u32>() % 1_000_000_000 + 1;
            if services.hub.switchboard(candidate).is_none() {
                break candidate;
            }
        };
        let handle = SessionHandle { id, requests };
        services.hub.add_switchboard(id, handle.clone());
        for p in &participants {
            if let Member::Remote(r) = &p.member {
                r.bridge.register_chat(r.chat.clone(), handle.clone());
            }
        }
        let unanswered_until = participants.iter().all(|p| p.peer().is_none()).then(|| {
            Instant::now() + Duration::from_secs(services.config.server.cookie_lifetime_secs)
        });
        let session = Session {
            id,
            own: handle.clone(),
            participants,
            held,
            unanswered_until,
            rooms: Vec::new(),
            services: services.clone(),
        };
        services.tracker.spawn(session.run(inbox));
        handle
    }

    /// Starts a session with its first participant, registered in the hub under a fresh id.
    pub fn start(services: &Arc<Services>, first: Participant) -> SessionHandle {
        info!(creator = %first.handle, "switchboard session started");
        Self::spawn(services, vec![first], VecDeque::new())
    }

    /// Starts a session for a message from a remote contact, held until someone joins.
    pub fn start_incoming(
        services: &Arc<Services>,
        remote: Participant,
        payload: Bytes,
    ) -> SessionHandle {
        info!(from = %remote.handle, "switchboard session started by an incoming message");
        let line = msg_line(&remote.handle, &remote.name, payload);
        Self::spawn(services, vec![remote], VecDeque::from([line]))
    }

    /// Sends a request that carries a reply channel, and waits for the answer; `None` when
    /// the session is gone.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(make(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Joins the session; the answer is everyone already in it.
    pub async fn join(&self, participant: Participant) -> Result<Roster, ErrorCode> {
        let answer = self.ask(|reply| Request::Join { participant, reply }).await;
        answer.unwrap_or(Err(ErrorCode::AuthenticationFailed))
    }

    pub async fn leave(&self, peer_id: u64) {
        let _ = self.requests.send(Request::Leave { peer_id }).await;
    }

    /// Whether `callee` may be rung into the session: not already in it, and room left.
    pub async fn can_call(&self, callee: UserHandle) -> Result<(), ErrorCode> {
        let answer = self.ask(|reply| Request::CanCall { callee, reply }).await;
        answer.unwrap_or(Err(ErrorCode::SwitchboardFailed))
    }

    /// Attaches a group chat: its occupants join as they are reported, and it is left when the
    /// session ends.
    pub async fn attach_room(&self, bridge: Arc<Account>, chat: ChatId) -> Result<(), ErrorCode> {
        self.requests
            .send(Request::AttachRoom { bridge, chat })
            .await
            .map_err(|_| ErrorCode::SwitchboardFailed)
    }

    /// Brings a remote contact in at once (it has no client that must answer a ring).
    pub async fn add_remote(&self, participant: Participant) -> Result<(), ErrorCode> {
        let answer = self
            .ask(|reply| Request::AddRemote { participant, reply })
            .await;
        answer.unwrap_or(Err(ErrorCode::SwitchboardFailed))
    }

    /// Relays a MSG from a local participant. With `wait`, the answer says whether every other
    /// participant took it (a remote one: its backend accepted it); without, it is `true` once
    /// queued for the session.
    pub async fn relay(&self, sender_peer: u64, line: Bytes, payload: Bytes, wait: bool) -> bool {
        if wait {
            let answer = self
                .ask(|reply| Request::Message {
                    sender_peer,
                    line,
                    payload,
                    reply: Some(reply),
                })
                .await;
            return answer.unwrap_or(false);
        }
        let request = Request::Message {
            sender_peer,
            line,
            payload,
            reply: None,
        };
        self.requests.send(request).await.is_ok()
    }

    /// A remote participant (a group chat occupant) left.
    pub async fn remote_left(&self, handle: UserHandle) {
        let _ = self.requests.send(Request::RemoteLeft { handle }).await;
    }

    /// Passes on a message or typing notification from a remote contact; `false` when the
    /// session is gone.
    pub async fn remote_message(
        &self,
        handle: UserHandle,
        name: FriendlyName,
        payload: Bytes,
    ) -> bool {
        let answer = self
            .ask(|reply| Request::RemoteMessage {
                handle,
                name,
                payload,
                reply,
            })
            .await;
        answer.unwrap_or(false)
    }
}

fn msg_line(handle: &UserHandle, name: &FriendlyName, payload: Bytes) -> Bytes {
    ServerCommand::Msg {
        sender: handle.to_string(),
        sender_name: name.to_string(),
        payload,
    }
    .to_bytes()
}

struct Session {
    id: u32,
    /// This session's own handle, for registering it with a bridged user's chats.
    own: SessionHandle,
    participants: Vec<Participant>,
    /// Messages from remote contacts waiting for a local participant.
    held: VecDeque<Bytes>,
    /// For a session nobody local has joined yet: when to give up on the ring.
    unanswered_until: Option<Instant>,
    /// Group chats this session opened; their occupants are the remote participants.
    rooms: Vec<(Arc<Account>, ChatId)>,
    services: Arc<Services>,
}

impl Session {
    fn has_local(&self) -> bool {
        self.participants.iter().any(|p| p.peer().is_some())
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Request>) {
        loop {
            let expiry = async {
                match self.unanswered_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let request = tokio::select! {
                r = inbox.recv() => r,
                _ = expiry => {
                    warn!(session = self.id, held = self.held.len(), "nobody answered the ring; messages not delivered");
                    break;
                }
            };
            let Some(request) = request else { break };
            match request {
                Request::Join { participant, reply } => {
                    let _ = reply.send(self.join(participant));
                }
                Request::Leave { peer_id } => {
                    self.leave(peer_id);
                    if !self.has_local() && self.unanswered_until.is_none() {
                        break;
                    }
                }
                Request::CanCall { callee, reply } => {
                    let _ = reply.send(self.can_add(&callee));
                }
                Request::AddRemote { participant, reply } => {
                    let answer = self.can_add(&participant.handle);
                    if answer.is_ok() {
                        self.add_remote(participant);
                    }
                    let _ = reply.send(answer);
                }
                Request::AttachRoom { bridge, chat } => {
                    bridge.register_chat(chat.clone(), self.own.clone());
                    self.rooms.push((bridge, chat));
                }
                Request::RemoteLeft { handle } => {
                    if let Some(i) = self
                        .participants
                        .iter()
                        .position(|p| p.handle == handle && p.peer().is_none())
                    {
                        let gone = self.participants.remove(i);
                        let bye = ServerCommand::Bye {
                            handle: gone.handle,
                        }
                        .to_bytes();
                        for peer in self.participants.iter().filter_map(Participant::peer) {
                            peer.send(bye.clone());
                        }
                    }
                }
                Request::Message {
                    sender_peer,
                    line,
                    payload,
                    reply,
                } => {
                    self.relay(sender_peer, line, payload, reply);
                }
                Request::RemoteMessage {
                    handle,
                    name,
                    payload,
                    reply,
                } => {
                    let in_session = self
                        .participants
                        .iter()
                        .any(|p| p.handle == handle && p.peer().is_none());
                    if in_session {
                        self.remote_message(&handle, &name, payload);
                    }
                    let _ = reply.send(in_session);
                }
            }
        }
        // Close the inbox before leaving the hub so late joiners fail instead of waiting.
        inbox.close();
        self.services.hub.remove_switchboard(self.id);
        let mut left = std::collections::HashSet::new();
        for p in &self.participants {
            if let Member::Remote(r) = &p.member {
                if left.insert(r.chat.clone()) {
                    r.bridge.unregister_chat(&r.chat, self.id);
                    let (bridge, chat) = (r.bridge.clone(), r.chat.clone());
                    tokio::spawn(async move { bridge.session.leave_chat(&chat).await });
                }
            }
        }
        for (bridge, chat) in self.rooms.drain(..) {
            if left.insert(chat.clone()) {
                bridge.unregister_chat(&chat, self.id);
                tokio::spawn(async move { bridge.session.leave_chat(&chat).await });
            }
        }
        info!(session = self.id, "switchboard session ended");
    }

    fn can_add(&self, handle: &UserHandle) -> Result<(), ErrorCode> {
        if self.participants.iter().any(|p| &p.handle == handle) {
            Err(ErrorCode::AlreadyThere)
        } else if self.participants.len() >= MAX_PARTICIPANTS {
            Err(ErrorCode::SessionOverload)
        } else {
            Ok(())
        }
    }

    fn announce_join(&self, participant: &Participant) {
        let joined = ServerCommand::Joi {
            handle: participant.handle.clone(),
            name: participant.name.clone(),
        }
        .to_bytes();
        for peer in self.participants.iter().filter_map(Participant::peer) {
            peer.send(joined.clone());
        }
    }

    fn join(&mut self, participant: Participant) -> Result<Roster, ErrorCode> {
        self.can_add(&participant.handle)?;
        let roster = self
            .participants
            .iter()
            .map(|p| (p.handle.clone(), p.name.clone()))
            .collect();
        self.announce_join(&participant);
        debug!(session = self.id, handle = %participant.handle, "joined");
        if let Some(peer) = participant.peer() {
            // Held messages follow the IRO lines and ANS OK, which the joiner's connection
            // writes before anything queued for it.
            for line in self.held.drain(..) {
                peer.send(line);
            }
            self.unanswered_until = None;
        }
        self.participants.push(participant);
        Ok(roster)
    }

    fn add_remote(&mut self, participant: Participant) {
        self.announce_join(&participant);
        if let Member::Remote(r) = &participant.member {
            r.bridge.register_chat(r.chat.clone(), self.own.clone());
        }
        debug!(session = self.id, handle = %participant.handle, "remote contact joined");
        self.participants.push(participant);
    }

    fn leave(&mut self, peer_id: u64) {
        let Some(i) = self
            .participants
            .iter()
            .position(|p| p.peer().is_some_and(|peer| peer.id() == peer_id))
        else {
            return;
        };
        let gone = self.participants.remove(i);
        debug!(session = self.id, handle = %gone.handle, "left");
        let bye = ServerCommand::Bye {
            handle: gone.handle,
        }
        .to_bytes();
        for peer in self.participants.iter().filter_map(Participant::peer) {
            peer.send(bye.clone());
        }
    }

    fn relay(
        &mut self,
        sender_peer: u64,
        line: Bytes,
        payload: Bytes,
        reply: Option<oneshot::Sender<bool>>,
    ) {
        let mut delivered = false;
        let mut failed = false;
        let mut pending = Vec::new();
        let mut parsed = None;
        // The occupants of a room share its chat: the room gets the message once.
        let mut chats_done = std::collections::HashSet::new();
        for p in &self.participants {
            match &p.member {
                Member::Local(peer) if peer.id() == sender_peer => {}
                Member::Local(peer) => {
                    if peer.send(line.clone()) {
                        delivered = true;
                    } else {
                        failed = true;
                    }
                }
                Member::Remote(remote) if !chats_done.insert(remote.chat.clone()) => {}
                Member::Remote(remote) => match parsed.get_or_insert_with(|| mime::parse(&payload))
                {
                    mime::Payload::Text(text) => {
                        let message = OutgoingMessage { text: text.clone() };
                        // Queued now, in order; the answer comes when the backend has it.
                        pending.push(remote.bridge.session.send_message(&remote.chat, &message));
                    }
                    mime::Payload::Typing => {
                        let (bridge, chat) = (remote.bridge.clone(), remote.chat.clone());
                        tokio::spawn(async move { bridge.session.send_typing(&chat).await });
                        delivered = true;
                    }
                    mime::Payload::Other(kind) => {
                        debug!(session = self.id, %kind, "a message type the backend can't carry");
                        failed = true;
                    }
                },
            }
        }
        let Some(reply) = reply else { return };
        if pending.is_empty() {
            let _ = reply.send(delivered && !failed);
            return;
        }
        tokio::spawn(async move {
            let mut ok = !failed;
            for send in pending {
                ok &= match tokio::time::timeout(BACKEND_SEND_TIMEOUT, send).await {
                    Ok(result) => result.is_ok(),
                    Err(_) => {
                        warn!("a backend did not answer for a message within its deadline");
                        false
                    }
                };
            }
            let _ = reply.send(ok);
        });
    }

    fn remote_message(&mut self, handle: &UserHandle, name: &FriendlyName, payload: Bytes) {
        let typing = mime::parse(&payload) == mime::Payload::Typing;
        let line = msg_line(handle, name, payload);
        let mut any = false;
        for peer in self.participants.iter().filter_map(Participant::peer) {
            any |= peer.send(line.clone());
        }
        if !any {
            if typing {
                return; // A typing notification is only worth something live.
            }
            self.held.push_back(line);
            let mut bytes: usize = self.held.iter().map(Bytes::len).sum();
            while self.held.len() > MAX_HELD || (bytes > MAX_HELD_BYTES && self.held.len() > 1) {
                if let Some(old) = self.held.pop_front() {
                    bytes -= old.len();
                    warn!(
                        session = self.id,
                        "too many messages waiting for an answer; the oldest was not delivered"
                    );
                }
            }
        }
    }
}
