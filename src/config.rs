//! Configuration: built-in defaults, an optional TOML file, then `MSNGATE__SECTION__KEY`
//! environment variables, in that order of precedence (last wins).

mod backends;
mod cluster;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::store::{DatabaseLocation, PoolOptions};

pub use backends::BackendSettings;
pub use cluster::{redact_credentials, ClusterConfig};

/// The whole configuration. `config/msngate.toml` documents every key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub client: ClientConfig,
    pub secrets: SecretsConfig,
    pub msncd: MsncdConfig,
    pub bridges: BridgesConfig,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    pub cluster: ClusterConfig,
    /// The tables named after backends (`[matrix]`): their keys, defaults and checks come from
    /// the backends themselves.
    #[serde(skip)]
    pub backends: BackendSettings,
}

/// Limits that keep one client or address from spoiling the server for others.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Failed logins for one handle from one address within the window before further logins
    /// for it from there are refused (911) for a while.
    pub login_failures_per_handle: u32,
    /// Failed logins for any handles from one address within the window before that address's
    /// logins are refused for a while.
    pub login_failures_per_address: u32,
    pub login_failure_window_secs: u64,
    /// The first refusal's length; it doubles with each repeat, up to an hour.
    pub login_cooldown_secs: u64,
    /// The most simultaneous connections from one client address (all listeners together);
    /// more are closed at once.
    pub max_connections_per_address: usize,
    /// Whether loopback addresses count too (for connections per address and messages per
    /// second). Off by default: local load tests and msncd's own connections to the server
    /// come from loopback.
    pub limit_loopback: bool,
    /// Switchboard messages one user may send per second on average (0: no limit); a flood
    /// past `message_burst` is slowed, then refused with `713`.
    pub messages_per_second: u32,
    /// Messages one user may send at once before the rate applies.
    pub message_burst: u32,
    /// Commands one connection may send per second on average (0: no limit). Past
    /// `command_burst`, its commands wait their turn and the server reads no more of them
    /// meanwhile; nothing is refused. Loopback is exempt unless `limit_loopback`.
    pub commands_per_second: u32,
    /// Commands one connection may send at once before the pace applies.
    pub command_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            login_failures_per_handle: 10,
            login_failures_per_address: 30,
            login_failure_window_secs: 60,
            login_cooldown_secs: 30,
            max_connections_per_address: 64,
            limit_loopback: false,
            messages_per_second: 10,
            message_burst: 50,
            commands_per_second: 20,
            command_burst: 100,
        }
    }
}

impl LimitsConfig {
    /// Whether the per-client limits (messages and commands per second) apply to a client at
    /// `address`: loopback is exempt unless `limit_loopback`.
    pub fn apply_to(&self, address: std::net::IpAddr) -> bool {
        !address.is_loopback() || self.limit_loopback
    }

    pub fn per_address(&self) -> (usize, bool) {
        (self.max_connections_per_address, self.limit_loopback)
    }

    pub fn throttle(&self) -> ThrottleLimits {
        ThrottleLimits {
            per_handle: self.login_failures_per_handle,
            per_address: self.login_failures_per_address,
            window: std::time::Duration::from_secs(self.login_failure_window_secs),
            cooldown: std::time::Duration::from_secs(self.login_cooldown_secs),
        }
    }
}

/// Settings for every account mapped to another network (docs/bridges/).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgesConfig {
    /// Seconds a backend may be disconnected before its contacts are shown offline. A shorter
    /// outage shows nothing; a longer one shows each contact offline once, and online again
    /// once the backend is back.
    pub presence_debounce_secs: u64,
}

