//! msngate's Matrix backend: an MSN account whose contacts are a Matrix account's direct chats
//! and rooms.
//!
//! An account is linked once with its password ([`link`]): that logs a device in, creates the
//! account's encrypted SQLite store and syncs once. Later logons ([`MatrixBackend::login`])
//! restore that device from its access token and keep syncing in a task; the sync position
//! lives in the store, so what arrived while the user was offline is delivered once. Encrypted
//! rooms work like plain ones (matrix-sdk encrypts and decrypts). See docs/bridges/matrix.md
//! for how rooms, invites, presence and messages map to MSN.

pub mod handles;
mod linker;
pub mod presence;
mod session;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::{OwnedDeviceId, OwnedUserId};
use matrix_sdk::{Client, SessionMeta, SessionTokens};
/// The result of linking an account: what the core stores.
pub use msngate_bridge_api::Linked;
use msngate_bridge_api::{
    Backend, BackendError, BackendEvent, BackendSession, Capabilities, ChatId, ConnectionState,
    Credentials, EventSender, List, OutgoingMessage, PresenceState, ACTION_BOUND, SEND_DEADLINE,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

pub use handles::{handle_for_room, handle_for_user, room_for_handle, user_for_handle};
use session::{Outgoing, Shared, Wanted};

/// Option keys in [`Linked::options`] / `Credentials::options`.
pub const OPTION_HOMESERVER: &str = "homeserver";
pub const OPTION_DEVICE_ID: &str = "device_id";
pub const OPTION_STORE_DIR: &str = "store_dir";
/// The MSN state shown for contacts whose presence the homeserver doesn't tell (presence
/// disabled); "Online" by default, since MSN 1.0 can't open a chat with an offline contact.
pub const OPTION_PRESENCE_FALLBACK: &str = "presence_fallback";

/// How many outgoing messages may wait for the sender task.
const SEND_QUEUE: usize = 256;
/// How long one HTTP request to the homeserver may take (sync adds its long-poll timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`Linked::secret`] holds.
#[derive(Serialize, Deserialize)]
struct Secret {
    access_token: String,
    store_passphrase: String,
    /// Given by homeservers that expire access tokens; absent in links made before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

/// The account's tokens as last refreshed, kept in its (encrypted) store under
/// [`TOKENS_KEY`]: a refresh replaces both, and the core's copy in the link would be stale.
#[derive(Serialize, Deserialize)]
struct StoredTokens {
    access_token: String,
    refresh_token: Option<String>,
}

const TOKENS_KEY: &[u8] = b"msngate.session_tokens";

fn internal(e: impl std::fmt::Display) -> BackendError {
    BackendError::Internal(e.to_string())
}

/// Whether an SDK error means the access token is no longer valid.
fn is_unknown_token(e: &matrix_sdk::Error) -> bool {
    match e {
        matrix_sdk::Error::Http(h) => http_is_unknown_token(h),
        e => matches!(e.client_api_error_kind(), Some(ErrorKind::UnknownToken(_))),
    }
}

/// Also when matrix-sdk tried to refresh the expired token and the homeserver refused the
/// refresh token (spent or revoked).
fn http_is_unknown_token(e: &matrix_sdk::HttpError) -> bool {
    match e {
        matrix_sdk::HttpError::RefreshToken(matrix_sdk::RefreshTokenError::MatrixAuth(inner)) => {
            http_is_unknown_token(inner)
        }
        e => matches!(e.client_api_error_kind(), Some(ErrorKind::UnknownToken(_))),
    }
}

/// Whether an SDK error is the homeserver's answer (as opposed to no answer at all).
fn is_server_answer(e: &matrix_sdk::HttpError) -> bool {
    matches!(e, matrix_sdk::HttpError::Api(_))
}

async fn build_client(
    homeserver: &str,
    store_dir: &Path,
    passphrase: &str,
) -> Result<Client, BackendError> {
    Client::builder()
        .homeserver_url(homeserver)
        .sqlite_store(store_dir, Some(passphrase))
        // With a refresh token, an expired access token is refreshed and the request retried;
        // the new tokens are kept in the store (see `keep_refreshed_tokens`).
        .handle_refresh_tokens()
        // No retries inside matrix-sdk: with a retry limit it retries every network failure
        // at once (0.5 s, 1 s, ...) under the sync loop's own backoff, several connections
        // per attempt, a storm against a homeserver that just went down. Every failure goes
        // back to msngate's loops (sync, sending, presence), which back off with jitter from
        // the first failure (`reconnect_backoff`). A 429 or 5xx is such a failure too.
        .request_config(
            matrix_sdk::config::RequestConfig::new()
                .timeout(REQUEST_TIMEOUT)
                .disable_retry(),
        )
        .build()
        .await
        .map_err(|e| BackendError::Internal(format!("matrix client: {e}")))
}

/// Links a Matrix account: logs a new device ("msngate") in with the password, creates the
/// account's store in `store_dir` (which must be empty or absent) under a fresh random
/// passphrase, and syncs once so that history from before the link is never delivered as new.
/// The password is used for this login only; it is never stored or logged.
pub async fn link(
    homeserver: &str,
    user_id: &str,
    password: &str,
    store_dir: &Path,
) -> Result<Linked, BackendError> {
    let user: OwnedUserId = user_id
        .try_into()
        .map_err(|_| BackendError::InvalidContact)?;
    if std::fs::read_dir(store_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(BackendError::Internal(format!(
            "store directory {} is not empty",
            store_dir.display()
        )));
    }
    let passphrase = random_passphrase();
    let client = build_client(homeserver, store_dir, &passphrase).await?;
    let response = client
        .matrix_auth()
        .login_username(&user, password)
        .initial_device_display_name("msngate")
        .request_refresh_token()
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(store_dir);
            return Err(match e.client_api_error_kind() {
                Some(ErrorKind::Forbidden) | Some(ErrorKind::UserDeactivated) => {
                    BackendError::BadCredentials
                }
                Some(_) => BackendError::Rejected(e.to_string()),
                None => BackendError::Unreachable(e.to_string()),
            });
        }
    };
    // One sync stores the position from which later logons continue.
    if let Err(e) = client.sync_once(session::sync_settings(None)).await {
        tracing::warn!(%user, error = %e, "first Matrix sync after linking failed");
        let _ = client.matrix_auth().logout().await;
        let _ = std::fs::remove_dir_all(store_dir);
        return Err(BackendError::Unreachable(e.to_string()));
    }
    let secret = Secret {
        access_token: response.access_token.clone(),
        store_passphrase: passphrase,
        refresh_token: response.refresh_token.clone(),
    };
    Ok(Linked {
        account: response.user_id.to_string(),
        secret: serde_json::to_string(&secret).map_err(internal)?,
        options: vec![
            (OPTION_HOMESERVER.into(), homeserver.to_owned()),
            (OPTION_DEVICE_ID.into(), response.device_id.to_string()),
            (
                OPTION_STORE_DIR.into(),
                store_dir.to_string_lossy().into_owned(),
            ),
        ],
    })
}

