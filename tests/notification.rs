//! Notification server scenarios over TCP: logon, lists, presence and privacy between several
//! logged-in clients, persistence across restarts, and connection handling.

mod common;

use common::{Client, TestServer};

const ALICE: (&str, &str, &str) = ("alice@example.com", "pa", "Alice");
const BOB: (&str, &str, &str) = ("bob@example.com", "pb", "Bob Builder");
const CAROL: (&str, &str, &str) = ("carol@example.com", "pc", "Carol");

async fn server() -> TestServer {
    TestServer::start(&[ALICE, BOB, CAROL]).await
}

/// Makes `owner` add `contact` to a list and checks the reply.
async fn add(c: &mut Client, list: &str, contact: &str, name: &str) {
    let t = c.cmd("ADD", &format!("{list} {contact} {name}")).await;
    c.expect(&format!("ADD {t} {list} * {contact} {name}"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_msn_clients_see_each_other_come_and_go() {
    let server = server().await;
    // Alice and Bob log on the way MSN 1.0 does and have each other on their FLs.
    let mut alice = server.login("alice@example.com", "pa").await;
    let mut bob = server.login("bob@example.com", "pb").await;
    add(&mut alice, "FL", "bob@example.com", "Bob").await;
    bob.wait_for("ADD 0 RL * alice@example.com Alice").await;
    add(&mut bob, "FL", "alice@example.com", "Alice").await;
    alice
        .wait_for("ADD 0 RL * bob@example.com Bob%20Builder")
        .await;

    assert!(
        alice.go_online("NLN").await.is_empty(),
        "bob is not online yet"
    );
    let ilns = bob.go_online("NLN").await;
    assert_eq!(ilns.len(), 1);
    assert!(
        common::matches(&ilns[0], "ILN * NLN alice@example.com Alice"),
        "{}",
        ilns[0].text()
    );
    alice.expect("NLN NLN bob@example.com Bob%20Builder").await;

    for state in ["BSY", "IDL", "BRB", "AWY", "PHN", "LUN", "NLN"] {
        bob.chg(state).await;
        alice
            .expect(&format!("NLN {state} bob@example.com Bob%20Builder"))
            .await;
    }
    bob.chg("HDN").await;
    alice.expect("FLN bob@example.com").await;
    bob.chg("NLN").await;
    alice.expect("NLN NLN bob@example.com Bob%20Builder").await;

    // Renaming shows at once.
    let t = bob.cmd("REA", "bob@example.com Robert").await;
    bob.expect(&format!("REA {t} * bob@example.com Robert"))
        .await;
    alice.expect("NLN NLN bob@example.com Robert").await;

    bob.send("OUT").await;
    bob.expect_closed_after(&["OUT"]).await;
    alice.expect("FLN bob@example.com").await;

    // A dropped connection counts as going offline too.
    let mut bob = server.login("bob@example.com", "pb").await;
    bob.go_online("AWY").await;
    alice.expect("NLN AWY bob@example.com Robert").await;
    drop(bob);
    alice.expect("FLN bob@example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_users_see_others_but_are_not_seen() {
    let server = server().await;
    let mut alice = server.login("alice@example.com", "pa").await;
    let mut bob = server.login("bob@example.com", "pb").await;
    add(&mut alice, "FL", "bob@example.com", "Bob").await;
    bob.expect("ADD 0 RL 1 alice@example.com Alice").await;
    add(&mut bob, "FL", "alice@example.com", "Alice").await;
    alice
        .expect("ADD 0 RL 2 bob@example.com Bob%20Builder")
        .await;
    alice.go_online("HDN").await;
    let ilns = bob.go_online("NLN").await;
    assert!(ilns.is_empty(), "hidden alice must not appear: {:?}", ilns);
    alice.wait_for("NLN NLN bob@example.com *").await;
    bob.expect_silence(200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_lists_decide_who_sees_whom() {
    let server = server().await;
    let mut alice = server.login("alice@example.com", "pa").await;
    let mut bob = server.login("bob@example.com", "pb").await;
    let mut carol = server.login("carol@example.com", "pc").await;
    add(&mut bob, "FL", "alice@example.com", "Alice").await;
    add(&mut carol, "FL", "alice@example.com", "Alice").await;
    alice
        .expect("ADD 0 RL 1 bob@example.com Bob%20Builder")
        .await;
    alice.expect("ADD 0 RL 2 carol@example.com Carol").await;
    bob.go_online("NLN").await;
    carol.go_online("NLN").await;
    alice.go_online("NLN").await;
    bob.wait_for("NLN NLN alice@example.com Alice").await;
    carol.wait_for("NLN NLN alice@example.com Alice").await;

    // Blocking Bob makes Alice look offline to him, and only to him.
    add(&mut alice, "BL", "bob@example.com", "Bob").await;
    bob.expect("FLN alice@example.com").await;
    alice.chg("BSY").await;
    carol.expect("NLN BSY alice@example.com Alice").await;
    bob.expect_silence(200).await;
    let t = alice.cmd("REM", "BL bob@example.com").await;
    alice.expect(&format!("REM {t} BL * bob@example.com")).await;
    bob.expect("NLN BSY alice@example.com Alice").await;

    // BLP=BL: only the AL sees her.
    add(&mut alice, "AL", "carol@example.com", "Carol").await;
    let t = alice.cmd("BLP", "BL").await;
    alice.expect(&format!("BLP {t} * BL")).await;
    bob.expect("FLN alice@example.com").await;
    carol.expect_silence(200).await;
    alice.chg("NLN").await;
    carol.expect("NLN NLN alice@example.com Alice").await;
    bob.expect_silence(200).await;

    // ILN at logon honours it too: Bob logging in again sees nothing, Carol sees her.
    bob.send("OUT").await;
    let mut bob = server.login("bob@example.com", "pb").await;
    assert!(bob.go_online("NLN").await.is_empty());
    let ilns = Client::login(server.ns(), "carol@example.com", "pc")
        .await
        .go_online("NLN")
        .await;
    assert_eq!(ilns.len(), 1, "{ilns:?}");

    // AL and BL are exclusive.
    let t = alice.cmd("ADD", "BL carol@example.com Carol").await;
    alice.expect(&format!("219 {t}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_an_online_contact_sends_its_state_with_the_add_trid() {
    let server = server().await;
    let mut alice = server.login("alice@example.com", "pa").await;
    let mut bob = server.login("bob@example.com", "pb").await;
    alice.go_online("NLN").await;
    bob.go_online("LUN").await;
    let t = alice.cmd("ADD", "FL bob@example.com Bob").await;
    alice
        .expect(&format!("ADD {t} FL 1 bob@example.com Bob"))
        .await;
    alice
        .expect(&format!("ILN {t} LUN bob@example.com Bob%20Builder"))
        .await;
    bob.expect("ADD 0 RL 1 alice@example.com Alice").await;
    // Removing tells Bob his RL changed.
    let t = alice.cmd("REM", "FL bob@example.com").await;
    alice.expect(&format!("REM {t} FL 2 bob@example.com")).await;
    bob.expect("REM 0 RL 2 alice@example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_survive_a_restart_and_syn_sends_them_in_order() {
    let mut server = server().await;
    {
        let mut alice = server.login("alice@example.com", "pa").await;
        add(&mut alice, "FL", "bob@example.com", "B%C3%B6b").await;
        add(&mut alice, "FL", "carol@example.com", "Carol").await;
        add(&mut alice, "AL", "bob@example.com", "Bob").await;
        add(&mut alice, "BL", "carol@example.com", "Carol").await;
        let t = alice.cmd("GTC", "N").await;
        alice.expect(&format!("GTC {t} 5 N")).await;
        let t = alice.cmd("BLP", "BL").await;
        alice.expect(&format!("BLP {t} 6 BL")).await;
        let t = alice.cmd("REA", "alice@example.com Alice%20L.").await;
        alice
            .expect(&format!("REA {t} 7 alice@example.com Alice%20L."))
            .await;
        let mut bob = server.login("bob@example.com", "pb").await;
        add(&mut bob, "FL", "alice@example.com", "Alice").await;
    }
    server.restart().await;
    let mut alice = server.login("alice@example.com", "pa").await;
    let t = alice.cmd("SYN", "0").await;
    for line in [
        format!("SYN {t} 8"),
        format!("GTC {t} 8 N"),
        format!("BLP {t} 8 BL"),
        format!("LST {t} FL 8 1 2 bob@example.com B%C3%B6b"),
        format!("LST {t} FL 8 2 2 carol@example.com Carol"),
        format!("LST {t} AL 8 1 1 bob@example.com Bob"),
        format!("LST {t} BL 8 1 1 carol@example.com Carol"),
        format!("LST {t} RL 8 1 1 bob@example.com Bob%20Builder"),
    ] {
        alice.expect(&line).await;
    }
    let t = alice.cmd("SYN", "8").await;
    alice.expect(&format!("SYN {t} 8")).await;
    alice.expect_silence(200).await;
    let t = alice.cmd("USR", "MD5 I alice@example.com").await;
    alice.expect(&format!("207 {t}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_logon_takes_over_and_shutdown_says_goodbye() {
    let mut server = server().await;
    let mut first = server.login("alice@example.com", "pa").await;
    let mut watcher = server.login("bob@example.com", "pb").await;
    add(&mut watcher, "FL", "alice@example.com", "Alice").await;
    first
        .expect("ADD 0 RL 1 bob@example.com Bob%20Builder")
        .await;
    watcher.go_online("NLN").await;
    first.go_online("NLN").await;
    watcher.expect("NLN NLN alice@example.com Alice").await;

    let mut second = server.login("Alice@Example.com", "pa").await;
    first.expect_closed_after(&["OUT OTH"]).await;
    watcher.expect("FLN alice@example.com").await;
    second.go_online("BRB").await;
    watcher.expect("NLN BRB alice@example.com Alice").await;

    server.stop().await;
    second.expect_closed_after(&["OUT SSD"]).await;
    watcher.expect_closed_after(&["OUT SSD"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_are_each_answered() {
    let server = server().await;
    let mut c = Client::connect(server.ns()).await;
    c.send_raw(
        b"VER 1 MSNP2 CVR0\r\nINF 2\r\nUSR 3 MD5 I alice@example.com\r\nFOO 4\r\nSYN 5 0\r\n",
    )
    .await;
    c.expect("VER 1 MSNP2").await;
    c.expect("INF 2 MD5").await;
    c.expect("USR 3 MD5 S *").await;
    c.expect("200 4").await;
    c.expect("302 5").await;

    let mut alice = server.login("alice@example.com", "pa").await;
    let mut burst = Vec::new();
    for i in 0..200u32 {
        burst.extend_from_slice(format!("LST {} FL\r\n", 1000 + i).as_bytes());
    }
    alice.send_raw(&burst).await;
    for i in 0..200u32 {
        alice.expect(&format!("LST {} FL 0 0 0", 1000 + i)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_closes_only_that_connection() {
    let server = server().await;
    let mut alice = server.login("alice@example.com", "pa").await;
    let mut c = Client::connect(server.ns()).await;
    c.send_raw(&vec![b'A'; 5000]).await;
    c.expect_closed().await;
    let mut c = Client::connect(server.ns()).await;
    c.send_raw(b"MSG 1 A 99999999\r\n").await;
    c.expect_closed().await;
    let mut c = Client::connect(server.ns()).await;
    c.send_raw(b"VER 1 MSNP2\r\n\xff\xfe\x00garbage\r\n").await;
    c.expect("VER 1 MSNP2").await;
    c.expect("200 0").await;
    // The others carry on.
    let t = alice.cmd("SYN", "0").await;
    alice.expect(&format!("SYN {t} 0")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_logins_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    config.server.login_timeout_secs = 1;
    let server = TestServer::start_with(dir, config, &[ALICE]).await;
    let mut idle = Client::connect(server.ns()).await;
    idle.send("VER 1 MSNP2").await;
    idle.expect("VER 1 MSNP2").await;
    idle.expect_closed().await;
    // A logged-in client has no such limit.
    let mut alice = server.login("alice@example.com", "pa").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let t = alice.cmd("SYN", "0").await;
    alice.expect(&format!("SYN {t} 0")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_refers_to_the_notification_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    config.server.dispatch_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = TestServer::start_with(dir, config, &[ALICE]).await;
    let mut ds = Client::connect(server.running().dispatch_address.unwrap()).await;
    let t = ds.cmd("VER", "MSNP2 CVR0").await;
    ds.expect(&format!("VER {t} MSNP2")).await;
    let t = ds.cmd("INF", "").await;
    ds.expect(&format!("INF {t} MD5")).await;
    let t = ds.cmd("USR", "MD5 I alice@example.com").await;
    let xfr = ds.expect(&format!("XFR {t} NS *")).await;
    ds.expect_closed().await;
    assert_eq!(xfr.tokens.len(), 4, "MSNP2 form has no trailing field");
    // Following the referral ends in a login.
    Client::login(xfr.get(3).parse().unwrap(), "alice@example.com", "pa").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_state_changes_converge_for_every_watcher() {
    use std::collections::HashMap;
    const N: usize = 12;
    let handles: Vec<String> = (0..N).map(|i| format!("user{i}@example.com")).collect();
    let accounts: Vec<(&str, &str, &str)> =
        handles.iter().map(|h| (h.as_str(), "pw", "U")).collect();
    let server = TestServer::start(&accounts).await;
    // Everyone has everyone on the FL, set up directly in the store.
    {
        use msngate::store::Store;
        let db = msngate::store::SqliteStore::open(&server.db_path()).unwrap();
        let name = msngate::protocol::FriendlyName::new("U").unwrap();
        for a in &handles {
            for b in &handles {
                if a != b {
                    let (a, b) = (a.parse().unwrap(), b.parse().unwrap());
                    db.add_entry(&a, msngate::protocol::ListKind::Forward, &b, &name)
                        .await
                        .unwrap();
                }
            }
        }
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for (i, handle) in handles.iter().cloned().enumerate() {
        let address = server.ns();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::login(address, &handle, "pw").await;
            let states = ["NLN", "BSY", "AWY", "IDL", "BRB", "PHN", "LUN", "HDN"];
            let mut seen: HashMap<String, String> = HashMap::new();
            let mut record = |line: &common::Line| match line.get(0) {
                "ILN" => {
                    seen.insert(line.get(3).into(), line.get(2).into());
                }
                "NLN" => {
                    seen.insert(line.get(2).into(), line.get(1).into());
                }
                "FLN" => {
                    seen.insert(line.get(1).into(), "FLN".into());
                }
                "CHG" => {}
                other => panic!("unexpected {other}"),
            };
            // Fifteen state changes, each sent once the previous one was answered, while
            // everyone else does the same.
            let mut last = "NLN";
            for k in 0..15 {
                if k > 0 {
                    last = states[(i * 7 + k * 3) % states.len()];
                }
                let t = c.cmd("CHG", last).await;
                loop {
                    let line = c.recv().await;
                    record(&line);
                    if line.get(0) == "CHG" && line.get(1) == t.to_string() {
                        break;
                    }
                }
            }
            // Then read everything still coming until all is quiet.
            barrier.wait().await;
            while let Ok(Some(line)) = c.recv_within(std::time::Duration::from_millis(500)).await {
                record(&line);
            }
            (handle, last.to_string(), seen, c)
        }));
    }
    let mut finals = HashMap::new();
    let mut views = Vec::new();
    let mut clients = Vec::new();
    for t in tasks {
        let (handle, last, seen, c) = t.await.unwrap();
        finals.insert(
            handle.clone(),
            if last == "HDN" {
                "FLN".to_string()
            } else {
                last
            },
        );
        views.push((handle, seen));
        clients.push(c);
    }
    for (watcher, seen) in views {
        for (contact, state) in &finals {
            if contact == &watcher {
                continue;
            }
            let got = seen.get(contact).map(String::as_str).unwrap_or("FLN");
            assert_eq!(
                got, state,
                "{watcher} sees {contact} as {got}, but it is {state}"
            );
        }
    }
}

/// Tries one MD5 login from `source` (a loopback address) and returns the answer's first word
/// (`USR` for success, `911` for a refusal).
async fn try_login(server: &TestServer, source: &str, handle: &str, password: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server.ns()).await.unwrap();
    let answer = Client::from_stream(stream)
        .try_md5_login(handle, password)
        .await;
    answer.get(0).to_string()
}

/// Ten wrong passwords for one handle from one address, over several connections: the next
/// login for it from there is refused even with the right password, for a cool-down; from
/// another address the real user still logs in. An unknown handle is treated the same.
#[tokio::test]
async fn failed_logins_throttle_that_handle_from_that_address_only() {
    let server = TestServer::start(&[("alice@example.com", "right", "Alice")]).await;
    for _ in 0..10 {
        let answer = try_login(&server, "127.0.0.1", "alice@example.com", "wrong").await;
        assert_eq!(answer, "911");
    }
    assert_eq!(
        try_login(&server, "127.0.0.1", "alice@example.com", "right").await,
        "911",
        "a throttled handle must be refused without checking the password"
    );
    assert_eq!(
        try_login(&server, "127.0.0.2", "alice@example.com", "right").await,
        "USR",
        "another address must not be locked out"
    );
    for _ in 0..10 {
        let answer = try_login(&server, "127.0.0.3", "nobody@example.com", "x").await;
        assert_eq!(answer, "911");
    }
    // Known or unknown, the eleventh answer is the same.
    assert_eq!(
        try_login(&server, "127.0.0.3", "nobody@example.com", "x").await,
        "911"
    );
}

/// Connections per address are limited (here 3, loopback counted for the test): the fourth
/// from one address is closed at once, another address is not affected, and a closed
/// connection gives its place back.
#[tokio::test]
async fn connections_per_address_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    config.limits.max_connections_per_address = 3;
    config.limits.limit_loopback = true;
    let server = TestServer::start_with(dir, config, &[]).await;
    let connect_from = |source: &'static str| {
        let address = server.ns();
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
            Client::from_stream(socket.connect(address).await.unwrap())
        }
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.9").await;
        let t = c.cmd("VER", "MSNP2 CVR0").await;
        c.expect(&format!("VER {t} MSNP2")).await;
        open.push(c);
    }
    let mut fourth = connect_from("127.0.0.9").await;
    fourth.expect_closed().await;
    let mut other = connect_from("127.0.0.10").await;
    let t = other.cmd("VER", "MSNP2 CVR0").await;
    other.expect(&format!("VER {t} MSNP2")).await;
    drop(open.pop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut again = connect_from("127.0.0.9").await;
    let t = again.cmd("VER", "MSNP2 CVR0").await;
    again.expect(&format!("VER {t} MSNP2")).await;
}

/// The node's connections in all are limited (here 3, over both listeners): the fourth is
/// closed at once, whatever its address and its listener, and a closed connection gives its
/// place back.
#[tokio::test]
async fn connections_in_all_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    config.server.max_connections = 3;
    let server = TestServer::start_with(dir, config, &[]).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect(server.ns()).await;
        let t = c.cmd("VER", "MSNP2 CVR0").await;
        c.expect(&format!("VER {t} MSNP2")).await;
        open.push(c);
    }
    // The third place goes to a switchboard connection: the limit is the node's. A command
    // before its login is refused, and the connection stays.
    let mut sb = Client::connect(server.sb()).await;
    sb.send_raw(b"CAL 1 nobody@example.com\r\n").await;
    sb.expect("302 1").await;
    let mut fourth = Client::connect(server.ns()).await;
    fourth.expect_closed().await;
    drop(open.pop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut again = Client::connect(server.ns()).await;
    let t = again.cmd("VER", "MSNP2 CVR0").await;
    again.expect(&format!("VER {t} MSNP2")).await;
}

#[tokio::test]
async fn an_account_linked_to_a_backend_this_build_lacks_is_refused_with_500() {
    use msngate::backend::registry::{networks, KNOWN_NETWORKS};
    let compiled: Vec<_> = networks().iter().map(|n| n.name()).collect();
    let mut lacking: Vec<_> = KNOWN_NETWORKS
        .iter()
        .filter(|n| !compiled.contains(n))
        .copied()
        .collect();
    lacking.push("gopher");
    for backend in lacking {
        let mut server = TestServer::start_linked(
            "alice@example.com",
            "pa",
            (backend, "alice@elsewhere.example", "secret"),
            Vec::new(),
            |_| {},
        )
        .await;
        let mut c = Client::connect(server.ns()).await;
        let answer = c.try_md5_login("alice@example.com", "pa").await;
        assert_eq!(answer.get(0), "500", "{backend}: {}", answer.text());
        server.stop().await;
    }
}

/// MSN 4.6's VER list, answered with itself.
const MSNP7_LIST: &str = "MSNP7 MSNP6 MSNP5 MSNP4 CVR0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msnp2_and_msnp7_clients_see_each_other_each_in_its_own_dialect() {
    let server = server().await;
    let mut alice = server.login("alice@example.com", "pa").await;
    let mut bob = server
        .login_offering("bob@example.com", "pb", MSNP7_LIST, MSNP7_LIST)
        .await;
    // Bob files Alice in a group of his; Alice's client, in MSNP2, hears of it as ever.
    let t = bob.cmd("ADG", "Friends 0").await;
    bob.expect(&format!("ADG {t} * Friends 1 0")).await;
    let t = bob.cmd("ADD", "FL alice@example.com Alice 1").await;
    bob.expect(&format!("ADD {t} FL * alice@example.com Alice 1"))
        .await;
    alice
        .expect("ADD 0 RL * bob@example.com Bob%20Builder")
        .await;
    add(&mut alice, "FL", "bob@example.com", "Bob").await;
    // An ADD 0 RL reaches Bob in MSNP7 too: RL entries have no group.
    bob.expect("ADD 0 RL * alice@example.com Alice").await;
    alice.go_online("NLN").await;
    let ilns = bob.go_online("NLN").await;
    assert!(common::matches(
        &ilns[0],
        "ILN * NLN alice@example.com Alice"
    ));
    alice.expect("NLN NLN bob@example.com Bob%20Builder").await;
    alice.chg("AWY").await;
    bob.expect("NLN AWY alice@example.com Alice").await;
    // Alice's phone numbers are MSNP5's: she cannot set one, and Bob's reach only MSNP5+.
    let t = alice.cmd("PRP", "PHH 123").await;
    alice.expect(&format!("200 {t}")).await;
    let t = bob.cmd("PRP", "PHM 555%201234").await;
    bob.expect(&format!("PRP {t} * PHM 555%201234")).await;
    alice.expect_silence(300).await;
    // Bob's FL as Alice's MSNP2 SYN would show hers: no group field on her side.
    let t = alice.cmd("LST", "FL").await;
    alice
        .expect(&format!("LST {t} FL * 1 1 bob@example.com Bob"))
        .await;
    let t = bob.cmd("LST", "FL").await;
    bob.expect(&format!("LST {t} FL * 1 1 alice@example.com Alice 1"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_from_msnp2_and_msnp7_keeps_one_serial_and_its_groups() {
    let server = server().await;
    let serial = |l: &common::Line| l.get(2).parse::<u32>().unwrap();
    // Day one, MSN 4.6: a group and a contact in it.
    let mut bob = server
        .login_offering("bob@example.com", "pb", MSNP7_LIST, MSNP7_LIST)
        .await;
    let t = bob.cmd("ADG", "Work 0").await;
    bob.expect(&format!("ADG {t} * Work 1 0")).await;
    let t = bob.cmd("ADD", "FL carol@example.com Carol 1").await;
    let added = bob
        .expect(&format!("ADD {t} FL * carol@example.com Carol 1"))
        .await;
    let day_one = added.get(3).parse::<u32>().unwrap();
    bob.send("OUT").await;
    bob.expect("OUT").await;
    // Day two, MSN 1.0: the FL without groups, the same serial, and changes move it on.
    let mut bob = server.login("bob@example.com", "pb").await;
    let t = bob.cmd("SYN", "0").await;
    let syn = bob.expect(&format!("SYN {t} *")).await;
    assert_eq!(serial(&syn), day_one);
    bob.expect(&format!("GTC {t} {day_one} A")).await;
    bob.expect(&format!("BLP {t} {day_one} AL")).await;
    bob.expect(&format!("LST {t} FL {day_one} 1 1 carol@example.com Carol"))
        .await;
    for list in ["AL", "BL", "RL"] {
        bob.expect(&format!("LST {t} {list} {day_one} 0 0")).await;
    }
    let t = bob.cmd("ADD", "FL alice@example.com Alice").await;
    let added = bob
        .expect(&format!("ADD {t} FL * alice@example.com Alice"))
        .await;
    let day_two = added.get(3).parse::<u32>().unwrap();
    assert!(day_two > day_one);
    bob.send("OUT").await;
    bob.expect("OUT").await;
    // Day three, MSN 4.6 again: the group is there, Alice (added from MSNP2) is in group 0.
    let mut bob = server
        .login_offering("bob@example.com", "pb", MSNP7_LIST, MSNP7_LIST)
        .await;
    let t = bob.cmd("SYN", &day_one.to_string()).await;
    bob.expect(&format!("SYN {t} {day_two}")).await;
    let mut fl = Vec::new();
    let mut groups = Vec::new();
    loop {
        let l = bob.recv().await;
        match l.get(0) {
            "LSG" => groups.push(format!("{} {}", l.get(5), l.get(6))),
            "LST" if l.get(2) == "FL" => fl.push(format!("{} {}", l.get(6), l.get(8))),
            "LST" if l.get(2) == "RL" => break,
            _ => {}
        }
    }
    assert_eq!(groups, ["0 ~", "1 Work"]);
    assert_eq!(fl, ["carol@example.com 1", "alice@example.com 0"]);
}

/// A client pipelining commands faster than `commands_per_second` (here 5, bursts of 10,
/// loopback counted for the test) has them answered, all and in order, at that pace; another
/// client meanwhile is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_are_paced_not_refused() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    config.limits.limit_loopback = true;
    config.limits.commands_per_second = 5;
    config.limits.command_burst = 10;
    let server = TestServer::start_with(dir, config, &[ALICE, BOB]).await;
    let mut alice = server.login(ALICE.0, ALICE.1).await;

    let started = Instant::now();
    let mut trids = Vec::new();
    for _ in 0..30 {
        trids.push(alice.cmd("LST", "RL").await);
    }
    // Bob, on his own connection, is not held back by Alice's flood.
    let mut bob = server.login(BOB.0, BOB.1).await;
    let t = bob.cmd("LST", "FL").await;
    bob.wait_for_within(&format!("LST {t} FL * * *"), Duration::from_secs(2))
        .await;

    let mut answered = Vec::new();
    while answered.len() < trids.len() {
        let line = alice
            .recv_within(Duration::from_secs(15))
            .await
            .expect("answered within 15 s")
            .expect("the connection stays open");
        assert_eq!(line.get(0), "LST", "{}", line.text());
        answered.push(line.get(1).parse::<u32>().unwrap());
    }
    assert_eq!(answered, trids, "every command answered once, in order");
    // Past the burst, 20-odd commands at 5 a second take four seconds or more.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "answered in {:?}: not paced",
        started.elapsed()
    );
}
