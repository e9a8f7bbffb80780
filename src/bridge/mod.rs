//! Every login's backend session: logging the account into its backend (the local one, or the
//! XMPP or Matrix account it is linked to), list changes and presence through it, and for
//! backends on another network, mirroring their contact list into the store, showing contacts'
//! presence, and routing their chats.
//!
//! The notification server and switchboard reach an account only through here and through
//! [`Account::session`]; what differs between backends is decided by their declared
//! [`Capabilities`], never by their names. A backend whose contacts are MSN users of this
//! server (`msn_contacts`, the local backend) keeps its lists in the store as the truth and
//! its contacts' states in the hub. For the others, the user's lists live in the store as a
//! mirror: the backend is the source of truth, and every change it reports becomes an
//! `ADD 0`/`REM 0` with a new serial, so SYN always reflects the live contact list (or the last
//! one seen, while the backend is unreachable); contacts' states are kept here, in the hub's
//! entry for the user, not in the store.

pub mod mime;
pub mod registry;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msngate_bridge_api::{
    BackendError, BackendEvent, Capabilities, ChatId, ConnectionState, Contact, Credentials, List,
    PresenceState,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::connection::{Peer, Replies};
use crate::hub::CookieGrant;
use crate::protocol::{ErrorCode, FriendlyName, ListKind, ServerCommand, Status, TrId, UserHandle};
use crate::server::Services;
use crate::store::{BackendLink, Database, MirrorChange, StoreError};
use crate::switchboard::{Member, Participant, Remote, SessionHandle};
use registry::Session;

/// Events a backend may queue for one user before it has to wait.
const EVENT_QUEUE: usize = 1024;
/// How long a logon waits for the backend's contact list, so the first SYN shows it.
const CONTACT_LIST_WAIT: Duration = Duration::from_secs(5);
/// How long an action on the backend (a list change) may take before the client gets an error.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(20);

/// A logged-in user's backend session, whatever the backend.
pub struct Account {
    pub handle: UserHandle,
    pub session: Box<dyn Session>,
    /// The backend's name, for logs.
    pub backend: &'static str,
    pub capabilities: Capabilities,
    /// Contacts' states as the backend reports them; absent means offline.
    presence: Mutex<HashMap<UserHandle, (Status, FriendlyName)>>,
    /// Open switchboard sessions by backend chat, to route incoming messages.
    pub chats: Mutex<HashMap<ChatId, SessionHandle>>,
    /// Contacts that are group chats.
    groups: Mutex<HashSet<UserHandle>>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// A contact's state if it is visible (not offline).
    pub fn contact_state(&self, contact: &UserHandle) -> Option<(Status, FriendlyName)> {
        self.presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(contact)
            .cloned()
    }

    pub fn register_chat(&self, chat: ChatId, session: SessionHandle) {
        self.chats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(chat, session);
    }

    /// Forgets a chat's session, if it is still that one.
    pub fn unregister_chat(&self, chat: &ChatId, session_id: u32) {
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        if chats.get(chat).is_some_and(|s| s.id() == session_id) {
            chats.remove(chat);
        }
    }

    /// Whether a contact is a group chat.
    pub fn is_group(&self, contact: &UserHandle) -> bool {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(contact)
    }

    fn note_kind(&self, contact: &Contact) {
        if let Ok(handle) = contact.handle.parse::<UserHandle>() {
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            if contact.kind == msngate_bridge_api::ContactKind::Group {
                groups.insert(handle);
            } else {
                groups.remove(&handle);
            }
        }
    }