fn random_passphrase() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn option<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
    options
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Everything needed to bring a linked device back.
struct Restore {
    user: OwnedUserId,
    device: OwnedDeviceId,
    homeserver: String,
    store_dir: PathBuf,
    secret: Secret,
}

fn parse_link(
    account: &str,
    secret: &str,
    options: &[(String, String)],
) -> Result<Restore, BackendError> {
    let missing = |key: &str| BackendError::Internal(format!("link option {key} missing"));
    Ok(Restore {
        user: account
            .try_into()
            .map_err(|_| BackendError::InvalidContact)?,
        device: option(options, OPTION_DEVICE_ID)
            .ok_or_else(|| missing(OPTION_DEVICE_ID))?
            .into(),
        homeserver: option(options, OPTION_HOMESERVER)
            .ok_or_else(|| missing(OPTION_HOMESERVER))?
            .to_owned(),
        store_dir: option(options, OPTION_STORE_DIR)
            .ok_or_else(|| missing(OPTION_STORE_DIR))?
            .into(),
        secret: serde_json::from_str(secret)
            .map_err(|_| BackendError::Internal("unreadable link secret".into()))?,
    })
}

async fn restore(link: &Restore) -> Result<Client, BackendError> {
    let client = build_client(
        &link.homeserver,
        &link.store_dir,
        &link.secret.store_passphrase,
    )
    .await?;
    // Tokens refreshed since the link are newer than the link's (whose refresh token may be
    // spent).
    let stored = client
        .state_store()
        .get_custom_value(TOKENS_KEY)
        .await
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<StoredTokens>(&bytes).ok());
    let tokens = match stored {
        Some(t) => SessionTokens {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
        },
        None => SessionTokens {
            access_token: link.secret.access_token.clone(),
            refresh_token: link.secret.refresh_token.clone(),
        },
    };
    let session = MatrixSession {
        meta: SessionMeta {
            user_id: link.user.clone(),
            device_id: link.device.clone(),
        },
        tokens,
    };
    client
        .restore_session(session)
        .await
        .map_err(|e| BackendError::Internal(format!("restoring the Matrix session: {e}")))?;
    Ok(client)
}

