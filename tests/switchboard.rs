//! Switchboard scenarios over TCP with several simultaneous clients: XFR SB, CAL/RNG/ANS,
//! multi-party sessions, MSG relay in all modes, cookie misuse, privacy, and stalled readers.

mod common;

use std::time::Duration;

use common::{Client, TestServer};

const USERS: [(&str, &str, &str); 4] = [
    ("alice@example.com", "pa", "Alice"),
    ("bob@example.com", "pb", "Bob"),
    ("carol@example.com", "pc", "Carol"),
    ("dave@example.com", "pd", "Dave"),
];

async fn online(server: &TestServer, handle: &str, password: &str) -> Client {
    let mut c = server.login(handle, password).await;
    c.go_online("NLN").await;
    c
}

/// Alice opens a switchboard and rings Bob, who answers: both switchboard connections and
/// Bob's notification connection are returned.
async fn alice_calls_bob(server: &TestServer) -> (Client, Client, Client, Client) {
    let mut alice_ns = online(server, "alice@example.com", "pa").await;
    let mut bob_ns = online(server, "bob@example.com", "pb").await;
    let mut alice = alice_ns.open_switchboard("alice@example.com").await;
    let t = alice.cmd("CAL", "bob@example.com").await;
    let cal = alice.expect(&format!("CAL {t} RINGING *")).await;
    let rng = bob_ns.expect("RNG * * CKI * alice@example.com Alice").await;
    assert_eq!(rng.get(1), cal.get(3), "RNG carries the CAL's session id");
    assert_eq!(rng.get(2), format!("127.0.0.1:{}", server.sb().port()));
    let (bob, iro) = Client::answer(&rng, "bob@example.com").await;
    assert_eq!(iro.len(), 1);
    assert!(
        common::matches(&iro[0], "IRO * 1 1 alice@example.com Alice"),
        "{}",
        iro[0].text()
    );
    alice.expect("JOI bob@example.com Bob").await;
    (alice, bob, alice_ns, bob_ns)
}

