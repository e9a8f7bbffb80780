//! Three msngate nodes (separate processes sharing one database: an SQLite file, or PostgreSQL
//! from tests/support/postgres.rs) joined over a private nats-server, seen from MSN clients:
//! presence, list changes, one-to-one and three-party chat across nodes, one handle logging in
//! on two nodes, and dispatch referring handles to live nodes before and after a node is
//! killed, with nothing acknowledged lost.

mod common;
#[path = "support/nats.rs"]
mod nats;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/process.rs"]
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Line};
use msngate::protocol::{FriendlyName, ServerCommand};
use msngate::store::{PoolOptions, PostgresStore, PostgresUrl, Store};
use nats::NatsServer;

/// Longer than a node's silence limit (3 s) plus a heartbeat, with room for a loaded machine.
const DROP_WAIT: Duration = Duration::from_secs(15);

/// One msngate process, a node of the cluster.
struct Node {
    name: String,
    config: PathBuf,
    log: PathBuf,
    /// A file path or a `postgres://` URL.
    database: String,
    nats: String,
    key: PathBuf,
    ns: u16,
    ds: u16,
    http: u16,
    child: Option<Child>,
}

impl Node {
    fn new(dir: &Path, database: &str, nats: &str, name: &str) -> Node {
        Node {
            name: name.into(),
            config: dir.join(format!("{name}.toml")),
            log: dir.join(format!("{name}.log")),
            database: database.to_owned(),
            nats: nats.into(),
            key: dir.join(format!("{name}.key")),
            ns: 0,
            ds: 0,
            http: 0,
            child: None,
        }
    }

    /// Writes the node's configuration on ports free a moment ago.
    fn write_config(&mut self) {
        let sb = process::free_port();
        (self.ns, self.ds, self.http) = (
            process::free_port(),
            process::free_port(),
            process::free_port(),
        );
        std::fs::write(
            &self.config,
            format!(
                "[server]\nnotification_listen = \"127.0.0.1:{}\"\n\
                 switchboard_listen = \"127.0.0.1:{sb}\"\n\
                 dispatch_listen = \"127.0.0.1:{}\"\npublic_host = \"127.0.0.1\"\n\n\
                 [storage]\ndatabase = \"{}\"\n\n[secrets]\nkey_file = \"{}\"\n\n\
                 [http]\nlisten = \"127.0.0.1:{}\"\n\n\
                 [log]\nlevel = \"msngate=debug\"\n\n\
                 [cluster]\nnats = \"{}\"\nnode = \"{}\"\n",
                self.ns,
                self.ds,
                self.database,
                self.key.display(),
                self.http,
                self.nats,
                self.name,
            ),
        )
        .unwrap();
    }

    /// Starts the node and waits until it listens. A port taken meanwhile by another test's
    /// connection makes it exit at once: then it starts again on other ports.
    fn start(&mut self) {
        for _ in 0..3 {
            self.write_config();
            let log = std::fs::File::create(&self.log).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_msngate"));
            cmd.env_remove("RUST_LOG")
                .arg("--config")
                .arg(&self.config)
                .arg("serve")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            let mut child = process::spawn_tied_to_process(cmd).expect("msngate starts");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    eprintln!(
                        "{} exited at start ({status}); trying other ports:\n{log}",
                        self.name
                    );
                    break;
                }
                // Its own word that every listener is bound: a port taken meanwhile by
                // another process would accept a connection too, while this node exits.
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                if log.contains("msngate is listening") {
                    self.child = Some(child);
                    return;
                }
                assert!(Instant::now() < deadline, "{} did not listen", self.name);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("{} did not start", self.name);
    }

    /// SIGKILL: the node vanishes without a word to the cluster.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: the node shuts down as under systemd.
    fn terminate(&self) {
        if let Some(child) = &self.child {
            process::signal(child, libc::SIGTERM);
        }
    }

