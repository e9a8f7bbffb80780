//! A private Synapse Matrix homeserver for integration tests.
//!
//! `Synapse::start()` installs Synapse from PyPI into a virtualenv shared by all test runs
//! (`$HOME/.cache/msngate-test/synapse-venv`, once, under a lock file so that parallel test
//! binaries don't install it twice; about 15 s), then starts an instance of its own: a
//! temporary directory for config, SQLite database, media, signing key and log, one plain
//! HTTP client listener on a free loopback port, server name `localhost` (so user ids are
//! `@name:localhost` and their MSN handles `name@localhost`), presence on, no federation, and
//! every rate limit raised so tests never get HTTP 429. Accounts are made with
//! [`Synapse::register`] through the shared registration secret.
//!
//! Every test gets its own instance (about 2-4 s to start); dropping the value kills it. The
//! server is also told to die with the test process (`PR_SET_PDEATHSIG`). [`Synapse::restart`]
//! stops and starts the same instance on the same port and data.

// Each test binary uses some of these helpers.
#![allow(dead_code)]

use std::fs;

use super::process::{self, free_port, run_with_timeout, spawn_tied_to_process, ServerProcess};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const VERSION: &str = "1.163.2";
/// The homeserver's name: user ids are `@name:localhost`.
pub const SERVER_NAME: &str = "localhost";
const SHARED_SECRET: &str = "msngate-test-registration-secret";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
const INSTALL_LOCK: &str = "/tmp/msngate-synapse-install.lock";

/// The shared virtualenv; `.installed-VERSION` inside marks a finished install.
fn venv() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/msngate-test/synapse-venv")
}

fn python() -> PathBuf {
    venv().join("bin/python")
}

/// A running (or stopped, between `stop` and `start_again`) Synapse instance.
pub struct Synapse {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    presence: bool,
    /// Access tokens expire after this many seconds (refreshable or not); Synapse's
    /// defaults (5 minutes with a refresh token, never without) when `None`.
    token_lifetime: Option<u32>,
}

impl Synapse {
    /// Installs Synapse if needed and starts a fresh private instance, ready for clients.
    /// Panics (with the server's log) if it can't.
    pub async fn start() -> Synapse {
        Self::start_with_presence(true).await
    }

    /// Like [`start`](Self::start), with presence off (`presence: {enabled: false}`), as some
    /// homeservers run.
    pub async fn start_without_presence() -> Synapse {
        Self::start_with_presence(false).await
    }

    /// Like [`start`](Self::start), with access tokens that expire after `seconds`, whether
    /// the client asked for a refresh token or not.
    pub async fn start_with_token_lifetime(seconds: u32) -> Synapse {
        Self::launch_new(true, Some(seconds)).await
    }

    async fn start_with_presence(presence: bool) -> Synapse {
        Self::launch_new(presence, None).await
    }

