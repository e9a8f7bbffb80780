//! A private ejabberd XMPP server for integration tests: the second server the XMPP bridge is
//! checked against, next to Prosody ([`super::prosody`]), with the same shape of API.
//!
//! `Ejabberd::start()` installs ejabberd from Debian (23.01 on Debian 12) if the machine has
//! none, then starts an instance of its own: a temporary directory for config, Mnesia spool and
//! logs, a free loopback c2s port with STARTTLS required (the self-signed `localhost`
//! certificate Prosody uses too), no s2s, no in-band registration. Accounts are made with
//! [`Ejabberd::register`], rosters with [`Ejabberd::set_roster`]. [`Ejabberd::restart`] stops
//! and starts the same instance on the same ports and spool, so accounts, rosters and offline
//! messages survive.
//!
//! The Erlang VM runs in the foreground without distribution: no node name, no cookie, no
//! epmd. So instances can't clash over node names, nothing outside the test can attach to them,
//! and nothing is left running afterwards; but `ejabberdctl` can't reach them either. Accounts
//! and rosters therefore go through ejabberd's admin API (mod_http_api) on a second loopback
//! port, open to 127.0.0.1 and to the few commands the harness uses: a call takes
//! milliseconds, where an `ejabberdctl` call boots a VM of its own (about a second).
//!
//! Every test gets its own instance (ready in 1-3 s); dropping the value kills the server. The
//! VM is also told to die with the test process (`PR_SET_PDEATHSIG`); its helper processes
//! (erl_child_setup and its port programs) exit when it does.
//!
//! Set `MSNGATE_EJABBERD_DEBUG=1` to have ejabberd log at debug level (every stanza);
//! [`Ejabberd::log`] returns the log, e.g. to print it when a test fails.

// Each test binary uses some of these helpers.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::process::{
    self, apt_install, free_port, remove_abandoned_dirs, spawn_tied_to_process, ServerProcess,
};
use super::prosody::{offers_starttls, test_certificate, trust_test_certificate};

/// The one virtual host.
pub const DOMAIN: &str = "localhost";
/// The group chat (XEP-0045) service.
pub const MUC_DOMAIN: &str = "conference.localhost";

/// How long an instance may take to accept XMPP streams after it was launched.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long SIGTERM may take before SIGKILL (ejabberd usually needs about 1 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one admin API call may take.
const API_TIMEOUT: Duration = Duration::from_secs(20);
/// Instance directories are `$TMPDIR/msngate-ejabberd-XXXXXX`.
const DIR_PREFIX: &str = "msngate-ejabberd-";
/// The admin API commands the harness uses; the API refuses every other.
const API_COMMANDS: &[&str] = &["status", "register", "change_password", "add_rosteritem"];

/// A running (or stopped, between `stop` and `start_again`) ejabberd instance.
pub struct Ejabberd {
    /// Holds ejabberd.yml, spool/ (Mnesia), ejabberd.log, error.log, stdout.log.
    dir: tempfile::TempDir,
    /// The c2s port (STARTTLS).
    port: u16,
    /// The admin API's HTTP port.
    api_port: u16,
    child: Option<Child>,
    /// Byte offset of the log where the current run began: errors are looked for after it.
    log_start: u64,
}

impl Ejabberd {
    /// Installs ejabberd if needed and starts a fresh private instance, ready for connections.
    /// Panics (with the server's log) if it can't.
    pub async fn start() -> Ejabberd {
        ensure_installed().await;
        trust_test_certificate();
        remove_abandoned_dirs(DIR_PREFIX);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .expect("temp dir for ejabberd");
        fs::write(dir.path().join("owner"), std::process::id().to_string()).expect("owner file");
        fs::create_dir(dir.path().join("spool")).expect("ejabberd spool dir");
        let mut server = Ejabberd {
            dir,
            port: 0,
            api_port: 0,
            child: None,
            log_start: 0,
        };
        // A port picked free can be taken by someone else before ejabberd binds it: try again.
        let mut errors = Vec::new();
        for _ in 0..3 {
            server.port = free_port();
            server.api_port = free_port();
            match server.launch().await {
                Ok(()) => return server,
                Err(e) => {
                    server.kill();
                    errors.push(e);
                }
            }
        }
        panic!("ejabberd did not start:\n{}", errors.join("\n\n"));
    }

    /// Makes an account `user@localhost` (or changes its password).
    pub async fn register(&self, user: &str, password: &str) {
        let args = json!({ "user": user, "host": DOMAIN, "password": password });
        let (status, body) = self.api("register", &args).await;
        if status == 409 {
            let args = json!({ "user": user, "host": DOMAIN, "newpass": password });
            let (status, body) = self.api("change_password", &args).await;
            assert_eq!(status, 200, "ejabberd change_password {user}: {body}");
            return;
        }
        assert_eq!(status, 200, "ejabberd register {user}: {body}");
    }

