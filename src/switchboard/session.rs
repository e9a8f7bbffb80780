//! A switchboard session: one task (an actor) per session that owns the participant list and
//! relays everything in the order it arrives.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use crate::connection::Peer;
use crate::protocol::{ErrorCode, FriendlyName, ServerCommand, UserHandle};
use crate::server::Services;

/// The most people in one session; a CAL or ANS past it gets error 712.
pub const MAX_PARTICIPANTS: usize = 32;
/// Requests that may wait for a session's task before senders wait.
const INBOX: usize = 256;

/// Someone in a session.
#[derive(Debug, Clone)]
pub struct Participant {
    pub handle: UserHandle,
    pub name: FriendlyName,
    pub peer: Peer,
}

enum Request {
    Join {
        participant: Participant,
        reply: oneshot::Sender<Result<Vec<(UserHandle, FriendlyName)>, ErrorCode>>,
    },
    Leave {
        peer_id: u64,
    },
    CanCall {
        callee: UserHandle,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
    },
    Message {
        sender_peer: u64,
        bytes: Bytes,
        reply: Option<oneshot::Sender<bool>>,
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

    /// Starts a session with its first participant, registered in the hub under a fresh id.
    pub fn start(services: &std::sync::Arc<Services>, first: Participant) -> SessionHandle {
        let (requests, inbox) = mpsc::channel(INBOX);
        let id = loop {
            let candidate = rand::random::<u32>() % 1_000_000_000 + 1;
            if services.hub.switchboard(candidate).is_none() {
                break candidate;
            }
        };
        let handle = SessionHandle { id, requests };
        services.hub.add_switchboard(id, handle.clone());
        info!(session = id, creator = %first.handle, "switchboard session started");
        let session = Session {
            id,
            participants: vec![first],
            services: services.clone(),
        };
        services.tracker.spawn(session.run(inbox));
        handle
    }

    /// Joins the session; the answer is everyone already in it.
    pub async fn join(
        &self,
        participant: Participant,
    ) -> Result<Vec<(UserHandle, FriendlyName)>, ErrorCode> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Join { participant, reply })
            .await
            .map_err(|_| ErrorCode::AuthenticationFailed)?;
        answer.await.map_err(|_| ErrorCode::AuthenticationFailed)?
    }

    pub async fn leave(&self, peer_id: u64) {
        let _ = self.requests.send(Request::Leave { peer_id }).await;
    }

    /// Whether `callee` may be rung into the session: not already in it, and room left.
    pub async fn can_call(&self, callee: UserHandle) -> Result<(), ErrorCode> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::CanCall { callee, reply })
            .await
            .map_err(|_| ErrorCode::SwitchboardFailed)?;
        answer.await.map_err(|_| ErrorCode::SwitchboardFailed)?
    }

    /// Relays an encoded MSG to everyone else. With `wait`, the answer says whether every other
    /// participant's connection took it; without, it is `true` once queued for the session.
    pub async fn relay(&self, sender_peer: u64, bytes: Bytes, wait: bool) -> bool {
        let (reply, answer) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if self
            .requests
            .send(Request::Message {
                sender_peer,
                bytes,
                reply,
            })
            .await
            .is_err()
        {
            return false;
        }
        match answer {
            Some(rx) => rx.await.unwrap_or(false),
            None => true,
        }
    }
}

struct Session {
    id: u32,
    participants: Vec<Participant>,
    services: std::sync::Arc<Services>,
}

impl Session {
    async fn run(mut self, mut inbox: mpsc::Receiver<Request>) {
        while let Some(request) = inbox.recv().await {
            match request {
                Request::Join { participant, reply } => {
                    let _ = reply.send(self.join(participant));
                }
                Request::Leave { peer_id } => {
                    self.leave(peer_id);
                    if self.participants.is_empty() {
                        break;
                    }
                }
                Request::CanCall { callee, reply } => {
                    let answer = if self.participants.iter().any(|p| p.handle == callee) {
                        Err(ErrorCode::AlreadyThere)
                    } else if self.participants.len() >= MAX_PARTICIPANTS {
                        Err(ErrorCode::SessionOverload)
                    } else {
                        Ok(())
                    };
                    let _ = reply.send(answer);
                }
                Request::Message {
                    sender_peer,
                    bytes,
                    reply,
                } => {
                    let delivered = self.relay(sender_peer, bytes);
                    if let Some(reply) = reply {
                        let _ = reply.send(delivered);
                    }
                }
            }
        }
        // Close the inbox before leaving the hub so late joiners fail instead of waiting.
        inbox.close();
        self.services.hub.remove_switchboard(self.id);
        info!(session = self.id, "switchboard session ended");
    }

    fn join(
        &mut self,
        participant: Participant,
    ) -> Result<Vec<(UserHandle, FriendlyName)>, ErrorCode> {
        if self
            .participants
            .iter()
            .any(|p| p.handle == participant.handle)
        {
            return Err(ErrorCode::AlreadyThere);
        }
        if self.participants.len() >= MAX_PARTICIPANTS {
            return Err(ErrorCode::SessionOverload);
        }
        let roster = self
            .participants
            .iter()
            .map(|p| (p.handle.clone(), p.name.clone()))
            .collect();
        let joined = ServerCommand::Joi {
            handle: participant.handle.clone(),
            name: participant.name.clone(),
        }
        .to_bytes();
        for p in &self.participants {
            p.peer.send(joined.clone());
        }
        debug!(session = self.id, handle = %participant.handle, "joined");
        self.participants.push(participant);
        Ok(roster)
    }

    fn leave(&mut self, peer_id: u64) {
        let Some(i) = self
            .participants
            .iter()
            .position(|p| p.peer.id() == peer_id)
        else {
            return;
        };
        let gone = self.participants.remove(i);
        debug!(session = self.id, handle = %gone.handle, "left");
        let bye = ServerCommand::Bye {
            handle: gone.handle,
        }
        .to_bytes();
        for p in &self.participants {
            p.peer.send(bye.clone());
        }
    }

    fn relay(&mut self, sender_peer: u64, bytes: Bytes) -> bool {
        let mut delivered = false;
        let mut failed = false;
        for p in self
            .participants
            .iter()
            .filter(|p| p.peer.id() != sender_peer)
        {
            if p.peer.send(bytes.clone()) {
                delivered = true;
            } else {
                failed = true;
            }
        }
        delivered && !failed
    }
}