    async fn launch_new(presence: bool, token_lifetime: Option<u32>) -> Synapse {
        ensure_installed().await;
        let dir = tempfile::Builder::new()
            .prefix("msngate-synapse-")
            .tempdir()
            .expect("temp dir for Synapse");
        fs::create_dir(dir.path().join("media")).expect("media dir");
        fs::write(dir.path().join("signing.key"), signing_key()).expect("signing key");
        let mut server = Synapse {
            dir,
            port: 0,
            child: None,
            presence,
            token_lifetime,
        };
        let mut errors = Vec::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.launch().await {
                Ok(()) => return server,
                Err(e) => {
                    server.kill();
                    errors.push(e);
                }
            }
        }
        panic!("Synapse did not start:\n{}", errors.join("\n\n"));
    }

    /// Makes an account `@user:localhost` (or leaves an existing one); about 0.5 s.
    pub async fn register(&self, user: &str, password: &str) {
        let mut cmd = Command::new(python());
        cmd.args([
            "-m",
            "synapse._scripts.register_new_matrix_user",
            "--exists-ok",
        ])
        .args([
            "-u",
            user,
            "-p",
            password,
            "--no-admin",
            "-k",
            SHARED_SECRET,
        ])
        .arg(self.url());
        let out = run_with_timeout(cmd, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("register_new_matrix_user {user}: {e}"));
        assert!(
            out.status.success(),
            "register_new_matrix_user {user} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The client API base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn server_name(&self) -> &'static str {
        SERVER_NAME
    }

    /// `@user:localhost`.
    pub fn user_id(&self, user: &str) -> String {
        format!("@{user}:{SERVER_NAME}")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far (all runs), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("homeserver.log")).unwrap_or_default()
    }

    /// Stops the server with SIGTERM and waits for it to exit (SIGKILL after 15 s).
    pub async fn stop(&mut self) {
        process::stop(self).await;
    }

    /// Starts a stopped server again, on the same port with the same data.
    pub async fn start_again(&mut self) {
        process::start_again(self).await;
    }

    /// Freezes the server (SIGSTOP): it keeps its connections and port but answers nothing
    /// until [`thaw`](Self::thaw).
    pub fn freeze(&mut self) {
        if let Some(child) = &self.child {
            process::signal(child, libc::SIGSTOP);
        }
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&mut self) {
        if let Some(child) = &self.child {
            process::signal(child, libc::SIGCONT);
        }
    }

    /// `stop()` then `start_again()`: clients are cut off, data survives, same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("homeserver.yaml")
    }

    async fn launch_process(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        fs::write(self.config_path(), self.config()).map_err(|e| e.to_string())?;
        fs::write(dir.join("log.yaml"), self.log_config()).map_err(|e| e.to_string())?;
        let stdout = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stdout.log"))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(python());
        cmd.args(["-m", "synapse.app.homeserver", "-c"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().map_err(|e| e.to_string())?)
            .stderr(stdout);
        self.child = Some(spawn_tied_to_process(cmd).map_err(|e| format!("spawn synapse: {e}"))?);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "synapse exited with {status}\n{}",
                        self.diagnostics()
                    ));
                }
            }
            if healthy(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "Synapse not ready after {START_TIMEOUT:?}\n{}",
                    self.diagnostics()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn diagnostics(&self) -> String {
        let out = fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default();
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- homeserver.log (tail) ---\n{}\n--- stdout ---\n{out}",
            tail.join("\n")
        )
    }

    fn kill(&mut self) {
        process::kill(self);
    }

    fn log_config(&self) -> String {
        format!(
            r#"version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {log:?}
root:
  level: {level}
  handlers: [file]
disable_existing_loggers: false
"#,
            log = self.dir.path().join("homeserver.log").to_string_lossy(),
            level = if std::env::var_os("MSNGATE_SYNAPSE_DEBUG").is_some() {
                "DEBUG"
            } else {
                "INFO"
            },
        )
    }

    fn config(&self) -> String {
        let dir = self.dir.path();
        let path = |name: &str| format!("{:?}", dir.join(name).to_string_lossy());
        let limit = "{per_second: 1000, burst_count: 1000}";
        format!(
            r#"# Written by tests/support/synapse.rs for one test instance.
server_name: "{SERVER_NAME}"
public_baseurl: "http://127.0.0.1:{port}/"
pid_file: {pid}
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {db}
log_config: {log_config}
media_store_path: {media}
signing_key_path: {signing_key}
registration_shared_secret: "{SHARED_SECRET}"
enable_registration: false
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
presence:
  enabled: {presence}
{tokens}rc_message: {limit}
rc_registration: {limit}
rc_login:
  address: {limit}
  account: {limit}
  failed_attempts: {limit}
rc_admin_redaction: {limit}
rc_joins:
  local: {limit}
  remote: {limit}
rc_joins_per_room: {limit}
rc_3pid_validation: {limit}
rc_invites:
  per_room: {limit}
  per_user: {limit}
  per_issuer: {limit}
rc_third_party_invite: {limit}
rc_media_create: {limit}
rc_key_requests: {limit}
rc_presence:
  per_user: {limit}
rc_delayed_event_mgmt: {limit}
rc_reports: {limit}
rc_room_creation: {limit}
rc_user_directory: {limit}
rc_profile: {limit}
"#,
            port = self.port,
            presence = self.presence,
            tokens = match self.token_lifetime {
                Some(s) => format!(
                    "refreshable_access_token_lifetime: {s}s\nnonrefreshable_access_token_lifetime: {s}s\n"
                ),
                None => String::new(),
            },
            pid = path("homeserver.pid"),
            db = path("homeserver.db"),
            log_config = path("log.yaml"),
            media = path("media"),
            signing_key = path("signing.key"),
        )
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh ed25519 signing key in Synapse's file format (`ed25519 VERSION BASE64SEED`), so
/// that no separate `--generate-keys` run is needed.
fn signing_key() -> String {
    let seed: [u8; 32] = rand::random();
    format!("ed25519 a_test {}\n", base64_unpadded(&seed))
}

fn base64_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Installs Synapse into the shared virtualenv unless it is there. Holds an flock on
/// [`INSTALL_LOCK`] meanwhile and looks again under the lock. Installs python3-venv with
/// apt-get first if `python3 -m venv` is not available.
async fn ensure_installed() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let marker = venv().join(format!(".installed-{VERSION}"));
        if marker.exists() {
            return;
        }
        let venv = venv();
        let venv = venv.to_string_lossy();
        let script = format!(
            "set -e; test -e '{marker}' && exit 0; \
             mkdir -p \"$(dirname '{venv}')\"; rm -rf '{venv}'; \
             python3 -m venv '{venv}' 2>/dev/null || {{ \
               rm -rf '{venv}'; apt-get update && \
               DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv && \
               python3 -m venv '{venv}'; }}; \
             '{venv}/bin/python' -m pip install -q 'matrix-synapse=={VERSION}'; \
             touch '{marker}'",
            marker = marker.to_string_lossy(),
        );
        let mut cmd = Command::new("flock");
        cmd.args([INSTALL_LOCK, "sh", "-c", &script]);
        let started = Instant::now();
        let out = run_with_timeout(cmd, INSTALL_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("installing Synapse: {e}"));
        assert!(
            out.status.success() && marker.exists(),
            "installing Synapse failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "Synapse was missing: installed (or waited for another test binary installing it) \
             in {:.1?}",
            started.elapsed()
        );
    })
    .await;
}

/// True once `GET /health` answers 200.
fn healthy(port: u16) -> bool {
    let Ok(mut sock) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if sock.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = sock.read_to_end(&mut response);
    response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200")
}

impl ServerProcess for Synapse {
    const NAME: &'static str = "Synapse";
    const STOP_TIMEOUT: Duration = STOP_TIMEOUT;
    const RESTART_PATIENCE: Duration = Duration::from_secs(10);

    fn child(&mut self) -> &mut Option<Child> {
        &mut self.child
    }

    fn launch(&mut self) -> impl std::future::Future<Output = Result<(), String>> {
        self.launch_process()
    }

    /// Synapse says little about why a start failed early: any failure may pass.
    fn worth_retrying(_error: &str) -> bool {
        true
    }
}
