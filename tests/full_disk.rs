//! A full disk under a running server: list and setting changes are refused with `501` (the
//! database server's error) and change nothing, while logins, presence and chat go on; once
//! there is room again, changes are accepted again, and nothing acknowledged was lost.
//!
//! The database lives on a small tmpfs mounted in a mount namespace of the server's own
//! (`unshare -m`, which needs root or user namespaces); the test fills it through
//! `/proc/PID/root`. (A read-only remount is refused while SQLite holds the file open for
//! writing, so a database turned read-only under a running server is not tried.) Where that is not allowed here, the test says so and does nothing.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{matches, Client};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

fn mounting_allowed() -> bool {
    Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The server, in a mount namespace where `db` is a tmpfs of `size` holding the database.
struct Server {
    child: Child,
    db: PathBuf,
    ns: SocketAddr,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let db = dir.join("db");
        std::fs::create_dir(&db).unwrap();
        let (config, ns) = common::write_config(dir, &db.join("msngate.db"));
        let bin = env!("CARGO_BIN_EXE_msngate");
        let config = config.display();
        let mut script = format!(
            "mount -t tmpfs -o size=2m tmpfs '{}' || exit 1\n",
            db.display()
        );
        for handle in [ALICE, BOB, CAROL] {
            script.push_str(&format!(
                "'{bin}' --config '{config}' user add {handle} --password pw >/dev/null || exit 1\n"
            ));
        }
        script.push_str(&format!("exec '{bin}' --config '{config}' serve\n"));
        let child = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ns = format!("127.0.0.1:{ns}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(ns).is_err() {
            assert!(Instant::now() < deadline, "server did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, db, ns }
    }

    /// The database directory as seen from inside the server's mount namespace.
    fn inside(&self) -> PathBuf {
        let relative = self.db.strip_prefix("/").unwrap();
        PathBuf::from(format!("/proc/{}/root", self.child.id())).join(relative)
    }

    /// Fills the tmpfs to the last byte.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.inside().join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while filler.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while filler.write_all(&small).is_ok() {}
        let _ = filler.sync_all();
    }

    fn make_room(&self) {
        std::fs::remove_file(self.inside().join("filler")).unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The FL and AL handles a fresh login's SYN shows.
async fn lists_after_login(ns: SocketAddr, handle: &str) -> (Vec<String>, Vec<String>) {
    let mut c = Client::login(ns, handle, "pw").await;
    let t = c.cmd("SYN", "0").await;
    let (mut fl, mut al) = (Vec::new(), Vec::new());
    loop {
        let l = c.recv().await;
        if l.get(0) == "LST" && l.get(1) == t.to_string() {
            if l.get(4) != "0" {
                match l.get(2) {
                    "FL" => fl.push(l.get(6).to_string()),
                    "AL" => al.push(l.get(6).to_string()),
                    _ => {}
                }
            }
            if l.get(2) == "RL" && l.get(4) == l.get(5) {
                break;
            }
        }
    }
    (fl, al)
}

#[tokio::test]
async fn a_full_disk_refuses_changes_and_keeps_logins_and_chat() {
    if !mounting_allowed() {
        eprintln!("skipped: no mount namespaces here (unshare -m needs root or user namespaces)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    changes_are_refused_while(&server, Server::fill, Server::make_room).await;
}

/// The scenario: Alice's changes are acknowledged, then `unwritable` happens to the database;
/// every change is refused while logins and chat go on; `writable` again, changes work and
/// nothing acknowledged was lost.
async fn changes_are_refused_while(
    server: &Server,
    unwritable: impl Fn(&Server),
    writable: impl Fn(&Server),
) {
    let ns = server.ns;

    let mut alice = Client::login(ns, ALICE, "pw").await;
    alice.go_online("NLN").await;
    for list in ["FL", "AL"] {
        let answer = alice.ask("ADD", &format!("{list} {BOB} Bob")).await;
        assert!(
            matches(&answer, &format!("ADD * {list} * {BOB} Bob")),
            "{}",
            answer.text()
        );
    }

    unwritable(server);
    // Every kind of change is refused with 501 and a log line, and the client stays connected.
    for (verb, args) in [
        ("ADD", format!("FL {CAROL} Carol")),
        ("REM", format!("AL {BOB}")),
        ("REA", format!("{ALICE} Full%20disk")),
        ("BLP", "BL".to_string()),
        ("GTC", "N".to_string()),
    ] {
        let answer = alice.ask(verb, &args).await;
        assert_eq!(
            answer.get(0),
            "501",
            "{verb} {args} answered {}",
            answer.text()
        );
    }

    // Logins, presence and chat go on meanwhile.
    let mut bob = Client::login(ns, BOB, "pw").await;
    bob.go_online("NLN").await;
    for list in ["FL", "AL"] {
        let answer = bob.ask("ADD", &format!("{list} {ALICE} Alice")).await;
        assert_eq!(answer.get(0), "501", "{}", answer.text());
    }
    alice.wait_for(&format!("NLN NLN {BOB} *")).await;
    let mut sb = alice.open_switchboard(ALICE).await;
    sb.cmd("CAL", BOB).await;
    let ring = bob.wait_for(&format!("RNG * * CKI * {ALICE} *")).await;
    let (mut bob_sb, _) = Client::answer(&ring, BOB).await;
    sb.wait_for(&format!("JOI {BOB} *")).await;
    sb.msg(
        "N",
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nstill here",
    )
    .await;
    let got = bob_sb.wait_for(&format!("MSG {ALICE} * *")).await;
    assert!(got.payload_text().ends_with("still here"));

    // With room again, changes are accepted again.
    writable(server);
    let answer = alice.ask("ADD", &format!("FL {CAROL} Carol")).await;
    assert!(
        matches(&answer, &format!("ADD * FL * {CAROL} Carol")),
        "{}",
        answer.text()
    );

    // What was acknowledged is there, what was refused is not half there.
    let (fl, al) = lists_after_login(ns, ALICE).await;
    assert_eq!(fl, [BOB, CAROL]);
    assert_eq!(al, [BOB]);
}
