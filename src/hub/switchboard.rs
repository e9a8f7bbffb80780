//! How connections and backends reach a switchboard session: its [`SessionHandle`], and the
//! people in it ([`Participant`]). The session itself is a task in `crate::switchboard`; the
//! hub knows where each runs ([`super::Delivery::switchboard`]).

use std::sync::Arc;

use bytes::Bytes;
use msngate_bridge_api::ChatId;
use tokio::sync::{mpsc, oneshot};

use crate::backend::Account;
use crate::connection::Peer;
use crate::protocol::{ErrorCode, FriendlyName, SharedLine, UserHandle};

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
    pub fn peer(&self) -> Option<&Peer> {
        match &self.member {
            Member::Local(peer) => Some(peer),
            Member::Remote(_) => None,
        }
    }
}

pub type Roster = Vec<(UserHandle, FriendlyName)>;

/// What a session's task is asked; only [`SessionHandle`] makes these.
pub enum Request {
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
        line: SharedLine,
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
    /// A handle for a session task reading `requests`'s other end.
    pub fn new(id: u32, requests: mpsc::Sender<Request>) -> SessionHandle {
        SessionHandle { id, requests }
    }

    pub fn id(&self) -> u32 {
        self.id
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
    pub async fn relay(
        &self,
        sender_peer: u64,
        line: SharedLine,
        payload: Bytes,
        wait: bool,
    ) -> bool {
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
