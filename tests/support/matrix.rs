//! An independent Matrix client for bridge tests: the "other side" of a conversation, built
//! on matrix-sdk (the same crate as the bridge, but none of its code).
//!
//! It logs in with a password into its own temporary SQLite store and syncs in a background
//! task. What arrives (messages, typing, presence) is kept in a buffer, so the `next_*`
//! helpers can be called in any order: each takes the first buffered or incoming item it
//! matches and leaves the rest. Every wait has a timeout ([`TIMEOUT`] unless said otherwise)
//! and panics with what did arrive.

// Each test binary uses some of these helpers.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::api::client::presence::set_presence;
use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoomRequest;
use matrix_sdk::ruma::events::presence::PresenceEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent,
};
use matrix_sdk::ruma::events::typing::SyncTypingEvent;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::presence::PresenceState;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use matrix_sdk::{Client, Room, RoomMemberships, RoomState};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a `next_*` helper waits by default.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Something the client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Text {
        room: OwnedRoomId,
        sender: OwnedUserId,
        body: String,
        event_id: String,
    },
    Typing {
        room: OwnedRoomId,
        users: Vec<OwnedUserId>,
    },
    Presence {
        user: OwnedUserId,
        presence: PresenceState,
        status_msg: Option<String>,
    },
}

pub struct MatrixClient {
    pub client: Client,
    pub user_id: OwnedUserId,
    _store: tempfile::TempDir,
    inbox: mpsc::Receiver<Seen>,
    buffer: Vec<Seen>,
    sync: tokio::task::JoinHandle<()>,
    /// The presence each sync sets.
    presence: Arc<Mutex<PresenceState>>,
}

impl Drop for MatrixClient {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

impl MatrixClient {
    /// Logs `user_id` in with its password and starts syncing, online.
    pub async fn login(homeserver: &str, user_id: &str, password: &str) -> MatrixClient {
        Self::login_as(homeserver, user_id, password, PresenceState::Online).await
    }

    /// Like [`login`](Self::login), but syncing as offline: for a helper that sets something
    /// up. Synapse shows a user as the most online of their devices, and keeps a device that
    /// synced "online" online for 30 s after it stopped (logging out doesn't end that), so
    /// a setup client syncing online would mask the presence of the user's other device.
    pub async fn login_offline(homeserver: &str, user_id: &str, password: &str) -> MatrixClient {
        Self::login_as(homeserver, user_id, password, PresenceState::Offline).await
    }

