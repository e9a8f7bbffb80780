//! A client that vanishes without closing its connection (a dropped modem line, a laptop
//! put to sleep) is found by TCP keepalive, and its contacts see it go offline; a client that
//! is only idle stays online.
//!
//! Loopback never loses a packet, so the test makes it lose them: an HTB queue on `lo` (`tc`,
//! as root) with a class of 8 bits a second, and a filter putting every packet to the
//! vanished client's port in it. The server's probes never arrive, nothing answers them, and
//! the kernel ends the connection. The queue is removed when the test ends. Where `tc` or HTB
//! is not available, the test says so and does nothing.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, TestServer};

const ALICE: (&str, &str, &str) = ("alice@example.com", "pa", "Alice");
const BOB: (&str, &str, &str) = ("bob@example.com", "pb", "Bob");

fn tc(args: &str) -> bool {
    Command::new("tc")
        .args(args.split(' '))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Packets to one loopback port held back (as good as lost) while this lives.
struct Blackhole;

impl Blackhole {
    /// `None` where the queue can't be set up here.
    fn install() -> Option<Blackhole> {
        if !tc("qdisc add dev lo root handle 1: htb default 10") {
            return None;
        }
        let hole = Blackhole;
        let ok = tc("class add dev lo parent 1: classid 1:10 htb rate 10gbit")
            && tc(
                "class add dev lo parent 1: classid 1:20 htb rate 8bit ceil 8bit burst 1 cburst 1",
            );
        ok.then_some(hole)
    }

    fn swallow(&self, port: u16) {
        assert!(
            tc(&format!(
                "filter add dev lo parent 1: protocol ip prio 1 u32 match ip dport {port} 0xffff flowid 1:20"
            )),
            "tc filter for port {port}"
        );
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        tc("qdisc del dev lo root");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_is_dropped_by_keepalive_and_shown_offline() {
    let Some(hole) = Blackhole::install() else {
        eprintln!("SKIPPED: no tc with HTB on lo here (needs root and sch_htb)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    // Probes after 1 s of silence, 1 s apart, 4 of them: a vanished client is gone in ~5 s.
    config.server.keepalive_secs = 1;
    let server = TestServer::start_with(dir, config, &[ALICE, BOB]).await;

    let mut bob = server.login(BOB.0, BOB.1).await;
    let t = bob.cmd("ADD", &format!("FL {} {}", ALICE.0, ALICE.2)).await;
    bob.wait_for(&format!("ADD {t} FL * {} *", ALICE.0)).await;
    let t = bob.cmd("CHG", "NLN").await;
    bob.wait_for(&format!("CHG {t} NLN")).await;

    let stream = tokio::net::TcpStream::connect(server.ns()).await.unwrap();
    let alice_port = stream.local_addr().unwrap().port();
    let mut alice = Client::from_stream(stream);
    let ok = alice.try_md5_login(ALICE.0, ALICE.1).await;
    assert_eq!(ok.get(0), "USR", "{}", ok.text());
    let t = alice.cmd("CHG", "NLN").await;
    alice.wait_for(&format!("CHG {t} NLN")).await;
    bob.wait_for(&format!("NLN NLN {} *", ALICE.0)).await;

    // Idle but there: the kernel answers the probes, and Alice stays online.
    bob.expect_silence(4000).await;

    hole.swallow(alice_port);
    let gone = Instant::now();
    bob.wait_for_within(&format!("FLN {}", ALICE.0), Duration::from_secs(30))
        .await;
    eprintln!(
        "Alice shown offline {:?} after she vanished",
        gone.elapsed()
    );
    drop(alice);
}
