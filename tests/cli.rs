//! The msngate binary as an operator uses it: `user` commands, config files and environment
//! overrides, `serve` with SIGTERM, and durability when the process is killed.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{free_port, Client};

fn msngate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_msngate"));
    c.env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("MSNGATE") {
            c.env_remove(key);
        }
    }
    c
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    ns_port: u16,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (config, ns_port) = common::write_config(dir.path(), &dir.path().join("msngate.db"));
    Setup {
        dir,
        config,
        ns_port,
    }
}

/// [`setup`] with the account alice@example.com, password `pa`.
fn setup_with_alice() -> Setup {
    let s = setup();
    let added = run(
        &s.config,
        &["user", "add", "alice@example.com", "--password", "pa"],
    );
    assert!(added.status.success(), "{}", stderr(&added));
    s
}

fn run(config: &Path, args: &[&str]) -> Output {
    msngate()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn serve(config: &Path) -> Child {
    serve_logging_to(config, Stdio::null())
}

fn serve_logging_to(config: &Path, log: impl Into<Stdio>) -> Child {
    msngate()
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait_listening(port: u16) {
    common::wait_listening(("127.0.0.1", port));
}

#[test]
fn user_commands_manage_accounts() {
    let s = setup();
    let ok = run(
        &s.config,
        &[
            "user",
            "add",
            "Alice@Example.com",
            "--password",
            "pa",
            "--name",
            "Alice A",
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(run(
        &s.config,
        &["user", "add", "bob@example.com", "--password", "pb"]
    )
    .status
    .success());
    let list = run(&s.config, &["user", "list"]);
    assert_eq!(
        stdout(&list),
        "alice@example.com\tlocal\tAlice A\nbob@example.com\tlocal\tbob@example.com\n"
    );

    for (args, needle) in [
        (
            vec!["user", "add", "alice@example.com", "--password", "x"],
            "already exists",
        ),
        (
            vec!["user", "add", "not-an-email", "--password", "x"],
            "invalid handle",
        ),
        (
            vec!["user", "add", &"a".repeat(130), "--password", "x"],
            "invalid handle",
        ),
        (
            vec!["user", "add", "c@example.com", "--password", ""],
            "password",
        ),
        (
            vec!["user", "passwd", "nobody@example.com", "--password", "x"],
            "no account",
        ),
        (vec!["user", "remove", "nobody@example.com"], "no account"),
    ] {
        let out = run(&s.config, &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(run(
        &s.config,
        &["user", "passwd", "bob@example.com", "--password", "new"]
    )
    .status
    .success());
    assert!(run(&s.config, &["user", "remove", "alice@example.com"])
        .status
        .success());
    assert_eq!(
        stdout(&run(&s.config, &["user", "list"])),
        "bob@example.com\tlocal\tbob@example.com\n"
    );
}

#[test]
fn bad_configuration_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nswitchboard_listen = \"nowhere\"\n").unwrap();
    let out = run(&file, &["serve"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("switchboard_listen"),
        "{}",
        stderr(&out)
    );

    let out = run(&dir.path().join("missing.toml"), &["user", "list"]);
    assert!(!out.status.success());

    // The environment wins over the file, and bad values there are reported the same way.
    let s = setup();
    let out = msngate()
        .arg("--config")
        .arg(&s.config)
        .args(["serve"])
        .env("MSNGATE__SERVER__PUBLIC_HOST", "has space")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("server.public_host"),
        "{}",
        stderr(&out)
    );
    let other_db = s.dir.path().join("other.db");
    let out = msngate()
        .arg("--config")
        .arg(&s.config)
        .args(["user", "add", "x@example.com", "--password", "p"])
        .env("MSNGATE__STORAGE__DATABASE", &other_db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(other_db.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_gracefully_on_sigterm() {
    let s = setup_with_alice();
    let mut child = serve(&s.config);
    wait_listening(s.ns_port);
    let mut alice = Client::login(
        format!("127.0.0.1:{}", s.ns_port).parse().unwrap(),
        "alice@example.com",
        "pa",
    )
    .await;
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    alice.expect_closed_after(&["OUT SSD"]).await;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_name_the_connection_and_its_user() {
    // The spans are made per command and at the end rather than kept per connection
    // (docs/PERFORMANCE.md): what an operator reads must still say whose connection it was.
    let s = setup_with_alice();
    let log = s.dir.path().join("stderr.log");
    let mut child = serve_logging_to(&s.config, std::fs::File::create(&log).unwrap());
    wait_listening(s.ns_port);
    let ns = format!("127.0.0.1:{}", s.ns_port).parse().unwrap();
    let mut alice = Client::login(ns, "alice@example.com", "pa").await;
    let alice_addr = alice.local_addr();
    let trid = alice.next_trid();
    alice.send(&format!("CHG {trid} NLN")).await;
    alice.expect(&format!("CHG {trid} NLN")).await;
    // A switchboard connection with a cookie that was never issued.
    let trid = alice.next_trid();
    alice.send(&format!("XFR {trid} SB")).await;
    let xfr = alice.expect(&format!("XFR {trid} SB * CKI *")).await;
    let mut sb = Client::connect_to(xfr.get(3)).await;
    let sb_addr = sb.local_addr();
    sb.send("USR 1 alice@example.com 1234567.89.0").await;
    sb.expect("911 1").await;
    sb.send("OUT").await;
    sb.expect_closed().await;
    alice.send("OUT").await;
    alice.expect_closed_after(&["OUT"]).await;
    // A connection that never logs in and sends a line too long to frame.
    let mut stranger = Client::connect(ns).await;
    let stranger_addr = stranger.local_addr();
    stranger.send_raw(&[b'X'; 64 * 1024]).await;
    stranger.expect_closed().await;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    let has = |span: &str, message: &str| {
        assert!(
            text.lines()
                .any(|l| l.contains(span) && l.contains(message)),
            "no line with `{span}` and `{message}` in:\n{text}"
        )
    };
    has(
        &format!("ns{{peer={alice_addr} handle=alice@example.com}}"),
        "connection ended",
    );
    has(
        &format!("sb{{peer={sb_addr}}}"),
        "switchboard login with an invalid cookie",
    );
    has(&format!("sb{{peer={sb_addr}}}"), "connection ended");
    has(
        &format!("ns{{peer={stranger_addr}}}"),
        "input can't be framed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_nothing_it_acknowledged() {
    let s = setup();
    for h in ["alice@example.com", "bob@example.com"] {
        assert!(run(&s.config, &["user", "add", h, "--password", "pw"])
            .status
            .success());
    }
    let address = format!("127.0.0.1:{}", s.ns_port).parse().unwrap();
    let mut child = serve(&s.config);
    wait_listening(s.ns_port);
    let mut alice = Client::login(address, "alice@example.com", "pw").await;
    let t = alice.cmd("ADD", "FL bob@example.com Bob").await;
    alice
        .expect(&format!("ADD {t} FL 1 bob@example.com Bob"))
        .await;
    let t = alice.cmd("REA", "alice@example.com Renamed").await;
    alice
        .expect(&format!("REA {t} 2 alice@example.com Renamed"))
        .await;
    // SIGKILL right after the replies: no chance to flush anything more.
    child.kill().unwrap();
    child.wait().unwrap();

    let mut child = serve(&s.config);
    wait_listening(s.ns_port);
    let mut alice = Client::login(address, "alice@example.com", "pw").await;
    let t = alice.cmd("SYN", "0").await;
    alice.expect(&format!("SYN {t} 2")).await;
    alice.expect(&format!("GTC {t} 2 A")).await;
    alice.expect(&format!("BLP {t} 2 AL")).await;
    alice
        .expect(&format!("LST {t} FL 2 1 1 bob@example.com Bob"))
        .await;
    let mut bob = Client::login(address, "bob@example.com", "pw").await;
    let t = bob.cmd("LST", "RL").await;
    bob.expect(&format!(
        "LST {t} RL 1 1 1 alice@example.com alice@example.com"
    ))
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn serve_runs_on_embedded_defaults_without_a_config_file() {
    // The README's first command: no file, the default database in the working directory.
    let dir = tempfile::tempdir().unwrap();
    let ns = free_port();
    let mut child = msngate()
        .current_dir(dir.path())
        .arg("serve")
        .env(
            "MSNGATE__SERVER__NOTIFICATION_LISTEN",
            format!("127.0.0.1:{ns}"),
        )
        .env(
            "MSNGATE__SERVER__SWITCHBOARD_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(ns);
    assert!(dir.path().join("msngate.db").exists());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[cfg(feature = "xmpp")]
#[test]
fn linking_stores_backend_secrets_encrypted() {
    let s = setup_with_alice();
    let secret = "xmpp-secret-Passw0rd";
    let out = run(
        &s.config,
        &[
            "user",
            "link",
            "alice@example.com",
            "xmpp",
            "--jid",
            "alice@xmpp.example",
            "--password",
            secret,
            "--server",
            "127.0.0.1:5222",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(secret) && !stderr(&out).contains(secret));
    assert_eq!(
        stdout(&run(&s.config, &["user", "list"])),
        "alice@example.com\txmpp:alice@xmpp.example\talice@example.com\n"
    );
    // The password is nowhere in the database files, and the key file is owner-only.
    for entry in std::fs::read_dir(s.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret",
            path.display()
        );
    }
    let key = s.dir.path().join("msngate.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    for (args, needle) in [
        (
            vec![
                "user",
                "link",
                "alice@example.com",
                "xmpp",
                "--jid",
                "no-at-sign",
                "--password",
                "x",
            ],
            "invalid JID",
        ),
        (
            vec![
                "user",
                "link",
                "alice@example.com",
                "xmpp",
                "--jid",
                "a@b.c/res",
                "--password",
                "x",
            ],
            "invalid JID",
        ),
        (
            vec![
                "user",
                "link",
                "alice@example.com",
                "xmpp",
                "--jid",
                "a@b.c",
                "--password",
                "x",
                "--server",
                "nohost",
            ],
            "invalid server",
        ),
        (
            vec![
                "user",
                "link",
                "nobody@example.com",
                "xmpp",
                "--jid",
                "a@b.c",
                "--password",
                "x",
            ],
            "no account",
        ),
        (vec!["user", "unlink", "nobody@example.com"], "no account"),
    ] {
        let out = run(&s.config, &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    assert!(run(&s.config, &["user", "unlink", "alice@example.com"])
        .status
        .success());
    let out = run(&s.config, &["user", "unlink", "alice@example.com"]);
    assert!(stderr(&out).contains("not linked"), "{}", stderr(&out));
    assert_eq!(
        stdout(&run(&s.config, &["user", "list"])),
        "alice@example.com\tlocal\talice@example.com\n"
    );
}

#[test]
fn linking_to_a_backend_this_build_lacks_says_so() {
    use msngate::backend::registry::{networks, KNOWN_NETWORKS};
    let s = setup_with_alice();
    let compiled: Vec<_> = networks().iter().map(|n| n.name()).collect();
    for backend in KNOWN_NETWORKS.iter().filter(|n| !compiled.contains(n)) {
        let out = run(
            &s.config,
            &[
                "user",
                "link",
                "alice@example.com",
                backend,
                "--password",
                "x",
            ],
        );
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!("the {backend} backend is not compiled into")),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn link_offers_each_backend_with_the_arguments_it_declares() {
    use msngate::backend::registry::networks;
    use msngate_bridge_api::LinkArgKind;
    let help = msngate().args(["user", "link", "--help"]).output().unwrap();
    let help = stdout(&help);
    for network in networks() {
        assert!(
            help.contains(&format!("  {}  ", network.name())),
            "{}: {help}",
            network.name()
        );
        let out = msngate()
            .args(["user", "link", "a@b.c", network.name(), "--help"])
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(text.contains(network.link_help()), "{text}");
        for arg in network.link_args() {
            assert!(text.contains(&format!("--{}", arg.name)), "{text}");
            if arg.kind == LinkArgKind::Required {
                assert!(text.contains(&format!("--{} <", arg.name)), "{text}");
            }
            if arg.secret {
                assert!(text.contains("MSNGATE_LINK_PASSWORD"), "{text}");
            }
        }
    }
}

#[test]
fn check_config_names_each_problem_once_and_masks_secrets() {
    let s = setup();
    let out = msngate()
        .arg("--config")
        .arg(&s.config)
        .arg("check-config")
        .env(
            "MSNGATE__SECRETS__KEY",
            "abababababababababababababababababababababababababababababababab",
        )
        .env("MSNGATE__HTTP__METRICS_TOKEN", "token-not-to-show")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("server.notification_listen"), "{text}");
    assert!(text.contains("the configuration is usable"), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
    assert!(!text.contains("abababab") && !text.contains("token-not-to-show"));

    // A bad address: the key once, the reason once, one line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nnotification_listen = \"nowhere\"\n").unwrap();
    let out = run(&file, &["check-config"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "msngate: configuration: key `server.notification_listen`: invalid socket address syntax\n"
    );

    // A database URL may hold a password: a problem with it is named by its key and shows the
    // URL masked, by check-config and by the server alike. Nothing listens on port 1; a URL of
    // an unsupported database is refused without being shown at all.
    let closed = "postgres://msngate:hunter2@127.0.0.1:1/msngate";
    for (url, shown) in [
        (closed, Some("postgres://msngate:***@127.0.0.1:1/msngate")),
        ("mysql://msngate:hunter2@db.example/msngate", None),
        ("postgres://msngate:hunter2@db.example:nope/msngate", None),
    ] {
        std::fs::write(&file, format!("[storage]\ndatabase = \"{url}\"\n")).unwrap();
        for args in [&["check-config"][..], &["serve"][..], &["user", "list"][..]] {
            let out = run(&file, args);
            assert!(!out.status.success());
            let (err, out) = (stderr(&out), stdout(&out));
            if let Some(shown) = shown {
                assert!(err.contains(shown), "{err}");
            }
            if args != ["user", "list"] || shown.is_none() {
                assert!(err.contains("storage.database"), "{args:?}: {err}");
            }
            assert!(
                !err.contains("hunter2") && !out.contains("hunter2"),
                "{err}{out}"
            );
        }
    }

    // An address in use (as when the server runs) is named by its key.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = msngate()
        .arg("--config")
        .arg(&s.config)
        .arg("check-config")
        .env("MSNGATE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.matches("http.listen").count(), 1, "{err}");
    assert!(err.contains("cannot listen"), "{err}");
}

#[test]
fn backup_while_serving_restores_the_accounts() {
    let s = setup_with_alice();
    let mut server = serve(&s.config);
    wait_listening(s.ns_port);
    let copy = s.dir.path().join("backup.db");
    let out = run(&s.config, &["backup", copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("msngate.key"), "{}", stdout(&out));
    // A second backup to the same file refuses to overwrite it.
    let again = run(&s.config, &["backup", copy.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already exists"));

    // After the backup the account changes; restoring brings back the backed-up state.
    assert!(run(
        &s.config,
        &["user", "add", "late@example.com", "--password", "pl"]
    )
    .status
    .success());
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    server.wait().unwrap();

    // Restoring, as docs/OPERATIONS.md says: the server stopped, the copy put in place of
    // the database (and its -wal/-shm files removed).
    let db = s.dir.path().join("msngate.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&copy, &db).unwrap();
    assert_eq!(
        stdout(&run(&s.config, &["user", "list"])),
        "alice@example.com\tlocal\talice@example.com\n"
    );
    let mut server = serve(&s.config);
    wait_listening(s.ns_port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let address = format!("127.0.0.1:{}", s.ns_port).parse().unwrap();
        Client::login(address, "alice@example.com", "pa").await;
    });
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    server.wait().unwrap();
}

/// config/msngate.service passes `systemd-analyze verify`, with its ExecStart pointed at the
/// binary under test (the unit names the installed path, which a test machine lacks).
#[test]
fn systemd_unit_verifies() {
    let Ok(which) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed here");
        return;
    };
    assert!(which.status.success());
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/msngate.service"),
    )
    .unwrap();
    for needed in [
        "DynamicUser=yes",
        "StateDirectory=msngate",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(needed), "{needed} missing");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("msngate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/msngate", env!("CARGO_BIN_EXE_msngate")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        stdout(&out),
        stderr(&out)
    );
}
