//! The Matrix backend through the bridges/api interface, against a real Synapse started by the
//! test, with an independent matrix-sdk client (Bob) on the other side.
//!
//! Alice is the msngate user: her account is linked with `link` and logged in with
//! `MatrixBackend::login`; what she would see on MSN is the `BackendEvent`s.
#![cfg(feature = "matrix")]

mod support;

use std::time::Duration;

use matrix_sdk::ruma::api::client::presence::get_presence;
use matrix_sdk::ruma::presence::PresenceState as MatrixPresence;
use matrix_sdk::ruma::RoomId;
use matrix_sdk::ruma::UserId;
use msngate_bridge_api::{
    Backend, BackendError, BackendEvent, BackendSession, ChatId, ConnectionState, ContactKind,
    Credentials, List, OutgoingMessage, PresenceState, LOGIN_BOUND, SEND_DEADLINE,
};
use msngate_bridge_matrix::{
    handle_for_room, link, unlink, Linked, MatrixBackend, MatrixUserSession,
};
use support::matrix::MatrixClient;
use support::netcut::NetCut;
use support::synapse::Synapse;
use tokio::sync::mpsc;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);
const BOB: &str = "bob@localhost";

/// What Alice's MSN side receives.
struct Events {
    rx: mpsc::Receiver<BackendEvent>,
    buffer: Vec<BackendEvent>,
}

impl Events {
    /// Takes the first buffered or incoming event `matches` accepts; panics after [`WAIT`].
    async fn next(&mut self, what: &str, matches: impl Fn(&BackendEvent) -> bool) -> BackendEvent {
        self.next_within(what, WAIT, matches).await
    }

    /// [`Events::next`], waiting up to `limit`.
    async fn next_within(
        &mut self,
        what: &str,
        limit: Duration,
        matches: impl Fn(&BackendEvent) -> bool,
    ) -> BackendEvent {
        if let Some(i) = self.buffer.iter().position(&matches) {
            return self.buffer.remove(i);
        }
        let deadline = Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) if matches(&e) => return e,
                Ok(Some(e)) => self.buffer.push(e),
                Ok(None) => panic!("event channel closed while waiting for {what}"),
                Err(_) => panic!("waited {limit:?} for {what}; saw {:#?}", self.buffer),
            }
        }
    }

    /// Every event (buffered and arriving) within `window`.
    async fn within(&mut self, window: Duration) -> Vec<BackendEvent> {
        let deadline = Instant::now() + window;
        let mut all = std::mem::take(&mut self.buffer);
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            all.push(e);
        }
        all
    }

    async fn message(&mut self, text: &str) -> BackendEvent {
        let what = format!("the message {text:?}");
        self.next(
            &what,
            |e| matches!(e, BackendEvent::Message { text: t, .. } if t == text),
        )
        .await
    }
}

