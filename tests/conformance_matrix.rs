//! The backend conformance suite (tests/conformance) against the Matrix backend, a real
//! Synapse and an independent matrix-sdk client as the contact, and the MSN-level
//! suite (tests/conformance/msn.rs): an MSN client whose account msngate links to the Matrix
//! account.
#![cfg(feature = "matrix")]

mod common;
mod conformance;
mod support;

use common::TestServer;
use conformance::msn::{Served, ALICE, ALICE_PASSWORD};
use matrix_sdk::ruma::presence::PresenceState as MatrixPresence;
use matrix_sdk::ruma::OwnedRoomId;
use msngate_bridge_api::{Credentials, PresenceState};
use msngate_bridge_matrix::{link, Linked, MatrixBackend};
use support::matrix::MatrixClient;
use support::synapse::Synapse;

struct Matrix {
    synapse: Synapse,
    linked: Linked,
    /// The direct chat of alice and bob, made before linking.
    room: OwnedRoomId,
    _store: tempfile::TempDir,
}

impl conformance::Network for Matrix {
    type Backend = MatrixBackend;
    type Peer = MatrixPeer;

    async fn start() -> Self {
        let synapse = Synapse::start().await;
        synapse.register("alice", "alice-pw").await;
        synapse.register("bob", "bob-pw").await;
        // Contacts of each other: a direct chat, made by alice on another client. The setup
        // clients sync as offline so that they don't mask the presence the tests look at.
        let url = synapse.url();
        let alice = MatrixClient::login_offline(&url, &synapse.user_id("alice"), "alice-pw").await;
        let bob = MatrixClient::login_offline(&url, &synapse.user_id("bob"), "bob-pw").await;
        let room = alice.create_dm(&synapse.user_id("bob")).await;
        bob.join(&room).await;
        alice
            .wait_member_joined(&room, &synapse.user_id("bob"))
            .await;
        let store = tempfile::tempdir().expect("store dir");
        let linked = link(
            &synapse.url(),
            &synapse.user_id("alice"),
            "alice-pw",
            &store.path().join("alice"),
        )
        .await
        .expect("link alice");
        Matrix {
            synapse,
            linked,
            room,
            _store: store,
        }
    }

    fn backend(&self) -> MatrixBackend {
        MatrixBackend
    }

    /// The wrong secret carries an access token the homeserver does not know.
    async fn credentials(&self, wrong_secret: bool) -> Credentials {
        let mut secret = self.linked.secret.clone();
        if wrong_secret {
            // Both tokens: a valid refresh token would get a new access token.
            for key in ["\"access_token\":\"", "\"refresh_token\":\""] {
                let Some(at) = secret.find(key) else {
                    assert!(key.contains("refresh"), "no access token in the secret");
                    continue;
                };
                let start = at + key.len();
                let end = start + secret[start..].find('"').expect("token end");
                secret.replace_range(start..end, "syt_not_a_token");
            }
        }
        Credentials {
            msn_handle: "alice@hotmail.com".into(),
            account: self.linked.account.clone(),
            secret,
            options: self.linked.options.clone(),
        }
    }

    fn contact_handle(&self) -> String {
        "bob@localhost".into()
    }

    async fn peer(&mut self) -> MatrixPeer {
        let client =
            MatrixClient::login(&self.synapse.url(), &self.synapse.user_id("bob"), "bob-pw").await;
        MatrixPeer {
            client,
            room: self.room.clone(),
            user: self.synapse.user_id("alice"),
        }
    }
}

struct MatrixPeer {
    client: MatrixClient,
    room: OwnedRoomId,
    user: String,
}

impl conformance::Peer for MatrixPeer {
    async fn send_text(&mut self, text: &str) {
        self.client.send_text(&self.room, text).await;
    }

    async fn next_text(&mut self) -> String {
        self.client.next_text_from(&self.user).await.1
    }

    async fn go_away(&mut self) {
        self.client
            .set_presence(MatrixPresence::Unavailable, None)
            .await;
    }

    async fn wait_for_user_state(&mut self, state: PresenceState) {
        let (presence, message) = match state {
            PresenceState::Online => (MatrixPresence::Online, None),
            PresenceState::Busy => (MatrixPresence::Unavailable, Some("Busy")),
            PresenceState::Away => (MatrixPresence::Unavailable, Some("Away")),
            other => panic!("no Matrix presence for {other:?} in this test"),
        };
        self.client
            .next_presence(&self.user, |p, m| *p == presence && m == message)
            .await;
    }
}

conformance_suite!(Matrix);

/// The MSN-level suite: an msngate whose alice@hotmail.com is linked to alice on Synapse.
struct MatrixServed {
    matrix: Matrix,
    server: TestServer,
}

impl Served for MatrixServed {
    type Peer = MatrixPeer;

    async fn start() -> Self {
        let matrix = <Matrix as conformance::Network>::start().await;
        let server = TestServer::start_linked(
            ALICE,
            ALICE_PASSWORD,
            ("matrix", &matrix.linked.account, &matrix.linked.secret),
            matrix.linked.options.clone(),
            |_| {},
        )
        .await;
        MatrixServed { matrix, server }
    }

    fn server(&self) -> &TestServer {
        &self.server
    }

    fn contact_handle(&self) -> String {
        conformance::Network::contact_handle(&self.matrix)
    }

    async fn peer(&mut self) -> MatrixPeer {
        conformance::Network::peer(&mut self.matrix).await
    }
}

msn_conformance_suite!(MatrixServed);
