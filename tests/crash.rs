//! A server killed (SIGKILL) in the middle of a burst of list and setting changes from many
//! clients loses nothing it acknowledged, half-applies nothing, and keeps its serials and the
//! reverse lists consistent, whatever moment the kill falls on.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Line};
use tokio::sync::Notify;

const CLIENTS: usize = 6;

fn handle(i: usize) -> String {
    format!("user{i}@example.com")
}

struct Server {
    config: PathBuf,
    ns: SocketAddr,
    child: Option<Child>,
}

impl Server {
    fn setup(dir: &Path) -> Server {
        let (config, ns) = common::write_config(dir, &dir.join("msngate.db"));
        for i in 0..CLIENTS {
            let status = msngate(&config)
                .args(["user", "add", &handle(i), "--password", "pw"])
                .status()
                .unwrap();
            assert!(status.success());
        }
        Server {
            config,
            ns: format!("127.0.0.1:{ns}").parse().unwrap(),
            child: None,
        }
    }

    fn start(&mut self) {
        let child = msngate(&self.config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        common::wait_listening(self.ns);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn msngate(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_msngate"));
    c.env_remove("RUST_LOG").arg("--config").arg(config);
    c
}

/// What one client's own lists and settings are, as a model of what it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Own {
    lists: BTreeMap<&'static str, BTreeSet<String>>,
    name: String,
    blp: &'static str,
    gtc: &'static str,
}

impl Own {
    fn new(me: usize) -> Own {
        Own {
            lists: BTreeMap::new(),
            name: handle(me),
            blp: "AL",
            gtc: "A",
        }
    }
}

/// Client `me`'s `n`th change: (command, arguments), always one the server accepts given the
/// ones before it, applied to the model too.
fn change(me: usize, n: usize, own: &mut Own) -> (&'static str, String) {
    let contact = handle((me + 1 + n / 7 % (CLIENTS - 1)) % CLIENTS);
    match n % 7 {
        0 => {
            own.lists.entry("FL").or_default().insert(contact.clone());
            ("ADD", format!("FL {contact} {contact}"))
        }
        1 => {
            own.lists.entry("AL").or_default().insert(contact.clone());
            ("ADD", format!("AL {contact} {contact}"))
        }
        2 => {
            own.lists.entry("AL").or_default().remove(&contact);
            ("REM", format!("AL {contact}"))
        }
        3 => {
            own.name = format!("Name{n}");
            ("REA", format!("{} Name{n}", handle(me)))
        }
        4 => {
            own.blp = if own.blp == "AL" { "BL" } else { "AL" };
            ("BLP", own.blp.to_string())
        }
        5 => {
            own.gtc = if own.gtc == "A" { "N" } else { "A" };
            ("GTC", own.gtc.to_string())
        }
        _ => {
            own.lists.entry("FL").or_default().remove(&contact);
            ("REM", format!("FL {contact}"))
        }
    }
}

/// What the server has for `me`, read with SYN.
async fn stored(ns: SocketAddr, me: usize) -> (u32, Own, BTreeSet<String>) {
    let mut c = Client::connect(ns).await;
    let ok = c.try_md5_login(&handle(me), "pw").await;
    assert_eq!(ok.get(2), "OK", "{}", ok.text());
    // The name as stored, decoded.
    let name = match &ok.command {
        msngate::protocol::ServerCommand::UsrOk { name, .. } => name.as_str().to_string(),
        _ => unreachable!("USR OK"),
    };
    c.expect("MSG Hotmail Hotmail *").await;
    let t = c.cmd("SYN", "0").await;
    let syn = c.expect(&format!("SYN {t} *")).await;
    let serial: u32 = syn.get(2).parse().unwrap();
    let mut own = Own::new(me);
    let mut reverse = BTreeSet::new();
    let mut lists_done = 0;
    while lists_done < 4 {
        let line: Line = c.recv().await;
        match line.get(0) {
            "GTC" => own.gtc = if line.get(3) == "A" { "A" } else { "N" },
            "BLP" => own.blp = if line.get(3) == "AL" { "AL" } else { "BL" },
            "LST" => {
                let (index, total) = (line.get(4), line.get(5));
                if total != "0" {
                    let who = line.get(6).to_string();
                    match line.get(2) {
                        "RL" => {
                            reverse.insert(who);
                        }
                        "FL" => {
                            own.lists.entry("FL").or_default().insert(who);
                        }
                        "AL" => {
                            own.lists.entry("AL").or_default().insert(who);
                        }
                        _ => {
                            own.lists.entry("BL").or_default().insert(who);
                        }
                    }
                }
                if index == total {
                    lists_done += 1;
                }
            }
            other => panic!("unexpected {other} in SYN: {}", line.text()),
        }
    }
    own.name = name;
    own.lists.retain(|_, v| !v.is_empty());
    (serial, own, reverse)
}

/// Logs every client in, then runs their changes until the server dies; returns, per client,
/// how many changes were acknowledged and the serial of the last acknowledgement.
/// `acked_one` is told at each acknowledgement, so the caller can time the kill from the first.
async fn burst(ns: SocketAddr, acked_one: Arc<Notify>) -> Vec<(usize, u32)> {
    // All logged in before the first change: a kill then always falls among changes,
    // never on a login.
    let mut clients = Vec::new();
    for me in 0..CLIENTS {
        clients.push(Client::login(ns, &handle(me), "pw").await);
    }
    let mut tasks = Vec::new();
    for (me, mut c) in clients.into_iter().enumerate() {
        let acked_one = acked_one.clone();
        tasks.push(tokio::spawn(async move {
            let mut own = Own::new(me);
            let (mut acked, mut serial) = (0, 0);
            for n in 0.. {
                let (verb, args) = change(me, n, &mut own);
                let t = c.cmd(verb, &args).await;
                // Others' FL changes show up meanwhile as `ADD 0 RL`/`REM 0 RL`.
                let reply = loop {
                    match c.recv_within(Duration::from_secs(5)).await {
                        Ok(Some(line)) if line.get(1) == "0" && line.get(2) == "RL" => continue,
                        Ok(Some(line)) => break Some(line),
                        // The server is gone.
                        _ => break None,
                    }
                };
                let Some(line) = reply else { break };
                assert!(
                    line.get(0) == verb && line.get(1) == t.to_string(),
                    "user{me}: {verb} {args}: {}",
                    line.text()
                );
                acked = n + 1;
                serial = line
                    .get(if verb == "ADD" || verb == "REM" { 3 } else { 2 })
                    .parse()
                    .unwrap();
                acked_one.notify_one();
            }
            (acked, serial)
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_burst_of_changes_loses_nothing_acknowledged() {
    // Different kill points, counted from the first acknowledgement (a loaded machine may
    // take long to log the clients in): early in the burst, in its middle, and late.
    for (round, after_ms) in [10u64, 250, 700].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::setup(dir.path());
        server.start();
        let ns = server.ns;
        let acked_one = Arc::new(Notify::new());
        let clients = tokio::spawn(burst(ns, acked_one.clone()));
        // `notify_one` keeps its permit until this waits, so the first is never missed.
        tokio::time::timeout(Duration::from_secs(30), acked_one.notified())
            .await
            .unwrap_or_else(|_| panic!("round {round}: no change acknowledged within 30 s"));
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        server.kill();
        let results = clients.await.unwrap();
        eprintln!(
            "round {round}: killed {after_ms} ms after the first acknowledgement; \
             acknowledged per client {results:?}"
        );

        server.start();
        let mut forward = BTreeMap::new();
        let mut reverse = BTreeMap::new();
        for (me, (acked, last_serial)) in results.iter().copied().enumerate() {
            let (serial, own, rl) = stored(ns, me).await;
            // Every acknowledged change is there; of the one in flight, all or nothing.
            let model = |k: usize| {
                let mut own_k = Own::new(me);
                for n in 0..k {
                    change(me, n, &mut own_k);
                }
                own_k.lists.retain(|_, v| !v.is_empty());
                own_k
            };
            assert!(
                own == model(acked) || own == model(acked + 1),
                "round {round}, user{me}: {acked} acknowledged, stored {own:?}, expected {:?}",
                model(acked)
            );
            assert!(
                serial >= last_serial,
                "round {round}, user{me}: serial {serial} below the acknowledged {last_serial}"
            );
            forward.insert(handle(me), own.lists.get("FL").cloned().unwrap_or_default());
            reverse.insert(handle(me), rl);
        }
        // Nothing half-applied between accounts: RL mirrors the others' FL exactly.
        for (owner, fl) in &forward {
            for contact in fl {
                assert!(
                    reverse[contact].contains(owner),
                    "round {round}: {contact} on {owner}'s FL, but {owner} not on its RL"
                );
            }
        }
        for (owner, rl) in &reverse {
            for watcher in rl {
                assert!(
                    forward[watcher].contains(owner),
                    "round {round}: {watcher} on {owner}'s RL without {owner} on its FL"
                );
            }
        }
        server.kill();
    }
}
