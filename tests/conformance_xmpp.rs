//! The backend conformance suite (tests/conformance) against the XMPP backend, a real Prosody
//! and an independent XMPP client as the contact, and the MSN-level
//! suite (tests/conformance/msn.rs): an MSN client whose account msngate links to the XMPP
//! account.

mod common;
mod conformance;
mod support;

use common::TestServer;
use conformance::msn::{Served, ALICE, ALICE_PASSWORD};
use msngate_bridge_api::{Credentials, PresenceState};
use msngate_bridge_xmpp::XmppBackend;
use support::prosody::{trust_test_certificate, Prosody};
use support::xmpp::XmppClient;
use tokio_xmpp::parsers::presence::{Show, Type as PresenceType};

struct Xmpp {
    prosody: Prosody,
}

impl conformance::Network for Xmpp {
    type Backend = XmppBackend;
    type Peer = XmppPeer;

    async fn start() -> Self {
        trust_test_certificate();
        let prosody = Prosody::start().await;
        prosody.register("alice", "alice-pw").await;
        prosody.register("bob", "bob-pw").await;
        prosody.set_roster("alice", &[("bob@localhost", "both")]);
        prosody.set_roster("bob", &[("alice@localhost", "both")]);
        Xmpp { prosody }
    }

    fn backend(&self) -> XmppBackend {
        XmppBackend
    }

    async fn credentials(&self, wrong_secret: bool) -> Credentials {
        Credentials {
            msn_handle: "alice@hotmail.com".into(),
            account: self.prosody.jid("alice"),
            secret: if wrong_secret { "nope" } else { "alice-pw" }.into(),
            options: vec![("server".into(), self.prosody.addr())],
        }
    }

    fn contact_handle(&self) -> String {
        self.prosody.jid("bob")
    }

    async fn peer(&mut self) -> XmppPeer {
        let client = XmppClient::connect(&self.prosody.jid("bob"), "bob-pw", self.prosody.port())
            .await
            .unwrap_or_else(|e| panic!("bob could not connect: {e:?}"));
        XmppPeer {
            client,
            user: self.prosody.jid("alice"),
        }
    }
}

struct XmppPeer {
    client: XmppClient,
    user: String,
}

impl conformance::Peer for XmppPeer {
    async fn send_text(&mut self, text: &str) {
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
            if p.type_ == PresenceType::None && p.show == show {
                return;
            }
        }
    }
}

conformance_suite!(Xmpp);

/// The MSN-level suite: an msngate whose alice@hotmail.com is linked to alice on Prosody.
struct XmppServed {
    xmpp: Xmpp,
    server: TestServer,
}

impl Served for XmppServed {
    type Peer = XmppPeer;

    async fn start() -> Self {
        let xmpp = <Xmpp as conformance::Network>::start().await;
        let server = TestServer::start_linked(
            ALICE,
            ALICE_PASSWORD,
            ("xmpp", &xmpp.prosody.jid("alice"), "alice-pw"),
            vec![("server".into(), xmpp.prosody.addr())],
            |_| {},
        )
        .await;
        XmppServed { xmpp, server }
    }

    fn server(&self) -> &TestServer {
        &self.server
    }

    fn contact_handle(&self) -> String {
        conformance::Network::contact_handle(&self.xmpp)
    }

    async fn peer(&mut self) -> XmppPeer {
        let mut peer = conformance::Network::peer(&mut self.xmpp).await;
        peer.client.send_presence(None, None).await;
        peer
    }
}

msn_conformance_suite!(XmppServed);
