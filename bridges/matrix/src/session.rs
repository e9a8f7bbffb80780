//! One logged-in user's Matrix session: the sync loop that turns sync responses into
//! `BackendEvent`s, the sender task that sends messages in order, and the user's actions.
//!
//! State shared between them (the contact list last reported, pending invites, presence
//! shown, event ids seen) sits behind one `std::sync::Mutex` that is never held across an
//! `.await`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::presence::{get_presence, set_presence};
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::events::direct::DirectEventContent;
use matrix_sdk::ruma::events::ignored_user_list::IgnoredUserListEventContent;
use matrix_sdk::ruma::events::presence::PresenceEvent;
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::events::room::message::{MessageType, RoomMessageEventContent};
use matrix_sdk::ruma::events::{
    AnySyncEphemeralRoomEvent, AnySyncMessageLikeEvent, AnySyncStateEvent, AnySyncTimelineEvent,
    SyncMessageLikeEvent, SyncStateEvent,
};
use matrix_sdk::ruma::presence::PresenceState as RumaPresence;
use matrix_sdk::ruma::{
    MxcUri, OwnedRoomId, OwnedTransactionId, OwnedUserId, RoomId, TransactionId, UInt, UserId,
};
use matrix_sdk::store::StateStoreDataKey;
use matrix_sdk::{Client, Room, RoomState};
use msngate_bridge_api::{
    BackendError, BackendEvent, ChatId, ConnectionState, Contact, ContactKind, EventSender, List,
    PresenceState,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::handles::{handle_for_room, handle_for_user, room_for_handle, user_for_handle};
use crate::presence::{from_matrix, to_matrix, MatrixPresence};

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
        }
    }

    async fn emit(&self, event: BackendEvent) {
        let _ = self.events.send(event).await;
    }

    fn sync_presence(&self) -> Option<RumaPresence> {
        let own = self.wanted.borrow().as_ref().map(|w| w.state);
        own.map(|s| ruma_presence(to_matrix(s).0))
    }

    /// The people a room is a direct chat with: its `m.direct` targets as the store has
    /// them, or, until the store has that, the inviter of a direct chat invite the user
    /// accepted. Empty for a group room.
    fn direct_users(&self, room: &Room) -> Vec<OwnedUserId> {
        let targets: Vec<OwnedUserId> = room
            .direct_targets()
            .into_iter()
            .filter_map(|t| t.as_user_id().map(|u| u.to_owned()))
            .filter(|u| *u != self.own)
            .collect();
        if !targets.is_empty() {
            return targets;
        }
        lock(&self.state)
            .accepted_direct
            .get(room.room_id())
            .cloned()
            .into_iter()
            .collect()
    }

    /// The joined direct chats with `user`, accepted invites not yet in `m.direct` included.
    fn joined_direct_chats(&self, user: &UserId) -> Vec<Room> {
        let mut rooms: Vec<Room> = self
            .client
            .get_dm_rooms(user)
            .filter(|r| r.state() == RoomState::Joined)
            .collect();
        let accepted: Vec<OwnedRoomId> = lock(&self.state)
            .accepted_direct
            .iter()
            .filter(|(_, inviter)| *inviter == user)
            .map(|(room, _)| room.clone())
            .collect();
        for room_id in accepted {
            if rooms.iter().any(|r| r.room_id() == room_id) {
                continue;
            }
            if let Some(room) = self
                .client
                .get_room(&room_id)
                .filter(|r| r.state() == RoomState::Joined)
            {
                rooms.push(room);
            }
        }
        rooms
    }

    /// Forgets accepted direct chat invites the store now knows as direct chats (or that
    /// are no longer joined or being joined).
    fn forget_settled_direct_invites(&self) {
        let rooms: Vec<OwnedRoomId> = lock(&self.state).accepted_direct.keys().cloned().collect();
        let settled: Vec<OwnedRoomId> = rooms
            .into_iter()
            .filter(|room_id| {
                self.client.get_room(room_id).is_none_or(|r| {
                    !matches!(r.state(), RoomState::Invited | RoomState::Joined)
                        || r.direct_targets()
                            .iter()
                            .any(|t| t.as_user_id() != Some(&self.own))
                })
            })
            .collect();
        let mut state = lock(&self.state);
        for room_id in settled {
            state.accepted_direct.remove(&room_id);
        }
    }

    /// The contact list as the store knows it now.
    async fn current_contacts(&self) -> BTreeMap<String, Contact> {
        self.forget_settled_direct_invites();
        let mut contacts = BTreeMap::new();
        for room in self.client.joined_rooms() {
            let targets = self.direct_users(&room);
            if !targets.is_empty() {
                for user in targets {
                    let Some(handle) = handle_for_user(user.as_str()) else {
                        continue;
                    };
                    let name = self.member_name(&room, &user).await;
                    contacts.insert(
                        handle.clone(),
                        Contact {
                            handle,
                            name,
                            kind: ContactKind::Person,
                            lists: vec![List::Forward, List::Allow, List::Reverse],
                        },
                    );
                }
            } else if let Some(handle) = handle_for_room(room.room_id().as_str()) {
                let name = match room.display_name().await {
                    Ok(n) => n.to_string(),
                    Err(_) => room.room_id().to_string(),
                };
                contacts.insert(
                    handle.clone(),
                    Contact {
                        handle,
                        name,
                        kind: ContactKind::Group,
                        lists: vec![List::Forward],
                    },
                );
            }
        }
        // Ignored users are on the BL (and not the AL), like XMPP's blocklist.
        for user in self.ignored_users().await {
            let Some(handle) = handle_for_user(user.as_str()) else {
                continue;
            };
            let contact = contacts.entry(handle.clone()).or_insert(Contact {
                handle,
                name: user.localpart().to_owned(),
                kind: ContactKind::Person,
                lists: Vec::new(),
            });
            contact.lists.retain(|l| *l != List::Allow);
            contact.lists.push(List::Block);
        }
        // Inviters not otherwise on the list are on the RL only.
        let invites: Vec<(String, String)> = {
            let state = lock(&self.state);
            state
                .invites
                .keys()
                .map(|h| (h.clone(), h.clone()))
                .collect()
        };
        for (handle, name) in invites {
            contacts.entry(handle.clone()).or_insert(Contact {
                handle,
                name,
                kind: ContactKind::Person,
                lists: vec![List::Reverse],
            });
        }
        contacts
    }

    /// The account's `m.ignored_user_list`, as the store has it.
    async fn ignored_users(&self) -> Vec<OwnedUserId> {
        let Ok(Some(raw)) = self
            .client
            .account()
            .account_data::<IgnoredUserListEventContent>()
            .await
        else {
            return Vec::new();
        };
        raw.deserialize()
            .map(|content| content.ignored_users.into_keys().collect())
            .unwrap_or_default()
    }

    async fn member_name(&self, room: &Room, user: &UserId) -> String {
        match room.get_member_no_sync(user).await {
            Ok(Some(member)) => member.name().to_owned(),
            _ => user.localpart().to_owned(),
        }
    }

    /// Looks at invited rooms and reports new invites as `AddedBy`.
    async fn check_invites(&self) {
        let mut current = HashSet::new();
        for room in self.client.invited_rooms() {
            let room_id = room.room_id().to_owned();
            current.insert(room_id.clone());
            if lock(&self.state).invited_rooms.contains(&room_id) {
                continue;
            }
            let Ok(details) = room.invite_details().await else {
                continue;
            };
            let inviter = details.inviter_id.clone();
            let Some(handle) = handle_for_user(inviter.as_str()) else {
                continue;
            };
            let name = details
                .inviter
                .as_ref()
                .map(|m| m.name().to_owned())
                .unwrap_or_else(|| inviter.localpart().to_owned());
            {
                let mut state = lock(&self.state);
                state.invited_rooms.insert(room_id.clone());
                state
                    .invites
                    .entry(handle.clone())
                    .or_default()
                    .insert(room_id);
            }
            self.emit(BackendEvent::AddedBy { handle, name }).await;
        }
        // Invites that went away (accepted, declined, withdrawn).
        let mut state = lock(&self.state);
        state.invited_rooms.retain(|r| current.contains(r));
        for rooms in state.invites.values_mut() {
            rooms.retain(|r| current.contains(r));
        }
        state.invites.retain(|_, rooms| !rooms.is_empty());
    }

    /// Reports the whole contact list and every contact's presence.
    async fn report_contact_list(&self) {
        let _reporting = self.reporting.lock().await;
        self.check_invites().await;
        let contacts = self.current_contacts().await;
        lock(&self.state).contacts = contacts.clone();
        self.emit(BackendEvent::ContactList(
            contacts.values().cloned().collect(),
        ))
        .await;
        lock(&self.state).presence.clear();
        for contact in contacts.values() {
            self.report_initial_presence(contact).await;
        }
    }

    /// Reports what changed in the contact list since it was last reported.
    async fn report_contact_changes(&self) {
        let _reporting = self.reporting.lock().await;
        self.check_invites().await;
        let contacts = self.current_contacts().await;
        let old = std::mem::replace(&mut lock(&self.state).contacts, contacts.clone());
        for (handle, contact) in &contacts {
            if old.get(handle) != Some(contact) {
                self.emit(BackendEvent::ContactChanged(contact.clone()))
                    .await;
                // Also an inviter (on the RL only) who becomes a contact.
                let was_forward = old
                    .get(handle)
                    .is_some_and(|c| c.lists.contains(&List::Forward));
                if !was_forward {
                    self.report_initial_presence(contact).await;
                }
            }
        }
        for handle in old.keys() {
            if !contacts.contains_key(handle) {
                lock(&self.state).presence.remove(handle);
                self.emit(BackendEvent::ContactRemoved {
                    handle: handle.clone(),
                })
                .await;
            }
        }
    }

    /// A new contact's presence: rooms are always online; people as the homeserver says,
    /// or the fallback state when it has no presence. Reported even when it is the state
    /// remembered from before they were a contact: it was not shown then.
    async fn report_initial_presence(&self, contact: &Contact) {
        let state = match contact.kind {
            ContactKind::Group => PresenceState::Online,
            ContactKind::Person if !contact.lists.contains(&List::Forward) => return,
            ContactKind::Person => {
                let known = lock(&self.state).presence.get(&contact.handle).copied();
                match known {
                    Some(s) => s,
                    None => self.fetch_presence(&contact.handle).await,
                }
            }
        };
        lock(&self.state)
            .presence
            .insert(contact.handle.clone(), state);
        self.emit(BackendEvent::Presence {
            handle: contact.handle.clone(),
            state,
            name: None,
        })
        .await;
    }

    async fn fetch_presence(&self, handle: &str) -> PresenceState {
        let Some(user) = user_for_handle(handle).and_then(|u| OwnedUserId::try_from(u).ok()) else {
            return self.fallback;
        };
        match self.client.send(get_presence::v3::Request::new(user)).await {
            // Synapse with presence disabled answers a bare "offline".
            Ok(r)
                if r.presence == RumaPresence::Offline
                    && r.last_active_ago.is_none()
                    && !lock(&self.state).presence_seen =>
            {
                self.fallback
            }
            Ok(r) => from_matrix(matrix_presence(&r.presence), r.status_msg.as_deref()),
            Err(_) => self.fallback,
        }
    }

    /// Emits a presence event if the state differs from the one shown.
    async fn show_presence(&self, handle: &str, state: PresenceState, name: Option<String>) {
        let changed = lock(&self.state).presence.insert(handle.to_owned(), state) != Some(state);
        if changed {
            self.emit(BackendEvent::Presence {
                handle: handle.to_owned(),
                state,
                name,
            })
            .await;
        }
    }

    async fn handle_presence(&self, raw: &matrix_sdk::ruma::serde::Raw<PresenceEvent>) {
        let Ok(event) = raw.deserialize() else {
            return;
        };
        if event.sender == self.own {
            return;
        }
        let Some(handle) = handle_for_user(event.sender.as_str()) else {
            return;
        };
        let state = from_matrix(
            matrix_presence(&event.content.presence),
            event.content.status_msg.as_deref(),
        );
        let is_contact = {
            let mut s = lock(&self.state);
            s.presence_seen = true;
            s.contacts
                .get(&handle)
                .is_some_and(|c| c.lists.contains(&List::Forward))
        };
        if is_contact {
            self.show_presence(&handle, state, event.content.displayname)
                .await;
        } else {
            // Not shown, but remembered for when they become a contact.
            let mut s = lock(&self.state);
            if s.presence.len() < MAX_TRACKED {
                s.presence.insert(handle, state);
            }
        }
    }

    /// The events between the sync position `since` and a room's cut (`prev_batch`) of a
    /// limited timeline, oldest first: what the sync left out. At most [`BACKFILL_MAX`].
    async fn backfill(&self, room: &Room, prev_batch: &str, since: &str) -> Vec<TimelineEvent> {
        let mut collected = Vec::new();
        let mut from = prev_batch.to_owned();
        while collected.len() < BACKFILL_MAX {
            let mut options = MessagesOptions::backward().from(from.as_str());
            options.to = Some(since.to_owned());
            options.limit = UInt::from(TIMELINE_LIMIT);
            let page = match room.messages(options).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::info!(room = %room.room_id(), error = %e, "Matrix backfill failed");
                    break;
                }
            };
            let got = page.chunk.len();
            collected.extend(page.chunk);
            match page.end {
                Some(end) if got > 0 && end != from => from = end,
                _ => break,
            }
        }
        collected.truncate(BACKFILL_MAX);
        collected.reverse();
        collected
    }

    async fn handle_sync(&self, response: matrix_sdk::sync::SyncResponse, since: Option<String>) {
        for raw in &response.presence {
            self.handle_presence(raw).await;
        }
        let lists_may_change = !response.rooms.joined.is_empty()
            || !response.rooms.left.is_empty()
            || !response.rooms.invited.is_empty()
            || !response.account_data.is_empty();
        if lists_may_change {
            self.report_contact_changes().await;
        }
        for (room_id, update) in &response.rooms.joined {
            let Some(room) = self.client.get_room(room_id) else {
                continue;
            };
            if let (true, Some(prev_batch), Some(since)) = (
                update.timeline.limited,
                update.timeline.prev_batch.as_deref(),
                since.as_deref(),
            ) {
                for event in self.backfill(&room, prev_batch, since).await {
                    self.handle_timeline_event(&room, event).await;
                }
            }
            for event in &update.timeline.events {
                self.handle_timeline_event(&room, event.clone()).await;
            }
            for raw in &update.ephemeral {
                if let Ok(AnySyncEphemeralRoomEvent::Typing(typing)) = raw.deserialize() {
                    self.handle_typing(room_id, typing.content.user_ids).await;
                }
            }
        }
        self.retry_undecrypted().await;
    }

    async fn handle_typing(&self, room_id: &RoomId, now: Vec<OwnedUserId>) {
        let now: HashSet<OwnedUserId> = now.into_iter().filter(|u| *u != self.own).collect();
        let before = lock(&self.state)
            .typing
            .insert(room_id.to_owned(), now.clone())
            .unwrap_or_default();
        for user in now.difference(&before) {
            if let Some(from) = handle_for_user(user.as_str()) {
                self.emit(BackendEvent::Typing {
                    chat: ChatId(room_id.to_string()),
                    from,
                })
                .await;
            }
        }
    }

    async fn handle_timeline_event(&self, room: &Room, event: TimelineEvent) {
        if let TimelineEventKind::UnableToDecrypt { .. } = &event.kind {
            let mut state = lock(&self.state);
            if state.undecrypted.len() < UTD_PENDING {
                state.undecrypted.push(Undecrypted {
                    room: room.room_id().to_owned(),
                    event,
                    since: Instant::now(),
                });
            }
            return;
        }
        let Ok(parsed) = event.raw().deserialize() else {
            return;
        };
        self.handle_parsed(room, parsed).await;
    }

    /// Tries the waiting encrypted events again (their keys may have arrived since); shows
    /// those still undecryptable after the grace period as such.
    async fn retry_undecrypted(&self) {
        let waiting = std::mem::take(&mut lock(&self.state).undecrypted);
        for item in waiting {
            let Some(room) = self.client.get_room(&item.room) else {
                continue;
            };
            let raw = item.event.raw().cast_ref_unchecked();
            match room.decrypt_event(raw, None).await {
                Ok(decrypted)
                    if !matches!(decrypted.kind, TimelineEventKind::UnableToDecrypt { .. }) =>
                {
                    if let Ok(parsed) = decrypted.raw().deserialize() {
                        self.handle_parsed(&room, parsed).await;
                    }
                }
                _ if item.since.elapsed() >= UTD_GRACE => {
                    if let Ok(parsed) = item.event.raw().deserialize() {
                        let id = parsed.event_id().to_string();
                        let sender = parsed.sender().to_owned();
                        self.deliver(&room, &sender, &id, "[unable to decrypt]".into())
                            .await;
                    }
                }
                _ => lock(&self.state).undecrypted.push(item),
            }
        }
    }

    async fn handle_parsed(&self, room: &Room, event: AnySyncTimelineEvent) {
        match event {
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                SyncMessageLikeEvent::Original(message),
            )) => {
                if message.sender == self.own {
                    self.take_back_if_abandoned(room, &message).await;
                    return;
                }
                let name = self.member_name(room, &message.sender).await;
                let Some(text) = self.text_of(&message.content.msgtype, &name) else {
                    return;
                };
                self.deliver(room, &message.sender, message.event_id.as_str(), text)
                    .await;
            }
            AnySyncTimelineEvent::State(AnySyncStateEvent::RoomMember(
                SyncStateEvent::Original(member),
            )) => {
                let leaves = matches!(
                    member.content.membership,
                    MembershipState::Leave | MembershipState::Ban
                );
                let Ok(user) = OwnedUserId::try_from(member.state_key.as_str()) else {
                    return;
                };
                let key = (room.room_id().to_owned(), user.clone());
                if leaves && lock(&self.state).joined.remove(&key) {
                    if let Some(handle) = handle_for_user(user.as_str()) {
                        self.emit(BackendEvent::Left {
                            chat: ChatId(room.room_id().to_string()),
                            handle,
                        })
                        .await;
                    }
                }
            }
            _ => {}
        }
    }

    /// Emits a message once per event id, preceded in group rooms by the sender's `Joined`.
    async fn deliver(&self, room: &Room, sender: &UserId, event_id: &str, text: String) {
        if sender == self.own || !lock(&self.state).seen.insert(event_id) {
            return;
        }
        let Some(from) = handle_for_user(sender.as_str()) else {
            return;
        };
        let name = self.member_name(room, sender).await;
        let chat = ChatId(room.room_id().to_string());
        let is_direct = !self.direct_users(room).is_empty();
        if !is_direct {
            let first = {
                let mut state = lock(&self.state);
                // Bounded: past the cap, senders are announced again (harmless for MSN).
                if state.joined.len() >= MAX_TRACKED {
                    state.joined.clear();
                }
                state
                    .joined
                    .insert((room.room_id().to_owned(), sender.to_owned()))
            };
            if first {
                self.emit(BackendEvent::Joined {
                    chat: chat.clone(),
                    handle: from.clone(),
                    name: name.clone(),
                })
                .await;
            }
        }
        self.emit(BackendEvent::Message {
            chat,
            from,
            name,
            text,
            id: Some(event_id.to_owned()),
        })
        .await;
    }

    fn text_of(&self, message: &MessageType, name: &str) -> Option<String> {
        let media = |kind: &str,
                     body: &str,
                     source: &matrix_sdk::ruma::events::room::MediaSource| {
            let url = match source {
                matrix_sdk::ruma::events::room::MediaSource::Plain(uri) => self.download_url(uri),
                matrix_sdk::ruma::events::room::MediaSource::Encrypted(file) => {
                    format!("{} (encrypted)", self.download_url(&file.url))
                }
            };
            format!("[{kind}] {body}: {url}")
        };
        let text = match message {
            MessageType::Text(t) => t.body.clone(),
            MessageType::Notice(n) => n.body.clone(),
            MessageType::Emote(e) => format!("* {name} {}", e.body),
            MessageType::Image(i) => media("image", &i.body, &i.source),
            MessageType::File(f) => media("file", &f.body, &f.source),
            MessageType::Video(v) => media("video", &v.body, &v.source),
            MessageType::Audio(a) => media("audio", &a.body, &a.source),
            other => other.body().to_owned(),
        };
        (!text.is_empty()).then_some(text)
    }

    /// The homeserver's (authenticated) download URL of an `mxc://server/id` URI.
    fn download_url(&self, uri: &MxcUri) -> String {
        match uri.parts() {
            Ok((server, id)) => {
                let base = self.client.homeserver();
                format!(
                    "{}/_matrix/client/v1/media/download/{server}/{id}",
                    base.as_str().trim_end_matches('/')
                )
            }
            Err(_) => uri.to_string(),
        }
    }

    fn room(&self, room: &str) -> Result<Room, BackendError> {
        let room_id = OwnedRoomId::try_from(room).map_err(|_| BackendError::InvalidContact)?;
        self.client
            .get_room(&room_id)
            .filter(|r| r.state() == RoomState::Joined)
            .ok_or(BackendError::NoSuchContact)
    }

    /// Publishes the user's state (presence and status message) and, if it changed since
    /// `name_set`, display name. `Err` when the homeserver could not be reached: try again
    /// later. A refusal (a homeserver without presence refuses) is logged and not retried.
    async fn publish_presence(
        &self,
        wanted: &Wanted,
        name_set: &mut Option<String>,
    ) -> Result<(), ()> {
        let (presence, status) = to_matrix(wanted.state);
        let mut request = set_presence::v3::Request::new(self.own.clone(), ruma_presence(presence));
        request.status_msg = status.map(str::to_owned);
        match self.client.send(request).await {
            Ok(_) => {}
            Err(e) if !is_server_answer(&e) => {
                tracing::info!(error = %e, "setting Matrix presence failed; will retry");
                return Err(());
            }
            Err(e) => tracing::debug!(error = %e, "the homeserver refused the Matrix presence"),
        }
        if !wanted.name.is_empty() && name_set.as_deref() != Some(wanted.name.as_str()) {
            match self
                .client
                .account()
                .set_display_name(Some(&wanted.name))
                .await
            {
                Ok(()) => *name_set = Some(wanted.name.clone()),
                Err(e) if is_network(&e) => {
                    tracing::info!(error = %e, "setting the Matrix display name failed; will retry");
                    return Err(());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the homeserver refused the display name");
                    *name_set = Some(wanted.name.clone());
                }
            }
        }
        Ok(())
    }

    pub async fn go_offline(&self) {
        let request = set_presence::v3::Request::new(self.own.clone(), RumaPresence::Offline);
        let _ = self.client.send(request).await;
    }

    fn user_of(handle: &str) -> Result<OwnedUserId, BackendError> {
        user_for_handle(handle)
            .and_then(|u| OwnedUserId::try_from(u).ok())
            .ok_or(BackendError::InvalidContact)
    }

    /// Joins the rooms `handle` invited the user to; false if there were none.
    async fn accept_invites(&self, handle: &str) -> Result<bool, BackendError> {
        let rooms: Vec<OwnedRoomId> = lock(&self.state)
            .invites
            .get(handle)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        let inviter = user_for_handle(handle).and_then(|u| OwnedUserId::try_from(u).ok());
        for room_id in &rooms {
            let Some(room) = self.client.get_room(room_id) else {
                continue;
            };
            // A direct chat invite is a direct chat with the inviter from the moment it is
            // joined, but the store learns that from `m.direct` only at a later sync: until
            // then the contact list would show the room as a group and drop the inviter.
            let direct = match &inviter {
                Some(user)
                    if room.state() == RoomState::Invited
                        && room.is_direct().await.unwrap_or(false) =>
                {
                    Some(user.clone())
                }
                _ => None,
            };
            if let Some(user) = &direct {
                lock(&self.state)
                    .accepted_direct
                    .insert(room_id.clone(), user.clone());
            }
            if let Err(e) = room.join().await {
                lock(&self.state).accepted_direct.remove(room_id);
                return Err(other(e));
            }
            if let Some(user) = &direct {
                self.ensure_direct(room_id, user).await;
            }
        }
        if !rooms.is_empty() {
            lock(&self.state).invites.remove(handle);
            self.report_contact_changes().await;
        }
        Ok(!rooms.is_empty())
    }

    /// Makes sure the account's `m.direct` lists `room` as a direct chat with `user`.
    /// matrix-sdk adds it when it joins a direct chat invite, but not when a sync showed the
    /// room joined before the join request returned.
    async fn ensure_direct(&self, room: &RoomId, user: &OwnedUserId) {
        let account = self.client.account();
        let listed = match account
            .fetch_account_data_static::<DirectEventContent>()
            .await
        {
            Ok(Some(raw)) => raw.deserialize().is_ok_and(|content| {
                content.iter().any(|(target, rooms)| {
                    target.as_user_id() == Some(user) && rooms.iter().any(|r| r == room)
                })
            }),
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(error = %e, "reading m.direct failed");
                return;
            }
        };
        if !listed {
            if let Err(e) = account.mark_as_dm(room, std::slice::from_ref(user)).await {
                tracing::info!(%room, error = %e, "marking a joined direct chat in m.direct failed");
            }
        }
    }

    pub async fn add_contact(&self, list: List, handle: &str) -> Result<(), BackendError> {
        match list {
            List::Reverse => Err(BackendError::Unsupported),
            List::Allow => {
                self.accept_invites(handle).await?;
                Ok(())
            }
            List::Block => {
                let user = Self::user_of(handle)?;
                let rooms: Vec<OwnedRoomId> = lock(&self.state)
                    .invites
                    .remove(handle)
                    .map(|r| r.into_iter().collect())
                    .unwrap_or_default();
                for room_id in rooms {
                    if let Some(room) = self.client.get_room(&room_id) {
                        let _ = room.leave().await;
                    }
                }
                self.client
                    .account()
                    .ignore_user(&user)
                    .await
                    .map_err(other)
            }
            List::Forward if crate::handles::is_room_handle(handle) => {
                let room_id = room_for_handle(handle)
                    .and_then(|r| OwnedRoomId::try_from(r).ok())
                    .ok_or(BackendError::InvalidContact)?;
                self.client.join_room_by_id(&room_id).await.map_err(other)?;
                self.report_contact_changes().await;
                Ok(())
            }
            List::Forward => {
                let user = Self::user_of(handle)?;
                if self.accept_invites(handle).await? {
                    return Ok(());
                }
                let joined = !self.joined_direct_chats(&user).is_empty();
                if !joined {
                    self.client.create_dm(&user).await.map_err(other)?;
                }
                self.report_contact_changes().await;
                Ok(())
            }
        }
    }

    pub async fn remove_contact(&self, list: List, handle: &str) -> Result<(), BackendError> {
        match list {
            List::Reverse | List::Allow => Ok(()),
            List::Block => {
                let user = Self::user_of(handle)?;
                self.client
                    .account()
                    .unignore_user(&user)
                    .await
                    .map_err(other)
            }
            List::Forward if crate::handles::is_room_handle(handle) => {
                let room_id = room_for_handle(handle).ok_or(BackendError::InvalidContact)?;
                let room = self.room(&room_id)?;
                room.leave().await.map_err(other)?;
                self.report_contact_changes().await;
                Ok(())
            }
            List::Forward => {
                let user = Self::user_of(handle)?;
                let rooms = self.joined_direct_chats(&user);
                if rooms.is_empty() {
                    return Err(BackendError::NotThere);
                }
                for room in rooms {
                    room.leave().await.map_err(other)?;
                }
                self.report_contact_changes().await;
                Ok(())
            }
        }
    }

    pub async fn open_chat(&self, handle: &str) -> Result<crate::ChatId, BackendError> {
        if crate::handles::is_room_handle(handle) {
            let room_id = room_for_handle(handle).ok_or(BackendError::InvalidContact)?;
            if let Ok(room) = self.room(&room_id) {
                return Ok(ChatId(room.room_id().to_string()));
            }
            let room_id =
                OwnedRoomId::try_from(room_id).map_err(|_| BackendError::InvalidContact)?;
            let room = self.client.join_room_by_id(&room_id).await.map_err(other)?;
            return Ok(ChatId(room.room_id().to_string()));
        }
        let user = Self::user_of(handle)?;
        // A pending invite from them is the chat they want: accept it rather than make one.
        self.accept_invites(handle).await?;
        let joined = self.joined_direct_chats(&user).into_iter().next();
        let room = match joined {
            Some(room) => room,
            None => {
                let room = self.client.create_dm(&user).await.map_err(other)?;
                self.report_contact_changes().await;
                room
            }
        };
        Ok(ChatId(room.room_id().to_string()))
    }

    pub async fn send_typing(&self, room: &str) -> Result<(), BackendError> {
        self.room(room)?.typing_notice(true).await.map_err(other)
    }

    pub async fn invite(&self, room: &str, handle: &str) -> Result<(), BackendError> {
        let user = Self::user_of(handle)?;
        self.room(room)?
            .invite_user_by_id(&user)
            .await
            .map_err(other)
    }

    /// Remembers the transaction id of a message given up at its deadline.
    fn abandon(&self, txn_id: OwnedTransactionId) {
        let mut state = lock(&self.state);
        if state.abandoned.len() >= ABANDONED_MAX {
            state.abandoned.pop_front();
        }
        state.abandoned.push_back(txn_id);
    }

    /// Redacts one of the user's own messages that the homeserver took after all although
    /// it was given up at its deadline (a request it received before freezing, carried out
    /// when it resumed): the user was told it failed.
    async fn take_back_if_abandoned(
        &self,
        room: &Room,
        message: &matrix_sdk::ruma::events::room::message::OriginalSyncRoomMessageEvent,
    ) {
        let Some(txn_id) = message.unsigned.transaction_id.as_ref() else {
            return;
        };
        let abandoned = {
            let mut state = lock(&self.state);
            let found = state.abandoned.iter().position(|t| t == txn_id);
            found.and_then(|i| state.abandoned.remove(i)).is_some()
        };
        if abandoned {
            tracing::warn!(room = %room.room_id(), "a Matrix message given up at its deadline was sent after all; redacting it");
            if let Err(e) = room
                .redact(&message.event_id, Some("not delivered in time"), None)
                .await
            {
                tracing::warn!(room = %room.room_id(), error = %e, "redacting a late Matrix message failed");
            }
        }
    }

    /// Sends one message, retrying failures that may pass (no answer, 429, 5xx) with backoff
    /// and the same transaction id `txn_id`, so that it is never sent twice. The caller
    /// bounds it.
    async fn send_one(
        &self,
        room: &str,
        text: &str,
        txn_id: &TransactionId,
    ) -> Result<(), BackendError> {
        let mut connections = self.connections.subscribe();
        let _ = connections.wait_for(|n| *n > 0).await;
        let room = self.room(room)?;
        let mut attempt = 0;
        loop {
            let content = RoomMessageEventContent::text_plain(text);
            match room
                .send(content)
                .with_transaction_id(txn_id.to_owned())
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_transient(&e) => {
                    tracing::info!(error = %e, "sending to Matrix failed; retrying");
                    tokio::time::sleep(msngate_bridge_api::reconnect_backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(other(e)),
            }
        }
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

/// Sends queued messages one after another, in order, once the session has a client. A
/// message is given up at its deadline (`Err`; it is never sent after that).
pub async fn send_loop(
    mut ready: watch::Receiver<Option<Arc<Shared>>>,
    mut queue: mpsc::Receiver<Outgoing>,
) {
    while let Some(outgoing) = queue.recv().await {
        let Outgoing {
            room,
            text,
            reply,
            deadline,
        } = outgoing;
        let txn_id = TransactionId::new();
        let shared = ready.borrow().clone();
        let sending = async {
            let shared = match shared {
                Some(shared) => Some(shared),
                None => match ready.wait_for(Option::is_some).await {
                    Ok(shared) => shared.clone(),
                    Err(_) => None,
                },
            };
            match shared {
                Some(shared) => shared.send_one(&room, &text, &txn_id).await,
                None => Err(BackendError::Disconnected),
            }
        };
        // Whether or not anyone still waits for the answer (the core drops the futures of
        // messages sent without acknowledgement): the message was queued at the call.
        let result = match tokio::time::timeout_at(deadline, sending).await {
            Ok(result) => result,
            // Given up at the deadline: never retried. A request may be with the homeserver,
            // though: if the message turns up, it is taken back.
            Err(_) => {
                tracing::info!("a Matrix message was not sent by its deadline; dropped");
                if let Some(shared) = ready.borrow().clone() {
                    shared.abandon(txn_id);
                }
                Err(BackendError::Disconnected)
            }
        };
        let _ = reply.send(result);
    }
}

/// Publishes the user's own state whenever it changes (only the latest: states set while one
/// was being sent are skipped), and again after each reconnection, once the session is
/// connected. A failure is retried with backoff.
pub async fn presence_loop(shared: Arc<Shared>) {
    let mut wanted = shared.wanted.clone();
    let mut connections = shared.connections.subscribe();
    let mut published: Option<(Wanted, u64)> = None;
    let mut name_set: Option<String> = None;
    let mut attempt = 0;
    loop {
        let current = wanted.borrow_and_update().clone();
        let connection = *connections.borrow_and_update();
        let mut retry = None;
        if let Some(current) = current.filter(|_| connection > 0) {
            let done = (current, connection);
            if published.as_ref() != Some(&done) {
                match shared.publish_presence(&done.0, &mut name_set).await {
                    Ok(()) => {
                        published = Some(done);
                        attempt = 0;
                    }
                    Err(()) => {
                        retry = Some(msngate_bridge_api::reconnect_backoff(attempt));
                        attempt += 1;
                    }
                }
            }
        }
        let retry = async move {
            match retry {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            changed = connections.changed() => if changed.is_err() { return },
            () = retry => {}
        }
    }
}

/// Syncs until the task is aborted or the device is logged out. Reports
/// `TransientDisconnect` once when syncing starts failing, and `Connected` and the whole
/// contact list with every contact's presence after each first successful sync.
pub async fn sync_loop(shared: Arc<Shared>) {
    let mut connected = false;
    let mut reported_down = false;
    let mut attempt = 0;
    loop {
        let mut settings = sync_settings(shared.sync_presence());
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