/// Writes the client's tokens into its store each time matrix-sdk refreshed them, so that the
/// next logon starts from them. Runs as long as the session.
async fn keep_refreshed_tokens(client: Client) {
    let mut changes = client.subscribe_to_session_changes();
    loop {
        match changes.recv().await {
            Ok(matrix_sdk::SessionChange::TokensRefreshed) => {}
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            // Not while the session holds the client; never end the session's tasks.
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                std::future::pending::<()>().await
            }
        }
        save_tokens(&client).await;
    }
}

/// Writes the client's current tokens into its store, when it has a refresh token (without
/// one the link's token stays valid and there is nothing to keep).
async fn save_tokens(client: &Client) {
    let Some(tokens) = client.session_tokens() else {
        return;
    };
    if tokens.refresh_token.is_none() {
        return;
    }
    let stored = StoredTokens {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
    };
    let Ok(bytes) = serde_json::to_vec(&stored) else {
        return;
    };
    if let Err(e) = client
        .state_store()
        .set_custom_value(TOKENS_KEY, bytes)
        .await
    {
        tracing::warn!(error = %e, "keeping the refreshed Matrix tokens failed");
    }
}

/// Unlinks an account: logs its device out (best effort: an unreachable homeserver gives
/// `Err(Unreachable)`, and the device stays listed in the account) and deletes its store.
pub async fn unlink(
    account: &str,
    secret: &str,
    options: &[(String, String)],
) -> Result<(), BackendError> {
    let link = parse_link(account, secret, options)?;
    let result = match restore(&link).await {
        Ok(client) => match client.matrix_auth().logout().await {
            Ok(_) => Ok(()),
            Err(e) if http_is_unknown_token(&e) => Ok(()),
            Err(e) if is_server_answer(&e) => Err(BackendError::Rejected(e.to_string())),
            Err(e) => Err(BackendError::Unreachable(e.to_string())),
        },
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&link.store_dir);
    result
}

/// The Matrix backend.
#[derive(Debug, Default, Clone)]
pub struct MatrixBackend;

/// One user's Matrix session. Dropping it stops everything (without `logout`'s offline
/// presence).
///
/// All work happens in one task (the driver, see [`drive`]): restoring the device, then the
/// sync loop, the presence task and the sender task. The session's methods only queue (a
/// message, the wanted presence) or use the client once the driver has one.
pub struct MatrixUserSession {
    user: OwnedUserId,
    generation: u64,
    /// The session's state once the device is restored; `None` before, and after `logout`.
    ready: Arc<watch::Sender<Option<Arc<Shared>>>>,
    /// The user's own state and name as last set: the presence task publishes it.
    wanted: watch::Sender<Option<Wanted>>,
    sends: mpsc::Sender<Outgoing>,
    driver: tokio::task::AbortHandle,
}

impl std::fmt::Debug for MatrixUserSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixUserSession")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Drop for MatrixUserSession {
    fn drop(&mut self) {
        self.driver.abort();
        self.ready.send_replace(None);
    }
}

impl MatrixUserSession {
    /// The session's state, waiting for the device to be restored for up to
    /// [`ACTION_BOUND`]; `Disconnected` if it isn't by then.
    fn shared(&self) -> impl Future<Output = Result<Arc<Shared>, BackendError>> + Send + 'static {
        let mut ready = self.ready.subscribe();
        async move {
            match tokio::time::timeout(ACTION_BOUND, ready.wait_for(Option::is_some)).await {
                Ok(Ok(shared)) => shared.clone().ok_or(BackendError::Disconnected),
                _ => Err(BackendError::Disconnected),
            }
        }
    }
}

/// How long `login` waits for the device to be restored and `whoami` answered, within
/// [`LOGIN_BOUND`]; after that the session keeps connecting in the background.
const LOGIN_WAIT: Duration = Duration::from_millis(2500);
/// How long `logout` waits for the homeserver to take the offline presence.
const LOGOUT_OFFLINE_BOUND: Duration = Duration::from_secs(2);
/// How much earlier than [`SEND_DEADLINE`] a message's own deadline is, so that its future
/// has resolved when the core's wait ends.
const SEND_MARGIN: Duration = Duration::from_secs(1);

