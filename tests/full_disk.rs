//! A full disk and a read-only file system under a running server: list and setting changes
//! are refused with `501` (the database server's error) and change nothing, while logins,
//! presence and chat go on; once the disk is writable again, changes are accepted again, and
//! nothing acknowledged was lost.
//!
//! The database lives in a mount namespace of the server's own (`unshare -m`, which needs
//! root or user namespaces):
//! - for the full disk, on a small tmpfs that the test fills through `/proc/PID/root`;
//! - for the read-only file system, on an ext4 image mounted `errors=remount-ro`, where the
//!   test raises a file-system error through ext4's `trigger_fs_error` (what a failing disk
//!   does): the kernel turns the file system read-only under the open database. Writable again
//!   is what an operator does: the server is killed, the image checked with `e2fsck` and
//!   mounted again, and the server started on it.
//!
//! Where that is not allowed here, the test says so and does nothing.

mod common;

#[path = "support"]
mod support {
    pub mod process;
}

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{matches, Client};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

/// Whether `script` runs and succeeds in a mount namespace of its own.
fn allowed_in_namespace(script: &str) -> bool {
    Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What holds the database in the server's mount namespace.
enum Disk {
    /// A 2 MiB tmpfs.
    Tmpfs,
    /// This ext4 image, mounted through a loop device with `errors=remount-ro`.
    Ext4(PathBuf),
}

impl Disk {
    /// A fresh ext4 image in `dir`, if this machine can make, mount and fail one.
    fn ext4_in(dir: &Path) -> Option<Disk> {
        let image = dir.join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let failable = format!(
            "mount -o loop,errors=remount-ro '{}' /mnt && \
             test -w /sys/fs/ext4/$(basename $(findmnt -n -o SOURCE /mnt))/trigger_fs_error",
            image.display()
        );
        (made && allowed_in_namespace(&failable)).then_some(Disk::Ext4(image))
    }

    fn mount(&self, at: &Path) -> String {
        match self {
            Disk::Tmpfs => format!("mount -t tmpfs -o size=2m tmpfs '{}'", at.display()),
            Disk::Ext4(image) => format!(
                "mount -o loop,errors=remount-ro '{}' '{}'",
                image.display(),
                at.display()
            ),
        }
    }
}

/// The server, in a mount namespace where `db` is the mounted [`Disk`] holding the database.
struct Server {
    child: Child,
    disk: Disk,
    db: PathBuf,
    config: PathBuf,
    ns: SocketAddr,
}

impl Server {
    fn start(dir: &Path, disk: Disk) -> Server {
        let db = dir.join("db");
        std::fs::create_dir(&db).unwrap();
        let (config, ns) = common::write_config(dir, &db.join("msngate.db"));
        let ns = format!("127.0.0.1:{ns}").parse().unwrap();
        let child = launch(&disk, &db, &config, ns, &[ALICE, BOB, CAROL]);
        Server {
            child,
            disk,
            db,
            config,
            ns,
        }
    }

    /// The database directory as seen from inside the server's mount namespace.
    fn inside(&self) -> PathBuf {
        let relative = self.db.strip_prefix("/").unwrap();
        PathBuf::from(format!("/proc/{}/root", self.child.id())).join(relative)
    }

    /// Fills the tmpfs to the last byte.
    fn fill(&mut self) -> Sessions {
        let mut filler = std::fs::File::create(self.inside().join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while filler.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while filler.write_all(&small).is_ok() {}
        let _ = filler.sync_all();
        Sessions::Kept
    }

    fn make_room(&mut self) -> Sessions {
        std::fs::remove_file(self.inside().join("filler")).unwrap();
        Sessions::Kept
    }

    /// Raises an error on the ext4 file system, which the kernel answers by making it
    /// read-only (`errors=remount-ro`) under the running server.
    fn fail_the_file_system(&mut self) -> Sessions {
        let mounts =
            std::fs::read_to_string(format!("/proc/{}/mountinfo", self.child.id())).unwrap();
        let db = self.db.display().to_string();
        // mountinfo: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE SUPEROPTIONS`
        let source = mounts
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(db.as_str()))
            .and_then(|l| l.split(" - ").nth(1)?.split(' ').nth(1))
            .expect("the database's file system is mounted");
        let device = Path::new(source).file_name().unwrap().to_str().unwrap();
        std::fs::write(
            format!("/sys/fs/ext4/{device}/trigger_fs_error"),
            "msngate test: the disk fails",
        )
        .unwrap();
        Sessions::Kept
    }

    /// What an operator does once the disk is back: kill the server, check the file system,
    /// mount it again and start the server on it.
    fn repair_and_restart(&mut self) -> Sessions {
        let Disk::Ext4(image) = &self.disk else {
            unreachable!("only an image is repaired")
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The namespace's mount goes with its last process, and the loop device with it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let attached = Command::new("losetup")
                .args(["-n", "-j"])
                .arg(image)
                .output()
                .unwrap();
            if attached.stdout.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "the loop device stayed attached");
            std::thread::sleep(Duration::from_millis(50));
        }
        // 0: clean, 1: errors corrected (the error the test raised is recorded on disk).
        let checked = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(image)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(matches!(checked.code(), Some(0 | 1)), "e2fsck: {checked}");
        self.child = launch(&self.disk, &self.db, &self.config, self.ns, &[]);
        Sessions::Ended
    }
}

