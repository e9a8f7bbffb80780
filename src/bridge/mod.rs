//! Logging an account into its backend ([`connect`]: the local one, or the XMPP or Matrix
//! account it is linked to), and for backends on another network, lists that mirror theirs
//! ([`MirroredLists`]) and the event pump ([`start_events`]) that applies what the backend
//! reports: contact list changes, contacts' presence, and their chats.
//!
//! For those backends the user's lists live in the store as a mirror: the backend is the
//! source of truth, and every change it reports becomes an `ADD 0`/`REM 0` with a new serial,
//! so SYN always reflects the live contact list (or the last one seen, while the backend is
//! unreachable); contacts' states are kept in the login's [`crate::backend::Account`], not in
//! the store. Nothing here decides by a backend's name: the server registers each backend with
//! its kind of lists.

mod groups;
mod lists;
mod pump;

pub use lists::MirroredLists;
pub use pump::start_events;

use std::sync::Arc;
use std::time::Duration;

use msngate_bridge_api::{BackendError, BackendEvent, Contact, Credentials};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::backend::{error_code, from_list, Account};
use crate::protocol::{ErrorCode, FriendlyName, ListKind, UserHandle};
use crate::services::Services;
use crate::store::BackendLink;

/// Events a backend may queue for one user before it has to wait.
const EVENT_QUEUE: usize = 1024;
/// How long a logon of a linked account may wait on its backend in all: the login (at most
/// [`msngate_bridge_api::LOGIN_BOUND`]), then the contact list, so the first SYN shows it.
/// Without the list by then, SYN shows the last one stored and changes follow as `ADD 0`.
pub const LOGON_BUDGET: Duration = Duration::from_secs(5);

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
    /// The backend's events; `None` for a backend that sends none (the local one).
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
    let Some(registered) = services.backends.get(backend_name).cloned() else {
        warn!(%handle, backend = %backend_name, "this account's backend is not available in this server");
        return Err(ErrorCode::InternalServer);
    };
    let (backend, lists) = (registered.backend, registered.lists);
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
    // A channel takes memory only for what is queued in it.
    let (sender, events) = mpsc::channel(EVENT_QUEUE);
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
    let account = Arc::new(Account::new(handle.clone(), session, name, capabilities));
    if link.is_some() {
        info!(%handle, backend = name, account = %linked_account, "linked account logged in");
        note_refused(services, handle, false).await;
    }
    let delivered = lists.logged_in(services, &account, events, started).await?;
    Ok(Connected {
        account,
        events: delivered.events,
        early: delivered.early,
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
