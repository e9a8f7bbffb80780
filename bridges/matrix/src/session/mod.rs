//! One logged-in user's Matrix session: the sync loop that turns sync responses into
//! `BackendEvent`s, the sender task that sends messages in order, and the user's actions.
//!
//! State shared between them (the contact list last reported, pending invites, presence
//! shown, event ids seen) sits behind one `std::sync::Mutex` that is never held across an
//! `.await`.
//!
//! This file holds that state and the sync loop; the rest is split by concern: `contacts`
//! (the contact list, invites, the user's list changes), `presence` (contacts' and the user's,
//! the presence task), `timeline` (incoming room events) and `sending` (chats and the sender
//! task).

mod contacts;
mod presence;
mod sending;
mod timeline;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::presence::PresenceState as RumaPresence;
use matrix_sdk::ruma::{OwnedRoomId, OwnedTransactionId, OwnedUserId, UInt};
use matrix_sdk::store::StateStoreDataKey;
use matrix_sdk::Client;
use msngate_bridge_api::{
    BackendError, BackendEvent, ConnectionState, Contact, EventSender, PresenceState,
};
use tokio::sync::{oneshot, watch};

use crate::presence::MatrixPresence;

pub use presence::presence_loop;
pub use sending::send_loop;

/// Events per room that one sync returns (Synapse's default is 10); a room with more new
/// events than that is filled in with [`Shared::backfill`].
pub const TIMELINE_LIMIT: u32 = 100;
/// At most this many events per room are fetched back when a sync was cut short.
const BACKFILL_MAX: usize = 1000;
/// The long-poll timeout of each sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How many event ids are remembered to drop redeliveries.
const SEEN_EVENTS: usize = 4096;
/// How long an undecryptable event waits for its key before it is shown as such.
const UTD_GRACE: Duration = Duration::from_secs(20);
/// How many users the per-session maps (presence of non-contacts, `Joined` announcements)
/// keep at most.
const MAX_TRACKED: usize = 10_000;
/// How many undecryptable events may wait at once.
const UTD_PENDING: usize = 256;
/// How many given-up messages are watched for (see `State::abandoned`).
const ABANDONED_MAX: usize = 256;

/// The sync settings of every sync: the raised timeline limit and the long-poll timeout.
pub fn sync_settings(presence: Option<RumaPresence>) -> SyncSettings {
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(UInt::from(TIMELINE_LIMIT));
    let mut settings = SyncSettings::default()
        .filter(Filter::FilterDefinition(filter))
        .timeout(SYNC_TIMEOUT);
    if let Some(p) = presence {
        settings = settings.set_presence(p);
    }
    settings
}

/// A message waiting for the sender task.
pub struct Outgoing {
    pub room: String,
    pub text: String,
    pub reply: oneshot::Sender<Result<(), BackendError>>,
    /// After this the message is not sent (or retried) any more: it failed.
    pub deadline: tokio::time::Instant,
}

/// The user's own state and name as last set with `set_presence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub state: PresenceState,
    pub name: String,
}

/// A set of recent event ids with a fixed capacity.
#[derive(Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// True the first time an id is given.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= SEEN_EVENTS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// An encrypted event still waiting for its key.
struct Undecrypted {
    room: OwnedRoomId,
    event: TimelineEvent,
    since: Instant,
}

#[derive(Default)]
struct State {
    /// The contact list last reported, by handle.
    contacts: BTreeMap<String, Contact>,
    /// Pending invites: inviter handle -> rooms they invited the user to.
    invites: HashMap<String, HashSet<OwnedRoomId>>,
    /// Rooms whose invite was already reported.
    invited_rooms: HashSet<OwnedRoomId>,
    /// Direct chat invites the user accepted (being joined, or joined) whose `m.direct`
    /// entry the store doesn't have yet: room -> inviter. Until it has, these rooms count as
    /// direct chats with the inviter (see [`Shared::direct_users`]).
    accepted_direct: HashMap<OwnedRoomId, OwnedUserId>,
    /// Presence last shown per contact handle, and the last presence of other users (not
    /// shown, remembered for when they become contacts).
    presence: HashMap<String, PresenceState>,
    /// Whether the homeserver has sent any presence at all this session.
    presence_seen: bool,
    /// Who is typing per room, to report only starts.
    typing: HashMap<OwnedRoomId, HashSet<OwnedUserId>>,
    /// (room, user) pairs already announced with `Joined` this session.
    joined: HashSet<(OwnedRoomId, OwnedUserId)>,
    seen: Seen,
    undecrypted: Vec<Undecrypted>,
    /// Transaction ids of messages given up at their deadline while a request for them may
    /// have reached the homeserver: if one turns up after all, it is redacted.
    abandoned: VecDeque<OwnedTransactionId>,
}