    /// Puts contacts on `user`'s roster: (contact JID, subscription) pairs, with subscription
    /// "none", "to", "from" or "both", no name and no group. Items for other JIDs stay (a new
    /// account's roster is empty). This goes through ejabberd's roster code, so it may be
    /// called while the account is logged in.
    pub async fn set_roster(&self, user: &str, items: &[(&str, &str)]) {
        for (jid, subscription) in items {
            let (node, host) = jid
                .split_once('@')
                .unwrap_or_else(|| panic!("roster JID {jid:?} has no node"));
            let args = json!({
                "localuser": user, "localhost": DOMAIN,
                "user": node, "host": host,
                "nick": "", "group": "", "subs": subscription,
            });
            let (status, body) = self.api("add_rosteritem", &args).await;
            // The command answers 0 for success, 1 for failure.
            assert!(
                status == 200 && body.trim() == "0",
                "ejabberd add_rosteritem {user} {jid}: {status} {body}"
            );
        }
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

    /// The pid of the server's VM while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server with SIGTERM (the VM shuts ejabberd down in order: clients get a
    /// stream error) and waits for it to exit (about 1 s), SIGKILL after 10 s. Data is kept.
    pub async fn stop(&mut self) {
        process::stop(self).await;
    }

    /// Kills the server with SIGKILL, as a crash would: clients see their connections drop
    /// without a stream error. Writes Mnesia had not put on disk yet are lost (accounts
    /// registered just before, for instance): [`restart`](Self::restart) first if they must
    /// survive.
    pub async fn crash(&mut self) {
        self.kill();
    }

    /// Starts a stopped server again, on the same ports with the same data.
    pub async fn start_again(&mut self) {
        process::start_again(self).await;
    }

    /// `stop()` then `start_again()`: connected clients are cut off, accounts and offline
    /// messages survive, the ports stay the same.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("ejabberd.yml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("ejabberd.log")
    }

