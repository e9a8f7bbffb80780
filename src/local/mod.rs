//! The local backend: accounts whose contacts are other accounts on this server, behind the
//! same interface (bridges/api) as the XMPP and Matrix backends.
//!
//! Its data is the core's own. The lists in the store are the truth, not a mirror; states and
//! names are the hub's; and its contacts are MSN clients of this server, so what a user does
//! reaches them directly (`ADD 0 RL`, NLN/FLN on their notification connections) rather than
//! as [`msngate_bridge_api::BackendEvent`]s, of which it sends none. Its lists are the truth
//! ([`TruthLists`]): the server registers it with them, and the core reaches lists only
//! through that interface, never by the backend's name.
//! Chats with local contacts are switchboard sessions the contact is rung into, with every
//! participant's client on the same session, so messages never pass through this backend.

mod lists;
pub mod presence;

pub use lists::{call_from_elsewhere, TruthLists};

use std::sync::{Arc, Mutex, Weak};

use msngate_bridge_api::{
    Backend, BackendError, BackendSession, Capabilities, ChatId, Credentials, EventSender, List,
    OutgoingMessage, PresenceState,
};

use crate::backend::errors::store_backend_error;
use crate::protocol::{ErrorCode, FriendlyName, ListKind, ServerCommand, Status, TrId, UserHandle};
use crate::services::Services;

/// The local backend's name, in logs and `user list`.
pub const NAME: &str = "local";

/// The backend of accounts that are not linked to another network.
pub struct LocalBackend {
    services: Weak<Services>,
}

impl LocalBackend {
    /// The backend of the server whose services these are (a weak reference: the services own
    /// the backends).
    pub fn new(services: Weak<Services>) -> LocalBackend {
        LocalBackend { services }
    }
}

impl Backend for LocalBackend {
    type Session = LocalSession;

    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            group_chats: true,
            typing: true,
            blocking: true,
            presence: true,
            offline_messages: false,
        }
    }

    /// The MSN logon has already checked the account's password (the MD5 challenge): a local
    /// account has no other secret, so logging in only makes the session.
    async fn login(
        &self,
        credentials: Credentials,
        _events: EventSender,
    ) -> Result<LocalSession, BackendError> {
        let handle = credentials
            .msn_handle
            .parse()
            .map_err(|_| BackendError::InvalidContact)?;
        Ok(LocalSession {
            handle,
            services: self.services.clone(),
            shown: Mutex::new(Status::Offline),
        })
    }
}

/// One logged-in local account.
pub struct LocalSession {
    handle: UserHandle,
    services: Weak<Services>,
    /// The state last announced to watchers, so a change is told only as a change.
    shown: Mutex<Status>,
}

impl LocalSession {
    fn services(&self) -> Result<Arc<Services>, BackendError> {
        self.services.upgrade().ok_or(BackendError::Disconnected)
    }

    /// Announces the user's state, now `new`, to the watchers allowed to see it.
    async fn show(&self, new: Status) -> Result<(), BackendError> {
        let services = self.services()?;
        let old = std::mem::replace(
            &mut *self.shown.lock().unwrap_or_else(|e| e.into_inner()),
            new,
        );
        presence::announce(&services, &self.handle, old, new).await;
        Ok(())
    }

    async fn change(
        &self,
        list: List,
        handle: &str,
        add: Option<&str>,
    ) -> Result<(), BackendError> {
        let services = self.services()?;
        let list = crate::backend::from_list(list);
        let contact: UserHandle = handle.parse().map_err(|_| BackendError::InvalidContact)?;
        let name = match add {
            Some(name) => Some(FriendlyName::new(name).map_err(|_| BackendError::InvalidContact)?),
            None => None,
        };
        let outcome = match &name {
            Some(name) => services.store.add_entry(&self.handle, list, &contact, name),
            None => services.store.remove_entry(&self.handle, list, &contact),
        }
        .await
        .map_err(|e| store_backend_error(&e))?;
        if let Some(serial) = outcome.reverse_serial {
            let me = self.handle.clone();
            let told = match add {
                Some(_) => {
                    services
                        .hub
                        .presence(&self.handle)
                        .map(|(_, name)| ServerCommand::Add {
                            trid: TrId(0),
                            list: ListKind::Reverse,
                            serial,
                            handle: me,
                            name,
                            group: None,
                        })
                }
                None => Some(ServerCommand::Rem {
                    trid: TrId(0),
                    list: ListKind::Reverse,
                    serial,
                    handle: me,
                    group: None,
                }),
            };
            if let Some(told) = told {
                services.hub.send(&contact, &told);
            }
        }
        if let Some((before, after)) = outcome.privacy {
            presence::privacy_changed(&services, &self.handle, &[(contact, before, after)]);
        }
        Ok(())
    }
}

impl BackendSession for LocalSession {
    /// The hub already holds the user's state and name (the notification server sets them
    /// before calling); this tells the watchers.
    async fn set_presence(&self, state: PresenceState, _name: &str) -> Result<(), BackendError> {
        self.show(own_status(state)).await
    }

    async fn add_contact(&self, list: List, handle: &str, name: &str) -> Result<(), BackendError> {
        self.change(list, handle, Some(name)).await
    }

    async fn remove_contact(&self, list: List, handle: &str) -> Result<(), BackendError> {
        self.change(list, handle, None).await
    }

    /// Checks that the contact can be called (online, visible, allowing the user); the call
    /// itself is a ring into a switchboard session.
    async fn open_chat(&self, handle: &str) -> Result<ChatId, BackendError> {
        let services = self.services()?;
        let callee: UserHandle = handle.parse().map_err(|_| BackendError::InvalidContact)?;
        reachable(&services, &self.handle, &callee)
            .await
            .map_err(|_| BackendError::NotReachable)?;
        Ok(ChatId(callee.to_string()))
    }

    /// Never used: local contacts are in the same switchboard session as the user and get
    /// every message from it.
    fn send_message(
        &self,
        _chat: &ChatId,
        _message: &OutgoingMessage,
    ) -> impl std::future::Future<Output = Result<(), BackendError>> + Send + 'static {
        std::future::ready(Err(BackendError::Unsupported))
    }

    async fn logout(&self) {
        let _ = self.show(Status::Offline).await;
    }
}

/// The user's own state: unlike a contact's, HDN stays HDN.
fn own_status(state: PresenceState) -> Status {
    match state {
        PresenceState::Hidden => Status::Hidden,
        other => crate::backend::from_presence(other),
    }
}

/// Whether `caller` may ring `callee` now: online, visible and not blocking the caller. All
/// refusals look the same (217), so a block can't be told from absence.
async fn reachable(
    services: &Services,
    caller: &UserHandle,
    callee: &UserHandle,
) -> Result<(), ErrorCode> {
    if contact_state(services, caller, callee).await?.is_none() {
        return Err(ErrorCode::NotOnline);
    }
    Ok(())
}

/// A contact's state as `me` may see it: visible, and `me` allowed.
async fn contact_state(
    services: &Services,
    me: &UserHandle,
    contact: &UserHandle,
) -> Result<Option<(Status, FriendlyName)>, ErrorCode> {
    let Some(state) = services.hub.visible_status(contact) else {
        return Ok(None);
    };
    let permission = services.store.permission(contact, me).await?;
    Ok(Some(state).filter(|_| permission.allows()))
}