    fn chat_session(&self, chat: &ChatId) -> Option<SessionHandle> {
        self.chats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(chat)
            .cloned()
    }
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

pub(crate) fn from_presence(state: PresenceState) -> Status {
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

pub(crate) fn from_list(list: List) -> ListKind {
    match list {
        List::Forward => ListKind::Forward,
        List::Allow => ListKind::Allow,
        List::Block => ListKind::Block,
        List::Reverse => ListKind::Reverse,
    }
}

/// The MSN error for a failed backend action.
pub fn error_code(error: &BackendError) -> ErrorCode {
    match error {
        BackendError::BadCredentials => ErrorCode::AuthenticationFailed,
        BackendError::InvalidContact => ErrorCode::InvalidUsername,
        BackendError::NoSuchContact => ErrorCode::InvalidUser,
        BackendError::AlreadyThere => ErrorCode::AlreadyThere,
        BackendError::NotThere => ErrorCode::NotOnList,
        BackendError::Conflict => ErrorCode::AlreadyInOppositeList,
        BackendError::ListFull => ErrorCode::ListFull,
        BackendError::NotReachable => ErrorCode::NotOnline,
        BackendError::Unsupported | BackendError::Rejected(_) => ErrorCode::InvalidParameter,
        BackendError::Unreachable(_) | BackendError::Disconnected => ErrorCode::ServerUnavailable,
        BackendError::Internal(_) => ErrorCode::InternalServer,
    }
}

fn handle_and_name(handle: &str, name: &str) -> Option<(UserHandle, FriendlyName)> {
    let handle: UserHandle = handle.parse().ok()?;
    let name = FriendlyName::new(name).unwrap_or_else(|_| FriendlyName::from_handle(&handle));
    Some((handle, name))
}

fn contact_entry(contact: &Contact) -> Option<(UserHandle, FriendlyName, Vec<ListKind>)> {
    let (handle, name) = handle_and_name(&contact.handle, &contact.name)?;
    Some((
        handle,
        name,
        contact.lists.iter().copied().map(from_list).collect(),
    ))
}

/// What a logon produced.
pub struct Connected {
    pub account: Arc<Account>,
    /// The backend's events; `None` for a backend that sends none (`msn_contacts`).
    pub events: Option<mpsc::Receiver<BackendEvent>>,
    pub early: Vec<BackendEvent>,
}

/// The backend of accounts with no link.
pub const UNLINKED_BACKEND: &str = crate::local::NAME;

/// Logs the account `handle` into its backend: the one its stored link names, or the local
/// backend when there is none.
/// A refused password is `911`; a missing key or unknown backend is `500`, with a log line.
pub async fn connect(
    services: &Services,
    handle: &UserHandle,
    link: Option<BackendLink>,
) -> Result<Connected, ErrorCode> {
    let backend_name = link
        .as_ref()
        .map_or(UNLINKED_BACKEND, |l| l.backend.as_str());
    let Some(backend) = services.backends.get(backend_name).cloned() else {
        warn!(%handle, backend = %backend_name, "this account's backend is not available in this server");
        return Err(ErrorCode::InternalServer);
    };
    let credentials = match &link {
        Some(link) => linked_credentials(services, handle, link, backend.name())?,
        None => Credentials {
            msn_handle: handle.to_string(),
            account: String::new(),
            secret: String::new(),
            options: Vec::new(),
        },
    };
    let linked_account = credentials.account.clone();
    let capabilities = backend.capabilities();
    let (sender, mut events) = mpsc::channel(if capabilities.msn_contacts {
        1
    } else {
        EVENT_QUEUE
    });
    let name = backend.name();
    let session = match backend.login(credentials, sender).await {
        Ok(s) => s,
        Err(BackendError::BadCredentials) => {
            warn!(%handle, backend = name, account = %linked_account, "the backend refused the linked account's credentials");
            return Err(ErrorCode::AuthenticationFailed);
        }
        Err(e) => {
            warn!(%handle, backend = name, account = %linked_account, error = %e, "cannot log the account into its backend");
            return Err(error_code(&e));
        }
    };
    let account = Arc::new(Account {
        handle: handle.clone(),
        session,
        backend: name,
        capabilities,
        presence: Mutex::new(HashMap::new()),
        chats: Mutex::new(HashMap::new()),
        groups: Mutex::new(HashSet::new()),
    });
    if capabilities.msn_contacts {
        return Ok(Connected {
            account,
            events: None,
            early: Vec::new(),
        });
    }
    info!(%handle, backend = name, account = %linked_account, "linked account logged in");
    // Give the backend a moment to deliver the contact list so the first SYN shows it.
    let mut early = Vec::new();
    let waited = tokio::time::timeout(CONTACT_LIST_WAIT, async {
        while let Some(event) = events.recv().await {
            match event {
                BackendEvent::ContactList(list) => return Some(list),
                BackendEvent::Connection(ConnectionState::TransientDisconnect { .. }) => {
                    early.push(event);
                    return None;
                }
                other => early.push(other),
            }
        }
        None
    })
    .await;
    if let Ok(Some(contacts)) = waited {
        contacts.iter().for_each(|c| account.note_kind(c));
        let entries: Vec<_> = contacts.iter().filter_map(contact_entry).collect();
        let owner = handle.clone();
        services
            .store
            .call(move |db| db.mirror_all(&owner, &entries))
            .await?;
    }
    Ok(Connected {
        account,
        events: Some(events),
        early,
    })
}

/// The credentials of a linked account, its secret opened with the server's key.
fn linked_credentials(
    services: &Services,
    handle: &UserHandle,
    link: &BackendLink,
    backend: &str,
) -> Result<Credentials, ErrorCode> {
    let Some(key) = services.secret_key.as_ref() else {
        warn!(%handle, "the account is linked but the secrets key is missing; see [secrets] in the configuration");
        return Err(ErrorCode::InternalServer);
    };
    let secret = match key.open(handle.as_str(), &link.sealed_secret) {
        Ok(s) => String::from_utf8_lossy(&s).into_owned(),
        Err(e) => {
            warn!(%handle, error = %e, "cannot decrypt the account's backend secret");
            return Err(ErrorCode::InternalServer);
        }
    };
    let mut options = link.options.clone();
    options.extend(services.config.backend_options(backend));
    Ok(Credentials {
        msn_handle: handle.to_string(),
        account: link.account.clone(),
        secret,
        options,
    })
}

/// Starts applying a login's backend events to the user's client, if its backend sends any.
pub fn start_events(services: &Arc<Services>, peer: Peer, connected: Connected) {
    let Connected {
        account,
        events,
        early,
    } = connected;
    if let Some(events) = events {
        services
            .tracker
            .spawn(pump(services.clone(), account, peer, events, early));
    }
}

/// Runs until the backend session ends: applies its events to the store, the user's client
/// and the user's switchboard sessions.
async fn pump(
    services: Arc<Services>,
    account: Arc<Account>,
    peer: Peer,
    mut events: mpsc::Receiver<BackendEvent>,
    early: Vec<BackendEvent>,
) {
    // Messages that arrive before the client's first CHG wait: until then the client is
    // offline and only synchronizing, so it is rung once it is online.
    let mut waiting: Vec<BackendEvent> = Vec::new();
    let mut queue: std::collections::VecDeque<BackendEvent> = early.into();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let event = match queue.pop_front() {
            Some(e) => Some(e),
            None => tokio::select! {
                e = events.recv() => match e {
                    Some(e) => Some(e),
                    None => break,
                },
                _ = tick.tick(), if !waiting.is_empty() => None,
            },
        };
        let status = services.hub.peer_status(&account.handle, peer.id());
        let online = status.is_some_and(|s| s != Status::Offline);
        if online && !waiting.is_empty() {
            for held in std::mem::take(&mut waiting) {
                apply(&services, &account, &peer, held).await;
            }
        }
        match event {
            Some(e @ BackendEvent::Message { .. }) if !online && status.is_some() => {
                if waiting.len() >= EVENT_QUEUE {
                    warn!(handle = %account.handle, "too many messages waiting for the client to come online; dropping the oldest");
                    waiting.remove(0);
                }
                waiting.push(e);
            }
            Some(e) => apply(&services, &account, &peer, e).await,
            None => {}
        }
        if status.is_none() && !waiting.is_empty() {
            warn!(handle = %account.handle, count = waiting.len(), "logged out before coming online; messages not shown");
            waiting.clear();
        }
    }
}

/// Whether the user's client is past its first CHG (and so is shown contacts' states).
fn client_ready(services: &Services, account: &Account, peer: &Peer) -> bool {
    services
        .hub
        .peer_status(&account.handle, peer.id())
        .is_some_and(|s| s != Status::Offline)
}

/// Sends the store's changes to the client as `ADD 0`/`REM 0`. A contact that comes onto the
/// FL in a state already known is shown in it at once (as `ILN` follows the user's own
/// `ADD FL`): the backend reported that state while the contact was not on the FL, or before
/// it was removed and added again, and does not report it again.
fn notify_changes(services: &Services, account: &Account, peer: &Peer, changes: Vec<MirrorChange>) {
    let ready = client_ready(services, account, peer);
    for c in changes {
        if !c.added {
            peer.send_command(&ServerCommand::Rem {
                trid: TrId(0),
                list: c.list,
                serial: c.serial,
                handle: c.handle,
            });
            continue;
        }
        let shown = c.list == ListKind::Forward && ready;
        let state = shown.then(|| account.contact_state(&c.handle)).flatten();
        peer.send_command(&ServerCommand::Add {
            trid: TrId(0),
            list: c.list,
            serial: c.serial,
            handle: c.handle.clone(),
            name: c.name,
        });
        if let Some((status, name)) = state {
            peer.send_command(&ServerCommand::Nln {
                status,
                handle: c.handle,
                name,
            });
        }
    }
}

/// Applies a change to the user's mirror in the store and shows the client what it changed.
async fn mirror(
    services: &Services,
    account: &Account,
    peer: &Peer,
    what: &str,
    change: impl FnOnce(&mut Database) -> Result<Vec<MirrorChange>, StoreError> + Send + 'static,
) {
    match services.store.call(change).await {
        Ok(changes) => notify_changes(services, account, peer, changes),
        Err(e) => warn!(error = %e, "cannot store {what}"),
    }
}

async fn apply(services: &Arc<Services>, account: &Arc<Account>, peer: &Peer, event: BackendEvent) {
    let owner = account.handle.clone();
    match event {
        BackendEvent::Connection(ConnectionState::BadCredentials) => {
            warn!(handle = %owner, "the backend now refuses the linked account's password");
        }
        BackendEvent::Connection(state) => info!(handle = %owner, ?state, "backend connection"),
        BackendEvent::ContactList(contacts) => {
            contacts.iter().for_each(|c| account.note_kind(c));
            let entries: Vec<_> = contacts.iter().filter_map(contact_entry).collect();
            mirror(
                services,
                account,
                peer,
                "the backend's contact list",
                move |db| db.mirror_all(&owner, &entries),
            )
            .await;
        }
        BackendEvent::ContactChanged(contact) => {
            account.note_kind(&contact);
            let Some((handle, name, lists)) = contact_entry(&contact) else {
                return;
            };
            mirror(services, account, peer, "a contact change", move |db| {
                db.mirror_contact(&owner, &handle, &name, &lists)
            })
            .await;
        }
        BackendEvent::ContactRemoved { handle } => {
            let Ok(handle) = handle.parse::<UserHandle>() else {
                return;
            };
            let name = FriendlyName::from_handle(&handle);
            mirror(services, account, peer, "a contact removal", move |db| {
                db.mirror_contact(&owner, &handle, &name, &[])
            })
            .await;
        }
        BackendEvent::AddedBy { handle, name } => {
            let Some((handle, name)) = handle_and_name(&handle, &name) else {
                return;
            };
            mirror(
                services,
                account,
                peer,
                "a subscription request",
                move |db| {
                    let mut lists = db.lists_of(&owner, &handle)?;
                    if !lists.contains(&ListKind::Reverse) {
                        lists.push(ListKind::Reverse);
                    }
                    db.mirror_contact(&owner, &handle, &name, &lists)
                },
            )
            .await;
        }
        BackendEvent::Presence {
            handle,
            state,
            name,
        } => {
            let Ok(contact) = handle.parse::<UserHandle>() else {
                return;
            };
            let status = from_presence(state);
            let lookup = (account.handle.clone(), contact.clone());
            let stored_name = services
                .store
                .call(move |db| db.entry(&lookup.0, ListKind::Forward, &lookup.1))
                .await
                .ok()
                .flatten()
                .map(|e| e.name);
            let display = name
                .and_then(|n| FriendlyName::new(&n).ok())
                .or(stored_name.clone())
                .unwrap_or_else(|| FriendlyName::from_handle(&contact));
            let changed = {
                let mut presence = account.presence.lock().unwrap_or_else(|e| e.into_inner());
                let before = presence.get(&contact).map(|(s, _)| *s);
                if status.is_visible() {
                    presence.insert(contact.clone(), (status, display.clone()));
                } else {
                    presence.remove(&contact);
                }
                before != Some(status).filter(|s| s.is_visible())
            };
            // Only contacts on the FL are shown, and only to a client past its first CHG.
            let ready = client_ready(services, account, peer);
            if changed && ready && stored_name.is_some() {
                let line = if status.is_visible() {
                    ServerCommand::Nln {
                        status,
                        handle: contact,
                        name: display,
                    }
                } else {
                    ServerCommand::Fln { handle: contact }
                };
                peer.send_command(&line);
            }
        }
        BackendEvent::Message {
            chat,
            from,
            name,
            text,
            ..
        } => {
            let payload = mime::text(&text);
            deliver(services, account, peer, chat, &from, &name, payload).await;
        }
        BackendEvent::Typing { chat, from } => {
            // Typing alone never opens a conversation window.
            if let (Some(session), Some((handle, name))) =
                (account.chat_session(&chat), handle_and_name(&from, &from))
            {
                let name = account
                    .contact_state(&handle)
                    .map(|(_, n)| n)
                    .unwrap_or(name);
                session
                    .remote_message(handle.clone(), name, mime::typing(handle.as_str()))
                    .await;
            }
        }
        BackendEvent::Joined { chat, handle, name } => {
            let (Some(session), Some((handle, name))) =
                (account.chat_session(&chat), handle_and_name(&handle, &name))
            else {
                return;
            };
            let member = Member::Remote(Remote {
                chat,
                bridge: account.clone(),
            });
            // Someone already shown (a repeated presence) is no error worth reporting.
            let _ = session
                .add_remote(Participant {
                    handle,
                    name,
                    member,
                })
                .await;
        }
        BackendEvent::Left { chat, handle } => {
            if let (Some(session), Ok(handle)) =
                (account.chat_session(&chat), handle.parse::<UserHandle>())
            {
                session.remote_left(handle).await;
            }
        }
    }
}

/// Delivers a backend message to the user: into the open switchboard session for that chat,
/// or a new session rung to the user like a call from the contact, holding the message until
/// the client answers.
async fn deliver(
    services: &Arc<Services>,
    account: &Arc<Account>,
    peer: &Peer,
    chat: ChatId,
    from: &str,
    name: &str,
    payload: bytes::Bytes,
) {
    let Some((handle, fallback)) = handle_and_name(from, name) else {
        return;
    };
    let name = FriendlyName::new(name).unwrap_or(fallback);
    if let Some(session) = account.chat_session(&chat) {
        if session
            .remote_message(handle.clone(), name.clone(), payload.clone())
            .await
        {
            return;
        }
    }
    let remote = Participant {
        handle: handle.clone(),
        name: name.clone(),
        member: Member::Remote(Remote {
            chat,
            bridge: account.clone(),
        }),
    };
    let session = SessionHandle::start_incoming(services, remote, payload);
    let grant = CookieGrant::Invite {
        handle: account.handle.clone(),
        session_id: session.id(),
    };
    let Some(cookie) = services.hub.cookies.issue(grant) else {
        warn!(handle = %account.handle, "too many outstanding cookies; a message waits in its session unrung");
        return;
    };
    peer.send_command(&ServerCommand::Rng {
        session_id: session.id(),
        address: services.switchboard_address.clone(),
        cookie,
        caller: handle,
        caller_name: name,
    });
}

/// Waits for a backend action, within [`ACTION_TIMEOUT`].
async fn backend_action(
    action: impl std::future::Future<Output = Result<(), BackendError>>,
) -> Result<(), ErrorCode> {
    match tokio::time::timeout(ACTION_TIMEOUT, action).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(error_code(&e)),
        Err(_) => Err(ErrorCode::ServerUnavailable),
    }
}

/// Stores a contact's lists after the backend accepted adding it to (`added`) or removing
/// it from `list`, returning the serial to answer with. The other lists are read again
/// here, not before the backend action: the backend may have reported changes meanwhile
/// (accepting an invite with FL puts the inviter on the AL too), which must not be undone.
async fn mirror_after(
    services: &Services,
    account: &Account,
    contact: &UserHandle,
    name: FriendlyName,
    list: ListKind,
    added: bool,
) -> Result<u32, ErrorCode> {
    let (owner, target) = (account.handle.clone(), contact.clone());
    Ok(services
        .store
        .call(move |db| {
            let mut lists = db.lists_of(&owner, &target)?;
            lists.retain(|l| *l != list);
            if added {
                lists.push(list);
                if list == ListKind::Block {
                    lists.retain(|l| *l != ListKind::Allow);
                }
            }
            let changes = db.mirror_contact(&owner, &target, &name, &lists)?;
            match changes.iter().find(|c| c.list == list) {
                Some(c) => Ok(c.serial),
                // The backend's own report of the change got there first.
                None => Ok(db.account(&owner)?.serial),
            }
        })
        .await?)
}

/// After a change of a user's privacy mode (BLP): watchers who are MSN users of this server and
/// whose view of the user changed see it at once. A backend on another network has its own
/// privacy rules; MSN's BLP is kept in the store for the client's sake only.
pub fn privacy_mode_changed(
    services: &Services,
    account: &Account,
    changes: &[(
        UserHandle,
        crate::store::Permission,
        crate::store::Permission,
    )],
) {
    if account.capabilities.msn_contacts {
        crate::local::presence::privacy_changed(services, &account.handle, changes);
    }
}

/// After a change the backend made in the store itself (`msn_contacts`): the user's serial
/// and, for a `contact` given, whether it lets the user see it, read in one store call.
async fn after_own_change(
    services: &Services,
    owner: &UserHandle,
    contact: Option<&UserHandle>,
) -> Result<(u32, bool), ErrorCode> {
    let (owner, contact) = (owner.clone(), contact.cloned());
    Ok(services
        .store
        .call(move |db| {
            let serial = db.account(&owner)?.serial;
            let allowed = match contact {
                Some(contact) => db.permission(&contact, &owner)?.allows(),
                None => false,
            };
            Ok((serial, allowed))
        })
        .await?)
}

/// `ADD`: the backend first, then (for a mirrored list) the mirror, then the reply.
pub async fn add(
    services: &Services,
    account: &Account,
    trid: TrId,
    list: ListKind,
    contact: UserHandle,
    name: FriendlyName,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let action = || {
        account
            .session
            .add_contact(to_list(list), contact.as_str(), name.as_str())
    };
    let forward = list == ListKind::Forward;
    // With the serial, the contact's state the ILN after an FL addition shows, if any.
    let (serial, state) = if account.capabilities.msn_contacts {
        // The backend's lists are the store: it checked and made the change.
        backend_action(action()).await?;
        let asked = forward.then_some(&contact);
        let (serial, allowed) = after_own_change(services, &account.handle, asked).await?;
        let state = services.hub.visible_status(&contact).filter(|_| allowed);
        (serial, state)
    } else {
        let owner = account.handle.clone();
        let target = contact.clone();
        let current: Vec<ListKind> = services
            .store
            .call(move |db| db.lists_of(&owner, &target))
            .await?;
        if current.contains(&list) {
            return Err(ErrorCode::AlreadyThere);
        }
        if list.opposite().is_some_and(|o| current.contains(&o)) {
            return Err(ErrorCode::AlreadyInOppositeList);
        }
        backend_action(action()).await?;
        let serial = mirror_after(services, account, &contact, name.clone(), list, true).await?;
        (serial, account.contact_state(&contact).filter(|_| forward))
    };
    out.push(ServerCommand::Add {
        trid,
        list,
        serial,
        handle: contact.clone(),
        name,
    });
    if let Some((status, contact_name)) = state {
        out.push(ServerCommand::Iln {
            trid,
            status,
            handle: contact,
            name: contact_name,
        });
    }
    Ok(())
}

/// `REM`: the backend first, then (for a mirrored list) the mirror, then the reply.
pub async fn remove(
    services: &Services,
    account: &Account,
    trid: TrId,
    list: ListKind,
    contact: UserHandle,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let action = || {
        account
            .session
            .remove_contact(to_list(list), contact.as_str())
    };
    let serial = if account.capabilities.msn_contacts {
        backend_action(action()).await?;
        after_own_change(services, &account.handle, None).await?.0
    } else {
        let (owner, target) = (account.handle.clone(), contact.clone());
        let (current, name) = services
            .store
            .call(move |db| {
                let lists = db.lists_of(&owner, &target)?;
                let name = db
                    .entry(&owner, ListKind::Forward, &target)?
                    .map(|e| e.name);
                Ok((lists, name))
            })
            .await?;
        if !current.contains(&list) {
            return Err(ErrorCode::NotOnList);
        }
        backend_action(action()).await?;
        let name = name.unwrap_or_else(|| FriendlyName::from_handle(&contact));
        mirror_after(services, account, &contact, name, list, false).await?
    };
    out.push(ServerCommand::Rem {
        trid,
        list,
        serial,
        handle: contact,
    });
    Ok(())
}

/// The ILN burst of a user's first CHG: every FL contact the user may see online.
pub async fn initial_states(
    services: &Services,
    account: &Account,
    trid: TrId,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    if account.capabilities.msn_contacts {
        return crate::local::presence::initial_states(services, &account.handle, trid, out).await;
    }
    let owner = account.handle.clone();
    let (_, forward) = services
        .store
        .call(move |db| db.list(&owner, ListKind::Forward))
        .await?;
    let known: HashSet<UserHandle> = forward.into_iter().map(|e| e.handle).collect();
    let presence = account
        .presence
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (handle, (status, name)) in presence {
        if known.contains(&handle) {
            out.push(ServerCommand::Iln {
                trid,
                status,
                handle,
                name,
            });
        }
    }
    Ok(())
}