    /// Writes the config, spawns the VM and waits until ejabberd serves XMPP and its API.
    async fn launch_process(&mut self) -> Result<(), String> {
        fs::write(self.config_path(), self.config()).map_err(|e| e.to_string())?;
        self.log_start = fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0);
        let dir = self.dir.path();
        let stdout = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stdout.log"))
            .map_err(|e| e.to_string())?;
        // What `ejabberdctl foreground` runs, minus the node name (no distribution) and the
        // switch to the ejabberd user (the files are root's, in a private directory).
        let mut cmd = Command::new("erl");
        cmd.arg("-noinput")
            // No crash dump files; the log says what went wrong.
            .args(["-env", "ERL_CRASH_DUMP_BYTES", "0"])
            // Idle schedulers sleep instead of spinning: tests run several VMs on 2 cores.
            .args(["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"])
            .args(["-mnesia", "dir"])
            .arg(format!("\"{}\"", dir.join("spool").display()))
            .args(["-s", "ejabberd"])
            .env("ERL_LIBS", ejabberd_libs())
            .env("EJABBERD_CONFIG_PATH", self.config_path())
            .env("EJABBERD_LOG_PATH", self.log_path())
            .env("ERL_CRASH_DUMP", dir.join("erl_crash.dump"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().map_err(|e| e.to_string())?)
            .stderr(stdout);
        // `erl` execs the VM, so the pid we hold is the server's.
        self.child = Some(spawn_tied_to_process(cmd).map_err(|e| format!("spawn erl: {e}"))?);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "ejabberd exited with {status}\n{}",
                        self.diagnostics()
                    ));
                }
            }
            if let Some(error) = self.log_errors() {
                return Err(format!("{error}\n{}", self.diagnostics()));
            }
            if offers_starttls(self.port) && self.api_answers().await {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "ejabberd not ready after {START_TIMEOUT:?}\n{}",
                    self.diagnostics()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match self.log_errors() {
            Some(error) => Err(format!("{error}\n{}", self.diagnostics())),
            None => Ok(()),
        }
    }

    /// Whether the admin API answers its `status` command.
    async fn api_answers(&self) -> bool {
        let no_args = json!({});
        let request = self.api_request("status", &no_args);
        matches!(
            tokio::time::timeout(Duration::from_secs(2), request).await,
            Ok(Ok((200, _)))
        )
    }

    /// Calls an admin API command; (HTTP status, body). Panics if the API can't be reached.
    async fn api(&self, command: &str, args: &serde_json::Value) -> (u16, String) {
        match tokio::time::timeout(API_TIMEOUT, self.api_request(command, args)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => panic!("ejabberd API {command}: {e}\n{}", self.diagnostics()),
            Err(_) => panic!(
                "ejabberd API {command}: no answer within {API_TIMEOUT:?}\n{}",
                self.diagnostics()
            ),
        }
    }

    /// One HTTP/1.0 POST of JSON to `/api/<command>`, read to the end.
    async fn api_request(
        &self,
        command: &str,
        args: &serde_json::Value,
    ) -> Result<(u16, String), String> {
        let body = args.to_string();
        let request = format!(
            "POST /api/{command} HTTP/1.0\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", self.api_port))
            .await
            .map_err(|e| e.to_string())?;
        sock.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        sock.read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP status in {head:?}"))?;
        Ok((status, body.to_owned()))
    }

    /// Error lines the current run logged, if any.
    fn log_errors(&self) -> Option<String> {
        let mut file = fs::File::open(self.log_path()).ok()?;
        let mut log = Vec::new();
        file.read_to_end(&mut log).ok()?;
        let run = log.get(self.log_start as usize..)?;
        let run = std::str::from_utf8(run).ok()?;
        let errors: Vec<&str> = run
            .split("\n20") // entries start with a timestamp and may span lines
            .filter(|entry| entry.contains(" [error] ") || entry.contains(" [critical] "))
            .collect();
        (!errors.is_empty()).then(|| errors.join("\n"))
    }

    fn diagnostics(&self) -> String {
        let out = fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default();
        format!("--- ejabberd.log ---\n{}--- stdout ---\n{out}", self.log())
    }

    fn kill(&mut self) {
        process::kill(self);
    }

    fn config(&self) -> String {
        let (cert, key) = test_certificate();
        // A JSON string is a YAML double-quoted string.
        let s = |p: &Path| serde_json::Value::from(p.to_string_lossy().into_owned()).to_string();
        let commands = serde_json::Value::from(API_COMMANDS.to_vec());
        format!(
            r#"# Written by tests/support/ejabberd.rs for one test instance.
hosts: ["{DOMAIN}"]
loglevel: {level}
log_rotate_count: 0
certfiles: [{cert}, {key}]

listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
    max_stanza_size: 262144
    shaper: none
  # The admin API the harness makes accounts and rosters with (see api_permissions).
  - port: {api_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api

auth_method: internal
auth_password_format: scram
# No server-to-server traffic.
s2s_access: none

api_permissions:
  "test harness":
    from: [mod_http_api]
    who:
      ip: "127.0.0.1/8"
    what: {commands}

# No mod_register: in-band registration is off, as on most public servers.
modules:
  mod_roster: {{}}
  mod_offline: {{}}        # XEP-0160 offline storage
  mod_privacy: {{}}        # needed by mod_blocking
  mod_blocking: {{}}       # XEP-0191
  mod_disco: {{}}
  mod_caps: {{}}
  mod_carboncopy: {{}}     # XEP-0280
  mod_stream_mgmt: {{}}    # XEP-0198
  mod_ping: {{}}           # XEP-0199
  mod_private: {{}}        # XEP-0049, legacy XEP-0048 bookmarks
  mod_pubsub:              # PEP (XEP-0163), for bookmarks (XEP-0402)
    plugins: [flat, pep]
  mod_vcard: {{}}          # XEP-0054
  mod_last: {{}}
  mod_muc:
    host: "{MUC_DOMAIN}"
  mod_admin_extra: {{}}    # the roster commands of the admin API
  mod_http_api: {{}}
"#,
            level = if std::env::var_os("MSNGATE_EJABBERD_DEBUG").is_some() {
                "debug"
            } else {
                "info"
            },
            cert = s(cert),
            key = s(key),
            port = self.port,
            api_port = self.api_port,
        )
    }
}

impl Drop for Ejabberd {
    /// Kills the server at once: its directory is deleted anyway.
    fn drop(&mut self) {
        self.kill();
    }
}

/// Installs ejabberd from Debian unless the machine has it (once per test binary).
async fn ensure_installed() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| apt_install("ejabberd", &["ejabberdctl", "erl"]))
        .await;
}

/// Where Debian's ejabberd keeps its Erlang applications (an architecture-specific directory):
/// the `ERL_LIBS` that `ejabberdctl` sets, read from that script.
fn ejabberd_libs() -> String {
    static LIBS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LIBS.get_or_init(|| {
        let script = std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("ejabberdctl"))
                    .find(|p| p.is_file())
            })
            .and_then(|path| fs::read_to_string(path).ok())
            .unwrap_or_default();
        script
            .lines()
            .find_map(|line| line.trim().strip_prefix("ERL_LIBS="))
            .map(|value| value.trim_matches(|c| c == '\'' || c == '"').to_owned())
            .unwrap_or_else(|| "/usr/lib/x86_64-linux-gnu".to_owned())
    })
    .clone()
}

impl ServerProcess for Ejabberd {
    const NAME: &'static str = "ejabberd";
    const STOP_TIMEOUT: Duration = STOP_TIMEOUT;
    const RESTART_PATIENCE: Duration = Duration::from_secs(5);

    fn child(&mut self) -> &mut Option<Child> {
        &mut self.child
    }

    fn launch(&mut self) -> impl std::future::Future<Output = Result<(), String>> {
        self.launch_process()
    }

    fn worth_retrying(error: &str) -> bool {
        error.contains("eaddrinuse")
    }
}