impl Default for BridgesConfig {
    fn default() -> Self {
        BridgesConfig {
            presence_debounce_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where MSN clients log in (the notification server).
    pub notification_listen: SocketAddr,
    /// Where switchboard (chat) connections arrive.
    pub switchboard_listen: SocketAddr,
    /// The host clients are told to connect to in XFR and RNG replies.
    pub public_host: String,
    /// An optional dispatch server that refers clients to the notification server.
    pub dispatch_listen: Option<SocketAddr>,
    /// The most simultaneous client connections over all listeners; more are closed at once.
    pub max_connections: usize,
    /// Seconds a connection may take from connecting to a completed login.
    pub login_timeout_secs: u64,
    /// Seconds a write to a client may block before the client is disconnected as stalled.
    pub write_timeout_secs: u64,
    /// Seconds a switchboard cookie (from XFR SB or RNG) stays valid.
    pub cookie_lifetime_secs: u64,
    /// Seconds a client connection may be silent before TCP keepalive starts probing it; four
    /// unanswered probes a quarter of that apart end it (a client gone without a word).
    pub keepalive_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            notification_listen: "127.0.0.1:1863".parse().expect("valid default"),
            switchboard_listen: "127.0.0.1:1864".parse().expect("valid default"),
            public_host: "127.0.0.1".into(),
            dispatch_listen: None,
            max_connections: 10_000,
            login_timeout_secs: 60,
            write_timeout_secs: 30,
            cookie_lifetime_secs: 120,
            keepalive_secs: 120,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The database: an SQLite file (created when missing) or a `postgres://` URL (its
    /// password is never shown: see [`DatabaseLocation`]).
    pub database: DatabaseLocation,
    /// PostgreSQL only: the most connections open at once.
    pub pool_size: usize,
    /// PostgreSQL only: how long an operation waits for a connection before the client gets
    /// an error (and each operation as a whole gets three times this).
    pub pool_wait_secs: u64,
    /// Where backends keep each mapped account's own state (a Matrix account's store with its
    /// encryption keys and sync position); created when needed.
    pub backend_data: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            database: "msngate.db".into(),
            pool_size: PoolOptions::default().size,
            pool_wait_secs: PoolOptions::default().wait.as_secs(),
            backend_data: "msngate-backends".into(),
        }
    }
}

impl StorageConfig {
    /// How the PostgreSQL store uses its connections.
    pub fn pool(&self) -> PoolOptions {
        PoolOptions {
            size: self.pool_size,
            wait: std::time::Duration::from_secs(self.pool_wait_secs),
        }
    }

    /// The directory of one account's state in one backend: `backend_data/BACKEND/HANDLE`.
    /// Handles are safe as file names: no `/`, and never `.` or `..`.
    pub fn backend_dir(&self, handle: &crate::protocol::UserHandle, backend: &str) -> PathBuf {
        self.backend_data.join(backend).join(handle.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `msngate=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

/// What the server tells clients about client versions and web pages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    pub recommended_version: String,
    pub minimum_version: String,
    pub download_url: String,
    pub info_url: String,
    /// The page the client's URL command (e-mail, password, profile menus) is sent to.
    pub web_url: String,
    /// Whether MSNP6 and MSNP7 clients get a `CHL` challenge after their first `CHG` (answered
    /// with `QRY`; a wrong answer ends the session). Off by default: it proves only that the
    /// client knows a public key, and a client id not known here would be disconnected.
    pub challenges: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            recommended_version: "1.0.0863".into(),
            minimum_version: "1.0.0863".into(),
            download_url: "http://127.0.0.1/msngate/download".into(),
            info_url: "http://127.0.0.1/msngate/info".into(),
            web_url: "http://127.0.0.1/msngate/".into(),
            challenges: false,
        }
    }
}

/// Where the key that encrypts backend secrets (XMPP passwords, Matrix tokens) comes from.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// The key itself, 64 hex digits; best given as `MSNGATE__SECRETS__KEY`.
    pub key: Option<String>,
    /// Otherwise the key is read from this file, created (owner-only) on first use.
    pub key_file: PathBuf,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            key: None,
            key_file: "msngate.key".into(),
        }
    }
}

impl std::fmt::Debug for SecretsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsConfig")
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// The HTTP listener: health, metrics and the self-service page. Off unless `listen` is set.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where to listen, e.g. `127.0.0.1:8080` behind a reverse proxy; unset: no HTTP at all.
    pub listen: Option<SocketAddr>,
    /// When set, `/metrics` needs `Authorization: Bearer` with this token.
    pub metrics_token: Option<String>,
    /// Whether the self-service page (sign in, link, unlink, change password) is served.
    pub self_service: bool,
    /// Whether the page's session cookie is marked `Secure` (HTTPS only): on behind a TLS proxy.
    pub secure_cookie: bool,
    /// Minutes a page session lasts from signing in.
    pub session_minutes: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            metrics_token: None,
            self_service: true,
            secure_cookie: false,
            session_minutes: 60,
        }
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "[redacted]"),
            )
            .field("self_service", &self.self_service)
            .field("secure_cookie", &self.secure_cookie)
            .field("session_minutes", &self.session_minutes)
            .finish()
    }
}

/// The msncd scripting front end (docs/msncd.md): off unless a socket or port is given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MsncdConfig {
    /// A Unix socket path, created owner-only (0600).
    pub unix_socket: Option<PathBuf>,
    /// A TCP address, which must be a loopback address.
    pub listen: Option<SocketAddr>,
    /// The most simultaneous msncd connections; more are closed at once.
    pub max_connections: usize,
    /// The most events kept per connection between two POLLs; the oldest go first.
    pub max_events: usize,
}

impl Default for MsncdConfig {
    fn default() -> Self {
        MsncdConfig {
            unix_socket: None,
            listen: None,
            max_connections: 16,
            max_events: 1000,
        }
    }
}

/// A configuration that can't be used, with the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

/// A value the `config` crate could not deserialize, as one error naming its key once. That
/// crate words these as "REASON for key `K`", and nests them, so that a bad address read
/// "invalid socket address syntax for key `K`: invalid socket address syntax for key `K`".
fn name_the_key_once(error: config::ConfigError) -> ConfigError {
    let text = error.to_string();
    let mut key = None;
    let mut reasons: Vec<String> = Vec::new();
    for part in text.split(": ") {
        let reason = match part.split_once(" for key `") {
            Some((reason, rest)) => {
                key.get_or_insert_with(|| rest.split('`').next().unwrap_or(rest).to_string());
                reason
            }
            None => part,
        };
        if !reasons.iter().any(|r| r == reason) {
            reasons.push(reason.to_string());
        }
    }
    match key {
        Some(key) => ConfigError::Invalid {
            key,
            reason: reasons.join(": "),
        },
        None => ConfigError::Load(error),
    }
}

impl Config {
    /// Server-wide settings a backend receives with every login, next to the link's own.
    pub fn backend_options(&self, backend: &str) -> Vec<(String, String)> {
        self.backends.options(backend)
    }

