//! The backend conformance suite (tests/conformance) and the MSN-level suite
//! (tests/conformance/msn.rs) against the XMPP backend on a real ejabberd, the second XMPP
//! server next to Prosody (conformance_xmpp.rs): the same scenarios, the same glue
//! (tests/xmpp_network), another server implementation.
#![cfg(feature = "xmpp")]

mod common;
mod conformance;
mod support;
mod xmpp_network;

use support::ejabberd::Ejabberd;
use xmpp_network::{Xmpp, XmppServed};

conformance_suite!(Xmpp<Ejabberd>);

msn_conformance_suite!(XmppServed<Ejabberd>);

/// After ejabberd crashes and comes back, the session is online again within the reconnect
/// backoff and stays so: it binds a new session rather than retrying, on every new connection,
/// to resume the old one, which ejabberd refuses in a form tokio-xmpp can't parse (see
/// bridges/xmpp/src/connect.rs, `OnlineFlag`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_comes_back_after_a_server_crash() {
    use conformance::{LoggedIn, Network};
    use msngate_bridge_api::PresenceState;
    use msngate_bridge_api::{BackendEvent, BackendSession, ConnectionState, OutgoingMessage};
    use std::time::Duration;

    let mut network = <Xmpp<Ejabberd> as Network>::start().await;
    // A clean restart puts the accounts on disk, so that they survive the crash below.
    network.server_mut().restart().await;
    let mut user = LoggedIn::login(&network).await;
    let contact = network.contact_handle();
    user.session
        .set_presence(PresenceState::Online, "Alice")
        .await
        .expect("presence is set");
    let chat = user
        .session
        .open_chat(&contact)
        .await
        .expect("a chat opens");
    user.next("the session online", |e| {
        matches!(e, BackendEvent::Connection(ConnectionState::Connected)).then_some(())
    })
    .await;

    // A crash, not a shutdown: no stream error, so tokio-xmpp keeps the state to resume with.
    network.server_mut().crash().await;
    network.server_mut().start_again().await;
    user.next("the session online again", |e| {
        matches!(e, BackendEvent::Connection(ConnectionState::Connected)).then_some(())
    })
    .await;
    let reconnects = user
        .drain(Duration::from_secs(2))
        .await
        .into_iter()
        .filter(|e| matches!(e, BackendEvent::Connection(_)))
        .count();
    assert_eq!(reconnects, 0, "the session keeps reconnecting");

    let mut peer = network.peer().await;
    let text = "still here";
    user.session
        .send_message(&chat, &OutgoingMessage { text: text.into() })
        .await
        .expect("the server takes the message");
    assert_eq!(conformance::Peer::next_text(&mut peer).await, text);
    user.session.logout().await;
}
