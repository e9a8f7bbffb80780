//! The XMPP network for the conformance suites, on any XMPP server the harness can run:
//! [`Xmpp`] implements the backend-level [`Network`] and [`XmppServed`] the MSN-level
//! [`Served`] for a server type implementing [`XmppServer`] (Prosody, ejabberd). The contact is
//! an independent tokio-xmpp client ([`XmppClient`]).
//!
//! The user is alice@localhost, linked as alice@hotmail.com; the contact is bob@localhost;
//! each is on the other's roster with subscription both.

use std::future::Future;

use msngate_bridge_api::{Credentials, PresenceState};
use msngate_bridge_xmpp::XmppBackend;
use tokio_xmpp::parsers::presence::{Show, Type as PresenceType};

use crate::common::TestServer;
use crate::conformance::msn::{Served, ALICE, ALICE_PASSWORD};
use crate::conformance::{Network, Peer};
use crate::support::ejabberd::Ejabberd;
use crate::support::prosody::{trust_test_certificate, Prosody};
use crate::support::xmpp::XmppClient;

/// A private XMPP server with the `localhost` domain and STARTTLS on a loopback port.
pub trait XmppServer: Sized + Send + Sync {
    /// Installs the server if needed and starts a fresh instance.
    fn start() -> impl Future<Output = Self> + Send;
    /// Makes the account `user@localhost`.
    fn register(&self, user: &str, password: &str) -> impl Future<Output = ()> + Send;
    /// Puts (contact JID, subscription) items on a fresh account's roster.
    fn set_roster(&self, user: &str, items: &[(&str, &str)]) -> impl Future<Output = ()> + Send;
    /// `user@localhost`.
    fn jid(&self, user: &str) -> String;
    /// The c2s port on 127.0.0.1.
    fn port(&self) -> u16;
}

impl XmppServer for Prosody {
    async fn start() -> Self {
        Prosody::start().await
    }
    async fn register(&self, user: &str, password: &str) {
        Prosody::register(self, user, password).await
    }
    async fn set_roster(&self, user: &str, items: &[(&str, &str)]) {
        // Written into Prosody's storage; it reads a roster at login.
        Prosody::set_roster(self, user, items)
    }
    fn jid(&self, user: &str) -> String {
        Prosody::jid(self, user)
    }
    fn port(&self) -> u16 {
        Prosody::port(self)
    }
}

impl XmppServer for Ejabberd {
    async fn start() -> Self {
        Ejabberd::start().await
    }
    async fn register(&self, user: &str, password: &str) {
        Ejabberd::register(self, user, password).await
    }
    async fn set_roster(&self, user: &str, items: &[(&str, &str)]) {
        Ejabberd::set_roster(self, user, items).await
    }
    fn jid(&self, user: &str) -> String {
        Ejabberd::jid(self, user)
    }
    fn port(&self) -> u16 {
        Ejabberd::port(self)
    }
}

/// The backend-level network: alice logs in through the XMPP backend, bob is the contact.
pub struct Xmpp<S> {
    server: S,
}

impl<S: XmppServer> Xmpp<S> {
    /// The server, e.g. to restart it.
    #[allow(dead_code)] // Not every test binary restarts its server.
    pub fn server_mut(&mut self) -> &mut S {
        &mut self.server
    }

    /// The `server` option of alice's link: the server's address instead of a DNS lookup.
    fn server_option(&self) -> (String, String) {
        ("server".into(), format!("127.0.0.1:{}", self.server.port()))
    }
}

impl<S: XmppServer> Network for Xmpp<S> {
    type Backend = XmppBackend;
    type Peer = XmppPeer;

    async fn start() -> Self {
        trust_test_certificate();
        let server = S::start().await;
        server.register("alice", "alice-pw").await;
        server.register("bob", "bob-pw").await;
        server
            .set_roster("alice", &[("bob@localhost", "both")])
            .await;
        server
            .set_roster("bob", &[("alice@localhost", "both")])
            .await;
        Xmpp { server }
    }

    fn backend(&self) -> XmppBackend {
        XmppBackend
    }

    async fn credentials(&self, wrong_secret: bool) -> Credentials {
        Credentials {
            msn_handle: ALICE.into(),
            account: self.server.jid("alice"),
            secret: if wrong_secret { "nope" } else { "alice-pw" }.into(),
            options: vec![self.server_option()],
        }
    }

    fn contact_handle(&self) -> String {
        self.server.jid("bob")
    }

    async fn peer(&mut self) -> XmppPeer {
        let client = XmppClient::connect(&self.server.jid("bob"), "bob-pw", self.server.port())
            .await
            .unwrap_or_else(|e| panic!("bob could not connect: {e:?}"));
        XmppPeer {
            client,
            user: self.server.jid("alice"),
            user_seen_available: false,
        }
    }
}

/// Bob on an independent XMPP client.
pub struct XmppPeer {
    client: XmppClient,
    /// Alice's bare JID.
    user: String,
    /// Whether Bob has seen Alice available yet.
    user_seen_available: bool,
}

impl Peer for XmppPeer {
    /// Bob writes once he sees Alice available, as a person does. (The MSN client's `CHG` is
    /// answered before the server has her presence; a message that reaches the server first is
    /// stored offline, and ejabberd 23.01 may then keep it until her next logon.)
    async fn send_text(&mut self, text: &str) {
        while !self.user_seen_available {
            let p = self.client.next_presence_from(&self.user).await;
            self.user_seen_available = p.type_ == PresenceType::None;
        }
        self.client.send_chat(&self.user, text, None).await;
    }

    async fn next_text(&mut self) -> String {
        self.client.next_chat().await.body
    }

    async fn go_away(&mut self) {
        self.client.send_presence(Some(Show::Away), None).await;
    }

    async fn wait_for_user_state(&mut self, state: PresenceState) {
        let show = match state {
            PresenceState::Online => None,
            PresenceState::Busy => Some(Show::Dnd),
            PresenceState::Away => Some(Show::Away),
            other => panic!("no XMPP show for {other:?} in this test"),
        };
        loop {
            let p = self.client.next_presence_from(&self.user).await;
            self.user_seen_available = p.type_ == PresenceType::None;
            if p.type_ == PresenceType::None && p.show == show {
                return;
            }
        }
    }
}

/// The MSN-level network: an msngate whose alice@hotmail.com is linked to alice@localhost.
pub struct XmppServed<S> {
    xmpp: Xmpp<S>,
    server: TestServer,
}

impl<S: XmppServer> Served for XmppServed<S> {
    type Peer = XmppPeer;

    async fn start() -> Self {
        let xmpp = <Xmpp<S> as Network>::start().await;
        let server = TestServer::start_linked(
            ALICE,
            ALICE_PASSWORD,
            ("xmpp", &xmpp.server.jid("alice"), "alice-pw"),
            vec![xmpp.server_option()],
            |_| {},
        )
        .await;
        XmppServed { xmpp, server }
    }

    fn server(&self) -> &TestServer {
        &self.server
    }

    fn contact_handle(&self) -> String {
        self.xmpp.contact_handle()
    }

    async fn peer(&mut self) -> XmppPeer {
        let mut peer = self.xmpp.peer().await;
        peer.client.send_presence(None, None).await;
        peer
    }
}
