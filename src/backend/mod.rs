//! The core's side of the backend interface (bridges/api): a login's backend session
//! ([`Account`]), the object-safe backend traits ([`registry`]), the bounds the core keeps on
//! every backend call, and the conversions between the interface's types and MSN's.
//!
//! Nothing here knows which backends exist (that is `crate::server`) or how lists and events
//! are handled for each kind of backend (`crate::local`, `crate::bridge`).

pub mod errors;
pub mod implied;
pub mod mime;
pub mod registry;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use msngate_bridge_api::{
    BackendError, Capabilities, ChatId, ConnectionState, Contact, List, PresenceState,
};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::protocol::{ErrorCode, FriendlyName, ListKind, Status, UserHandle};
use crate::store::GroupChange;
pub use errors::error_code;
use registry::Session;

/// How long an action on the backend (a list change) may take before the client gets an error.
pub const ACTION_TIMEOUT: Duration = msngate_bridge_api::ACTION_BOUND;
/// How long a CHG waits for the backend to take the new state (it only queues it).
const PRESENCE_WAIT: Duration = Duration::from_secs(1);
/// How long a list command waits for the event pump to catch up (see [`Account::caught_up`]).
const CATCH_UP: Duration = Duration::from_secs(2);

/// A logged-in user's backend session, whatever the backend.
pub struct Account {
    pub handle: UserHandle,
    pub session: Box<dyn Session>,
    /// The backend's name, for logs.
    pub backend: &'static str,
    pub capabilities: Capabilities,
    /// Cancelled when the login ends: the event pump stops, and with it its hold on the
    /// backend session. Made by whichever comes first, the pump or the end (`Account::ended`):
    /// a local account has no pump, and its idle session holds no token (docs/PERFORMANCE.md).
    ended: OnceLock<CancellationToken>,
    /// What an account whose contacts live on another network keeps: made at its first use,
    /// so that a local account, which never uses most of it, does not carry it (about 300
    /// bytes of every idle session, docs/PERFORMANCE.md).
    mirror: OnceLock<Box<Mirror>>,
    /// The backend connection's state as its last event said (an index of `STATES`).
    connection: AtomicU8,
}

/// The contacts' side of a bridged account, as its backend's events tell it.
#[derive(Default)]
pub struct Mirror {
    /// Contacts' states as the backend reports them; absent means offline.
    presence: Mutex<HashMap<UserHandle, (Status, FriendlyName)>>,
    /// Open switchboard sessions (their ids) by backend chat, to route incoming messages.
    chats: Mutex<HashMap<ChatId, u32>>,
    /// Contacts that are group chats.
    groups: Mutex<HashSet<UserHandle>>,
    /// List changes the backend made while doing what the client asked.
    pub implied: implied::Implied,
    /// Contacts whose groups the client is changing through the backend, with the group
    /// changes the backend reported meanwhile: the event pump holds them here, and the
    /// client's command answers with them (so it does not see its own change twice).
    group_edits: Mutex<HashMap<UserHandle, Vec<GroupChange>>>,
    /// List commands waiting for the event pump to apply what the backend sent before it
    /// answered them (see [`Account::caught_up`]), and the pump's bell.
    catch_up: Mutex<Vec<oneshot::Sender<()>>>,
    catch_up_asked: Notify,
}

impl Mirror {
    /// Contacts' states as the backend reports them; absent means offline.
    pub fn presence(&self) -> MutexGuard<'_, HashMap<UserHandle, (Status, FriendlyName)>> {
        lock(&self.presence)
    }

    /// Contacts whose groups the client is changing, with the changes held for the answer.
    pub fn group_edits(&self) -> MutexGuard<'_, HashMap<UserHandle, Vec<GroupChange>>> {
        lock(&self.group_edits)
    }

    /// For the event pump: rung when a command waits in [`backend_change`].
    pub async fn catch_up_asked(&self) {
        self.catch_up_asked.notified().await
    }

    /// For the event pump: the commands waiting in [`backend_change`] since it last looked.
    pub fn take_catch_up(&self) -> Vec<oneshot::Sender<()>> {
        std::mem::take(&mut *lock(&self.catch_up))
    }
}

