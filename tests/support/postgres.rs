//! A private PostgreSQL server for tests: one per test process, started on first use, with a
//! fresh database for each test that asks ([`Postgres::create_database`]), so tests running in
//! parallel never see each other's data.
//!
//! It uses Debian's `postgresql` package (installed with apt-get when no PostgreSQL server
//! binaries are found under `/usr/lib/postgresql/*/bin`). PostgreSQL refuses to run as root, so
//! `initdb` and `postgres` run as the `postgres` user (or `nobody`) in a temporary directory
//! owned by it: trust over the Unix socket in that directory, SCRAM passwords over TCP on a
//! free loopback port, `fsync=off`. The server is tied to the test process (PR_SET_PDEATHSIG:
//! it dies with it); directories left by test processes that died are removed at the next
//! start. A role [`USER`] with password [`PASSWORD`] owns the test databases; tests connect
//! over TCP with it, as msngate would.
//!
//! When PostgreSQL cannot be installed or started, the tests that need it fail and say why,
//! unless `MSNGATE_SKIP_POSTGRES=1` is set ([`skipped`]): then they pass without running.
//!
//! ```ignore
//! #[path = "support"]
//! mod support { pub mod postgres; pub mod process; }
//! let url = support::postgres::Postgres::shared().await.create_database().await;
//! ```

// Each test binary uses some of these helpers.
#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::process::{
    apt_install, free_port, remove_abandoned_dirs, run_with_timeout, spawn_tied_to_process,
};

/// The role that owns the test databases.
pub const USER: &str = "msngate";
/// Its password: tests look for it in output that must not show it.
pub const PASSWORD: &str = "pg-test-secret-4711";
/// Set to `1` to skip the tests that need PostgreSQL instead of failing them.
pub const SKIP_ENV: &str = "MSNGATE_SKIP_POSTGRES";

const DIR_PREFIX: &str = "msngate-pg-";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the tests needing PostgreSQL are to be skipped (`MSNGATE_SKIP_POSTGRES=1`); says so
/// on stderr when they are.
pub fn skipped() -> bool {
    let skip = std::env::var(SKIP_ENV).is_ok_and(|v| v == "1");
    if skip {
        eprintln!("{SKIP_ENV}=1: skipping a test that needs PostgreSQL");
    }
    skip
}

/// A running PostgreSQL server.
pub struct Postgres {
    dir: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
    databases: AtomicUsize,
    /// Whether dropping it leaves its directory (for another launch on it).
    keep_dir: bool,
}

impl Postgres {
    /// The server of this test process, started on first use. Panics with the reason when it
    /// cannot be started (every test asking gets the same message).
    pub async fn shared() -> &'static Postgres {
        static SHARED: OnceCell<Result<Postgres, String>> = OnceCell::const_new();
        let started = SHARED
            .get_or_init(|| async { Postgres::start().await })
            .await;
        match started {
            Ok(server) => server,
            Err(e) => panic!(
                "PostgreSQL for the tests could not be started: {e}\n\
                 (set {SKIP_ENV}=1 to skip the tests that need it)"
            ),
        }
    }

    /// Starts a server of its own (most tests want [`Postgres::shared`]).
    pub async fn start() -> Result<Postgres, String> {
        let started = Instant::now();
        let bin = match server_binaries() {
            Some(bin) => bin,
            None => {
                // pg_ctlcluster comes with the server (postgresql-common), pg_dump with its
                // client; the server's own programs are not on the PATH.
                apt_install("postgresql", &["pg_ctlcluster", "pg_dump", "pg_restore"]).await;
                server_binaries().ok_or(
                    "no initdb under /usr/lib/postgresql/*/bin after installing postgresql",
                )?
            }
        };
        remove_abandoned_dirs(DIR_PREFIX);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(|e| format!("a temporary directory: {e}"))?
            .keep();
        std::fs::write(dir.join("owner"), std::process::id().to_string())
            .map_err(|e| format!("writing the owner file: {e}"))?;
        let (uid, gid) = unprivileged_user()?;
        chown(&dir, uid, gid)?;
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-U",
                "postgres",
            ])
            .args(["--no-locale", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .current_dir(&dir)
            .uid(uid)
            .gid(gid);
        let out = run_with_timeout(initdb, Duration::from_secs(60)).await?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // The port was free a moment ago; another process may take it first: try another.
        let mut attempt = 1;
        let server = loop {
            let port = free_port();
            let log = std::fs::File::create(dir.join("postgres.log"))
                .map_err(|e| format!("the log file: {e}"))?;
            chown(&dir.join("postgres.log"), uid, gid)?;
            let mut postgres = Command::new(bin.join("postgres"));
            postgres
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&dir)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
                // Its dynamic shared memory as files in the data directory, which goes with
                // the directory: a server killed with its test process leaves nothing behind
                // in /dev/shm (the default, `posix`, left 1–3 MiB there each time).
                .args(["-c", "dynamic_shared_memory_type=mmap"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .uid(uid)
                .gid(gid);
            let child =
                spawn_tied_to_process(postgres).map_err(|e| format!("spawning postgres: {e}"))?;
            let mut server = Postgres {
                dir: dir.clone(),
                port,
                child: Mutex::new(Some(child)),
                databases: AtomicUsize::new(0),
                keep_dir: false,
            };
            match server.wait_ready().await {
                Ok(()) => break server,
                Err(e) if attempt < 3 && e.contains("Address already in use") => {
                    attempt += 1;
                    server.keep_dir = true;
                }
                Err(e) => return Err(e),
            }
        };
        let admin = server.admin().await?;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{PASSWORD}'"
            ))
            .await
            .map_err(|e| format!("creating the role: {e}"))?;
        eprintln!(
            "PostgreSQL ({}) ready on 127.0.0.1:{} in {:.1?}",
            bin.display(),
            server.port,
            started.elapsed()
        );
        Ok(server)
    }

    /// A new, empty database owned by [`USER`], and its URL (with the password).
    pub async fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{}_{n}", std::process::id());
        let admin = self.admin().await.unwrap_or_else(|e| panic!("{e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {USER}"))
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        self.url(&name)
    }

    /// The URL of one of the server's databases, over TCP with [`USER`]'s password.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// A superuser connection over the Unix socket, driven on the caller's runtime.
    pub async fn admin(&self) -> Result<tokio_postgres::Client, String> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.dir)
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connecting as postgres over the socket: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .lock()
                .expect("child lock")
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("postgres exited ({status}):\n{}", self.log()));
            }
            match self.admin().await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "not ready in {READY_TIMEOUT:?}: {e}\n{}",
                        self.log()
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The directory of the newest PostgreSQL server binaries Debian installed.
fn server_binaries() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The user PostgreSQL runs as: `postgres` (the package's), else `nobody`.
fn unprivileged_user() -> Result<(u32, u32), String> {
    for name in ["postgres", "nobody"] {
        let name = CString::new(name).expect("no NUL");
        // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
        let entry = unsafe { libc::getpwnam(name.as_ptr()) };
        if !entry.is_null() {
            // SAFETY: non-null, as just checked.
            let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
            return Ok((uid, gid));
        }
    }
    Err("no postgres or nobody user to run PostgreSQL as".into())
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))
}
