//! A private Prosody XMPP server for integration tests.
//!
//! `Prosody::start()` installs Prosody from Debian if the machine has none (once, guarded by a
//! lock file so that parallel test binaries don't run apt-get twice), then starts an instance of
//! its own: a temporary directory for config, data, log and pidfile, a free loopback c2s port,
//! TLS required with a self-signed certificate for `localhost`, no s2s and no HTTP. Accounts are
//! made with [`Prosody::register`]. [`Prosody::restart`] stops and starts the same instance again
//! on the same port and data directory, so accounts, rosters and offline messages survive.
//!
//! Every test gets its own instance (starting one takes well under a second); dropping the
//! value kills the server. Prosody is also told to die with the test process
//! (`PR_SET_PDEATHSIG`), so a crashed or killed test binary leaves no server behind.
//!
//! Set `MSNGATE_PROSODY_DEBUG=1` to have Prosody log at debug level (every stanza);
//! [`Prosody::log`] returns the log, e.g. to print it when a test fails.
//!
//! TLS trust: the certificate is one per machine (under `target/tmp`), and starting a server
//! points `SSL_CERT_FILE` of the test process at it, which rustls-native-certs (and so
//! tokio-xmpp) reads on every TLS connection. A gateway started as a child process inherits it;
//! pass [`Prosody::cert_path`] explicitly where the environment is cleared.

// Each test binary uses some of these helpers.
#![allow(dead_code)]

use std::fs;