/// The latest logon per account in this process: a logout's offline presence is not sent
/// when a newer session of the same account has begun (it would make that one look offline).
fn logins() -> &'static std::sync::Mutex<std::collections::HashMap<OwnedUserId, u64>> {
    static LOGINS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<OwnedUserId, u64>>,
    > = std::sync::OnceLock::new();
    LOGINS.get_or_init(Default::default)
}

fn begin_login(user: &OwnedUserId) -> u64 {
    let mut logins = logins().lock().unwrap_or_else(|p| p.into_inner());
    let generation = logins.entry(user.clone()).or_insert(0);
    *generation += 1;
    *generation
}

fn is_latest_login(user: &OwnedUserId, generation: u64) -> bool {
    let logins = logins().lock().unwrap_or_else(|p| p.into_inner());
    logins.get(user) == Some(&generation)
}

/// A session's one task: restores the device and asks `whoami` (telling `login` the outcome
/// through `first`), then syncs and publishes presence; sends messages meanwhile (each until
/// its deadline). A refusal `login` no longer waits for is reported as
/// `Connection(BadCredentials)`, once, and not retried.
#[allow(clippy::too_many_arguments)]
async fn drive(
    link: Restore,
    fallback: PresenceState,
    events: EventSender,
    ready: Arc<watch::Sender<Option<Arc<Shared>>>>,
    wanted: watch::Receiver<Option<Wanted>>,
    queue: mpsc::Receiver<Outgoing>,
    first: oneshot::Sender<Result<(), BackendError>>,
) {
    let _ = events
        .send(BackendEvent::Connection(ConnectionState::Connecting))
        .await;
    let sender = session::send_loop(ready.subscribe(), queue);
    let connect = async {
        let client = match restore(&link).await {
            Ok(client) => client,
            Err(e) => return refused(first, &events, &link.user, e).await,
        };
        // One request decides between a revoked device and a merely unreachable homeserver.
        match client.whoami().await {
            Ok(_) => {}
            Err(e) if http_is_unknown_token(&e) => {
                return refused(first, &events, &link.user, BackendError::BadCredentials).await
            }
            Err(e) => {
                tracing::warn!(user = %link.user, error = %e, "Matrix homeserver unreachable at logon; will keep trying");
            }
        }
        let _ = first.send(Ok(()));
        let shared = Arc::new(Shared::new(
            client,
            link.user.clone(),
            events.clone(),
            fallback,
            wanted,
        ));
        ready.send_replace(Some(shared.clone()));
        // The sync loop ends only when the device was logged out; presence goes with it.
        tokio::select! {
            () = session::sync_loop(shared.clone()) => {}
            () = session::presence_loop(shared.clone()) => {}
            () = keep_refreshed_tokens(shared.client.clone()) => {}
        }
    };
    tokio::join!(connect, sender);
}

/// Gives `login` its error, or, when `login` returned already, reports the session's end as
/// `Connection(BadCredentials)` (the account must be linked again), logged once.
async fn refused(
    first: oneshot::Sender<Result<(), BackendError>>,
    events: &EventSender,
    user: &OwnedUserId,
    error: BackendError,
) {
    if let Err(Err(error)) = first.send(Err(error)) {
        tracing::warn!(%user, %error, "the Matrix device can't be restored; not retrying");
        let _ = events
            .send(BackendEvent::Connection(ConnectionState::BadCredentials))
            .await;
    }
}

impl Backend for MatrixBackend {
    type Session = MatrixUserSession;

