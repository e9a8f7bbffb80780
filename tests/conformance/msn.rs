//! The same promises seen from an MSN 1.0 client, for every backend, the local one included:
//! alice@hotmail.com logs in to a running msngate whose account is served by the backend, and
//! a plain client of the backend's network (an MSN client, for the local backend) is her
//! contact on the other side.
//!
//! A backend plugs in by implementing [`Served`]; [`msn_conformance_suite!`] makes one test
//! per scenario.

use std::future::Future;
use std::time::Duration;

use msngate_bridge_api::PresenceState;

use super::{Peer, WAIT};
use crate::common::{matches, Client, Line, TestServer};

/// The MSN user of every scenario, and her MSN password.
pub const ALICE: &str = "alice@hotmail.com";
pub const ALICE_PASSWORD: &str = "msn-pw";

/// A backend's network and an msngate serving alice through that backend, with the contact on
/// her forward list and her on the contact's.
pub trait Served: Sized + Send {
    type Peer: Peer;

    fn start() -> impl Future<Output = Self> + Send;
    fn server(&self) -> &TestServer;
    /// The contact's MSN handle, as alice sees it.
    fn contact_handle(&self) -> String;
    /// The contact, logged in on the network.
    fn peer(&mut self) -> impl Future<Output = Self::Peer> + Send;
}

/// Alice logged in, synchronized and online; with the FL handles of her SYN.
async fn alice_online<S: Served>(served: &S) -> (Client, Vec<String>) {
    let mut alice = served.server().login(ALICE, ALICE_PASSWORD).await;
    let forward = alice.come_online().await;
    (alice, forward)
}

fn text_of(msg: &Line) -> String {
    let payload = msg.payload_text();
    let (headers, body) = payload.split_once("\r\n\r\n").unwrap_or((&payload, ""));
    assert!(
        headers.contains("Content-Type: text/plain"),
        "not a text message: {payload:?}"
    );
    body.to_owned()
}

/// The contact is on the FL of alice's SYN.
pub async fn contact_list<S: Served>(mut served: S) {
    let _peer = served.peer().await;
    let (_alice, forward) = alice_online(&served).await;
    let contact = served.contact_handle();
    assert!(forward.contains(&contact), "FL was {forward:?}");
}

/// The contact going away shows as `NLN AWY`; alice going busy (`CHG BSY`) shows on the
/// network as what the backend maps Busy to.
pub async fn presence_both_ways<S: Served>(mut served: S) {
    let mut peer = served.peer().await;
    let (mut alice, _) = alice_online(&served).await;
    let contact = served.contact_handle();
    peer.go_away().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let line = alice
            .recv_within(remaining)
            .await
            .unwrap_or_else(|()| panic!("no AWY for {contact} within {WAIT:?}"))
            .expect("alice's connection stays open");
        if matches(&line, &format!("NLN AWY {contact} *"))
            || matches(&line, &format!("ILN * AWY {contact} *"))
        {
            break;
        }
    }
    let t = alice.cmd("CHG", "BSY").await;
    alice.wait_for_within(&format!("CHG {t} BSY"), WAIT).await;
    peer.wait_for_user_state(PresenceState::Busy).await;
}

/// The contact writes first: alice's client is rung as if the contact called, answers, and
/// reads the text (non-ASCII included). Her reply in the same conversation reaches the
/// contact once; nothing is echoed back to her or repeated.
pub async fn chat_both_ways<S: Served>(mut served: S) {
    let mut peer = served.peer().await;
    let (mut alice, _) = alice_online(&served).await;
    let contact = served.contact_handle();
    let hello = "Grüße aus dem Netz ✓ 世界";
    peer.send_text(hello).await;
    let rng = alice
        .wait_for_within(&format!("RNG * * CKI * {contact} *"), WAIT)
        .await;
    let (mut sb, _) = Client::answer(&rng, ALICE).await;
    let msg = sb
        .wait_for_within(&format!("MSG {contact} * *"), WAIT)
        .await;
    assert_eq!(text_of(&msg), hello);

    let reply = "Antwort aus 1999: ça marche — 👍";
    let payload =
        format!("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{reply}");
    sb.msg("N", payload.as_bytes()).await;
    assert_eq!(peer.next_text().await, reply);

    // Nothing more: no second copy of the contact's message, no echo of alice's.
    while let Ok(Some(line)) = sb.recv_within(Duration::from_secs(2)).await {
        if line.get(0) == "MSG" && line.payload_text().contains("text/plain") {
            panic!("repeated or echoed message: {:?}", line.payload_text());
        }
    }
}

/// One test per scenario for a [`Served`] backend.
#[macro_export]
macro_rules! msn_conformance_suite {
    ($served:ty) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn msn_client_sees_the_contact_list() {
            conformance::msn::contact_list(<$served as conformance::msn::Served>::start().await)
                .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn msn_client_presence_both_ways() {
            conformance::msn::presence_both_ways(
                <$served as conformance::msn::Served>::start().await,
            )
            .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn msn_client_chats_both_ways() {
            conformance::msn::chat_both_ways(<$served as conformance::msn::Served>::start().await)
                .await;
        }
    };
}