fn texts(events: &[BackendEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            BackendEvent::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// A linked account and its store directory.
struct Account {
    linked: Linked,
    _store: tempfile::TempDir,
}

async fn link_alice(server: &Synapse) -> Account {
    link_alice_at(server, &server.url()).await
}

/// Links alice with the homeserver at `url` (the server itself, or a proxy in front of it).
async fn link_alice_at(server: &Synapse, url: &str) -> Account {
    let store = tempfile::tempdir().expect("store dir");
    let linked = link(
        url,
        &server.user_id("alice"),
        "alice-pw",
        &store.path().join("alice"),
    )
    .await
    .expect("link alice");
    Account {
        linked,
        _store: store,
    }
}

fn credentials(account: &Account) -> Credentials {
    Credentials {
        msn_handle: "alice@msn.example".into(),
        account: account.linked.account.clone(),
        secret: account.linked.secret.clone(),
        options: account.linked.options.clone(),
    }
}

/// Logs alice in; also gives how long `login` took.
async fn login_timed(
    account: &Account,
) -> (Result<MatrixUserSession, BackendError>, Duration, Events) {
    let (tx, rx) = mpsc::channel(256);
    let started = Instant::now();
    let session = MatrixBackend.login(credentials(account), tx).await;
    let took = started.elapsed();
    let events = Events {
        rx,
        buffer: Vec::new(),
    };
    (session, took, events)
}

/// Logs to the test's output as `RUST_LOG` says (nothing unless it is set).
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn login(account: &Account) -> (MatrixUserSession, Events) {
    init_logging();
    let (session, _, mut events) = login_timed(account).await;
    let session = session.expect("login alice");
    events
        .next("the contact list", |e| {
            matches!(e, BackendEvent::ContactList(_))
        })
        .await;
    (session, events)
}

/// A Synapse with alice and bob.
async fn server_with_users() -> Synapse {
    let server = Synapse::start().await;
    server.register("alice", "alice-pw").await;
    server.register("bob", "bob-pw").await;
    server
}

async fn bob(server: &Synapse) -> MatrixClient {
    MatrixClient::login(&server.url(), &server.user_id("bob"), "bob-pw").await
}

/// Alice (through the backend) opens a direct chat with Bob, who joins it.
async fn direct_chat(server: &Synapse, alice: &MatrixUserSession, bob: &MatrixClient) -> ChatId {
    let chat = alice.open_chat(BOB).await.expect("open chat with bob");
    let room = RoomId::parse(&chat.0).expect("chat is a room id");
    bob.join(&room).await;
    bob.wait_member_joined(&room, &server.user_id("alice"))
        .await;
    chat
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_refuses_a_wrong_password_and_login_a_revoked_device() {
    let server = server_with_users().await;
    let store = tempfile::tempdir().unwrap();
    let wrong = link(
        &server.url(),
        &server.user_id("alice"),
        "wrong",
        &store.path().join("a"),
    )
    .await;
    assert_eq!(wrong, Err(BackendError::BadCredentials));

    let nowhere = link(
        "http://127.0.0.1:1",
        &server.user_id("alice"),
        "alice-pw",
        &store.path().join("b"),
    )
    .await;
    assert!(
        matches!(nowhere, Err(BackendError::Unreachable(_))),
        "{nowhere:?}"
    );

    let account = link_alice(&server).await;
    assert_eq!(account.linked.account, "@alice:localhost");
    assert!(!account.linked.secret.contains("alice-pw"));
    unlink(
        &account.linked.account,
        &account.linked.secret,
        &account.linked.options,
    )
    .await
    .expect("unlink");
    let (tx, _rx) = mpsc::channel(16);
    let revoked = MatrixBackend
        .login(
            Credentials {
                msn_handle: "alice@msn.example".into(),
                account: account.linked.account.clone(),
                secret: account.linked.secret.clone(),
                options: account.linked.options.clone(),
            },
            tx,
        )
        .await;
    assert!(
        matches!(revoked, Err(BackendError::BadCredentials)),
        "{revoked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_list_has_direct_chat_partners_and_rooms() {
    let server = server_with_users().await;
    // Before linking: Alice (from another client) has a direct chat with Bob, and is in a
    // room Bob made.
    let alice_elsewhere =
        MatrixClient::login_offline(&server.url(), &server.user_id("alice"), "alice-pw").await;
    let bob = bob(&server).await;
    let dm = alice_elsewhere.create_dm(&server.user_id("bob")).await;
    bob.join(&dm).await;
    let room = bob
        .create_room("Stammtisch", false, &[&server.user_id("alice")])
        .await;
    alice_elsewhere.join(&room).await;
    alice_elsewhere.room(&room).await;

    let account = link_alice(&server).await;
    let (tx, rx) = mpsc::channel(256);
    let _session = MatrixBackend
        .login(
            Credentials {
                msn_handle: "alice@msn.example".into(),
                account: account.linked.account.clone(),
                secret: account.linked.secret.clone(),
                options: account.linked.options.clone(),
            },
            tx,
        )
        .await
        .expect("login");
    let mut events = Events {
        rx,
        buffer: Vec::new(),
    };
    let BackendEvent::ContactList(contacts) = events
        .next("the contact list", |e| {
            matches!(e, BackendEvent::ContactList(_))
        })
        .await
    else {
        unreachable!()
    };
    let bob_contact = contacts
        .iter()
        .find(|c| c.handle == BOB)
        .unwrap_or_else(|| panic!("bob is not in {contacts:#?}"));
    assert_eq!(bob_contact.kind, ContactKind::Person);
    for list in [List::Forward, List::Allow, List::Reverse] {
        assert!(bob_contact.lists.contains(&list), "{bob_contact:?}");
    }
    let room_handle = handle_for_room(room.as_str()).unwrap();
    let group = contacts
        .iter()
        .find(|c| c.handle == room_handle)
        .unwrap_or_else(|| panic!("the room is not in {contacts:#?}"));
    assert_eq!(group.kind, ContactKind::Group);
    assert_eq!(group.name, "Stammtisch");
    assert!(group.lists.contains(&List::Forward));
    // Rooms always look online, so that MSN can open them.
    events
        .next("the room online", |e| {
            matches!(e, BackendEvent::Presence { handle, state: PresenceState::Online, .. } if *handle == room_handle)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_chat_both_ways_with_non_ascii_text() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, mut events) = login(&account).await;
    let mut bob = bob(&server).await;
    let chat = direct_chat(&server, &alice, &bob).await;
    let room = RoomId::parse(&chat.0).unwrap();
    let changed = events
        .next(
            "bob added as a contact",
            |e| matches!(e, BackendEvent::ContactChanged(c) if c.handle == BOB),
        )
        .await;
    assert!(matches!(changed, BackendEvent::ContactChanged(c) if c.lists.contains(&List::Forward)));

    let text = "Grüße, 世界 ✓";
    bob.send_text(&room, text).await;
    let BackendEvent::Message {
        chat: got,
        from,
        id,
        ..
    } = events.message(text).await
    else {
        unreachable!()
    };
    assert_eq!((got, from.as_str()), (chat.clone(), BOB));
    assert!(id.is_some());

    alice
        .send_message(
            &chat,
            &OutgoingMessage {
                text: "Hallo zurück, 世界 ✓".into(),
            },
        )
        .await
        .expect("send");
    let (in_room, body) = bob.next_text_from(&server.user_id("alice")).await;
    assert_eq!(
        (in_room.as_str(), body.as_str()),
        (room.as_str(), "Hallo zurück, 世界 ✓")
    );
    // Alice's own message does not come back to her.
    let later = events.within(Duration::from_secs(2)).await;
    assert!(
        !texts(&later).iter().any(|t| t.starts_with("Hallo zurück")),
        "{later:#?}"
    );

    // Removing bob from the FL leaves the direct chat; adding him again opens a new one.
    alice
        .remove_contact(List::Forward, BOB)
        .await
        .expect("remove bob");
    events
        .next(
            "bob removed",
            |e| matches!(e, BackendEvent::ContactRemoved { handle } if handle == BOB),
        )
        .await;
    alice
        .add_contact(List::Forward, BOB, "bob")
        .await
        .expect("add bob again");
    events
        .next("bob back", |e| {
            matches!(e, BackendEvent::ContactChanged(c) if c.handle == BOB && c.lists.contains(&List::Forward))
        })
        .await;
    let again = alice.open_chat(BOB).await.expect("open chat");
    assert_ne!(again, chat, "a new direct chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_room_invite_join_and_messages_both_ways() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, mut events) = login(&account).await;
    let mut bob = bob(&server).await;
    let room = bob
        .create_room("Geheim", true, &[&server.user_id("alice")])
        .await;

    let added = events
        .next("bob's invite", |e| {
            matches!(e, BackendEvent::AddedBy { .. })
        })
        .await;
    assert!(
        matches!(&added, BackendEvent::AddedBy { handle, .. } if handle == BOB),
        "{added:?}"
    );
    alice
        .add_contact(List::Allow, BOB, "bob")
        .await
        .expect("accept the invite");
    let room_handle = handle_for_room(room.as_str()).unwrap();
    events
        .next("the room on the contact list", |e| {
            matches!(e, BackendEvent::ContactChanged(c) if c.handle == room_handle && c.kind == ContactKind::Group)
        })
        .await;
    bob.wait_member_joined(&room, &server.user_id("alice"))
        .await;

    bob.send_text(&room, "nur für uns 🔐").await;
    let chat = ChatId(room.to_string());
    events
        .next("bob joining the conversation", |e| {
            matches!(e, BackendEvent::Joined { chat: c, handle, .. } if *c == chat && handle == BOB)
        })
        .await;
    let message = events.message("nur für uns 🔐").await;
    assert!(
        matches!(&message, BackendEvent::Message { chat: c, from, .. } if *c == chat && from == BOB)
    );

    alice
        .send_message(
            &chat,
            &OutgoingMessage {
                text: "verschlüsselt zurück".into(),
            },
        )
        .await
        .expect("send");
    let (in_room, body) = bob.next_text_from(&server.user_id("alice")).await;
    assert_eq!((in_room, body.as_str()), (room, "verschlüsselt zurück"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_both_ways() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, mut events) = login(&account).await;
    let mut bob = bob(&server).await;
    let chat = direct_chat(&server, &alice, &bob).await;
    let room = RoomId::parse(&chat.0).unwrap();

    bob.set_typing(&room).await;
    events
        .next(
            "bob typing",
            |e| matches!(e, BackendEvent::Typing { chat: c, from } if *c == chat && from == BOB),
        )
        .await;
    alice.send_typing(&chat).await.expect("typing");
    bob.next_typing(&room, &server.user_id("alice")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_both_ways() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, mut events) = login(&account).await;
    let mut bob = bob(&server).await;
    direct_chat(&server, &alice, &bob).await;

    alice
        .set_presence(PresenceState::BeRightBack, "Alice")
        .await
        .expect("presence");
    let (presence, message) = bob
        .next_presence(&server.user_id("alice"), |p, _| {
            *p == MatrixPresence::Unavailable
        })
        .await;
    assert_eq!(
        (presence, message.as_deref()),
        (MatrixPresence::Unavailable, Some("Be Right Back"))
    );

    // Hidden: offline to contacts, while the session keeps syncing.
    alice
        .set_presence(PresenceState::Hidden, "Alice")
        .await
        .expect("presence");
    bob.next_presence(&server.user_id("alice"), |p, _| {
        *p == MatrixPresence::Offline
    })
    .await;

    bob.set_presence(MatrixPresence::Unavailable, Some("Busy"))
        .await;
    events
        .next("bob busy", |e| {
            matches!(e, BackendEvent::Presence { handle, state: PresenceState::Busy, .. } if handle == BOB)
        })
        .await;
    bob.set_presence(MatrixPresence::Online, None).await;
    events
        .next("bob online", |e| {
            matches!(e, BackendEvent::Presence { handle, state: PresenceState::Online, .. } if handle == BOB)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_offline_arrive_once() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, mut events) = login(&account).await;
    let bob = bob(&server).await;
    let chat = direct_chat(&server, &alice, &bob).await;
    let room = RoomId::parse(&chat.0).unwrap();
    bob.send_text(&room, "online").await;
    events.message("online").await;
    alice.logout().await;
    drop(alice);
    drop(events);

    bob.send_text(&room, "eins").await;
    bob.send_text(&room, "zwei").await;
    let (alice, mut events) = login(&account).await;
    events.message("eins").await;
    events.message("zwei").await;
    let rest = texts(&events.within(Duration::from_secs(3)).await);
    assert!(rest.is_empty(), "delivered again: {rest:?}");
    alice.logout().await;
    drop(alice);
    drop(events);

    // Another logon: nothing old comes again, and new messages still do.
    let (_alice, mut events) = login(&account).await;
    bob.send_text(&room, "drei").await;
    events.message("drei").await;
    let all = texts(&events.within(Duration::from_secs(2)).await);
    assert!(all.is_empty(), "delivered again: {all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeserver_restart_mid_conversation() {
    let mut server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, mut events) = login(&account).await;
    let mut bob = bob(&server).await;
    let chat = direct_chat(&server, &alice, &bob).await;
    let room = RoomId::parse(&chat.0).unwrap();
    bob.send_text(&room, "vorher").await;
    events.message("vorher").await;

    server.stop().await;
    events
        .next("the connection lost", |e| {
            matches!(
                e,
                BackendEvent::Connection(ConnectionState::TransientDisconnect { .. })
            )
        })
        .await;
    // Sent while the homeserver is down: delivered once it is back.
    let pending = alice.send_message(
        &chat,
        &OutgoingMessage {
            text: "während".into(),
        },
    );
    server.start_again().await;
    pending.await.expect("sent after the restart");
    events
        .next("the connection back", |e| {
            matches!(e, BackendEvent::Connection(ConnectionState::Connected))
        })
        .await;
    let (_, body) = bob.next_text_from(&server.user_id("alice")).await;
    assert_eq!(body, "während");

    bob.send_text(&room, "nachher").await;
    events.message("nachher").await;
    alice
        .send_message(
            &chat,
            &OutgoingMessage {
                text: "auch nachher".into(),
            },
        )
        .await
        .expect("send");
    let (_, body) = bob.next_text_from(&server.user_id("alice")).await;
    assert_eq!(body, "auch nachher");

    let rest = events.within(Duration::from_secs(2)).await;
    let again = texts(&rest);
    assert!(again.is_empty(), "delivered twice: {again:?}");
    let bob_again = bob.texts_within(Duration::from_secs(1)).await;
    assert!(bob_again.is_empty(), "bob got twice: {bob_again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_unblock_join_and_leave_a_room() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, mut events) = login(&account).await;
    let bob = bob(&server).await;
    let alice_id = server.user_id("alice");

    // Blocking the inviter declines the invite and puts them on the BL.
    bob.create_room("Werbung", false, &[&alice_id]).await;
    events
        .next(
            "bob's first invite",
            |e| matches!(e, BackendEvent::AddedBy { handle, .. } if handle == BOB),
        )
        .await;
    alice
        .add_contact(List::Block, BOB, "bob")
        .await
        .expect("block");
    events
        .next("bob on the block list", |e| {
            matches!(e, BackendEvent::ContactChanged(c)
                if c.handle == BOB && c.lists.contains(&List::Block) && !c.lists.contains(&List::Allow))
        })
        .await;
    alice
        .remove_contact(List::Block, BOB)
        .await
        .expect("unblock");
    events
        .next("bob off the block list", |e| match e {
            BackendEvent::ContactRemoved { handle } => handle == BOB,
            BackendEvent::ContactChanged(c) => c.handle == BOB && !c.lists.contains(&List::Block),
            _ => false,
        })
        .await;

    // Accepting an invite with FL joins the room; removing the room from the FL leaves it.
    let room = bob.create_room("Runde", false, &[&alice_id]).await;
    events
        .next(
            "bob's second invite",
            |e| matches!(e, BackendEvent::AddedBy { handle, .. } if handle == BOB),
        )
        .await;
    alice
        .add_contact(List::Forward, BOB, "bob")
        .await
        .expect("accept");
    let room_handle = handle_for_room(room.as_str()).unwrap();
    let BackendEvent::ContactChanged(group) = events
        .next(
            "the room as a contact",
            |e| matches!(e, BackendEvent::ContactChanged(c) if c.handle == room_handle),
        )
        .await
    else {
        unreachable!()
    };
    assert_eq!(
        (group.kind, group.name.as_str()),
        (ContactKind::Group, "Runde")
    );
    bob.wait_member_joined(&room, &alice_id).await;
    alice
        .remove_contact(List::Forward, &room_handle)
        .await
        .expect("leave the room");
    events
        .next(
            "the room removed",
            |e| matches!(e, BackendEvent::ContactRemoved { handle } if *handle == room_handle),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_homeserver_presence_contacts_show_the_fallback_state() {
    let server = Synapse::start_without_presence().await;
    server.register("alice", "alice-pw").await;
    server.register("bob", "bob-pw").await;
    let account = link_alice(&server).await;
    let (alice, _events) = login(&account).await;
    let bob = bob(&server).await;
    direct_chat(&server, &alice, &bob).await;
    alice.logout().await;
    drop(alice);

    let (tx, rx) = mpsc::channel(256);
    let mut options = account.linked.options.clone();
    options.push(("presence_fallback".into(), "Away".into()));
    let _alice = MatrixBackend
        .login(
            Credentials {
                msn_handle: "alice@msn.example".into(),
                account: account.linked.account.clone(),
                secret: account.linked.secret.clone(),
                options,
            },
            tx,
        )
        .await
        .expect("login");
    let mut events = Events {
        rx,
        buffer: Vec::new(),
    };
    events
        .next("bob shown in the fallback state", |e| {
            matches!(e, BackendEvent::Presence { handle, state: PresenceState::Away, .. } if handle == BOB)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_absence_is_caught_up_completely_and_in_order() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, _events) = login(&account).await;
    let bob = bob(&server).await;
    let chat = direct_chat(&server, &alice, &bob).await;
    let room = RoomId::parse(&chat.0).unwrap();
    alice.logout().await;
    drop(alice);

    // More than one sync returns per room (100): the rest is fetched back.
    let sent: Vec<String> = (1..=130).map(|i| format!("Nachricht {i}")).collect();
    for text in &sent {
        bob.send_text(&room, text).await;
    }
    let (_alice, mut events) = login(&account).await;
    events.message("Nachricht 130").await;
    let mut got = texts(&std::mem::take(&mut events.buffer));
    got.push("Nachricht 130".into());
    got.extend(texts(&events.within(Duration::from_secs(2)).await));
    assert_eq!(got, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_logged_out_elsewhere_ends_the_session_without_retrying() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let (_alice, mut events) = login(&account).await;
    // Logging the msngate device out (here through unlink; a user would do it in Element)
    // revokes its token while the session syncs.
    unlink(
        &account.linked.account,
        &account.linked.secret,
        &account.linked.options,
    )
    .await
    .expect("unlink");
    events
        .next("bad credentials", |e| {
            matches!(e, BackendEvent::Connection(ConnectionState::BadCredentials))
        })
        .await;
    // Only what comes after: no reconnection attempts.
    events.buffer.clear();
    let after = events.within(Duration::from_secs(3)).await;
    assert!(
        !after
            .iter()
            .any(|e| matches!(e, BackendEvent::Connection(_))),
        "the session kept trying: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_chat_invite_accepted_makes_the_inviter_a_contact() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, mut events) = login(&account).await;
    let mut bob = bob(&server).await;
    let room = bob.create_dm(&server.user_id("alice")).await;
    events
        .next(
            "bob's invite",
            |e| matches!(e, BackendEvent::AddedBy { handle, .. } if handle == BOB),
        )
        .await;
    alice
        .add_contact(List::Allow, BOB, "bob")
        .await
        .expect("accept");
    events
        .next("bob as a contact", |e| {
            matches!(e, BackendEvent::ContactChanged(c)
                if c.handle == BOB && c.kind == ContactKind::Person && c.lists.contains(&List::Forward))
        })
        .await;
    // The chat with bob is the room he invited alice to.
    let chat = alice.open_chat(BOB).await.expect("open chat");
    assert_eq!(chat.0, room.as_str());
    alice
        .send_message(
            &chat,
            &OutgoingMessage {
                text: "angenommen".into(),
            },
        )
        .await
        .expect("send");
    let (in_room, body) = bob.next_text_from(&server.user_id("alice")).await;
    assert_eq!((in_room, body.as_str()), (room, "angenommen"));
}

fn is_disconnect(e: &BackendEvent) -> bool {
    matches!(
        e,
        BackendEvent::Connection(ConnectionState::TransientDisconnect { .. })
    )
}

fn is_connected(e: &BackendEvent) -> bool {
    matches!(e, BackendEvent::Connection(ConnectionState::Connected))
}

/// In the first 10 s of an outage the session tries again a handful of times, backing off
/// from the first failure, instead of opening connections every half second; and it comes
/// back when the homeserver does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_retried_with_backoff_not_in_a_storm() {
    let server = server_with_users().await;
    let proxy = NetCut::start(server.port()).await;
    let account = link_alice_at(&server, &proxy.url()).await;
    let (_alice, mut events) = login(&account).await;

    proxy.cut();
    let before = proxy.accepted();
    events.next("the connection lost", is_disconnect).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let attempts = proxy.accepted() - before;
    assert!(
        attempts <= 6,
        "{attempts} connection attempts in the first 10 s of the outage"
    );
    let shown = events.within(Duration::ZERO).await;
    let repeated = shown.iter().filter(|e| is_disconnect(e)).count();
    assert_eq!(repeated, 0, "the outage reported again: {shown:#?}");

    proxy.restore();
    // The next attempt comes within the backoff (at most 12 s at this point).
    events.next("the connection back", is_connected).await;
}

/// A frozen homeserver (it accepts connections but answers nothing): `login` still returns a
/// session within LOGIN_BOUND, which connects once the homeserver answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_returns_within_the_bound_while_the_homeserver_is_frozen() {
    let mut server = server_with_users().await;
    let account = link_alice(&server).await;
    server.freeze();
    // Thawed after 8 s, so that a login that waits shows how long it waited.
    let ((session, took, mut events), ()) = tokio::join!(login_timed(&account), async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        server.thaw();
    });
    let alice = session.expect("a session while the homeserver is frozen");
    assert!(took <= LOGIN_BOUND, "login took {took:?}");
    events
        .next("the contact list once thawed", |e| {
            matches!(e, BackendEvent::ContactList(_))
        })
        .await;
    let bob = bob(&server).await;
    let chat = direct_chat(&server, &alice, &bob).await;
    alice
        .send_message(&chat, &OutgoingMessage { text: "da".into() })
        .await
        .expect("send after the thaw");
}

/// A device revoked while the homeserver could not answer: `login` returns a session within
/// the bound, which reports BadCredentials once it learns of it, and does not retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_learnt_after_the_bound_is_bad_credentials() {
    let mut server = server_with_users().await;
    let account = link_alice(&server).await;
    unlink(
        &account.linked.account,
        &account.linked.secret,
        &account.linked.options,
    )
    .await
    .expect("unlink");
    server.freeze();
    let ((session, took, mut events), ()) = tokio::join!(login_timed(&account), async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        server.thaw();
    });
    let _alice = session.expect("a session while the homeserver is frozen");
    assert!(took <= LOGIN_BOUND, "login took {took:?}");
    events
        .next("bad credentials", |e| {
            matches!(e, BackendEvent::Connection(ConnectionState::BadCredentials))
        })
        .await;
    events.buffer.clear();
    let after = events.within(Duration::from_secs(3)).await;
    assert!(
        !after
            .iter()
            .any(|e| matches!(e, BackendEvent::Connection(_))),
        "the session kept trying: {after:?}"
    );
}

/// set_presence returns at once while the homeserver is frozen; the latest state set is the
/// one contacts see once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_presence_does_not_wait_for_a_frozen_homeserver() {
    let mut server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, _events) = login(&account).await;
    let mut bob = bob(&server).await;
    direct_chat(&server, &alice, &bob).await;

    server.freeze();
    let (took, ()) = tokio::join!(
        async {
            let started = Instant::now();
            for state in [PresenceState::BeRightBack, PresenceState::Busy] {
                alice.set_presence(state, "Alice").await.expect("presence");
            }
            started.elapsed()
        },
        async {
            tokio::time::sleep(Duration::from_secs(8)).await;
            server.thaw();
        }
    );
    assert!(
        took < Duration::from_millis(500),
        "set_presence took {took:?}"
    );
    bob.next_presence(&server.user_id("alice"), |p, m| {
        *p == MatrixPresence::Unavailable && m == Some("Busy")
    })
    .await;
}

/// A message written during an outage that lasts longer than SEND_DEADLINE fails within it
/// and never turns up later; what the contact wrote meanwhile arrives once after the
/// reconnection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_failed_at_the_deadline_is_never_delivered_later() {
    let server = server_with_users().await;
    let proxy = NetCut::start(server.port()).await;
    let account = link_alice_at(&server, &proxy.url()).await;
    let (alice, mut events) = login(&account).await;
    let mut bob = bob(&server).await;
    let chat = direct_chat(&server, &alice, &bob).await;
    let room = RoomId::parse(&chat.0).unwrap();
    bob.send_text(&room, "vorher").await;
    events.message("vorher").await;

    proxy.cut();
    events.next("the connection lost", is_disconnect).await;
    bob.send_text(&room, "während eins").await;
    bob.send_text(&room, "während zwei").await;
    let started = Instant::now();
    let sent = tokio::time::timeout(
        SEND_DEADLINE + Duration::from_secs(2),
        alice.send_message(
            &chat,
            &OutgoingMessage {
                text: "verloren".into(),
            },
        ),
    )
    .await;
    let took = started.elapsed();
    let sent = sent.unwrap_or_else(|_| panic!("send_message still waiting after {took:?}"));
    assert!(sent.is_err(), "sent during the outage? {sent:?}");
    // The deadline's own timer, plus a second for a busy machine to run the task.
    assert!(
        took <= SEND_DEADLINE + Duration::from_secs(1),
        "the failure took {took:?}"
    );

    proxy.restore();
    // (The Connected of the logon may still be buffered.)
    events.buffer.clear();
    // After an outage of over 30 s the next attempt may be up to 48 s away (backoff 32 s, +50 %).
    events
        .next_within("the connection back", Duration::from_secs(90), is_connected)
        .await;
    events.message("während eins").await;
    events.message("während zwei").await;
    alice
        .send_message(
            &chat,
            &OutgoingMessage {
                text: "danach".into(),
            },
        )
        .await
        .expect("send after the outage");
    let (_, body) = bob.next_text_from(&server.user_id("alice")).await;
    assert_eq!(body, "danach", "the failed message came first");
    let late = bob.texts_within(Duration::from_secs(5)).await;
    assert!(late.is_empty(), "bob got later: {late:?}");
    let again = texts(&events.within(Duration::from_secs(1)).await);
    assert!(again.is_empty(), "delivered again: {again:?}");
}

/// After a reconnection every contact's presence is reported again, changed or not, so that
/// MSN (which shows everyone offline after a long outage) can show them online again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_presence_is_reported_again_after_a_reconnection() {
    let server = server_with_users().await;
    let proxy = NetCut::start(server.port()).await;
    let account = link_alice_at(&server, &proxy.url()).await;
    let (alice, mut events) = login(&account).await;
    let bob = bob(&server).await;
    bob.set_presence(MatrixPresence::Online, None).await;
    direct_chat(&server, &alice, &bob).await;
    let bob_online = |e: &BackendEvent| matches!(e, BackendEvent::Presence { handle, state: PresenceState::Online, .. } if handle == BOB);
    events.next("bob online", bob_online).await;

    proxy.cut();
    events.next("the connection lost", is_disconnect).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    events.buffer.clear();
    events.next("the connection back", is_connected).await;
    events.buffer.clear();
    events.next("bob online again", bob_online).await;
}

/// Logging out ends the session for good (its client and store released): logging in again
/// at once with the same store is as quick as any logon, the new state reaches contacts, and
/// the old session's offline presence does not undo it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_again_right_after_logout_is_quick() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, _events) = login(&account).await;
    let mut bob = bob(&server).await;
    direct_chat(&server, &alice, &bob).await;
    alice
        .set_presence(PresenceState::Online, "Alice")
        .await
        .expect("presence");
    bob.next_presence(&server.user_id("alice"), |p, _| {
        *p == MatrixPresence::Online
    })
    .await;

    let started = Instant::now();
    alice.logout().await;
    drop(alice);
    let (session, took, mut events) = login_timed(&account).await;
    let alice = session.expect("login again");
    assert!(took <= LOGIN_BOUND, "login again took {took:?}");
    let started_presence = Instant::now();
    alice
        .set_presence(PresenceState::Away, "Alice")
        .await
        .expect("presence");
    let presence_took = started_presence.elapsed();
    assert!(
        presence_took < Duration::from_millis(500),
        "set_presence after the new login took {presence_took:?}"
    );
    events
        .next("the contact list", |e| {
            matches!(e, BackendEvent::ContactList(_))
        })
        .await;
    let connected_after = started.elapsed();
    assert!(
        connected_after < Duration::from_secs(5),
        "connected again {connected_after:?} after logging out"
    );
    bob.next_presence(&server.user_id("alice"), |p, m| {
        *p == MatrixPresence::Unavailable && m == Some("Away")
    })
    .await;
    // A little later she is still away, not offline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alice_id = UserId::parse(server.user_id("alice")).unwrap();
    let now = bob
        .client
        .send(get_presence::v3::Request::new(alice_id))
        .await
        .expect("alice's presence");
    assert_eq!(now.presence, MatrixPresence::Unavailable);
}

/// Calling a third person into a conversation invites them to the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inviting_a_third_person_into_a_chat() {
    let server = server_with_users().await;
    server.register("carol", "carol-pw").await;
    let account = link_alice(&server).await;
    let (alice, mut events) = login(&account).await;
    let bob = bob(&server).await;
    let chat = direct_chat(&server, &alice, &bob).await;
    let room = RoomId::parse(&chat.0).unwrap();
    alice
        .invite(&chat, "carol@localhost")
        .await
        .expect("invite carol");
    let mut carol = MatrixClient::login(&server.url(), &server.user_id("carol"), "carol-pw").await;
    // The room is invite-only: joining works because of the invite.
    carol.join(&room).await;
    // Once alice's session has seen her (her message arrives), alice's messages reach her
    // too (the room is encrypted: they are encrypted for the members alice's store knows).
    carol.send_text(&room, "Hallo Alice").await;
    events.message("Hallo Alice").await;
    alice
        .send_message(
            &chat,
            &OutgoingMessage {
                text: "Hallo Carol".into(),
            },
        )
        .await
        .expect("send");
    let (in_room, body) = carol.next_text_from(&server.user_id("alice")).await;
    assert_eq!((in_room, body.as_str()), (room, "Hallo Carol"));
    assert_eq!(
        alice.invite(&chat, "not a handle").await,
        Err(BackendError::InvalidContact)
    );
}

/// A message whose request reached the homeserver just as it froze: the send fails at the
/// deadline, and when the homeserver resumes and carries the request out after all, the
/// message is taken back (redacted), so the contact is not left with a message the user was
/// told failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_failed_while_the_homeserver_froze_is_taken_back() {
    let mut server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, _events) = login(&account).await;
    let mut bob = bob(&server).await;
    let chat = direct_chat(&server, &alice, &bob).await;
    let room = RoomId::parse(&chat.0).unwrap();
    // Keys shared: the next message is a single request.
    alice
        .send_message(
            &chat,
            &OutgoingMessage {
                text: "vorher".into(),
            },
        )
        .await
        .expect("send");
    bob.next_text_from(&server.user_id("alice")).await;

    server.freeze();
    let sent = alice
        .send_message(
            &chat,
            &OutgoingMessage {
                text: "eingefroren".into(),
            },
        )
        .await;
    server.thaw();
    assert!(sent.is_err(), "sent while frozen? {sent:?}");
    // Give the homeserver time to carry the request out, and the session to see it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let bob_room = bob.room(&room).await;
    let page = bob_room
        .messages(matrix_sdk::room::MessagesOptions::backward())
        .await
        .expect("bob reads the room");
    let readable: Vec<String> = page
        .chunk
        .iter()
        .filter_map(|e| {
            e.raw()
                .get_field::<serde_json::Value>("content")
                .ok()
                .flatten()
        })
        .filter_map(|c| c.get("body").and_then(|b| b.as_str()).map(str::to_owned))
        .collect();
    assert!(
        !readable.iter().any(|b| b == "eingefroren"),
        "bob can read the failed message: {readable:?}"
    );
    assert!(readable.iter().any(|b| b == "vorher"), "{readable:?}");
}

/// The SQLite files of `dir` that only exist while a connection has the database open
/// (write-ahead log and shared memory; SQLite removes them when the last one closes).
fn open_store_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with("-shm") || n.ends_with("-wal"))
                .collect()
        })
        .unwrap_or_default()
}

