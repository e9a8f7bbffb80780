//! msngate on PostgreSQL (`[storage] database = "postgres://..."`), as an operator runs it:
//! every command, the server with a client logging in, backup and restore, and the URL's
//! password never shown. The store itself is checked by the suite in tests/store.rs; here are
//! what the suite cannot see: schema versions, bounded waits, a database lost under a running
//! server. PostgreSQL is the harness's (tests/support/postgres.rs).

mod common;

#[path = "support"]
mod support {
    pub mod postgres;
    pub mod process;
}

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Client;
use msngate::protocol::{FriendlyName, ListKind, UserHandle};
use msngate::store::{DatabaseCheck, PoolOptions, PostgresStore, PostgresUrl, Store, StoreError};
use support::postgres::{skipped, Postgres, PASSWORD, USER};

fn msngate(config: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_msngate"));
    command.env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("MSNGATE") || key.starts_with("PG") {
            command.env_remove(key);
        }
    }
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a command that must succeed and must not show the password; returns its stdout.
fn ok(config: &Path, args: &[&str]) -> String {
    let out = msngate(config, args);
    let all = text(&out);
    assert!(out.status.success(), "{args:?}: {all}");
    assert!(
        !all.contains(PASSWORD),
        "{args:?} showed the password: {all}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn url_of(database: &str) -> PostgresUrl {
    PostgresUrl::new(database).expect("a postgres:// URL")
}

fn h(s: &str) -> UserHandle {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_on_postgresql_and_never_shows_the_password() {
    if skipped() {
        return;
    }
    let pg = Postgres::shared().await;
    let url = pg.create_database().await;
    let masked = format!("postgres://{USER}:***@127.0.0.1:{}/", pg.port());
    let dir = tempfile::tempdir().unwrap();
    let (config, ns_port) = common::write_config(dir.path(), Path::new(&url));

    let checked = ok(&config, &["check-config"]);
    assert!(checked.contains(&masked), "{checked}");
    assert!(checked.contains("no tables yet"), "{checked}");

    ok(
        &config,
        &["user", "add", "alice@example.com", "--password", "pa"],
    );
    ok(
        &config,
        &["user", "add", "bob@example.com", "--password", "pb"],
    );
    let again = msngate(
        &config,
        &["user", "add", "bob@example.com", "--password", "x"],
    );
    assert!(!again.status.success() && text(&again).contains("already exists"));
    ok(
        &config,
        &["user", "passwd", "bob@example.com", "--password", "pc"],
    );
    assert_eq!(
        ok(&config, &["user", "list"]),
        "alice@example.com\tlocal\talice@example.com\nbob@example.com\tlocal\tbob@example.com\n"
    );
    ok(&config, &["user", "remove", "bob@example.com"]);
    let checked = ok(&config, &["check-config"]);
    assert!(checked.contains("schema 1, 1 accounts"), "{checked}");

    // Linking (checked at the account's next login, so no XMPP server is needed here) keeps
    // the backend's password sealed in the database; unlinking makes the account local.
    if cfg!(feature = "xmpp") {
        let secret = "xmpp-secret-Passw0rd";
        let link = [
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
        ];
        assert!(!ok(&config, &link).contains(secret));
        assert_eq!(
            ok(&config, &["user", "list"]),
            "alice@example.com\txmpp:alice@xmpp.example\talice@example.com\n"
        );
        let client = session(&url).await;
        let sealed: Vec<u8> = client
            .query_one("SELECT secret FROM backend_links", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_bytes()));
        ok(&config, &["user", "unlink", "alice@example.com"]);
        assert_eq!(
            ok(&config, &["user", "list"]),
            "alice@example.com\tlocal\talice@example.com\n"
        );
    }

    // The server on the same database: a client logs in and changes its name.
    let log = dir.path().join("serve.log");
    let mut server = Command::new(env!("CARGO_BIN_EXE_msngate"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", ns_port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let address = format!("127.0.0.1:{ns_port}").parse().unwrap();
    let mut client = Client::connect(address).await;
    let answer = client.try_md5_login("alice@example.com", "pa").await;
    assert!(answer.text().starts_with("USR "), "{}", answer.text());
    let t = client.cmd("REA", "alice@example.com Alice%20A").await;
    client
        .wait_for(&format!("REA {t} * alice@example.com Alice%20A"))
        .await;

    // A backup while it serves, then restored into another database.
    let dump = dir.path().join("msngate.dump");
    let said = ok(&config, &["backup", dump.to_str().unwrap()]);
    assert!(said.contains(&masked), "{said}");
    assert!(std::fs::metadata(&dump).unwrap().len() > 0);
    let refused = msngate(&config, &["backup", dump.to_str().unwrap()]);
    assert!(!refused.status.success() && text(&refused).contains("already exists"));

    support::process::signal(&server, libc::SIGTERM);
    let _ = server.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(PASSWORD), "the log shows the password");

    let restored = pg.create_database().await;
    let name = restored.rsplit('/').next().unwrap();
    let out = Command::new("pg_restore")
        .args(["--no-owner", "--dbname", name])
        .arg(&dump)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port().to_string())
        .env("PGUSER", USER)
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore: {}", text(&out));
    let (config, _) = common::write_config(dir.path(), Path::new(&restored));
    assert_eq!(
        ok(&config, &["user", "list"]),
        "alice@example.com\tlocal\tAlice A\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_without_being_shown() {
    if skipped() {
        return;
    }
    let pg = Postgres::shared().await;
    let url = pg.create_database().await;
    let wrong = url.replace(PASSWORD, "wrong-secret-0815");
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = common::write_config(dir.path(), Path::new(&wrong));
    for args in [
        &["check-config"][..],
        &["user", "add", "a@example.com", "--password", "p"][..],
        &["user", "list"][..],
        &["backup", dir.path().join("b.dump").to_str().unwrap()][..],
        &["serve"][..],
    ] {
        let out = msngate(&config, args);
        let all = text(&out);
        assert!(!out.status.success(), "{args:?}: {all}");
        assert!(
            all.contains("password authentication failed"),
            "{args:?}: {all}"
        );
        assert!(
            !all.contains("wrong-secret-0815") && all.contains(&format!("{USER}:***@")),
            "{args:?}: {all}"
        );
    }
}

#[tokio::test]
async fn schema_versions_are_kept_and_a_newer_one_is_refused() {
    if skipped() {
        return;
    }
    let pg = Postgres::shared().await;
    let url = url_of(&pg.create_database().await);
    let options = PoolOptions::default();
    assert_eq!(
        PostgresStore::check(&url, options).await.unwrap(),
        DatabaseCheck::Usable {
            schema: 0,
            accounts: 0
        }
    );
    // Servers starting together migrate once.
    let (first, second) = tokio::join!(
        PostgresStore::connect(&url, options),
        PostgresStore::connect(&url, options)
    );
    let store = first.unwrap();
    drop(second.unwrap());
    let name = FriendlyName::new("A").unwrap();
    store
        .create_account(&h("a@x.com"), &name, "pw")
        .await
        .unwrap();
    drop(store);
    assert_eq!(
        PostgresStore::check(&url, options).await.unwrap(),
        DatabaseCheck::Usable {
            schema: 1,
            accounts: 1
        }
    );
    let client = session(&pg_url(&url)).await;
    client
        .batch_execute("UPDATE schema_version SET version = 99")
        .await
        .unwrap();
    assert!(matches!(
        PostgresStore::connect(&url, options).await,
        Err(StoreError::NewerSchema(99))
    ));
    assert!(matches!(
        PostgresStore::check(&url, options).await,
        Err(StoreError::NewerSchema(99))
    ));
}

/// A session of the test's own on the database at `url` (with its password), beside the
/// store's: to look at rows, or to change what the store meets.
async fn session(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The URL with its password, for a test's own connection.
fn pg_url(url: &PostgresUrl) -> String {
    url.masked().replace("***", PASSWORD)
}

#[tokio::test]
async fn no_operation_waits_on_the_database_without_bound() {
    if skipped() {
        return;
    }
    let pg = Postgres::shared().await;
    let url = url_of(&pg.create_database().await);
    let options = PoolOptions {
        size: 1,
        wait: Duration::from_millis(300),
    };
    let store = PostgresStore::connect(&url, options).await.unwrap();
    let a = h("a@x.com");
    let name = FriendlyName::new("A").unwrap();
    store.create_account(&a, &name, "pw").await.unwrap();
    // Another session holds the account's row.
    let mut client = session(&pg_url(&url)).await;
    let holder = client.transaction().await.unwrap();
    holder
        .execute(
            "SELECT 1 FROM accounts WHERE handle = 'a@x.com' FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
    let started = Instant::now();
    let result = store.rename(&a, &name).await;
    let waited = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "waited {waited:?}, more than the bound"
    );
    holder.rollback().await.unwrap();
    assert!(store.rename(&a, &name).await.is_ok(), "usable again");
}

/// The statement that ends every session on `database` but its own, as an operator or a
/// failover does.
fn end_sessions(database: &str) -> String {
    format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
}

/// Connections the database ended (a restart, a failover, an operator's
/// `pg_terminate_backend`) are found dead when an operation first uses them, before anything
/// was done on them: the operation goes on with a new connection instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_database_ended_are_replaced_not_failed() {
    if skipped() {
        return;
    }
    let pg = Postgres::shared().await;
    let database = pg.create_database().await;
    let url = url_of(&database);
    let name = database.rsplit('/').next().unwrap().to_owned();
    let options = PoolOptions {
        size: 4,
        wait: Duration::from_secs(2),
    };
    let store = PostgresStore::connect(&url, options).await.unwrap();
    let a = h("a@x.com");
    store
        .create_account(&a, &FriendlyName::new("A").unwrap(), "pw")
        .await
        .unwrap();
    let admin = pg.admin().await.unwrap();
    for round in 0..10 {
        // Four at once, so that the pool holds four connections.
        let reads = futures_util::future::join_all((0..4).map(|_| store.credentials(&a))).await;
        assert!(reads.iter().all(Result::is_ok), "round {round}: {reads:?}");
        admin.batch_execute(&end_sessions(&name)).await.unwrap();
        let renamed = FriendlyName::new(&format!("A{round}")).unwrap();
        let (read, write) = tokio::join!(store.credentials(&a), store.rename(&a, &renamed));
        assert!(read.is_ok(), "round {round}: a read failed: {read:?}");
        assert!(write.is_ok(), "round {round}: a change failed: {write:?}");
        assert_eq!(store.account(&a).await.unwrap().name, renamed);
    }
}

/// A read's statements go to the database together; when one fails, PostgreSQL answers each
/// one after it "current transaction is aborted". The error reported is the one that
/// happened: here the account's row, the first statement of each of these reads, may not be
/// read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_among_those_sent_together_is_the_error_reported() {
    if skipped() {
        return;
    }
    let pg = Postgres::shared().await;
    let database = pg.create_database().await;
    let options = PoolOptions {
        size: 2,
        wait: Duration::from_secs(2),
    };
    let store = PostgresStore::connect(&url_of(&database), options)
        .await
        .unwrap();
    let (a, b) = (h("a@x.com"), h("b@x.com"));
    for handle in [&a, &b] {
        store
            .create_account(handle, &FriendlyName::new("X").unwrap(), "pw")
            .await
            .unwrap();
    }
    store.snapshot(&a).await.unwrap();
    let owner = session(&database).await;
    owner
        .batch_execute(&format!("REVOKE SELECT ON accounts FROM {USER}"))
        .await
        .unwrap();
    for round in 0..10 {
        let failures = [
            store.snapshot(&a).await.map(|_| ()),
            store.list(&a, ListKind::Forward).await.map(|_| ()),
            store.permission(&a, &b).await.map(|_| ()),
            store.mirror_state(&a, &b).await.map(|_| ()),
            store
                .add_entry(&a, ListKind::Allow, &b, &FriendlyName::new("B").unwrap())
                .await
                .map(|_| ()),
        ];
        for failed in failures {
            let text = failed
                .expect_err("the account's row cannot be read")
                .to_string();
            assert!(
                text.contains("permission denied for table accounts"),
                "round {round}: {text}"
            );
        }
    }
}

/// A server on a new database of `pg` holding `handles` (password `pw`), waiting at most
/// `pool_wait_secs` for a connection: the server, the database's name, its directory.
async fn server_on_postgres(
    pg: &Postgres,
    handles: &[&str],
    pool_wait_secs: u64,
) -> (msngate::server::Running, String, tempfile::TempDir) {
    let url = pg.create_database().await;
    let store = PostgresStore::connect(&url_of(&url), PoolOptions::default())
        .await
        .unwrap();
    for handle in handles {
        let name = FriendlyName::new(handle).unwrap();
        store.create_account(&h(handle), &name, "pw").await.unwrap();
    }
    drop(store);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::TestServer::config(dir.path());
    config.storage.database = url.as_str().into();
    config.storage.pool_wait_secs = pool_wait_secs;
    let running = msngate::server::start(config).await.expect("server starts");
    let database = url.rsplit('/').next().unwrap().to_owned();
    (running, database, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_lost_under_a_running_server_is_an_error_reply() {
    if skipped() {
        return;
    }
    let pg = Postgres::shared().await;
    let (running, database, _dir) = server_on_postgres(pg, &["alice@example.com"], 1).await;
    let mut alice = Client::login(running.notification_address, "alice@example.com", "pw").await;

    pg.admin()
        .await
        .unwrap()
        .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .await
        .unwrap();
    let started = Instant::now();
    let t = alice.cmd("REA", "alice@example.com Alice%20B").await;
    alice.wait_for(&format!("501 {t}")).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    running.shutdown().await;
}

/// Makes the test's database read-only for new transactions, or writable again, and ends its
/// sessions so that the server's pool reconnects under the new setting: what a failover to a
/// standby, or an operator's `default_transaction_read_only`, looks like to msngate.
async fn set_read_only(pg: &Postgres, database: &str, read_only: bool) {
    let setting = if read_only {
        "SET default_transaction_read_only = on"
    } else {
        "RESET default_transaction_read_only"
    };
    pg.admin()
        .await
        .unwrap()
        .batch_execute(&format!(
            "ALTER DATABASE {database} {setting}; {}",
            end_sessions(database)
        ))
        .await
        .unwrap();
}

/// A database that turns read-only under a running server: changes are refused with `501`
/// and change nothing, while logins, presence and chat go on; once it is writable again,
/// changes are accepted again, and nothing acknowledged was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_refuses_changes_and_keeps_logins_and_chat() {
    if skipped() {
        return;
    }
    let pg = Postgres::shared().await;
    let handles = ["alice@example.com", "bob@example.com", "carol@example.com"];
    let (running, database, _dir) = server_on_postgres(pg, &handles, 2).await;
    let ns = running.notification_address;
    let mut alice = Client::login(ns, "alice@example.com", "pw").await;
    alice.come_online().await;
    let added = alice.ask("ADD", "FL bob@example.com Bob").await;
    assert_eq!(added.get(0), "ADD", "{}", added.text());
    let serial = added.get(3).to_string();

    set_read_only(pg, &database, true).await;
    // Changes are refused, each with the database server's error.
    for (verb, args) in [
        ("ADD", "FL carol@example.com Carol"),
        ("REA", "alice@example.com Alice%20B"),
        ("BLP", "BL"),
    ] {
        let answer = alice.ask(verb, args).await;
        assert_eq!(answer.get(0), "501", "{verb} {args}: {}", answer.text());
    }
    // Logins, presence and chat go on.
    let mut bob = Client::login(ns, "bob@example.com", "pw").await;
    bob.come_online().await;
    alice.wait_for("NLN NLN bob@example.com *").await;
    let mut sb = alice.open_switchboard("alice@example.com").await;
    let t = sb.cmd("CAL", "bob@example.com").await;
    sb.wait_for(&format!("CAL {t} RINGING *")).await;
    let rng = bob.wait_for("RNG * * CKI * alice@example.com *").await;
    let (mut bob_sb, _) = Client::answer(&rng, "bob@example.com").await;
    sb.wait_for("JOI bob@example.com *").await;
    sb.msg(
        "N",
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nstill here",
    )
    .await;
    let msg = bob_sb.wait_for("MSG alice@example.com * *").await;
    assert!(
        msg.payload_text().ends_with("still here"),
        "{}",
        msg.payload_text()
    );

    set_read_only(pg, &database, false).await;
    // Writable again: changes are accepted, and what was acknowledged before is there while
    // nothing refused was applied.
    let mut again = Client::login(ns, "alice@example.com", "pw").await;
    let (now, forward) = again.synchronize().await;
    assert_eq!(now, serial, "the serial of the last acknowledged change");
    assert_eq!(forward, ["bob@example.com"]);
    let added = again.ask("ADD", "FL carol@example.com Carol").await;
    assert_eq!(added.get(0), "ADD", "{}", added.text());
    assert!(added.get(3).parse::<u32>().unwrap() > serial.parse::<u32>().unwrap());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_hands_pg_dump_the_password_in_its_environment_not_its_arguments() {
    if skipped() {
        return;
    }
    let pg = Postgres::shared().await;
    let url = pg.create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = common::write_config(dir.path(), Path::new(&url));
    ok(
        &config,
        &["user", "add", "a@example.com", "--password", "p"],
    );
    // A pg_dump first on the PATH that notes how it was called, then runs the real one.
    let shims = dir.path().join("bin");
    std::fs::create_dir(&shims).unwrap();
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("pg_dump"))
        .find(|p| p.is_file())
        .expect("pg_dump on the PATH");
    let shim = shims.join("pg_dump");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {argv}\nenv > {env}\nexec {real} \"$@\"\n",
            argv = dir.path().join("argv").display(),
            env = dir.path().join("env").display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(
        std::iter::once(shims).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let dump = dir.path().join("a.dump");
    let out = Command::new(env!("CARGO_BIN_EXE_msngate"))
        .arg("--config")
        .arg(&config)
        .arg("backup")
        .arg(&dump)
        .env("PATH", path)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let argv = std::fs::read_to_string(dir.path().join("argv")).unwrap();
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    assert!(!argv.contains(PASSWORD), "pg_dump's arguments: {argv}");
    assert!(
        env.lines().any(|l| l == format!("PGPASSWORD={PASSWORD}")),
        "{env}"
    );
}
