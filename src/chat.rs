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

use crate::backend::mime;
use crate::backend::Account;
use crate::hub::switchboard::{Member, Participant, Request, Roster, SessionHandle};
use crate::metrics::Direction;
use crate::protocol::{ErrorCode, FriendlyName, ServerCommand, SharedLine, UserHandle};
use crate::services::Services;

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

/// The local backend's name (`crate::local::NAME`, a module of this same layer).
const LOCAL_BACKEND: &str = "local";

fn spawn(
    services: &Arc<Services>,
    participants: Vec<Participant>,
    held: VecDeque<SharedLine>,
) -> SessionHandle {
    let (requests, inbox) = mpsc::channel(INBOX);
    let (id, handle) = loop {
        let candidate = rand::random::<u32>() % 1_000_000_000 + 1;
        let handle = SessionHandle::new(candidate, requests.clone());
        if services.hub.add_switchboard(candidate, handle.clone()) {
            break (candidate, handle);
        }
    };
    for p in &participants {
        if let Member::Remote(r) = &p.member {
            r.bridge.register_chat(r.chat.clone(), id);
        }
    }
    let unanswered_until = participants
        .iter()
        .all(|p| p.peer().is_none())
        .then(|| Instant::now() + Duration::from_secs(services.config.server.cookie_lifetime_secs));
    let session = Session {
        id,
        participants,
        held,
        unanswered_until,
        rooms: Vec::new(),
        services: services.clone(),
    };
    services.metrics.switchboard_sessions_started.inc();
    services.tracker.spawn(session.run(inbox));
    handle
}

/// Starts a session with its first participant, registered in the hub under a fresh id.
pub fn start(services: &Arc<Services>, first: Participant) -> SessionHandle {
    info!(creator = %first.handle, "switchboard session started");
    spawn(services, vec![first], VecDeque::new())
}

/// Starts a session for a message from a remote contact, held until someone joins.
pub fn start_incoming(
    services: &Arc<Services>,
    remote: Participant,
    payload: Bytes,
) -> SessionHandle {
    info!(from = %remote.handle, "switchboard session started by an incoming message");
    let line = msg_line(&remote.handle, &remote.name, payload);
    spawn(services, vec![remote], VecDeque::from([line]))
}

fn msg_line(handle: &UserHandle, name: &FriendlyName, payload: Bytes) -> SharedLine {
    SharedLine::new(ServerCommand::Msg {
        sender: handle.to_string(),
        sender_name: name.to_string(),
        payload,
    })
}

/// What a held message counts for against [`MAX_HELD_BYTES`].
fn held_bytes(line: &SharedLine) -> usize {
    match line.command() {
        ServerCommand::Msg { payload, .. } => payload.len(),
        _ => 0,
    }
}

struct Session {
    id: u32,
    participants: Vec<Participant>,
    /// Messages from remote contacts waiting for a local participant.
    held: VecDeque<SharedLine>,
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
                    bridge.register_chat(chat.clone(), self.id);
                    self.rooms.push((bridge, chat));
                }
                Request::RemoteLeft { handle } => {
                    if let Some(i) = self
                        .participants
                        .iter()
                        .position(|p| p.handle == handle && p.peer().is_none())
                    {
                        let gone = self.participants.remove(i);
                        let bye = SharedLine::new(ServerCommand::Bye {
                            handle: gone.handle,
                        });
                        for peer in self.participants.iter().filter_map(Participant::peer) {
                            peer.send(&bye);
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
        let joined = SharedLine::new(ServerCommand::Joi {
            handle: participant.handle.clone(),
            name: participant.name.clone(),
        });
        for peer in self.participants.iter().filter_map(Participant::peer) {
            peer.send(&joined);
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
                peer.send(&line);
            }
            self.unanswered_until = None;
        }
        self.participants.push(participant);
        Ok(roster)
    }

    fn add_remote(&mut self, participant: Participant) {
        self.announce_join(&participant);
        if let Member::Remote(r) = &participant.member {
            r.bridge.register_chat(r.chat.clone(), self.id);
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
        let bye = SharedLine::new(ServerCommand::Bye {
            handle: gone.handle,
        });
        for peer in self.participants.iter().filter_map(Participant::peer) {
            peer.send(&bye);
        }
    }

    fn relay(
        &mut self,
        sender_peer: u64,
        line: SharedLine,
        payload: Bytes,
        reply: Option<oneshot::Sender<bool>>,
    ) {
        let mut delivered = false;
        let mut failed = false;
        let mut pending = Vec::new();
        let mut parsed = None;
        // The occupants of a room share its chat: the room gets the message once.
        let mut chats_done = std::collections::HashSet::new();
        let mut to_local = false;
        for p in &self.participants {
            match &p.member {
                Member::Local(peer) if peer.id() == sender_peer => {}
                Member::Local(peer) => {
                    if peer.send(&line) {
                        delivered = true;
                        to_local = true;
                    } else {
                        failed = true;
                    }
                }
                Member::Remote(remote) if !chats_done.insert(remote.chat.clone()) => {}
                Member::Remote(remote) => match parsed.get_or_insert_with(|| mime::parse(&payload))
                {
                    mime::Payload::Text(text) => {
                        let message = OutgoingMessage { text: text.clone() };
                        self.services
                            .metrics
                            .message_relayed(remote.bridge.backend, Direction::Out);
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
        if to_local {
            self.services
                .metrics
                .message_relayed(LOCAL_BACKEND, Direction::Out);
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
            any |= peer.send(&line);
        }
        if !any {
            if typing {
                return; // A typing notification is only worth something live.
            }
            self.held.push_back(line);
            let mut bytes: usize = self.held.iter().map(held_bytes).sum();
            while self.held.len() > MAX_HELD || (bytes > MAX_HELD_BYTES && self.held.len() > 1) {
                if let Some(old) = self.held.pop_front() {
                    bytes -= held_bytes(&old);
                    warn!(
                        session = self.id,
                        "too many messages waiting for an answer; the oldest was not delivered"
                    );
                }
            }
        }
    }
}