use super::process::{
    self, apt_install, free_port, remove_abandoned_dirs, run_with_timeout, spawn_tied_to_process,
    ServerProcess,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The one virtual host.
pub const DOMAIN: &str = "localhost";
/// The group chat (XEP-0045) service.
pub const MUC_DOMAIN: &str = "conference.localhost";

/// How long an instance may take to accept XMPP streams after it was launched.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long SIGTERM may take before SIGKILL (Prosody usually needs 1-4 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Instance directories are `$TMPDIR/msngate-prosody-XXXXXX`.
const DIR_PREFIX: &str = "msngate-prosody-";

/// A running (or stopped, between `stop` and `start_again`) Prosody instance.
pub struct Prosody {
    /// Holds prosody.cfg.lua, data/, prosody.log, prosody.pid, stdout.log.
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// Byte offset of the log where the current run began: errors are looked for after it.
    log_start: u64,
    /// Lines added to the generated configuration's global section.
    extra_config: &'static str,
}

impl Prosody {
    /// Installs Prosody if needed and starts a fresh private instance, ready for connections.
    /// Panics (with the server's log) if it can't.
    pub async fn start() -> Prosody {
        Self::start_with("").await
    }

    /// Like [`start`](Self::start), with `extra_config` (Lua) added to the global section of
    /// the configuration, e.g. `network_settings = { nagle = false }`.
    pub async fn start_with(extra_config: &'static str) -> Prosody {
        ensure_installed().await;
        trust_test_certificate();
        remove_abandoned_dirs(DIR_PREFIX);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .expect("temp dir for Prosody");
        fs::write(dir.path().join("owner"), std::process::id().to_string()).expect("owner file");
        fs::create_dir(dir.path().join("data")).expect("Prosody data dir");
        let mut server = Prosody {
            dir,
            port: 0,
            child: None,
            log_start: 0,
            extra_config,
        };
        // A port picked free can be taken by someone else before Prosody binds it: try again.
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
        panic!("Prosody did not start:\n{}", errors.join("\n\n"));
    }

    /// Makes an account `user@localhost` (or changes its password); about 0.03 s.
    /// Writes `user`'s roster straight into Prosody's storage: (contact JID, subscription)
    /// pairs, with subscription "none", "to", "from" or "both". For setting a test up
    /// deterministically; the account must exist and not be logged in (Prosody reads a roster
    /// at login).
    pub fn set_roster(&self, user: &str, items: &[(&str, &str)]) {
        let dir = self.dir.path().join("data").join(DOMAIN).join("roster");
        fs::create_dir_all(&dir).expect("roster dir");
        let mut lua = String::from("return {\n\t[false] = {\n\t\t[\"version\"] = 1;\n\t};\n");
        for (jid, subscription) in items {
            lua.push_str(&format!(
                "\t[{jid:?}] = {{\n\t\t[\"groups\"] = {{}};\n\t\t[\"subscription\"] = {subscription:?};\n\t}};\n"
            ));
        }
        lua.push_str("};\n");
        fs::write(dir.join(format!("{user}.dat")), lua).expect("roster file");
    }

    pub async fn register(&self, user: &str, password: &str) {
        let mut cmd = Command::new("prosodyctl");
        cmd.arg("--config")
            .arg(self.config_path())
            .args(["register", user, DOMAIN, password]);
        let out = run_with_timeout(cmd, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("prosodyctl register {user}: {e}"));
        assert!(
            out.status.success(),
            "prosodyctl register {user} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The XMPP domain of the accounts: "localhost".
    pub fn domain(&self) -> &'static str {
        DOMAIN
    }

    /// The group chat service: "conference.localhost".
    pub fn muc_domain(&self) -> &'static str {
        MUC_DOMAIN
    }

    /// `user@localhost`.
    pub fn jid(&self, user: &str) -> String {
        format!("{user}@{DOMAIN}")
    }

    /// The loopback c2s port (STARTTLS).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, what a client gives instead of a DNS lookup.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The PEM certificate the server presents; put it in `SSL_CERT_FILE` to trust it.
    pub fn cert_path(&self) -> &'static Path {
        test_certificate().0
    }

    /// The server's log so far (all runs), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server with SIGTERM (as an administrator would: clients get a stream error)
    /// and waits for the process to exit (1-4 s), SIGKILL after 10 s. Data is kept.
    pub async fn stop(&mut self) {
        process::stop(self).await;
    }

    /// Starts a stopped server again, on the same port with the same data.
    pub async fn start_again(&mut self) {
        process::start_again(self).await;
    }

    /// `stop()` then `start_again()`: connected clients are cut off, accounts and offline
    /// messages survive, the port stays the same.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prosody.log")
    }

    /// Writes the config, spawns Prosody and waits until it serves XMPP on its port.
    async fn launch_process(&mut self) -> Result<(), String> {
        fs::write(self.config_path(), self.config()).map_err(|e| e.to_string())?;
        self.log_start = fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0);
        let stdout = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stdout.log"))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new("prosody");
        cmd.arg("--config")
            .arg(self.config_path())
            .arg("-F") // foreground: the pid we hold is the server's
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().map_err(|e| e.to_string())?)
            .stderr(stdout);
        self.child = Some(spawn_tied_to_process(cmd).map_err(|e| format!("spawn prosody: {e}"))?);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "prosody exited with {status}\n{}",
                        self.diagnostics()
                    ));
                }
            }
            if let Some(error) = self.log_errors() {
                return Err(format!("{error}\n{}", self.diagnostics()));
            }
            if offers_starttls(self.port) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "Prosody not ready after {START_TIMEOUT:?}\n{}",
                    self.diagnostics()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // Failures while loading modules are logged, not fatal: check once more when ready.
        match self.log_errors() {
            Some(error) => Err(format!("{error}\n{}", self.diagnostics())),
            None => Ok(()),
        }
    }

    /// Error lines the current run logged, if any.
    fn log_errors(&self) -> Option<String> {
        let mut file = fs::File::open(self.log_path()).ok()?;
        let mut log = Vec::new();
        file.read_to_end(&mut log).ok()?;
        let run = log.get(self.log_start as usize..)?;
        let errors: Vec<&str> = std::str::from_utf8(run)
            .ok()?
            .lines()
            .filter(|l| l.contains("\terror\t"))
            .collect();
        (!errors.is_empty()).then(|| errors.join("\n"))
    }

    fn diagnostics(&self) -> String {
        let out = fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default();
        format!("--- prosody.log ---\n{}--- stdout ---\n{out}", self.log())
    }

    fn kill(&mut self) {
        process::kill(self);
    }

    fn config(&self) -> String {
        let dir = self.dir.path();
        let (cert, key) = test_certificate();
        let s = |p: &Path| lua_string(&p.to_string_lossy());
        format!(
            r#"-- Written by tests/support/prosody.rs for one test instance.
run_as_root = true
pidfile = {pidfile}
data_path = {data}
certificates = {certdir}
log = {{ {{ levels = {{ min = "{level}" }}, to = "file", filename = {log} }} }}

interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}

c2s_require_encryption = true
-- Room for the long-message tests (the default is 256 KiB, as on many public servers).
c2s_stanza_size_limit = 1024 * 1024
authentication = "internal_hashed"
storage = "internal"
{extra}

modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "presence"; "message"; "iq";
    "offline";      -- XEP-0160 offline storage (Prosody loads it anyway; explicit here)
    "blocklist";    -- XEP-0191
    "private";      -- XEP-0049, legacy XEP-0048 bookmarks
    "pep";          -- XEP-0163, needed by bookmarks
    "bookmarks";    -- XEP-0402, with XEP-0048 private/PEP compatibility
    "carbons";      -- XEP-0280
    "smacks";       -- XEP-0198 stream management
    "ping";         -- XEP-0199
    "vcard_legacy"; -- XEP-0054 (friendly names some clients publish)
    "posix";        -- pidfile
}}
modules_disabled = {{ "s2s" }}