    async fn login_as(
        homeserver: &str,
        user_id: &str,
        password: &str,
        initial: PresenceState,
    ) -> MatrixClient {
        let store = tempfile::tempdir().expect("store dir");
        let client = Client::builder()
            .homeserver_url(homeserver)
            .sqlite_store(store.path(), None)
            // Tokens may expire (Synapse::start_with_token_lifetime).
            .handle_refresh_tokens()
            .build()
            .await
            .expect("build matrix client");
        client
            .matrix_auth()
            .login_username(user_id, password)
            .initial_device_display_name("test client")
            .request_refresh_token()
            .send()
            .await
            .unwrap_or_else(|e| panic!("login {user_id}: {e}"));
        let user_id = client.user_id().expect("logged in").to_owned();
        // The first sync before the handlers: what happened earlier is not "seen".
        client
            .sync_once(SyncSettings::default().set_presence(initial.clone()))
            .await
            .expect("first sync");
        let (tx, inbox) = mpsc::channel(1024);
        let own = user_id.clone();
        let messages = tx.clone();
        client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent, room: Room| {
            let (tx, own) = (messages.clone(), own.clone());
            async move {
                if ev.sender == own {
                    return;
                }
                let body = match &ev.content.msgtype {
                    MessageType::Text(t) => t.body.clone(),
                    other => other.body().to_owned(),
                };
                let _ = tx.try_send(Seen::Text {
                    room: room.room_id().to_owned(),
                    sender: ev.sender,
                    body,
                    event_id: ev.event_id.to_string(),
                });
            }
        });
        let typing = tx.clone();
        client.add_event_handler(move |ev: SyncTypingEvent, room: Room| {
            let tx = typing.clone();
            async move {
                let _ = tx.try_send(Seen::Typing {
                    room: room.room_id().to_owned(),
                    users: ev.content.user_ids,
                });
            }
        });
        let presence = tx;
        client.add_event_handler(move |ev: PresenceEvent| {
            let tx = presence.clone();
            async move {
                let _ = tx.try_send(Seen::Presence {
                    user: ev.sender,
                    presence: ev.content.presence,
                    status_msg: ev.content.status_msg,
                });
            }
        });
        let syncing = client.clone();
        let presence = Arc::new(Mutex::new(initial));
        let shown = presence.clone();
        let sync = tokio::spawn(async move {
            loop {
                // Synapse sets a syncing user to the sync's presence (online by default),
                // which would undo `set_presence`: sync with the chosen one, as Element does.
                let current = shown.lock().expect("presence lock").clone();
                let settings = SyncSettings::default()
                    .timeout(Duration::from_secs(5))
                    .set_presence(current);
                if syncing.sync_once(settings).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        MatrixClient {
            client,
            user_id,
            _store: store,
            inbox,
            buffer: Vec::new(),
            sync,
            presence,
        }
    }

    /// Creates a direct chat with `user` (inviting them, marked in m.direct).
    pub async fn create_dm(&self, user: &str) -> OwnedRoomId {
        let user = UserId::parse(user).expect("user id");
        let room = self.client.create_dm(&user).await.expect("create dm");
        room.room_id().to_owned()
    }

    /// Creates a group room with a name, optionally end-to-end encrypted, inviting `invite`.
    pub async fn create_room(&self, name: &str, encrypted: bool, invite: &[&str]) -> OwnedRoomId {
        let mut request = CreateRoomRequest::new();
        request.name = Some(name.to_owned());
        request.invite = invite
            .iter()
            .map(|u| UserId::parse(*u).expect("user id"))
            .collect();
        if encrypted {
            let content = RoomEncryptionEventContent::with_recommended_defaults();
            request.initial_state =
                vec![InitialStateEvent::with_empty_state_key(content).to_raw_any()];
        }
        let room = self.client.create_room(request).await.expect("create room");
        room.room_id().to_owned()
    }

    /// Joins a room once the invite has arrived (waits for it).
    pub async fn join(&self, room: &RoomId) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.client.join_room_by_id(room).await {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => panic!("join {room}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Waits until the client's store knows the room (after its creation or join synced).
    pub async fn room(&self, room: &RoomId) -> Room {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(r) = self.client.get_room(room) {
                if r.state() == RoomState::Joined {
                    return r;
                }
            }
            assert!(Instant::now() < deadline, "room {room} never became joined");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `user` is a joined member of `room` (as this client sees it).
    pub async fn wait_member_joined(&self, room: &RoomId, user: &str) {
        let user = UserId::parse(user).expect("user id");
        let r = self.room(room).await;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(members) = r.members(RoomMemberships::JOIN).await {
                if members.iter().any(|m| m.user_id() == user) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{user} never joined {room}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends a plain text message and returns its event id.
    pub async fn send_text(&self, room: &RoomId, text: &str) -> String {
        let r = self.room(room).await;
        let response = r
            .send(RoomMessageEventContent::text_plain(text))
            .await
            .unwrap_or_else(|e| panic!("send to {room}: {e}"));
        response.response.event_id.to_string()
    }

    pub async fn set_typing(&self, room: &RoomId) {
        self.room(room)
            .await
            .typing_notice(true)
            .await
            .expect("typing notice");
    }

    pub async fn set_presence(&self, presence: PresenceState, status_msg: Option<&str>) {
        *self.presence.lock().expect("presence lock") = presence.clone();
        let mut request = set_presence::v3::Request::new(self.user_id.clone(), presence);
        request.status_msg = status_msg.map(str::to_owned);
        self.client.send(request).await.expect("set presence");
    }

    /// Takes the first buffered or incoming item `matches` accepts, within `timeout`.
    pub async fn next_matching(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Seen) -> bool,
    ) -> Seen {
        if let Some(i) = self.buffer.iter().position(&matches) {
            return self.buffer.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some(seen)) if matches(&seen) => return seen,
                Ok(Some(seen)) => self.buffer.push(seen),
                Ok(None) => panic!("matrix client's sync stopped while waiting for {what}"),
                Err(_) => panic!(
                    "{} waited {timeout:?} for {what}; saw {:#?}",
                    self.user_id, self.buffer
                ),
            }
        }
    }

    /// The next text from `sender` (a user id): (room, body).
    pub async fn next_text_from(&mut self, sender: &str) -> (OwnedRoomId, String) {
        let what = format!("a text from {sender}");
        match self
            .next_matching(
                &what,
                TIMEOUT,
                |s| matches!(s, Seen::Text { sender: from, .. } if from.as_str() == sender),
            )
            .await
        {
            Seen::Text { room, body, .. } => (room, body),
            _ => unreachable!(),
        }
    }

    /// Texts that arrive within `window` (for "nothing more" checks).
    pub async fn texts_within(&mut self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut texts = Vec::new();
        self.buffer.retain(|s| match s {
            Seen::Text { body, .. } => {
                texts.push(body.clone());
                false
            }
            _ => true,
        });
        while let Ok(Some(seen)) = tokio::time::timeout_at(deadline, self.inbox.recv()).await {
            match seen {
                Seen::Text { body, .. } => texts.push(body),
                other => self.buffer.push(other),
            }
        }
        texts
    }

    /// Waits until `user` is typing in `room`.
    pub async fn next_typing(&mut self, room: &RoomId, user: &str) {
        let what = format!("{user} typing in {room}");
        self.next_matching(&what, TIMEOUT, |s| {
            matches!(s, Seen::Typing { room: r, users } if r == room && users.iter().any(|u| u.as_str() == user))
        })
        .await;
    }

    /// Waits for a presence of `user` that `accept` accepts: (presence, status_msg).
    pub async fn next_presence(
        &mut self,
        user: &str,
        accept: impl Fn(&PresenceState, Option<&str>) -> bool,
    ) -> (PresenceState, Option<String>) {
        let what = format!("a matching presence of {user}");
        match self
            .next_matching(&what, TIMEOUT, |s| {
                matches!(s, Seen::Presence { user: u, presence, status_msg }
                    if u.as_str() == user && accept(presence, status_msg.as_deref()))
            })
            .await
        {
            Seen::Presence {
                presence,
                status_msg,
                ..
            } => (presence, status_msg),
            _ => unreachable!(),
        }
    }
}
