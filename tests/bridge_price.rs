//! The price of the bridge: a message's round trip from an MSN client through msngate and a
//! real XMPP or Matrix server to an independent client that echoes it, against the same round
//! trip between two independent clients of that server, measured in one run, alternately.
//!
//! Bob echoes every text he gets, to whoever sent it. Carol talks to him directly on the
//! network; Alice talks to him from an MSN client whose account msngate links to her account
//! on the same server. Each round is one of each: Carol's message and its echo, then Alice's.
//!
//! By default a few rounds, to show that the comparison runs and every echo comes back intact
//! (CI). For the figures in docs/SCALING.md, optimized and with more rounds:
//!
//! ```sh
//! MSNGATE_PRICE_ROUNDS=1000 cargo test --release --test bridge_price -- --nocapture --test-threads=1
//! ```
#![cfg(any(feature = "xmpp", feature = "matrix"))]

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{Client, TestServer};

const ALICE: &str = "alice@hotmail.com";
const BOB: &str = "bob@localhost";
const WAIT: Duration = Duration::from_secs(30);
/// Rounds before the measured ones: connections, caches and the JIT-less equivalents warm up.
const WARMUP: usize = 10;

/// Measured rounds: `MSNGATE_PRICE_ROUNDS`, or a few.
fn rounds() -> usize {
    std::env::var("MSNGATE_PRICE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Alice's side of a round: sends `body` in her conversation with Bob, waits for his echo.
async fn msn_round_trip(sb: &mut Client, body: &str) {
    let payload =
        format!("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{body}");
    sb.msg("N", payload.as_bytes()).await;
    let echo = sb.wait_for_within(&format!("MSG {BOB} * *"), WAIT).await;
    assert_eq!(
        echo.payload_text().split("\r\n\r\n").nth(1),
        Some(body),
        "the echo through msngate"
    );
}

/// Runs the warm-up and measured rounds, each one direct round trip then one through
/// msngate, and prints the comparison.
async fn compare(
    network: &str,
    mut direct: impl AsyncFnMut(&str),
    mut bridged: impl AsyncFnMut(&str),
) {
    let rounds = rounds();
    let (mut direct_times, mut bridged_times) = (Vec::new(), Vec::new());
    for round in 0..WARMUP + rounds {
        let body = format!("round {round}: the quick brown fox");
        let start = Instant::now();
        direct(&body).await;
        let direct_time = start.elapsed();
        let start = Instant::now();
        bridged(&body).await;
        if round >= WARMUP {
            direct_times.push(direct_time);
            bridged_times.push(start.elapsed());
        }
    }
    let (d50, d99) = percentiles(&mut direct_times);
    let (b50, b99) = percentiles(&mut bridged_times);
    println!(
        "bridge price, {network}, {rounds} round trips each: direct p50 {:.2} ms, p99 {:.2} ms; \
         through msngate p50 {:.2} ms, p99 {:.2} ms; ratio p50 {:.2}, p99 {:.2}",
        ms(d50),
        ms(d99),
        ms(b50),
        ms(b99),
        ms(b50) / ms(d50),
        ms(b99) / ms(d99),
    );
}

fn percentiles(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Alice comes online on MSN, waits until Bob is shown online and calls him.
async fn conversation_with_bob(server: &TestServer) -> (Client, Client) {
    let mut alice = server.login(ALICE, "msn-pw").await;
    alice.come_online().await;
    // Bob's presence: in the initial list (ILN) or as he comes online (NLN).
    loop {
        let line = tokio::time::timeout(WAIT, alice.recv())
            .await
            .expect("Bob shown online");
        let text = line.text();
        let words: Vec<&str> = text.split(' ').collect();
        match words[..] {
            ["NLN", _, handle, ..] | ["ILN", _, _, handle, ..] if handle == BOB => break,
            _ => {}
        }
    }
    // As `open_switchboard`, but presence lines (a contact's state told again) may come first.
    let t = alice.cmd("XFR", "SB").await;
    let xfr = alice
        .wait_for_within(&format!("XFR {t} SB * CKI *"), WAIT)
        .await;
    let mut sb = Client::join_switchboard(&xfr, ALICE).await;
    let t = sb.cmd("CAL", BOB).await;
    sb.wait_for_within(&format!("CAL {t} RINGING *"), WAIT)
        .await;
    sb.wait_for_within(&format!("JOI {BOB} *"), WAIT).await;
    (alice, sb)
}

/// Prosody as shipped: Nagle's algorithm on (`network_settings.nagle`), so a stanza Prosody
/// writes right after another waits for the client's delayed ACK, on both paths alike.
#[cfg(feature = "xmpp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_msngate_and_prosody_against_prosody_alone() {
    xmpp_price("XMPP (Prosody as shipped)", "").await;
}

/// Prosody with Nagle's algorithm off: nothing but the servers and the bridge in the way.
#[cfg(feature = "xmpp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_msngate_and_prosody_against_prosody_alone_without_nagle() {
    xmpp_price(
        "XMPP (Prosody, nagle = false)",
        "network_settings = { nagle = false }",
    )
    .await;
}

#[cfg(feature = "xmpp")]
async fn xmpp_price(network: &str, prosody_config: &'static str) {
    use support::prosody::{trust_test_certificate, Prosody};
    use support::xmpp::XmppClient;

    trust_test_certificate();
    let prosody = Prosody::start_with(prosody_config).await;
    for user in ["alice", "bob", "carol"] {
        prosody.register(user, &format!("{user}-pw")).await;
    }
    let (alice_jid, bob_jid, carol_jid) = (
        prosody.jid("alice"),
        prosody.jid("bob"),
        prosody.jid("carol"),
    );
    prosody.set_roster("alice", &[(&bob_jid, "both")]);
    prosody.set_roster("carol", &[(&bob_jid, "both")]);
    prosody.set_roster("bob", &[(&alice_jid, "both"), (&carol_jid, "both")]);
    let connect = async |user: &str| {
        XmppClient::connect(&prosody.jid(user), &format!("{user}-pw"), prosody.port())
            .await
            .unwrap_or_else(|e| panic!("{user} could not connect: {e:?}\n{}", prosody.log()))
    };
    let mut bob = connect("bob").await;
    let mut carol = connect("carol").await;
    let server = TestServer::start_linked(
        ALICE,
        "msn-pw",
        ("xmpp", &alice_jid, "alice-pw"),
        vec![("server".into(), prosody.addr())],
        |_| {},
    )
    .await;
    let (_alice, mut sb) = conversation_with_bob(&server).await;

    let echo = tokio::spawn(async move {
        loop {
            let chat = bob.next_chat().await;
            bob.send_chat(&chat.from.to_string(), &chat.body, None)
                .await;
        }
    });
    compare(
        network,
        async |body| {
            carol.send_chat(&bob_jid, body, None).await;
            let echo = carol.next_chat().await;
            assert_eq!(
                (echo.from.to_string(), echo.body.as_str()),
                (bob_jid.clone(), body)
            );
        },
        async |body| msn_round_trip(&mut sb, body).await,
    )
    .await;
    echo.abort();
}

#[cfg(feature = "matrix")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_msngate_and_synapse_against_synapse_alone() {
    use support::matrix::{MatrixClient, Seen};
    use support::synapse::Synapse;

    let synapse = Synapse::start().await;
    for user in ["alice", "bob", "carol"] {
        synapse.register(user, &format!("{user}-pw")).await;
    }
    let url = synapse.url();
    let login = async |user: &str| {
        MatrixClient::login(&url, &synapse.user_id(user), &format!("{user}-pw")).await
    };
    let mut bob = login("bob").await;
    let mut carol = login("carol").await;
    // Alice and Carol each have a direct chat with Bob; Alice's was made from her own client
    // before she linked the account (syncing as offline, so as not to mask the bridge's
    // presence).
    let alice_device =
        MatrixClient::login_offline(&url, &synapse.user_id("alice"), "alice-pw").await;
    let mut rooms = Vec::new();
    for client in [&alice_device, &carol] {
        let room = client.create_dm(&synapse.user_id("bob")).await;
        bob.join(&room).await;
        client
            .wait_member_joined(&room, &synapse.user_id("bob"))
            .await;
        rooms.push(room);
    }
    let carol_room = rooms.pop().expect("carol's room");
    drop(alice_device);
    let store = tempfile::tempdir().expect("store dir");
    let linked = msngate_bridge_matrix::link(
        &url,
        &synapse.user_id("alice"),
        "alice-pw",
        &store.path().join("alice"),
    )
    .await
    .expect("link alice");
    let server = TestServer::start_linked(
        ALICE,
        "msn-pw",
        ("matrix", &linked.account, &linked.secret),
        linked.options.clone(),
        |_| {},
    )
    .await;
    let (_alice, mut sb) = conversation_with_bob(&server).await;

    let echo = tokio::spawn(async move {
        loop {
            let Seen::Text { room, body, .. } = bob
                .next_matching("a text", WAIT, |s| matches!(s, Seen::Text { .. }))
                .await
            else {
                unreachable!()
            };
            bob.send_text(&room, &body).await;
        }
    });
    let bob_id = synapse.user_id("bob");
    compare(
        "Matrix (Synapse)",
        async |body| {
            carol.send_text(&carol_room, body).await;
            let (room, echo) = carol.next_text_from(&bob_id).await;
            assert_eq!((room, echo.as_str()), (carol_room.clone(), body));
        },
        async |body| msn_round_trip(&mut sb, body).await,
    )
    .await;
    echo.abort();
}