VirtualHost "localhost"
    ssl = {{ certificate = {cert}; key = {key}; }}

Component "conference.localhost" "muc"
    -- Otherwise a new room rejects a second occupant until its creator configures it.
    muc_room_locking = false
"#,
            pidfile = s(&dir.join("prosody.pid")),
            data = s(&dir.join("data")),
            certdir = s(cert.parent().expect("cert dir")),
            log = s(&dir.join("prosody.log")),
            port = self.port,
            level = if std::env::var_os("MSNGATE_PROSODY_DEBUG").is_some() {
                "debug"
            } else {
                "info"
            },
            cert = s(cert),
            key = s(key),
            extra = self.extra_config,
        )
    }
}

impl Drop for Prosody {
    /// Kills the server at once: its data directory is deleted anyway, and SIGTERM would
    /// make every test wait seconds.
    fn drop(&mut self) {
        self.kill();
    }
}

/// Points this process's `SSL_CERT_FILE` at the test certificate (once), so that TLS clients
/// built on rustls-native-certs trust the test servers. Call before the first TLS connection;
/// [`Prosody::start`] does.
pub fn trust_test_certificate() {
    static SET: OnceLock<()> = OnceLock::new();
    SET.get_or_init(|| std::env::set_var("SSL_CERT_FILE", test_certificate().0));
    // With matrix-sdk in the same build rustls has two crypto providers compiled in and no
    // longer picks one by itself; tokio-xmpp needs a process default (see bridges/xmpp).
    let _ = tokio_xmpp::rustls::crypto::ring::default_provider().install_default();
}

/// (certificate, key) for `localhost`, made with openssl once per machine and kept under
/// target/tmp. Made in a scratch directory and renamed into place, so that test binaries
/// running in parallel never see half a pair.
pub fn test_certificate() -> (&'static Path, &'static Path) {
    static PAIR: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    let (cert, key) = PAIR.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join("msngate-prosody-tls");
        let (cert, key) = (dir.join("localhost.crt"), dir.join("localhost.key"));
        if cert.exists() && key.exists() {
            return (cert, key);
        }
        fs::create_dir_all(&base).expect("target/tmp");
        let scratch = base.join(format!("msngate-prosody-tls.{}", std::process::id()));
        let _ = fs::remove_dir_all(&scratch);
        fs::create_dir_all(&scratch).expect("cert scratch dir");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(scratch.join("localhost.key"))
            .arg("-out")
            .arg(scratch.join("localhost.crt"))
            .args(["-days", "3650", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // rename() of a directory onto a non-empty one fails: whoever came first wins.
        if fs::rename(&scratch, &dir).is_err() {
            let _ = fs::remove_dir_all(&scratch);
            assert!(cert.exists() && key.exists(), "no certificate in {dir:?}");
        }
        (cert, key)
    });
    (cert, key)
}

/// Installs Prosody from Debian unless the machine has it (once per test binary).
async fn ensure_installed() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| apt_install("prosody", &["prosody", "prosodyctl"]))
        .await;
}

/// True once the server answers a stream header with features offering STARTTLS: the port is
/// ours, the virtual host is loaded and TLS is configured. Any XMPP server will do.
pub fn offers_starttls(port: u16) -> bool {
    let Ok(mut sock) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
    let header = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
                  xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    if sock.write_all(header.as_bytes()).is_err() {
        return false;
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = sock.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if text.contains("</stream:features>") {
            let ready = text.contains("urn:ietf:params:xml:ns:xmpp-tls");
            let _ = sock.write_all(b"</stream:stream>");
            return ready;
        }
    }
    false
}

fn lua_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl ServerProcess for Prosody {
    const NAME: &'static str = "Prosody";
    const STOP_TIMEOUT: Duration = STOP_TIMEOUT;
    const RESTART_PATIENCE: Duration = Duration::from_secs(5);

    fn child(&mut self) -> &mut Option<Child> {
        &mut self.child
    }

    fn launch(&mut self) -> impl std::future::Future<Output = Result<(), String>> {
        self.launch_process()
    }

    fn worth_retrying(error: &str) -> bool {
        error.contains("Failed to open server port")
    }
}