/// The names of the backend connection states, as `/health`, `/metrics` and the page show them.
const STATES: [&str; 4] = [
    "connected",
    "connecting",
    "transient_disconnect",
    "bad_credentials",
];

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// The session of a login that `backend` (its name) has just made.
    pub fn new(
        handle: UserHandle,
        session: Box<dyn Session>,
        backend: &'static str,
        capabilities: Capabilities,
    ) -> Account {
        Account {
            handle,
            session,
            backend,
            capabilities,
            ended: OnceLock::new(),
            mirror: OnceLock::new(),
            connection: AtomicU8::new(0),
        }
    }

    /// Cancelled when the login ends (see the field).
    pub fn ended(&self) -> &CancellationToken {
        self.ended.get_or_init(CancellationToken::new)
    }

    /// Waits until the event pump has applied every event the backend sent before now (see
    /// [`backend_change`]). Bounded by [`CATCH_UP`]; past it, or with no pump, the command
    /// goes on (the backend's next report is then the last word).
    async fn caught_up(&self) {
        let (told, heard) = oneshot::channel();
        let mirror = self.mirror();
        lock(&mirror.catch_up).push(told);
        mirror.catch_up_asked.notify_one();
        tokio::select! {
            _ = heard => {}
            _ = self.ended().cancelled() => {}
            _ = tokio::time::sleep(CATCH_UP) => {
                warn!(handle = %self.handle, backend = self.backend, "the backend's earlier events are still being applied; the list command goes on");
            }
        }
    }

    /// The contacts' side of the account, made now if this is its first use.
    pub fn mirror(&self) -> &Mirror {
        self.mirror.get_or_init(Box::default)
    }

    /// The contacts' side if anything made it yet: what reads find in an account without one
    /// is nothing.
    fn existing_mirror(&self) -> Option<&Mirror> {
        self.mirror.get().map(|m| &**m)
    }

    /// The backend connection's state: `connected` from the logon (which succeeded), then as
    /// the backend's events say.
    pub fn connection_state(&self) -> &'static str {
        STATES
            .get(usize::from(self.connection.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(STATES[0])
    }

    pub fn set_connection_state(&self, state: &ConnectionState) {
        let index = match state {
            ConnectionState::Connected => 0,
            ConnectionState::Connecting => 1,
            ConnectionState::TransientDisconnect { .. } => 2,
            ConnectionState::BadCredentials => 3,
        };
        self.connection.store(index, Ordering::Relaxed);
    }

    /// A contact's state if it is visible (not offline).
    pub fn contact_state(&self, contact: &UserHandle) -> Option<(Status, FriendlyName)> {
        self.existing_mirror()?.presence().get(contact).cloned()
    }

    pub fn register_chat(&self, chat: ChatId, session_id: u32) {
        lock(&self.mirror().chats).insert(chat, session_id);
    }

    /// Forgets a chat's session, if it is still that one.
    pub fn unregister_chat(&self, chat: &ChatId, session_id: u32) {
        let Some(mirror) = self.existing_mirror() else {
            return;
        };
        let mut chats = lock(&mirror.chats);
        if chats.get(chat) == Some(&session_id) {
            chats.remove(chat);
        }
    }

    /// Whether a contact is a group chat.
    pub fn is_group(&self, contact: &UserHandle) -> bool {
        self.existing_mirror()
            .is_some_and(|m| lock(&m.groups).contains(contact))
    }

    pub fn note_kind(&self, contact: &Contact) {
        if let Ok(handle) = contact.handle.parse::<UserHandle>() {
            let mut groups = lock(&self.mirror().groups);
            if contact.kind == msngate_bridge_api::ContactKind::Group {
                groups.insert(handle);
            } else {
                groups.remove(&handle);
            }
        }
    }

    /// The id of the switchboard session a chat is open in, if any.
    pub fn chat_session(&self, chat: &ChatId) -> Option<u32> {
        lock(&self.existing_mirror()?.chats).get(chat).copied()
    }

    /// Whether a switchboard session has a chat of this account in it.
    pub fn in_session(&self, session_id: u32) -> bool {
        self.existing_mirror()
            .is_some_and(|m| lock(&m.chats).values().any(|id| *id == session_id))
    }
}