    /// Loads the defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("MSNGATE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        // The backends' tables are taken out first: the rest is checked field by field (an
        // unknown key is an error), those against what their backend declares.
        let mut table = config::Source::collect(&builder.build()?)?;
        let tables = backends::take_tables(&mut table);
        let mut config: Config = config::Value::from(table)
            .try_deserialize()
            .map_err(name_the_key_once)?;
        config.backends = BackendSettings::from_tables(tables)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        };
        let host = &self.server.public_host;
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid(
                "server.public_host",
                "must be a host name or address without spaces",
            );
        }
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1");
        }
        for (key, value) in [
            ("server.login_timeout_secs", self.server.login_timeout_secs),
            ("server.write_timeout_secs", self.server.write_timeout_secs),
            ("server.keepalive_secs", self.server.keepalive_secs),
            (
                "server.cookie_lifetime_secs",
                self.server.cookie_lifetime_secs,
            ),
            (
                "bridges.presence_debounce_secs",
                self.bridges.presence_debounce_secs,
            ),
            (
                "limits.login_failures_per_handle",
                self.limits.login_failures_per_handle.into(),
            ),
            (
                "limits.login_failures_per_address",
                self.limits.login_failures_per_address.into(),
            ),
            (
                "limits.login_failure_window_secs",
                self.limits.login_failure_window_secs,
            ),
            (
                "limits.login_cooldown_secs",
                self.limits.login_cooldown_secs,
            ),
            ("http.session_minutes", self.http.session_minutes),
            ("storage.pool_wait_secs", self.storage.pool_wait_secs),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if let Some(key) = self.secrets.key.as_deref().filter(|k| !k.is_empty()) {
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid("secrets.key", "must be 64 hex digits");
            }
        }
        if self
            .http
            .metrics_token
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return invalid("http.metrics_token", "must be one word without spaces");
        }
        if self.secrets.key_file.as_os_str().is_empty() {
            return invalid("secrets.key_file", "must name a file");
        }
        // The value is never printed back: a URL may hold a password.
        if let Some(problem) = self.storage.database.problem() {
            return invalid("storage.database", problem);
        }
        if self.storage.pool_size == 0 {
            return invalid("storage.pool_size", "must be at least 1");
        }
        if self.msncd.listen.is_some_and(|a| !a.ip().is_loopback()) {
            return invalid(
                "msncd.listen",
                "must be a loopback address (127.0.0.1 or ::1): msncd logins are not encrypted",
            );
        }
        if self
            .msncd
            .unix_socket
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return invalid("msncd.unix_socket", "must name a file");
        }
        if self.msncd.max_connections == 0 {
            return invalid("msncd.max_connections", "must be at least 1");
        }
        self.backends.validate()?;
        self.cluster.validate()?;
        if self.msncd.max_events == 0 {
            return invalid("msncd.max_events", "must be at least 1");
        }
        let c = &self.client;
        for (key, value) in [
            ("client.recommended_version", &c.recommended_version),
            ("client.minimum_version", &c.minimum_version),
            ("client.download_url", &c.download_url),
            ("client.info_url", &c.info_url),
            ("client.web_url", &c.web_url),
        ] {
            if value.is_empty()
                || value
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control())
            {
                return invalid(key, "must be one word without spaces");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn documented_file_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/msngate.toml");
        assert_eq!(Config::load(Some(&path)).unwrap(), Config::default());
    }

    #[test]
    fn file_values_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "[server]\nnotification_listen = \"127.0.0.1:5000\"\npublic_host = \"chat.example.org\"\n\
             dispatch_listen = \"0.0.0.0:1863\"\n[storage]\ndatabase = \"/var/lib/msngate/db\"\n",
        );
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.server.notification_listen.port(), 5000);
        assert_eq!(c.server.public_host, "chat.example.org");
        assert_eq!(
            c.server.dispatch_listen,
            Some("0.0.0.0:1863".parse().unwrap())
        );
        assert_eq!(
            c.storage.database.file(),
            Some(Path::new("/var/lib/msngate/db"))
        );
        assert_eq!(
            c.server.switchboard_listen,
            ServerConfig::default().switchboard_listen
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[server]\nnotification_listen = \"not an address\"\n");
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert_eq!(
            err,
            "configuration: key `server.notification_listen`: invalid socket address syntax"
        );
        let path = write(&dir, "[server]\npublic_host = \"a b\"\n");
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("server.public_host"), "{err}");
        let path = write(&dir, "[server]\nnotifcation_listen = \"127.0.0.1:1\"\n");
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("notifcation_listen"), "{err}");
        let path = write(&dir, "[msncd]\nlisten = \"0.0.0.0:1865\"\n");
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("msncd.listen"), "{err}");
        let path = write(&dir, "[server\n");
        assert!(Config::load(Some(&path)).is_err());
        assert!(Config::load(Some(&dir.path().join("missing.toml"))).is_err());
    }

    #[test]
    fn backend_tables_are_checked_by_their_backend() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[matrix]\npresence_fallback = \"nope\"\n");
        let result = Config::load(Some(&path));
        if cfg!(feature = "matrix") {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("matrix.presence_fallback"), "{err}");
            let path = write(&dir, "[matrix]\nfoo = \"x\"\n");
            let err = Config::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains("matrix.foo"), "{err}");
            let path = write(&dir, "[matrix]\npresence_fallback = \"away\"\n");
            let c = Config::load(Some(&path)).unwrap();
            assert_eq!(
                c.backend_options("matrix"),
                vec![("presence_fallback".to_string(), "away".to_string())]
            );
            assert_eq!(
                Config::default()
                    .backends
                    .get("matrix", "presence_fallback"),
                Some("online")
            );
        } else {
            // A build without the backend ignores its table, so one file serves every build.
            assert_eq!(result.unwrap(), Config::default());
        }
        let path = write(&dir, "[nosuchbackend]\nfoo = 1\n");
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("nosuchbackend"), "{err}");
    }
}

/// The login throttle's limits (`crate::hub`'s), from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failed logins for one handle from one address within `window` before it is blocked.
    pub per_handle: u32,
    /// Failed logins for any handles from one address within `window` before it is blocked.
    pub per_address: u32,
    pub window: std::time::Duration,
    /// The first block's length; each further block of the same offender doubles it.
    pub cooldown: std::time::Duration,
}