fn text_message(body: &str) -> Vec<u8> {
    format!("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{body}")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_in_every_mode() {
    let server = TestServer::start(&USERS).await;
    let (mut alice, mut bob, _a, _b) = alice_calls_bob(&server).await;

    // A: relayed byte for byte, then ACK. Lengths count bytes, not characters.
    let payload = text_message("Grüße aus 1999 ☺");
    let t = alice.msg("A", &payload).await;
    let got = bob
        .expect(&format!("MSG alice@example.com Alice {}", payload.len()))
        .await;
    assert_eq!(got.payload.unwrap(), payload);
    alice.expect(&format!("ACK {t}")).await;

    // N: no reply on success. U: never a reply.
    let typing = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: bob@example.com\r\n\r\n\r\n".to_vec();
    bob.msg("U", &typing).await;
    assert_eq!(
        alice
            .expect("MSG bob@example.com Bob *")
            .await
            .payload
            .unwrap(),
        typing
    );
    let reply = text_message("hi!");
    bob.msg("N", &reply).await;
    assert_eq!(
        alice
            .expect("MSG bob@example.com Bob *")
            .await
            .payload
            .unwrap(),
        reply
    );
    bob.expect_silence(200).await;

    // An invitation passes through unchanged too, and so does an empty payload.
    let invite = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsinvite; charset=UTF-8\r\n\r\nApplication-Name: File Transfer\r\nInvitation-Command: INVITE\r\n\r\n".to_vec();
    let t = alice.msg("A", &invite).await;
    assert_eq!(
        bob.expect("MSG alice@example.com Alice *")
            .await
            .payload
            .unwrap(),
        invite
    );
    alice.expect(&format!("ACK {t}")).await;
    alice.msg("U", b"").await;
    assert_eq!(
        bob.expect("MSG alice@example.com Alice 0")
            .await
            .payload
            .unwrap(),
        b""
    );

    // Leaving: the other side gets BYE; alone, A and N messages can't be delivered.
    bob.send("OUT").await;
    bob.expect_closed().await;
    alice.expect("BYE bob@example.com").await;
    let t = alice.msg("A", &text_message("anyone?")).await;
    alice.expect(&format!("NAK {t}")).await;
    let t = alice.msg("N", &text_message("anyone?")).await;
    alice.expect(&format!("NAK {t}")).await;
    alice.msg("U", &text_message("anyone?")).await;
    alice.expect_silence(200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_and_four_party_sessions() {
    let server = TestServer::start(&USERS).await;
    let (mut alice, mut bob, _a, _b) = alice_calls_bob(&server).await;
    let mut carol_ns = online(&server, "carol@example.com", "pc").await;
    let mut dave_ns = online(&server, "dave@example.com", "pd").await;

    // Bob (not the creator) calls Carol in.
    let t = bob.cmd("CAL", "carol@example.com").await;
    bob.expect(&format!("CAL {t} RINGING *")).await;
    let rng = carol_ns.expect("RNG * * CKI * bob@example.com Bob").await;
    let (mut carol, iro) = Client::answer(&rng, "carol@example.com").await;
    let roster: Vec<String> = iro
        .iter()
        .map(|l| format!("{} {} {}", l.get(2), l.get(3), l.get(4)))
        .collect();
    assert_eq!(roster, ["1 2 alice@example.com", "2 2 bob@example.com"]);
    alice.expect("JOI carol@example.com Carol").await;
    bob.expect("JOI carol@example.com Carol").await;

    // Calling someone already there is an error, not a second ring.
    let t = alice.cmd("CAL", "carol@example.com").await;
    alice.expect(&format!("215 {t}")).await;
    carol_ns.expect_silence(200).await;

    // Everyone gets everyone else's messages, in order.
    for i in 0..20 {
        let t = carol.msg("A", &text_message(&format!("msg {i}"))).await;
        carol.expect(&format!("ACK {t}")).await;
    }
    for reader in [&mut alice, &mut bob] {
        for i in 0..20 {
            let m = reader.expect("MSG carol@example.com Carol *").await;
            assert!(m.payload_text().ends_with(&format!("msg {i}")));
        }
    }

    // A fourth joins: three IROs.
    let t = carol.cmd("CAL", "dave@example.com").await;
    carol.expect(&format!("CAL {t} RINGING *")).await;
    let rng = dave_ns
        .expect("RNG * * CKI * carol@example.com Carol")
        .await;
    let (mut dave, iro) = Client::answer(&rng, "dave@example.com").await;
    assert_eq!(iro.len(), 3);
    for c in [&mut alice, &mut bob, &mut carol] {
        c.expect("JOI dave@example.com Dave").await;
    }
    // A dropped connection is a BYE for the rest.
    drop(bob);
    for c in [&mut alice, &mut carol, &mut dave] {
        c.expect("BYE bob@example.com").await;
    }
    dave.msg("U", b"still here").await;
    alice.expect("MSG dave@example.com Dave 10").await;
    carol.expect("MSG dave@example.com Dave 10").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_single_use_bound_and_checked() {
    let server = TestServer::start(&USERS).await;
    let mut alice_ns = online(&server, "alice@example.com", "pa").await;
    let mut bob_ns = online(&server, "bob@example.com", "pb").await;

    let t = alice_ns.cmd("XFR", "SB").await;
    let xfr = alice_ns.expect(&format!("XFR {t} SB * CKI *")).await;
    let (address, cookie) = (xfr.get(3).to_string(), xfr.get(5).to_string());
    assert!(cookie.len() >= 32, "at least 128 random bits: {cookie}");

    // Wrong cookie.
    let mut c = Client::connect_to(&address).await;
    c.send("USR 1 alice@example.com 0123456789abcdef0123456789abcdef")
        .await;
    c.expect_closed_after(&["911 1"]).await;
    // Another user's cookie.
    let mut c = Client::connect_to(&address).await;
    c.send(&format!("USR 1 bob@example.com {cookie}")).await;
    c.expect_closed_after(&["911 1"]).await;
    // The right one, once.
    let mut alice = Client::connect_to(&address).await;
    alice
        .send(&format!("USR 1 alice@example.com {cookie}"))
        .await;
    alice.expect("USR 1 OK alice@example.com Alice").await;
    let mut c = Client::connect_to(&address).await;
    c.send(&format!("USR 1 alice@example.com {cookie}")).await;
    c.expect_closed_after(&["911 1"]).await;

    // A ring's cookie is for the callee and that session only.
    let t = alice.cmd("CAL", "bob@example.com").await;
    alice.expect(&format!("CAL {t} RINGING *")).await;
    let rng = bob_ns.expect("RNG * * CKI * alice@example.com Alice").await;
    let mut c = Client::connect_to(rng.get(2)).await;
    c.send(&format!(
        "ANS 1 carol@example.com {} {}",
        rng.get(4),
        rng.get(1)
    ))
    .await;
    c.expect_closed_after(&["911 1"]).await;
    let mut c = Client::connect_to(rng.get(2)).await;
    c.send(&format!("ANS 1 bob@example.com {} 1", rng.get(4)))
        .await;
    c.expect_closed_after(&["911 1"]).await;
    // An XFR cookie does not answer a ring, nor a ring cookie start a session.
    let mut c = Client::connect_to(rng.get(2)).await;
    c.send(&format!("USR 1 bob@example.com {}", rng.get(4)))
        .await;
    c.expect_closed_after(&["911 1"]).await;
    let (_bob, _) = Client::answer(&rng, "bob@example.com").await;
    alice.expect("JOI bob@example.com Bob").await;

    // Commands before authentication.
    let mut c = Client::connect_to(&address).await;
    c.send("CAL 1 bob@example.com").await;
    c.expect("302 1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_and_rings_expire() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    config.server.cookie_lifetime_secs = 1;
    let server = TestServer::start_with(dir, config, &USERS).await;
    let mut alice_ns = online(&server, "alice@example.com", "pa").await;
    let mut bob_ns = online(&server, "bob@example.com", "pb").await;
    let t = alice_ns.cmd("XFR", "SB").await;
    let xfr = alice_ns.expect(&format!("XFR {t} SB * CKI *")).await;
    let mut alice = alice_ns.open_switchboard("alice@example.com").await;
    let t = alice.cmd("CAL", "bob@example.com").await;
    alice.expect(&format!("CAL {t} RINGING *")).await;
    let rng = bob_ns.expect("RNG * * CKI * alice@example.com Alice").await;

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut c = Client::connect_to(xfr.get(3)).await;
    c.send(&format!("USR 1 alice@example.com {}", xfr.get(5)))
        .await;
    c.expect_closed_after(&["911 1"]).await;
    let mut c = Client::connect_to(rng.get(2)).await;
    c.send(&format!(
        "ANS 1 bob@example.com {} {}",
        rng.get(4),
        rng.get(1)
    ))
    .await;
    c.expect_closed_after(&["911 1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_respect_presence_and_privacy() {
    let server = TestServer::start(&USERS).await;
    let mut alice_ns = online(&server, "alice@example.com", "pa").await;
    let mut alice = alice_ns.open_switchboard("alice@example.com").await;

    // Offline (never logged in), and logged in but not yet online.
    let t = alice.cmd("CAL", "bob@example.com").await;
    alice.expect(&format!("217 {t}")).await;
    let mut bob_ns = server.login("bob@example.com", "pb").await;
    let t = alice.cmd("CAL", "bob@example.com").await;
    alice.expect(&format!("217 {t}")).await;
    // Hidden.
    bob_ns.go_online("HDN").await;
    let t = alice.cmd("CAL", "bob@example.com").await;
    alice.expect(&format!("217 {t}")).await;
    // Blocked.
    bob_ns.chg("NLN").await;
    let t = bob_ns.cmd("ADD", "BL alice@example.com Alice").await;
    bob_ns
        .expect(&format!("ADD {t} BL * alice@example.com Alice"))
        .await;
    let t = alice.cmd("CAL", "bob@example.com").await;
    alice.expect(&format!("217 {t}")).await;
    // BLP=BL without Alice on the AL, then with her on it.
    let t = bob_ns.cmd("REM", "BL alice@example.com").await;
    bob_ns
        .expect(&format!("REM {t} BL * alice@example.com"))
        .await;
    let t = bob_ns.cmd("BLP", "BL").await;
    bob_ns.expect(&format!("BLP {t} * BL")).await;
    let t = alice.cmd("CAL", "bob@example.com").await;
    alice.expect(&format!("217 {t}")).await;
    let t = bob_ns.cmd("ADD", "AL alice@example.com Alice").await;
    bob_ns
        .expect(&format!("ADD {t} AL * alice@example.com Alice"))
        .await;
    let t = alice.cmd("CAL", "bob@example.com").await;
    alice.expect(&format!("CAL {t} RINGING *")).await;
    bob_ns.expect("RNG * * CKI * alice@example.com Alice").await;
    // Calling yourself, or a handle that isn't one.
    let t = alice.cmd("CAL", "alice@example.com").await;
    alice.expect(&format!("215 {t}")).await;
    let t = alice.cmd("CAL", "not-a-handle").await;
    alice.expect(&format!("208 {t}")).await;

    // XFR SB is refused while hidden.
    alice_ns.chg("HDN").await;
    let t = alice_ns.cmd("XFR", "SB").await;
    alice_ns.expect(&format!("913 {t}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_block_the_others() {
    let server = TestServer::start(&USERS).await;
    let (mut alice, bob, _a, _b) = alice_calls_bob(&server).await;
    let mut carol_ns = online(&server, "carol@example.com", "pc").await;
    let t = alice.cmd("CAL", "carol@example.com").await;
    alice.expect(&format!("CAL {t} RINGING *")).await;
    let rng = carol_ns
        .expect("RNG * * CKI * alice@example.com Alice")
        .await;
    let (mut carol, _) = Client::answer(&rng, "carol@example.com").await;
    alice.expect("JOI carol@example.com Carol").await;

    // Bob stops reading. Alice keeps talking with big messages; Carol reads them all.
    let stalled_bob = bob;
    let payload = vec![b'x'; 8000];
    let reader = tokio::spawn(async move {
        let mut n = 0;
        loop {
            let line = carol.recv().await;
            match line.get(0) {
                "MSG" => n += 1,
                "BYE" => {
                    assert_eq!(line.get(1), "bob@example.com");
                    return (carol, n);
                }
                other => panic!("carol got {other}"),
            }
        }
    });
    let mut sent = 0;
    let mut acked = 0;
    let mut bob_dropped = false;
    // Enough data to fill Bob's socket buffers and queue: he must be cut off, not Alice.
    for _ in 0..3000 {
        let t = alice.msg("A", &payload).await;
        sent += 1;
        let reply = alice.recv().await;
        match reply.get(0) {
            "ACK" if reply.get(1) == t.to_string() => acked += 1,
            "NAK" if reply.get(1) == t.to_string() => {}
            "BYE" => {
                assert_eq!(reply.get(1), "bob@example.com");
                bob_dropped = true;
                break;
            }
            _ => panic!("alice got {}", reply.text()),
        }
    }
    assert!(
        bob_dropped,
        "the stalled reader was never disconnected ({sent} sent)"
    );
    let (mut carol, received) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        received >= acked,
        "carol got {received} of {acked} acknowledged messages"
    );
    // After Bob is gone, Alice and Carol still chat normally.
    let t = alice.msg("A", b"hello carol").await;
    carol.wait_for("MSG alice@example.com Alice 11").await;
    alice.wait_for(&format!("ACK {t}")).await;
    drop(stalled_bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ends_when_the_last_one_leaves() {
    let server = TestServer::start(&USERS).await;
    let (mut alice, mut bob, _a, mut bob_ns) = alice_calls_bob(&server).await;
    assert_eq!(server.running().services.hub.switchboard_count(), 1);
    // A pending ring into a session that then ends can no longer be answered.
    let mut carol_ns = online(&server, "carol@example.com", "pc").await;
    let t = alice.cmd("CAL", "carol@example.com").await;
    alice.expect(&format!("CAL {t} RINGING *")).await;
    let rng = carol_ns
        .expect("RNG * * CKI * alice@example.com Alice")
        .await;
    alice.send("OUT").await;
    alice.expect_closed().await;
    bob.expect("BYE alice@example.com").await;
    bob.send("OUT").await;
    bob.expect_closed().await;
    for _ in 0..50 {
        if server.running().services.hub.switchboard_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.running().services.hub.switchboard_count(), 0);
    let mut c = Client::connect_to(rng.get(2)).await;
    c.send(&format!(
        "ANS 1 carol@example.com {} {}",
        rng.get(4),
        rng.get(1)
    ))
    .await;
    c.expect_closed_after(&["911 1"]).await;
    bob_ns.expect_silence(100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_flood_is_slowed_then_refused_and_nothing_refused_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    // Loopback is exempt by default; this test is the flooder from "outside".
    config.limits.limit_loopback = true;
    config.limits.messages_per_second = 5;
    config.limits.message_burst = 5;
    let server = TestServer::start_with(dir, config, &USERS).await;
    let (mut alice, mut bob, _a, _b) = alice_calls_bob(&server).await;

    // 40 pipelined messages: the burst of 5 goes at once, the next ones are slowed to 5 a
    // second for up to 2 s (10 more), and the rest are refused with 713.
    let mut trids = Vec::new();
    for i in 0..40 {
        trids.push(alice.msg("A", &text_message(&format!("flood {i}"))).await);
    }
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    while acked.len() + refused.len() < trids.len() {
        let line = alice
            .recv_within(Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        match line.get(0) {
            "ACK" => acked.push(line.get(1).parse::<u32>().unwrap()),
            "713" => refused.push(line.get(1).parse::<u32>().unwrap()),
            other => panic!("unexpected {other}: {}", line.text()),
        }
    }
    assert!(
        (5..=20).contains(&acked.len()),
        "{} acknowledged, {} refused",
        acked.len(),
        refused.len()
    );
    assert!(refused.len() >= 20, "{} refused", refused.len());
    // Bob gets exactly the acknowledged ones, in order, and none of the refused.
    let mut got = Vec::new();
    while let Ok(Some(line)) = bob.recv_within(Duration::from_millis(500)).await {
        got.push(line.payload_text());
    }
    let texts: Vec<String> = trids
        .iter()
        .enumerate()
        .filter(|(_, t)| acked.contains(t))
        .map(|(i, _)| format!("flood {i}"))
        .collect();
    assert_eq!(got.len(), texts.len());
    for (line, text) in got.iter().zip(&texts) {
        assert!(
            line.ends_with(text.as_str()),
            "{line:?} should end in {text:?}"
        );
    }

    // After a pause the user may talk again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = alice.msg("A", &text_message("sorry")).await;
    bob.expect("MSG alice@example.com Alice *").await;
    alice.expect(&format!("ACK {t}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_different_dialects_chat_in_one_session() {
    let server = TestServer::start(&USERS).await;
    // Alice on MSN 1.0 (MSNP2), Bob on gaim 0.62 (MSNP5), Carol on MSN 4.6 (MSNP7).
    let mut alice_ns = online(&server, "alice@example.com", "pa").await;
    let mut bob_ns = server
        .login_offering("bob@example.com", "pb", "MSNP5", "MSNP5")
        .await;
    bob_ns.go_online("NLN").await;
    let list = "MSNP7 MSNP6 MSNP5 MSNP4 CVR0";
    let mut carol_ns = server
        .login_offering("carol@example.com", "pc", list, list)
        .await;
    carol_ns.go_online("NLN").await;
    // Carol (MSNP7) opens the session and rings the other two.
    let mut carol = carol_ns.open_switchboard("carol@example.com").await;
    let mut others = Vec::new();
    for (ns, handle) in [
        (&mut alice_ns, "alice@example.com"),
        (&mut bob_ns, "bob@example.com"),
    ] {
        let t = carol.cmd("CAL", handle).await;
        carol.expect(&format!("CAL {t} RINGING *")).await;
        let rng = ns.expect("RNG * * CKI * carol@example.com Carol").await;
        let (sb, _) = Client::answer(&rng, handle).await;
        carol.expect(&format!("JOI {handle} *")).await;
        others.push(sb);
    }
    let (mut alice, mut bob) = (others.remove(0), others.remove(0));
    alice.expect("JOI bob@example.com Bob").await;
    // Every message reaches the two others, whatever their dialect.
    let body = text_message("hello from 4.6");
    let t = carol.msg("A", &body).await;
    for sb in [&mut alice, &mut bob] {
        let m = sb
            .expect(&format!("MSG carol@example.com Carol {}", body.len()))
            .await;
        assert_eq!(m.payload.as_deref(), Some(&body[..]));
    }
    carol.expect(&format!("ACK {t}")).await;
    let body = text_message("hello from 1.0");
    alice.msg("N", &body).await;
    for sb in [&mut carol, &mut bob] {
        let m = sb
            .expect(&format!("MSG alice@example.com Alice {}", body.len()))
            .await;
        assert_eq!(m.payload.as_deref(), Some(&body[..]));
    }
    let body = text_message("hello from gaim");
    bob.msg("U", &body).await;
    for sb in [&mut carol, &mut alice] {
        sb.expect(&format!("MSG bob@example.com Bob {}", body.len()))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_holds_at_most_32_people() {
    let users: Vec<(String, String)> = (0..33)
        .map(|i| (format!("user{i}@example.com"), format!("User{i}")))
        .collect();
    let accounts: Vec<(&str, &str, &str)> = users
        .iter()
        .map(|(h, n)| (h.as_str(), "pw", n.as_str()))
        .collect();
    let server = TestServer::start(&accounts).await;
    let mut host_ns = online(&server, "user0@example.com", "pw").await;
    let mut host = host_ns.open_switchboard("user0@example.com").await;
    // Kept open: each of them is in the session.
    let mut guests = Vec::new();
    for (i, (handle, _)) in users.iter().enumerate().skip(1) {
        let mut ns = online(&server, handle, "pw").await;
        let t = host.cmd("CAL", handle).await;
        if i < 32 {
            host.expect(&format!("CAL {t} RINGING *")).await;
            let rng = ns.expect("RNG * * CKI * user0@example.com User0").await;
            let (sb, _) = Client::answer(&rng, handle).await;
            host.wait_for(&format!("JOI {handle} *")).await;
            guests.push((ns, sb));
        } else {
            // The 33rd: the session is full, and nobody is rung.
            host.wait_for(&format!("712 {t}")).await;
            ns.expect_silence(300).await;
        }
    }
    assert_eq!(guests.len(), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringing_someone_over_and_over_cannot_use_up_the_nodes_cookies() {
    // Each CAL mints a cookie for the callee. Found by fuzzing: a session that rang the same
    // contact thousands of times filled the node's 100,000 cookies within their lifetime,
    // and every user's XFR SB and CAL was then refused with 600.
    let server = TestServer::start(&USERS).await;
    let mut alice_ns = online(&server, "alice@example.com", "pa").await;
    let mut bob_ns = online(&server, "bob@example.com", "pb").await;
    let mut carol_ns = online(&server, "carol@example.com", "pc").await;
    let mut alice = alice_ns.open_switchboard("alice@example.com").await;
    let mut first_ring = None;
    for _ in 0..64 {
        let t = alice.cmd("CAL", "bob@example.com").await;
        alice.expect(&format!("CAL {t} RINGING *")).await;
        let rng = bob_ns.expect("RNG * * CKI * alice@example.com Alice").await;
        first_ring.get_or_insert(rng);
    }
    // The 65th unanswered ring is refused, and Bob is not rung again.
    let t = alice.cmd("CAL", "bob@example.com").await;
    alice.expect(&format!("600 {t}")).await;
    bob_ns.expect_silence(300).await;
    // Anyone else still opens a switchboard and rings Bob.
    let mut carol = carol_ns.open_switchboard("carol@example.com").await;
    let t = carol.cmd("CAL", "bob@example.com").await;
    carol.expect(&format!("CAL {t} RINGING *")).await;
    bob_ns.expect("RNG * * CKI * carol@example.com Carol").await;
    // Bob answering one of Alice's rings gives her one back.
    let (_bob, _) = Client::answer(&first_ring.unwrap(), "bob@example.com").await;
    alice.expect("JOI bob@example.com Bob").await;
    let t = alice.cmd("CAL", "carol@example.com").await;
    alice.expect(&format!("CAL {t} RINGING *")).await;
    carol_ns
        .expect("RNG * * CKI * alice@example.com Alice")
        .await;
}