/// A mutex's guard, also after a panic elsewhere poisoned it (the maps stay usable).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn to_presence(status: Status) -> PresenceState {
    match status {
        Status::Online => PresenceState::Online,
        Status::Busy => PresenceState::Busy,
        Status::Idle => PresenceState::Idle,
        Status::BeRightBack => PresenceState::BeRightBack,
        Status::Away => PresenceState::Away,
        Status::OnThePhone => PresenceState::OnThePhone,
        Status::OutToLunch => PresenceState::OutToLunch,
        Status::Hidden => PresenceState::Hidden,
        Status::Offline => PresenceState::Offline,
    }
}

pub fn from_presence(state: PresenceState) -> Status {
    match state {
        PresenceState::Online => Status::Online,
        PresenceState::Busy => Status::Busy,
        PresenceState::Idle => Status::Idle,
        PresenceState::BeRightBack => Status::BeRightBack,
        PresenceState::Away => Status::Away,
        PresenceState::OnThePhone => Status::OnThePhone,
        PresenceState::OutToLunch => Status::OutToLunch,
        PresenceState::Hidden | PresenceState::Offline => Status::Offline,
    }
}

pub fn to_list(kind: ListKind) -> List {
    match kind {
        ListKind::Forward => List::Forward,
        ListKind::Allow => List::Allow,
        ListKind::Block => List::Block,
        ListKind::Reverse => List::Reverse,
    }
}

pub fn from_list(list: List) -> ListKind {
    match list {
        List::Forward => ListKind::Forward,
        List::Allow => ListKind::Allow,
        List::Block => ListKind::Block,
        List::Reverse => ListKind::Reverse,
    }
}

/// Waits for a backend action, within [`ACTION_TIMEOUT`]: past it the client is answered
/// `601`, and whatever the backend still does shows up later as its events.
pub async fn backend_action<T>(
    action: impl std::future::Future<Output = Result<T, BackendError>>,
) -> Result<T, ErrorCode> {
    match tokio::time::timeout(ACTION_TIMEOUT, action).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error_code(&e)),
        Err(_) => Err(ErrorCode::ServerUnavailable),
    }
}

/// A change to the user's lists or groups on the backend, within [`ACTION_TIMEOUT`] as any
/// [`backend_action`], then [`Account::caught_up`]: the command writes its change to the store
/// only after the event pump applied every event the backend sent before answering. An older
/// report still on its way (the contact as it was before the command) would otherwise be
/// applied after that write and undo it until the backend's next report: XMPP's roster pushes
/// of an `ADD FL` race an `ADD AL` sent at once.
pub async fn backend_change(
    account: &Account,
    change: impl std::future::Future<Output = Result<(), BackendError>>,
) -> Result<(), ErrorCode> {
    backend_action(change).await?;
    account.caught_up().await;
    Ok(())
}

/// Hands the user's new state and name to the backend. It only queues them, so this waits
/// at most [`PRESENCE_WAIT`]: a CHG is answered at once whatever the backend is doing.
pub async fn set_presence(account: &Account, status: Status, name: &str) {
    let queued = account.session.set_presence(to_presence(status), name);
    match tokio::time::timeout(PRESENCE_WAIT, queued).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            warn!(%error, backend = account.backend, "the backend did not take the new state")
        }
        Err(_) => {
            warn!(
                backend = account.backend,
                "the backend did not queue the new state in time"
            )
        }
    }
}