/// After logout the session's matrix-sdk client is gone and its store closed, although the
/// session value itself is still around (the core may drop it later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flaky: in two of four full parallel runs the crypto store stayed open 10 s after \
            logout (a matrix-sdk task still holding the client?); cause not found yet"]
async fn logout_closes_the_store() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let store = std::path::PathBuf::from(
        account
            .linked
            .options
            .iter()
            .find(|(k, _)| k == "store_dir")
            .map(|(_, v)| v.clone())
            .expect("store_dir"),
    );
    let (alice, _events) = login(&account).await;
    assert!(
        !open_store_files(&store).is_empty(),
        "the store looks closed while in use"
    );
    alice.logout().await;
    // The aborted tasks let go of the client when the runtime next gets to them, and
    // matrix-sdk's own tasks a little later: seconds on a loaded machine (3 s was once short).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !open_store_files(&store).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open_store_files(&store), Vec::<String>::new(), "still open");
    drop(alice);
}

/// A homeserver whose access tokens expire after a few seconds: the session refreshes its
/// token and goes on, and a later logon starts from the refreshed tokens (the link's are
/// spent by then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_access_tokens_are_refreshed_and_kept() {
    let server = Synapse::start_with_token_lifetime(5).await;
    server.register("alice", "alice-pw").await;
    server.register("bob", "bob-pw").await;
    let account = link_alice(&server).await;
    let (alice, mut events) = login(&account).await;
    let mut bob = bob(&server).await;
    let chat = direct_chat(&server, &alice, &bob).await;
    let room = RoomId::parse(&chat.0).unwrap();

    tokio::time::sleep(Duration::from_secs(7)).await;
    alice
        .send_message(
            &chat,
            &OutgoingMessage {
                text: "nach dem Ablauf".into(),
            },
        )
        .await
        .expect("send with an expired token");
    let (_, body) = bob.next_text_from(&server.user_id("alice")).await;
    assert_eq!(body, "nach dem Ablauf");
    bob.send_text(&room, "angekommen").await;
    events.message("angekommen").await;
    alice.logout().await;
    drop(alice);
    drop(events);

    tokio::time::sleep(Duration::from_secs(7)).await;
    let (alice, mut events) = login(&account).await;
    bob.send_text(&room, "wieder da").await;
    events.message("wieder da").await;
    alice
        .send_message(
            &chat,
            &OutgoingMessage {
                text: "ich auch".into(),
            },
        )
        .await
        .expect("send after the next logon");
    let (_, body) = bob.next_text_from(&server.user_id("alice")).await;
    assert_eq!(body, "ich auch");
    let all = events.within(Duration::ZERO).await;
    assert!(
        !all.iter()
            .any(|e| matches!(e, BackendEvent::Connection(ConnectionState::BadCredentials))),
        "{all:#?}"
    );
}

/// A message is queued at the call: it is sent even when nobody waits for its answer (the
/// core drops the futures of messages the MSN client sent without acknowledgement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_nobody_waits_for_is_sent_all_the_same() {
    let server = server_with_users().await;
    let account = link_alice(&server).await;
    let (alice, _events) = login(&account).await;
    let mut bob = bob(&server).await;
    let chat = direct_chat(&server, &alice, &bob).await;
    for text in ["eins", "zwei"] {
        drop(alice.send_message(&chat, &OutgoingMessage { text: text.into() }));
    }
    let (_, first) = bob.next_text_from(&server.user_id("alice")).await;
    let (_, second) = bob.next_text_from(&server.user_id("alice")).await;
    assert_eq!((first.as_str(), second.as_str()), ("eins", "zwei"));
}