pub struct Shared {
    pub client: Client,
    pub own: OwnedUserId,
    events: EventSender,
    fallback: PresenceState,
    state: Mutex<State>,
    /// Held while the contact list is computed, compared and reported, so that two tasks
    /// (the sync loop and a user's action) never report an older list after a newer one.
    reporting: tokio::sync::Mutex<()>,
    /// How many times the session has (re)connected: 0 until the first sync succeeded,
    /// one more after each reconnection. Sending waits for the first: only a sync tells the
    /// encryption layer about the contacts' devices that appeared since the last logon, and a
    /// message encrypted before would be unreadable on those devices. The presence task
    /// publishes the user's state again after each.
    connections: watch::Sender<u64>,
    /// The user's own state as last set, for the presence task and each sync.
    wanted: watch::Receiver<Option<Wanted>>,
    /// The presence the sync in flight asked for (`set_presence`): a homeserver applies it when
    /// that request reaches it, which can be after the presence task set a newer state.
    syncing_with: Mutex<Option<RumaPresence>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ruma_presence(p: MatrixPresence) -> RumaPresence {
    match p {
        MatrixPresence::Online => RumaPresence::Online,
        MatrixPresence::Unavailable => RumaPresence::Unavailable,
        MatrixPresence::Offline => RumaPresence::Offline,
    }
}

fn matrix_presence(p: &RumaPresence) -> MatrixPresence {
    match p {
        RumaPresence::Online => MatrixPresence::Online,
        RumaPresence::Unavailable => MatrixPresence::Unavailable,
        _ => MatrixPresence::Offline,
    }
}

fn other(e: impl std::fmt::Display) -> BackendError {
    BackendError::Rejected(e.to_string())
}

fn is_network(e: &matrix_sdk::Error) -> bool {
    matches!(e, matrix_sdk::Error::Http(h) if !matches!(**h, matrix_sdk::HttpError::Api(_)))
}

fn is_server_answer(e: &matrix_sdk::HttpError) -> bool {
    matches!(e, matrix_sdk::HttpError::Api(_))
}

/// Whether a failure may pass by itself: no answer, rate limited, or a server error.
fn is_transient(e: &matrix_sdk::Error) -> bool {
    is_network(e)
        || e.as_client_api_error()
            .is_some_and(|api| api.status_code.as_u16() == 429 || api.status_code.is_server_error())
}

impl Shared {
    pub fn new(
        client: Client,
        own: OwnedUserId,
        events: EventSender,
        fallback: PresenceState,
        wanted: watch::Receiver<Option<Wanted>>,
    ) -> Shared {
        Shared {
            client,
            own,
            events,
            fallback,
            state: Mutex::new(State::default()),
            reporting: tokio::sync::Mutex::new(()),
            connections: watch::Sender::new(0),
            wanted,
            syncing_with: Mutex::new(None),
        }
    }

    async fn emit(&self, event: BackendEvent) {
        let _ = self.events.send(event).await;
    }
}

/// The sync position the store holds (where the next sync continues).
async fn stored_sync_token(client: &Client) -> Option<String> {
    client
        .state_store()
        .get_kv_data(StateStoreDataKey::SyncToken)
        .await
        .ok()
        .flatten()
        .and_then(|value| value.into_sync_token())
}

/// Syncs until the task is aborted or the device is logged out. Reports
/// `TransientDisconnect` once when syncing starts failing, and `Connected` and the whole
/// contact list with every contact's presence after each first successful sync.
pub async fn sync_loop(shared: Arc<Shared>) {
    let mut connected = false;
    let mut reported_down = false;
    let mut attempt = 0;
    loop {
        let presence = shared.sync_presence();
        *shared
            .syncing_with
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = presence.clone();
        let mut settings = sync_settings(presence);
        if !connected {
            // Come back quickly with what is there, instead of long-polling.
            settings = settings.timeout(Duration::ZERO);
        }
        let since = stored_sync_token(&shared.client).await;
        match shared.client.sync_once(settings).await {
            Ok(response) => {
                attempt = 0;
                if !connected {
                    connected = true;
                    reported_down = false;
                    shared
                        .emit(BackendEvent::Connection(ConnectionState::Connected))
                        .await;
                    shared.report_contact_list().await;
                    shared.connections.send_modify(|n| *n += 1);
                }
                shared.handle_sync(response, since).await;
            }
            Err(e) if crate::sync_error_is_fatal(&e) => {
                tracing::warn!(user = %shared.own, "the Matrix homeserver revoked the device; not retrying");
                shared
                    .emit(BackendEvent::Connection(ConnectionState::BadCredentials))
                    .await;
                return;
            }
            Err(e) => {
                let delay = msngate_bridge_api::reconnect_backoff(attempt);
                tracing::info!(user = %shared.own, error = %e, ?delay, "Matrix sync failed; retrying");
                connected = false;
                if !reported_down {
                    reported_down = true;
                    shared
                        .emit(BackendEvent::Connection(
                            ConnectionState::TransientDisconnect {
                                reason: e.to_string(),
                            },
                        ))
                        .await;
                }
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_drops_repeats_and_stays_bounded() {
        let mut seen = Seen::default();
        assert!(seen.insert("$a"));
        assert!(!seen.insert("$a"));
        for i in 0..SEEN_EVENTS + 10 {
            seen.insert(&format!("${i}"));
        }
        assert!(seen.set.len() <= SEEN_EVENTS);
        assert_eq!(seen.set.len(), seen.order.len());
        assert!(seen.insert("$a"), "the oldest ids are forgotten");
    }
}
