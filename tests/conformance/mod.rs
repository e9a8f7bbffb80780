//! The shared conformance suite for backends: what every backend behind bridges/api must do,
//! written once against the interface and run against each network with a real server and an
//! independent client of that network on the other side.
//!
//! A network plugs in by implementing [`Network`] (start its server, make two accounts that
//! are contacts of each other, give credentials for one and a client for the other); the
//! [`conformance_suite!`] macro then makes one test per scenario.
//!
//! [`msn`] holds the same promises seen from an MSN client, which every backend runs, the
//! local one included.

pub mod msn;

use std::future::Future;
use std::time::Duration;

use msngate_bridge_api::{
    Backend, BackendError, BackendEvent, BackendSession, ChatId, Credentials, List,
    OutgoingMessage, PresenceState,
};
use tokio::sync::mpsc;

/// How long any expected event may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// The other side: a plain client of the network, logged in as the contact.
pub trait Peer: Send {
    /// Sends a 1:1 message to the bridged user.
    fn send_text(&mut self, text: &str) -> impl Future<Output = ()> + Send;
    /// The next 1:1 message text from the bridged user.
    fn next_text(&mut self) -> impl Future<Output = String> + Send;
    /// Shows the contact as away on the network.
    fn go_away(&mut self) -> impl Future<Output = ()> + Send;
    /// Waits until the network shows the bridged user in a state the backend maps to `state`.
    fn wait_for_user_state(&mut self, state: PresenceState) -> impl Future<Output = ()> + Send;
}

/// A network with a running server, two accounts that are contacts of each other: the user
/// (logged in through the backend) and the contact (a [`Peer`]).
pub trait Network: Sized + Send {
    type Backend: Backend;
    type Peer: Peer;

    fn start() -> impl Future<Output = Self> + Send;
    fn backend(&self) -> Self::Backend;
    /// The user's credentials; with `wrong_secret`, a secret the server refuses.
    fn credentials(&self, wrong_secret: bool) -> impl Future<Output = Credentials> + Send;
    /// The contact's MSN handle, as the backend maps it.
    fn contact_handle(&self) -> String;
    /// The contact, logged in on the network.
    fn peer(&mut self) -> impl Future<Output = Self::Peer> + Send;
}

/// A backend session with its events.
pub struct LoggedIn<S> {
    pub session: S,
    pub events: mpsc::Receiver<BackendEvent>,
}

impl<S: BackendSession> LoggedIn<S> {
    pub async fn login<N: Network<Backend = B>, B: Backend<Session = S>>(network: &N) -> Self {
        let (sender, events) = mpsc::channel(1024);
        let credentials = network.credentials(false).await;
        let session = network
            .backend()
            .login(credentials, sender)
            .await
            .expect("the backend logs the user in");
        LoggedIn { session, events }
    }

    /// Logged in and online, like an MSN client after its first CHG: backends may hold
    /// messages for users who are not online.
    pub async fn online<N: Network<Backend = B>, B: Backend<Session = S>>(network: &N) -> Self {
        let user = Self::login(network).await;
        user.session
            .set_presence(PresenceState::Online, "Alice")
            .await
            .expect("presence is set");
        user
    }

    /// The first event `pick` accepts, skipping others.
    pub async fn next<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&BackendEvent) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Ok(None) => panic!("the session ended while waiting for {what}"),
                Err(_) => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// Every event that arrives within `quiet`, for checks that something did not happen.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<BackendEvent> {
        let mut seen = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout(quiet, self.events.recv()).await {
            seen.push(event);
        }
        seen
    }
}

/// The contact list at login has the contact on the forward list.
pub async fn contact_list_at_login<N: Network>(mut network: N) {
    let _peer = network.peer().await;
    let mut user = LoggedIn::login(&network).await;
    let contact = network.contact_handle();
    let lists = user
        .next("the contact list", |e| match e {
            BackendEvent::ContactList(list) => Some(list.clone()),
            _ => None,
        })
        .await;
    let entry = lists
        .iter()
        .find(|c| c.handle == contact)
        .unwrap_or_else(|| panic!("{contact} is not in the contact list: {lists:?}"));
    assert!(entry.lists.contains(&List::Forward), "{entry:?}");
    user.session.logout().await;
}

/// A refused secret is `BadCredentials` at login, not a session that retries.
pub async fn wrong_secret_is_refused<N: Network>(network: N) {
    let (sender, _events) = mpsc::channel(16);
    let credentials = network.credentials(true).await;
    let result = network.backend().login(credentials, sender).await;
    assert!(
        matches!(result, Err(BackendError::BadCredentials)),
        "expected BadCredentials"
    );
}

/// Text goes both ways unchanged, non-ASCII included; each message arrives once and the
/// user's own messages are not echoed back as incoming ones.
pub async fn chat_both_ways<N: Network>(mut network: N) {
    let mut peer = network.peer().await;
    let mut user = LoggedIn::online(&network).await;
    let contact = network.contact_handle();
    let chat: ChatId = user
        .session
        .open_chat(&contact)
        .await
        .expect("a chat with the contact opens");
    let out = "Grüße aus 1999 ✓ 世界";
    let sent = user.session.send_message(
        &chat,
        &OutgoingMessage {
            text: out.to_owned(),
        },
    );
    sent.await.expect("the server takes the message");
    assert_eq!(peer.next_text().await, out);

    let back = "Antwort: ça marche — 👍";
    peer.send_text(back).await;
    let (from, text) = user
        .next("the contact's message", |e| match e {
            BackendEvent::Message { from, text, .. } => Some((from.clone(), text.clone())),
            _ => None,
        })
        .await;
    assert_eq!((from.as_str(), text.as_str()), (contact.as_str(), back));
    let later: Vec<_> = user
        .drain(Duration::from_secs(2))
        .await
        .into_iter()
        .filter(|e| matches!(e, BackendEvent::Message { .. }))
        .collect();
    assert!(later.is_empty(), "duplicated or echoed messages: {later:?}");
    user.session.logout().await;
}

/// Presence both ways: the contact going away shows as Away; the user going busy shows on
/// the network as what the backend maps Busy to.
pub async fn presence_both_ways<N: Network>(mut network: N) {
    let mut peer = network.peer().await;
    let mut user = LoggedIn::online(&network).await;
    let contact = network.contact_handle();
    peer.go_away().await;
    user.next("the contact going away", |e| match e {
        BackendEvent::Presence { handle, state, .. }
            if *handle == contact && *state == PresenceState::Away =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    user.session
        .set_presence(PresenceState::Busy, "Alice")
        .await
        .expect("presence is set");
    peer.wait_for_user_state(PresenceState::Busy).await;
    user.session.logout().await;
}

/// One test per scenario for a [`Network`].
#[macro_export]
macro_rules! conformance_suite {
    ($network:ty) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn contact_list_at_login() {
            conformance::contact_list_at_login(<$network as conformance::Network>::start().await)
                .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn wrong_secret_is_refused() {
            conformance::wrong_secret_is_refused(<$network as conformance::Network>::start().await)
                .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn chat_both_ways() {
            conformance::chat_both_ways(<$network as conformance::Network>::start().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn presence_both_ways() {
            conformance::presence_both_ways(<$network as conformance::Network>::start().await)
                .await;
        }
    };
}