    fn ns_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ns))
    }

    fn ds_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ds))
    }

    /// `GET path` on the node's HTTP listener: the status code and the body.
    async fn get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.http))
            .await
            .unwrap();
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let code = response
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        (code, body.to_string())
    }

    /// `GET /health`: the status code and the JSON body.
    async fn health(&self) -> (u16, serde_json::Value) {
        let (code, body) = self.get("/health").await;
        (code, serde_json::from_str(&body).expect("JSON"))
    }

    fn ns_text(&self) -> String {
        format!("127.0.0.1:{}", self.ns)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of {}'s log ---", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A nats-server and three nodes on one database.
struct Cluster {
    nodes: Vec<Node>,
    nats: NatsServer,
    _dir: tempfile::TempDir,
}

const PASSWORD: &str = "pw";

fn handle(name: &str) -> String {
    format!("{name}@example.com")
}

impl Cluster {
    /// Starts the cluster on one SQLite file with these accounts (password [`PASSWORD`]),
    /// returning once every node knows the other two.
    async fn start(accounts: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("msngate.db");
        let owned: Vec<(String, String)> = accounts
            .iter()
            .map(|a| (handle(a), a.to_string()))
            .collect();
        let rows: Vec<(&str, &str, &str)> = owned
            .iter()
            .map(|(h, n)| (h.as_str(), PASSWORD, n.as_str()))
            .collect();
        common::create_accounts(&database, &rows);
        Cluster::start_on(dir, &database.display().to_string()).await
    }

    /// The same on a fresh PostgreSQL database.
    async fn start_on_postgres(accounts: &[&str]) -> Cluster {
        let url = postgres::Postgres::shared().await.create_database().await;
        let location = PostgresUrl::new(&url).expect("a postgres:// URL");
        let store = PostgresStore::connect(&location, PoolOptions::default())
            .await
            .expect("the test database opens");
        for a in accounts {
            let name = FriendlyName::new(a).unwrap();
            store
                .create_account(&handle(a).parse().unwrap(), &name, PASSWORD)
                .await
                .unwrap();
        }
        Cluster::start_on(tempfile::tempdir().unwrap(), &url).await
    }

    async fn start_on(dir: tempfile::TempDir, database: &str) -> Cluster {
        let nats = NatsServer::start().await;
        let mut nodes: Vec<Node> = ["ns-1", "ns-2", "ns-3"]
            .iter()
            .map(|name| Node::new(dir.path(), database, &nats.url(), name))
            .collect();
        for node in &mut nodes {
            node.start();
        }
        let cluster = Cluster {
            nodes,
            nats,
            _dir: dir,
        };
        cluster.wait_until_joined().await;
        cluster
    }

    /// Waits until every node's dispatch refers each of a set of handles to the same node, and
    /// the set is spread over all three: then every node has heard the others.
    async fn wait_until_joined(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let probes: Vec<String> = (0..12).map(|i| handle(&format!("probe{i}"))).collect();
        loop {
            let mut answers = Vec::new();
            for node in &self.nodes {
                let mut referred = Vec::new();
                for probe in &probes {
                    referred.push(refer(node.ds_addr(), probe).await);
                }
                answers.push(referred);
            }
            let agreed = answers.iter().all(|a| *a == answers[0]);
            let mut distinct = answers[0].clone();
            distinct.sort();
            distinct.dedup();
            if agreed && distinct.len() == self.nodes.len() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes did not agree on the live set: {answers:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Logs `name` in on node `i` and goes online (NLN).
    async fn online(&self, i: usize, name: &str) -> Client {
        let mut c = Client::login(self.nodes[i].ns_addr(), &handle(name), PASSWORD).await;
        c.go_online("NLN").await;
        c
    }

    /// The node index whose notification server is `address`.
    fn node_at(&self, address: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.ns_text() == address)
            .unwrap_or_else(|| panic!("{address} is no node's notification server"))
    }
}

/// What a dispatch server at `ds` refers `handle` to (`XFR NS host:port`).
async fn refer(ds: SocketAddr, handle: &str) -> String {
    let mut c = Client::connect(ds).await;
    c.name = format!("{handle}/ds");
    let t = c.cmd("VER", "MSNP2 CVR0").await;
    c.expect(&format!("VER {t} MSNP2")).await;
    let t = c.cmd("USR", &format!("MD5 I {handle}")).await;
    let line = c.expect(&format!("XFR {t} NS *")).await;
    let ServerCommand::XfrNs { address, .. } = line.command else {
        unreachable!("the pattern is XFR NS")
    };
    address
}

/// `a` adds `b` to its FL; `b`, on whatever node, is told (`ADD 0 RL`).
async fn add_contact(a: &mut Client, a_name: &str, b: &mut Client, b_name: &str) -> Vec<Line> {
    let (a_handle, b_handle) = (handle(a_name), handle(b_name));
    let t = a.cmd("ADD", &format!("FL {b_handle} {b_name}")).await;
    a.expect(&format!("ADD {t} FL * {b_handle} {b_name}")).await;
    b.wait_for(&format!("ADD 0 RL * {a_handle} {a_name}")).await;
    let mut after = Vec::new();
    while let Ok(Some(line)) = a.recv_within(Duration::from_millis(300)).await {
        after.push(line);
    }
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_and_chats_cross_nodes() {
    presence_lists_and_chats(Cluster::start(&["alice", "bob", "carol", "dave"]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_presence_lists_and_chats_cross_nodes() {
    if postgres::skipped() {
        return;
    }
    let accounts = ["alice", "bob", "carol", "dave"];
    presence_lists_and_chats(Cluster::start_on_postgres(&accounts).await).await;
}

async fn presence_lists_and_chats(cluster: Cluster) {
    let mut alice = cluster.online(0, "alice").await;
    let mut bob = cluster.online(1, "bob").await;
    let mut carol = cluster.online(2, "carol").await;
    let mut dave = cluster.online(2, "dave").await;

    // List changes cross nodes: the contact's own node tells it (ADD 0 RL), and the adder
    // sees the contact's state from the directory (ILN).
    let after = add_contact(&mut alice, "alice", &mut bob, "bob").await;
    assert!(
        after
            .iter()
            .any(|l| l.text() == format!("ILN {} NLN {} bob", l.get(1), handle("bob"))),
        "no ILN for bob after ADD: {:?}",
        after.iter().map(Line::text).collect::<Vec<_>>()
    );
    add_contact(&mut alice, "alice", &mut carol, "carol").await;
    add_contact(&mut bob, "bob", &mut alice, "alice").await;

    // Presence crosses nodes: NLN on a change of state, to each watcher on another node (two
    // of them on one node: one message carries both).
    add_contact(&mut carol, "carol", &mut alice, "alice").await;
    add_contact(&mut dave, "dave", &mut alice, "alice").await;
    alice.chg("IDL").await;
    for watcher in [&mut bob, &mut carol, &mut dave] {
        watcher
            .wait_for(&format!("NLN IDL {} alice", handle("alice")))
            .await;
    }
    bob.chg("AWY").await;
    alice
        .wait_for(&format!("NLN AWY {} bob", handle("bob")))
        .await;
    carol.chg("BSY").await;
    alice
        .wait_for(&format!("NLN BSY {} carol", handle("carol")))
        .await;

    // One-to-one chat: the session runs on alice's node; bob, on another, is rung there.
    let mut alice_sb = alice.open_switchboard(&handle("alice")).await;
    let t = alice_sb.cmd("CAL", &handle("bob")).await;
    alice_sb.expect(&format!("CAL {t} RINGING *")).await;
    let ring = bob
        .wait_for(&format!("RNG * * CKI * {} alice", handle("alice")))
        .await;
    let ServerCommand::Rng { address, .. } = &ring.command else {
        unreachable!()
    };
    assert_ne!(
        address,
        &cluster.nodes[1].ns_text(),
        "RNG names alice's switchboard"
    );
    let (mut bob_sb, roster) = Client::answer(&ring, &handle("bob")).await;
    assert_eq!(roster.len(), 1);
    assert!(
        matches!(&roster[0].command, ServerCommand::Iro { handle: h, .. } if h.as_str() == handle("alice"))
    );
    alice_sb.expect(&format!("JOI {} bob", handle("bob"))).await;
    alice_sb
        .msg(
            "N",
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhello bob",
        )
        .await;
    let got = bob_sb
        .expect(&format!("MSG {} alice *", handle("alice")))
        .await;
    assert!(got.payload_text().ends_with("hello bob"));
    bob_sb
        .msg(
            "N",
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhi alice",
        )
        .await;
    let got = alice_sb
        .expect(&format!("MSG {} bob *", handle("bob")))
        .await;
    assert!(got.payload_text().ends_with("hi alice"));

    // Three people on three nodes in one session. Bob, logged in on another node than the
    // session's, brings carol in: the session's node rings her on hers.
    let t = bob_sb.cmd("CAL", &handle("carol")).await;
    bob_sb.expect(&format!("CAL {t} RINGING *")).await;
    let ring = carol
        .wait_for(&format!("RNG * * CKI * {} bob", handle("bob")))
        .await;
    let (mut carol_sb, roster) = Client::answer(&ring, &handle("carol")).await;
    assert_eq!(roster.len(), 2, "carol sees alice and bob");
    alice_sb
        .expect(&format!("JOI {} carol", handle("carol")))
        .await;
    bob_sb
        .expect(&format!("JOI {} carol", handle("carol")))
        .await;
    carol_sb
        .msg(
            "N",
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhi both",
        )
        .await;
    for sb in [&mut alice_sb, &mut bob_sb] {
        let got = sb.expect(&format!("MSG {} carol *", handle("carol"))).await;
        assert!(got.payload_text().ends_with("hi both"));
    }

    // A logout on one node is FLN on another; a login on a third is NLN again.
    bob.send("OUT").await;
    bob.expect("OUT").await;
    alice.wait_for(&format!("FLN {}", handle("bob"))).await;
    let mut bob = cluster.online(2, "bob").await;
    alice
        .wait_for(&format!("NLN NLN {} bob", handle("bob")))
        .await;
    bob.expect_silence(100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_another_node_ends_the_older_one() {
    let cluster = Cluster::start(&["alice", "bob"]).await;
    let mut alice = cluster.online(0, "alice").await;
    let mut bob = cluster.online(2, "bob").await;
    add_contact(&mut bob, "bob", &mut alice, "alice").await;

    let mut again = Client::login(cluster.nodes[1].ns_addr(), &handle("alice"), PASSWORD).await;
    alice.wait_for("OUT OTH").await;
    alice.expect_closed().await;
    again.go_online("NLN").await;
    // Bob may see alice go (FLN) before she is back, never after: the older login's end
    // must not overtake the newer login's state.
    bob.wait_for(&format!("NLN NLN {} alice", handle("alice")))
        .await;
    bob.expect_silence(1000).await;

    // The newer login is the one the cluster reaches: bob's ADD tells it.
    let t = bob.cmd("REM", &format!("FL {}", handle("alice"))).await;
    bob.expect(&format!("REM {t} FL * {}", handle("alice")))
        .await;
    again
        .wait_for(&format!("REM 0 RL * {}", handle("bob")))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_refers_to_live_nodes_and_moves_a_dead_nodes_users() {
    let names: Vec<String> = (0..12).map(|i| format!("user{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    a_node_dies(Cluster::start(&refs).await, &names).await;
}

/// The same on PostgreSQL, as a revival service runs it: the killed node's users find their
/// lists as acknowledged when they come back on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_dead_nodes_users_come_back_elsewhere_with_their_lists() {
    if postgres::skipped() {
        return;
    }
    let names: Vec<String> = (0..12).map(|i| format!("user{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    a_node_dies(Cluster::start_on_postgres(&refs).await, &names).await;
}

async fn a_node_dies(mut cluster: Cluster, names: &[String]) {
    // Every node's dispatch refers a handle to the same node.
    let mut home = Vec::new();
    for name in names {
        let first = refer(cluster.nodes[0].ds_addr(), &handle(name)).await;
        for node in &cluster.nodes[1..] {
            assert_eq!(refer(node.ds_addr(), &handle(name)).await, first);
        }
        home.push(cluster.node_at(&first));
    }
    // A user of node 1 (to be killed), watched by a user of another node.
    let gone = home
        .iter()
        .position(|&n| n == 1)
        .expect("some user on ns-2");
    let watcher = home
        .iter()
        .position(|&n| n != 1)
        .expect("some user elsewhere");
    let (gone_name, watcher_name) = (names[gone].as_str(), names[watcher].as_str());
    let mut user = cluster.online(home[gone], gone_name).await;
    let mut watching = cluster.online(home[watcher], watcher_name).await;
    add_contact(&mut watching, watcher_name, &mut user, gone_name).await;
    // A change of the user's own, acknowledged by the node about to die.
    let t = user
        .cmd(
            "ADD",
            &format!("AL {} {watcher_name}", handle(watcher_name)),
        )
        .await;
    user.wait_for(&format!(
        "ADD {t} AL * {} {watcher_name}",
        handle(watcher_name)
    ))
    .await;

    cluster.nodes[1].kill();
    watching
        .wait_for_within(&format!("FLN {}", handle(gone_name)), DROP_WAIT)
        .await;
    user.expect_closed().await;

    // The user comes back through dispatch and lands on a live node; the watcher sees it.
    let live_ds = cluster.nodes[0].ds_addr();
    let deadline = Instant::now() + DROP_WAIT;
    let address = loop {
        let address = refer(live_ds, &handle(gone_name)).await;
        if address != cluster.nodes[1].ns_text() {
            break address;
        }
        assert!(
            Instant::now() < deadline,
            "dispatch still refers to the dead node"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let landed = cluster.node_at(&address);
    assert_ne!(landed, 1);
    let mut back = cluster.online(landed, gone_name).await;
    watching
        .wait_for(&format!("NLN NLN {} {gone_name}", handle(gone_name)))
        .await;
    back.expect_silence(100).await;
    // Its lists are as the dead node acknowledged them.
    for list in ["AL", "RL"] {
        let t = back.cmd("LST", list).await;
        back.expect(&format!(
            "LST {t} {list} * 1 1 {} {watcher_name}",
            handle(watcher_name)
        ))
        .await;
    }

    // Handles of the live nodes stayed where they were.
    for (name, &node) in names.iter().zip(&home) {
        if node != 1 {
            let now = refer(cluster.nodes[2].ds_addr(), &handle(name)).await;
            assert_eq!(cluster.node_at(&now), node, "{name} moved");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_each_node_serves_its_own_users_and_the_nodes_meet_again() {
    let mut cluster = Cluster::start(&["alice", "bob", "carol"]).await;
    let mut alice = cluster.online(0, "alice").await;
    let mut carol = cluster.online(1, "carol").await;
    add_contact(&mut carol, "carol", &mut alice, "alice").await;

    let (code, health) = cluster.nodes[0].health().await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["cluster"]["node"], "ns-1", "{health}");
    assert_eq!(health["cluster"]["nats_connected"], true, "{health}");
    let others = health["cluster"]["nodes"].as_object().expect("nodes");
    assert!(
        others.contains_key("ns-2") && others.contains_key("ns-3"),
        "{health}"
    );
    assert_eq!(health["cluster"]["remote_users"], 1, "{health}");

    cluster.nats.stop();
    // Node 0 goes on serving its own users: a login, a list change, presence and a chat.
    let mut bob = cluster.online(0, "bob").await;
    let after = add_contact(&mut bob, "bob", &mut alice, "alice").await;
    assert!(after.iter().any(|l| l.get(0) == "ILN"), "bob sees alice");
    alice.chg("AWY").await;
    bob.wait_for(&format!("NLN AWY {} alice", handle("alice")))
        .await;
    let mut bob_sb = bob.open_switchboard(&handle("bob")).await;
    let t = bob_sb.cmd("CAL", &handle("alice")).await;
    bob_sb.expect(&format!("CAL {t} RINGING *")).await;
    let ring = alice
        .wait_for(&format!("RNG * * CKI * {} bob", handle("bob")))
        .await;
    let (mut alice_sb, _) = Client::answer(&ring, &handle("alice")).await;
    bob_sb
        .expect(&format!("JOI {} alice", handle("alice")))
        .await;
    bob_sb
        .msg(
            "N",
            b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nstill here",
        )
        .await;
    alice_sb
        .expect(&format!("MSG {} bob *", handle("bob")))
        .await;
    // Across nodes, the others are dropped after the silence: carol sees alice go.
    carol
        .wait_for_within(&format!("FLN {}", handle("alice")), DROP_WAIT)
        .await;
    // Healthy still, and saying why the others are missing.
    let (code, health) = cluster.nodes[0].health().await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["cluster"]["nats_connected"], false, "{health}");
    let (_, metrics) = cluster.nodes[0].get("/metrics").await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{metrics}"))
    };
    assert_eq!(value("msngate_cluster_nats_connected"), 0.0);
    assert!(value("msngate_cluster_messages_dropped_total") > 0.0);

    // NATS is back: the nodes find each other, exchange who is online, and carol sees alice.
    cluster.nats.start_again().await;
    carol
        .wait_for_within(&format!("NLN AWY {} alice", handle("alice")), DROP_WAIT)
        .await;
    cluster.wait_until_joined().await;
    alice.chg("NLN").await;
    carol
        .wait_for(&format!("NLN NLN {} alice", handle("alice")))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_normally_leaves_at_once() {
    // Several users on the stopped node, all watched from another: the watcher sees each go
    // offline, however their logouts and the node's goodbye cross on the way.
    let leaving = ["alice", "carol", "dave", "erin", "frank", "grace"];
    let cluster = Cluster::start(&[&leaving[..], &["bob"]].concat()).await;
    let mut bob = cluster.online(1, "bob").await;
    let mut clients = Vec::new();
    for name in leaving {
        let mut client = cluster.online(0, name).await;
        add_contact(&mut bob, "bob", &mut client, name).await;
        clients.push(client);
    }

    let stopped = Instant::now();
    cluster.nodes[0].terminate();
    for client in &mut clients {
        client.wait_for("OUT SSD").await;
    }
    let mut offline = Vec::new();
    while offline.len() < leaving.len() {
        let line = bob.wait_for("FLN *").await;
        offline.push(line.get(1).to_string());
    }
    offline.sort();
    let mut expected: Vec<String> = leaving.iter().map(|n| handle(n)).collect();
    expected.sort();
    assert_eq!(offline, expected, "each user of the stopped node, offline");
    if let Ok(Some(line)) = bob.recv_within(Duration::from_millis(300)).await {
        panic!("after the FLNs: {}", line.text());
    }
    // The others dropped it on its goodbye, not after the silence limit (3 s).
    let probes: Vec<String> = (0..12).map(|i| handle(&format!("probe{i}"))).collect();
    for probe in &probes {
        let referred = refer(cluster.nodes[1].ds_addr(), probe).await;
        assert_ne!(
            referred,
            cluster.nodes[0].ns_text(),
            "{probe} sent to the stopped node"
        );
    }
    assert!(
        stopped.elapsed() < Duration::from_millis(2500),
        "the stopped node was dropped only after {:?}",
        stopped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_nats_is_down_joins_when_it_comes_up() {
    let mut cluster = Cluster::start(&["alice", "bob"]).await;
    cluster.nodes[2].kill();
    cluster.nats.stop();
    // It starts and serves its own users without NATS.
    cluster.nodes[2].start();
    let mut bob = cluster.online(2, "bob").await;
    let (code, health) = cluster.nodes[2].health().await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["cluster"]["nats_connected"], false, "{health}");

    cluster.nats.start_again().await;
    cluster.wait_until_joined().await;
    // Bob, who logged in before it joined, is known to the others now (from its snapshot).
    let mut alice = cluster.online(0, "alice").await;
    let after = add_contact(&mut alice, "alice", &mut bob, "bob").await;
    assert!(
        after
            .iter()
            .any(|l| l.get(0) == "ILN" && l.get(3) == handle("bob")),
        "alice sees bob: {:?}",
        after.iter().map(Line::text).collect::<Vec<_>>()
    );
}
