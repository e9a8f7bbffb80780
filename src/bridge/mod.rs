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

mod implied;
pub mod mime;
mod pump;
pub mod registry;

pub use pump::start_events;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msngate_bridge_api::{
    BackendError, BackendEvent, Capabilities, ChatId, ConnectionState, Contact, Credentials, List,
    PresenceState,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::connection::Replies;
use crate::protocol::{ErrorCode, FriendlyName, ListKind, ServerCommand, Status, TrId, UserHandle};
use crate::server::Services;
use crate::store::BackendLink;
use crate::switchboard::SessionHandle;
use registry::Session;

/// Events a backend may queue for one user before it has to wait.
const EVENT_QUEUE: usize = 1024;
/// The most message text a logon keeps from its backend while it waits for the contact list.
const EARLY_BYTES: usize = 256 * 1024;
/// How long a logon of a linked account may wait on its backend in all: the login (at most
/// [`msngate_bridge_api::LOGIN_BOUND`]), then the contact list, so the first SYN shows it.
/// Without the list by then, SYN shows the last one stored and changes follow as `ADD 0`.
pub const LOGON_BUDGET: Duration = Duration::from_secs(5);
/// How long an action on the backend (a list change) may take before the client gets an error.
pub const ACTION_TIMEOUT: Duration = msngate_bridge_api::ACTION_BOUND;
/// How long a CHG waits for the backend to take the new state (it only queues it).
const PRESENCE_WAIT: Duration = Duration::from_secs(1);

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
    /// Cancelled when the login ends: the event pump stops, and with it its hold on the
    /// backend session.
    pub ended: CancellationToken,
    /// List changes the backend made while doing what the client asked.
    implied: implied::Implied,
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

/// A contact's handle and name from another network: `None` for a handle MSN can't carry
/// (the backend maps ids to valid handles; this is the last check), and a name shortened to
/// what MSN allows.
fn handle_and_name(handle: &str, name: &str) -> Option<(UserHandle, FriendlyName)> {
    let handle: UserHandle = handle.parse().ok()?;
    let name = FriendlyName::shortened(name).unwrap_or_else(|| FriendlyName::from_handle(&handle));
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
    let started = tokio::time::Instant::now();
    // A backend keeps LOGIN_BOUND by itself; the margin is for one that does not.
    let login_wait = msngate_bridge_api::LOGIN_BOUND + Duration::from_secs(1);
    let session = match tokio::time::timeout(login_wait, backend.login(credentials, sender)).await {
        Ok(Ok(s)) => s,
        Ok(Err(BackendError::BadCredentials)) => {
            warn!(%handle, backend = name, account = %linked_account, "the backend refused the linked account's credentials");
            note_refused(services, handle, true).await;
            return Err(ErrorCode::AuthenticationFailed);
        }
        Ok(Err(e)) => {
            warn!(%handle, backend = name, account = %linked_account, error = %e, "cannot log the account into its backend");
            return Err(error_code(&e));
        }
        Err(_) => {
            warn!(%handle, backend = name, account = %linked_account, "the backend did not finish logging in within its bound");
            return Err(ErrorCode::ServerUnavailable);
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
        ended: CancellationToken::new(),
        implied: implied::Implied::default(),
    });
    if capabilities.msn_contacts {
        return Ok(Connected {
            account,
            events: None,
            early: Vec::new(),
        });
    }
    info!(%handle, backend = name, account = %linked_account, "linked account logged in");
    note_refused(services, handle, false).await;
    // Give the backend what is left of the budget to deliver the contact list, so the first
    // SYN shows it.
    let mut early = Vec::new();
    let mut early_bytes = 0;
    let waited = tokio::time::timeout_at(started + LOGON_BUDGET, async {
        // Bounded like the pump's own queue: past it the rest waits in the channel.
        while early.len() < EVENT_QUEUE && early_bytes < EARLY_BYTES {
            let Some(event) = events.recv().await else {
                break;
            };
            if let BackendEvent::Message { text, .. } = &event {
                early_bytes += text.len();
            }
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
    if waited.is_err() {
        info!(%handle, backend = name, "no contact list from the backend yet; SYN shows the last one stored");
    }
    if let Ok(Some(contacts)) = waited {
        contacts.iter().for_each(|c| account.note_kind(c));
        let entries: Vec<_> = contacts.iter().filter_map(contact_entry).collect();
        services.store.mirror_all(handle, &entries).await?;
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

/// Records that the account's backend refused its linked credentials, for `msngate user
/// list`; the next login the backend accepts clears it.
async fn note_refused(services: &Services, handle: &UserHandle, refused: bool) {
    let at = refused.then(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    if let Err(e) = services.store.set_link_refused(handle, at).await {
        warn!(error = %e, "cannot record the state of the account's link");
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
    let (add, remove) = match (added, list) {
        (true, ListKind::Block) => (vec![list], vec![ListKind::Allow]),
        (true, _) => (vec![list], vec![]),
        (false, _) => (vec![], vec![list]),
    };
    let edit = services
        .store
        .mirror_edit(&account.handle, contact, &name, &add, &remove)
        .await?;
    match edit.changes.iter().find(|c| c.list == list) {
        Some(c) => Ok(c.serial),
        // The backend's own report of the change got there first.
        None => Ok(edit.serial),
    }
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
    let serial = services.store.account(owner).await?.serial;
    let allowed = match contact {
        Some(contact) => services.store.permission(contact, owner).await?.allows(),
        None => false,
    };
    Ok((serial, allowed))
}

/// The lists a contact is on in the user's mirror, the user's serial and the contact's name
/// on the FL, in one store call.
async fn mirrored_lists(
    services: &Services,
    account: &Account,
    contact: &UserHandle,
) -> Result<(Vec<ListKind>, u32, Option<FriendlyName>), ErrorCode> {
    let (store, owner) = (&services.store, &account.handle);
    let lists = store.lists_of(owner, contact).await?;
    let serial = store.account(owner).await?.serial;
    let name = store
        .entry(owner, ListKind::Forward, contact)
        .await?
        .map(|e| e.name);
    Ok((lists, serial, name))
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
        account.implied.asked(&contact);
        let (current, serial, _) = mirrored_lists(services, account, &contact).await?;
        if current.contains(&list) {
            // The backend made this change by itself, doing what the client asked just
            // before (see `implied`): the client's own ADD is that change.
            if !account.implied.take(&contact, list, true) {
                return Err(ErrorCode::AlreadyThere);
            }
            (serial, account.contact_state(&contact).filter(|_| forward))
        } else {
            if list.opposite().is_some_and(|o| current.contains(&o)) {
                return Err(ErrorCode::AlreadyInOppositeList);
            }
            backend_action(action()).await?;
            let serial =
                mirror_after(services, account, &contact, name.clone(), list, true).await?;
            account.implied.settled(&contact, list);
            (serial, account.contact_state(&contact).filter(|_| forward))
        }
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
        account.implied.asked(&contact);
        let (current, serial, name) = mirrored_lists(services, account, &contact).await?;
        if !current.contains(&list) {
            // As for ADD: a removal the backend made by itself just before.
            if !account.implied.take(&contact, list, false) {
                return Err(ErrorCode::NotOnList);
            }
            serial
        } else {
            backend_action(action()).await?;
            let name = name.unwrap_or_else(|| FriendlyName::from_handle(&contact));
            let serial = mirror_after(services, account, &contact, name, list, false).await?;
            account.implied.settled(&contact, list);
            serial
        }
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
    let (_, forward) = services.store.list(&owner, ListKind::Forward).await?;
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