/// Whether the clients' sessions outlive making the database writable again.
#[derive(PartialEq)]
enum Sessions {
    Kept,
    Ended,
}

/// Starts the server in a mount namespace with `disk` mounted at `db`, after adding the
/// accounts `handles`, and waits until it listens on `ns`.
fn launch(disk: &Disk, db: &Path, config: &Path, ns: SocketAddr, handles: &[&str]) -> Child {
    let bin = env!("CARGO_BIN_EXE_msngate");
    let config = config.display();
    let mut script = format!("{} || exit 1\n", disk.mount(db));
    for handle in handles {
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
    common::wait_listening(ns);
    child
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
    if !allowed_in_namespace("mount -t tmpfs -o size=64k tmpfs /mnt") {
        eprintln!("skipped: no mount namespaces here (unshare -m needs root or user namespaces)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), Disk::Tmpfs);
    changes_are_refused_while(&mut server, Server::fill, Server::make_room).await;
}

#[tokio::test]
async fn a_read_only_file_system_refuses_changes_and_keeps_logins_and_chat() {
    support::process::apt_install("e2fsprogs", &["mkfs.ext4", "e2fsck"]).await;
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Disk::ext4_in(dir.path()) else {
        eprintln!(
            "skipped: no loop-mounted ext4 with trigger_fs_error here (needs root, mkfs.ext4, \
             loop devices and mount namespaces)"
        );
        return;
    };
    let mut server = Server::start(dir.path(), disk);
    changes_are_refused_while(
        &mut server,
        Server::fail_the_file_system,
        Server::repair_and_restart,
    )
    .await;
}

/// The scenario: Alice's changes are acknowledged, then `unwritable` happens to the database;
/// every change is refused while logins and chat go on; `writable` again, changes work and
/// nothing acknowledged was lost.
async fn changes_are_refused_while(
    server: &mut Server,
    unwritable: impl Fn(&mut Server) -> Sessions,
    writable: impl Fn(&mut Server) -> Sessions,
) {
    let ns = server.ns;

    let mut alice = Client::login(ns, ALICE, "pw").await;
    alice.go_online("NLN").await;
    let mut serial = 0u32;
    for list in ["FL", "AL"] {
        let answer = alice.ask("ADD", &format!("{list} {BOB} Bob")).await;
        assert!(
            matches(&answer, &format!("ADD * {list} * {BOB} Bob")),
            "{}",
            answer.text()
        );
        serial = answer.get(3).parse().unwrap();
    }

    let sessions = unwritable(server);
    assert!(sessions == Sessions::Kept);
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

    // With the disk writable again, changes are accepted again, and the refused ones took no
    // serial.
    if writable(server) == Sessions::Ended {
        alice = Client::login(ns, ALICE, "pw").await;
    }
    let answer = alice.ask("ADD", &format!("FL {CAROL} Carol")).await;
    assert!(
        matches(&answer, &format!("ADD * FL {} {CAROL} Carol", serial + 1)),
        "{}",
        answer.text()
    );

    // What was acknowledged is there, what was refused is not half there.
    let (fl, al) = lists_after_login(ns, ALICE).await;
    assert_eq!(fl, [BOB, CAROL]);
    assert_eq!(al, [BOB]);
}