    fn name(&self) -> &'static str {
        "matrix"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            group_chats: true,
            typing: true,
            blocking: true,
            presence: true,
            offline_messages: true,
        }
    }

    async fn login(
        &self,
        credentials: Credentials,
        events: EventSender,
    ) -> Result<MatrixUserSession, BackendError> {
        let link = parse_link(
            &credentials.account,
            &credentials.secret,
            &credentials.options,
        )?;
        let fallback = match option(&credentials.options, OPTION_PRESENCE_FALLBACK) {
            Some(v) => presence::parse_state(v).ok_or_else(|| {
                BackendError::Internal(format!("bad {OPTION_PRESENCE_FALLBACK}: {v}"))
            })?,
            None => PresenceState::Online,
        };
        let user = link.user.clone();
        let generation = begin_login(&user);
        let ready = Arc::new(watch::Sender::new(None));
        let wanted = watch::Sender::new(None);
        let (sends, queue) = mpsc::channel(SEND_QUEUE);
        let (first, outcome) = oneshot::channel();
        let driver = tokio::spawn(drive(
            link,
            fallback,
            events,
            ready.clone(),
            wanted.subscribe(),
            queue,
            first,
        ));
        let session = MatrixUserSession {
            user,
            generation,
            ready,
            wanted,
            sends,
            driver: driver.abort_handle(),
        };
        match tokio::time::timeout(LOGIN_WAIT, outcome).await {
            // Restored (the homeserver answered, or could not be reached at all), or no
            // answer yet: the session goes on connecting by itself.
            Ok(Ok(Ok(()))) | Err(_) => Ok(session),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(BackendError::Internal("the Matrix session ended".into())),
        }
    }
}

impl BackendSession for MatrixUserSession {
    fn set_presence(
        &self,
        state: PresenceState,
        name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        // Only recorded: the presence task publishes the latest state when it can.
        self.wanted.send_replace(Some(Wanted {
            state,
            name: name.to_owned(),
        }));
        std::future::ready(Ok(()))
    }

    fn add_contact(
        &self,
        list: List,
        handle: &str,
        _name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let shared = self.shared();
        let handle = handle.to_owned();
        async move { shared.await?.add_contact(list, &handle).await }
    }

    fn remove_contact(
        &self,
        list: List,
        handle: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let shared = self.shared();
        let handle = handle.to_owned();
        async move { shared.await?.remove_contact(list, &handle).await }
    }

    /// A person's chat is the direct chat with them (created if there is none); a room's is
    /// the room.
    fn open_chat(&self, handle: &str) -> impl Future<Output = Result<ChatId, BackendError>> + Send {
        let shared = self.shared();
        let handle = handle.to_owned();
        async move { shared.await?.open_chat(&handle).await }
    }

    /// Queued at once, in call order; resolves `Ok` when the homeserver returned the event
    /// id. Failures are retried (with the same transaction id, so never sent twice) until the
    /// message's deadline, [`SEND_DEADLINE`] less a second after this call: then it resolves
    /// `Err`, and the message is dropped, never sent later. Dropping the returned future
    /// changes nothing: the message is sent all the same (the core does not wait for
    /// messages sent without acknowledgement).
    fn send_message(
        &self,
        chat: &ChatId,
        message: &OutgoingMessage,
    ) -> impl Future<Output = Result<(), BackendError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.sends.try_send(Outgoing {
            room: chat.0.clone(),
            text: message.text.clone(),
            reply,
            deadline: tokio::time::Instant::now() + (SEND_DEADLINE - SEND_MARGIN),
        });
        async move {
            match queued {
                Ok(()) => answer.await.unwrap_or(Err(BackendError::Disconnected)),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    Err(BackendError::Internal("too many messages waiting".into()))
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(BackendError::Disconnected),
            }
        }
    }

    fn send_typing(&self, chat: &ChatId) -> impl Future<Output = Result<(), BackendError>> + Send {
        let shared = self.shared();
        let room = chat.0.clone();
        async move { shared.await?.send_typing(&room).await }
    }

    fn invite(
        &self,
        chat: &ChatId,
        handle: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let shared = self.shared();
        let room = chat.0.clone();
        let handle = handle.to_owned();
        async move { shared.await?.invite(&room, &handle).await }
    }

    /// Stops every task of the session (syncing, sending, presence) and releases its client
    /// and store, then sets the Matrix presence to offline (for up to 2 s), unless a newer
    /// session of the same account has begun meanwhile.
    fn logout(&self) -> impl Future<Output = ()> + Send {
        self.driver.abort();
        let shared = self.ready.send_replace(None);
        let latest = is_latest_login(&self.user, self.generation);
        async move {
            let Some(shared) = shared else { return };
            // A refresh whose new tokens the aborted task had not written yet.
            save_tokens(&shared.client).await;
            if latest {
                let _ = tokio::time::timeout(LOGOUT_OFFLINE_BOUND, shared.go_offline()).await;
            }
        }
    }
}

/// Whether a sync error means the device was logged out (revoked token).
pub(crate) fn sync_error_is_fatal(e: &matrix_sdk::Error) -> bool {
    is_unknown_token(e) || matches!(e.client_api_error_kind(), Some(ErrorKind::UserDeactivated))
}
