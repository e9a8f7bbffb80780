//! Where the store is: an SQLite file or a PostgreSQL URL (`[storage] database`), and opening
//! either as an `Arc<dyn Store>`.
//!
//! A PostgreSQL URL may hold a password, so it is never shown whole: its `Display` and `Debug`
//! put `***` in the password's place, and errors never include it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use serde::Deserialize;

use super::{PostgresStore, SqliteStore, Store, StoreError};

/// The database of `[storage] database`: a file path (SQLite) or a `postgres://` URL.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum DatabaseLocation {
    File(PathBuf),
    Postgres(PostgresUrl),
}

impl DatabaseLocation {
    /// The SQLite file, if that is what it is.
    pub fn file(&self) -> Option<&Path> {
        match self {
            DatabaseLocation::File(path) => Some(path),
            DatabaseLocation::Postgres(_) => None,
        }
    }

    /// Why the value cannot be used, if it cannot, without repeating it (it may hold a
    /// password).
    pub fn problem(&self) -> Option<&'static str> {
        match self {
            DatabaseLocation::File(path) if path.as_os_str().is_empty() => {
                Some("must name a file or be a postgres:// URL")
            }
            DatabaseLocation::File(path) if path.to_string_lossy().contains("://") => Some(
                "must name an SQLite file or be a postgres:// URL; no other database is supported",
            ),
            DatabaseLocation::File(_) => None,
            DatabaseLocation::Postgres(url) => url.config().err().map(|_| {
                "is not a valid PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)"
            }),
        }
    }
}

impl From<String> for DatabaseLocation {
    fn from(value: String) -> DatabaseLocation {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            DatabaseLocation::Postgres(PostgresUrl(value))
        } else {
            DatabaseLocation::File(value.into())
        }
    }
}

impl From<&str> for DatabaseLocation {
    fn from(value: &str) -> DatabaseLocation {
        value.to_string().into()
    }
}

impl From<PathBuf> for DatabaseLocation {
    fn from(path: PathBuf) -> DatabaseLocation {
        DatabaseLocation::File(path)
    }
}

impl From<&Path> for DatabaseLocation {
    fn from(path: &Path) -> DatabaseLocation {
        DatabaseLocation::File(path.to_owned())
    }
}

/// The path, or the URL with its password masked.
impl fmt::Display for DatabaseLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseLocation::File(path) => write!(f, "{}", path.display()),
            DatabaseLocation::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl fmt::Debug for DatabaseLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseLocation::File(path) => f.debug_tuple("File").field(path).finish(),
            DatabaseLocation::Postgres(url) => f.debug_tuple("Postgres").field(url).finish(),
        }
    }
}

/// A `postgres://USER:PASSWORD@HOST:PORT/DATABASE?OPTIONS` URL, shown only masked.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// A `postgres://` or `postgresql://` URL; `None` for anything else. (Whether the rest is
    /// valid is [`PostgresUrl::config`]'s to say.)
    pub fn new(url: impl Into<String>) -> Option<PostgresUrl> {
        match DatabaseLocation::from(url.into()) {
            DatabaseLocation::Postgres(url) => Some(url),
            DatabaseLocation::File(_) => None,
        }
    }

    /// The connection settings the URL describes. The error says only that it is invalid:
    /// tokio-postgres's reason may quote the value.
    pub fn config(&self) -> Result<tokio_postgres::Config, StoreError> {
        self.0
            .parse()
            .map_err(|_| StoreError::Unavailable("the PostgreSQL URL is not valid".into()))
    }

    /// The URL with the password (in the user part or as a `password=` option) replaced by
    /// `***`.
    pub fn masked(&self) -> String {
        mask_url(&self.0)
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.masked())
    }
}

fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    // The authority ends at the path or the query; the user part at its last `@`.
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, hosts)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{hosts}"),
            None => format!("{user}@{hosts}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// How the PostgreSQL store uses its connections (`[storage]`); SQLite has one of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// The most connections open at once.
    pub size: usize,
    /// How long an operation waits for a connection (and a connection to be made) before it
    /// fails with `Unavailable`; each operation as a whole gets a few times this.
    pub wait: Duration,
}

impl Default for PoolOptions {
    fn default() -> PoolOptions {
        PoolOptions {
            size: 16,
            wait: Duration::from_secs(5),
        }
    }
}

/// Opens the store at `location`, creating or migrating its schema; each call's duration goes
/// to `latency` when given.
pub async fn open(
    location: &DatabaseLocation,
    pool: PoolOptions,
    latency: Option<Histogram>,
) -> Result<Arc<dyn Store>, StoreError> {
    match location {
        DatabaseLocation::File(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                .await
                .map_err(|_| StoreError::Closed)??;
            Ok(match latency {
                Some(histogram) => Arc::new(store.with_latency(histogram)),
                None => Arc::new(store),
            })
        }
        DatabaseLocation::Postgres(url) => {
            let store = PostgresStore::connect(url, pool).await?;
            Ok(match latency {
                Some(histogram) => Arc::new(store.with_latency(histogram)),
                None => Arc::new(store),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_wherever_they_are() {
        let cases = [
            (
                "postgres://msngate:hunter2@db.example/msngate",
                "postgres://msngate:***@db.example/msngate",
            ),
            (
                "postgresql://u:p%40ss@h1:5432,h2:5433/db?sslmode=disable",
                "postgresql://u:***@h1:5432,h2:5433/db?sslmode=disable",
            ),
            (
                "postgres://u@h/db?password=hunter2&application_name=x",
                "postgres://u@h/db?password=***&application_name=x",
            ),
            ("postgres://h/db", "postgres://h/db"),
            ("postgres://u:a@b@h/db", "postgres://u:***@h/db"),
        ];
        for (url, masked) in cases {
            let location = DatabaseLocation::from(url);
            assert_eq!(location.to_string(), masked);
            assert!(!format!("{location:?}").contains("hunter2"));
            assert!(!format!("{location:?}").contains("p%40ss"));
        }
    }

    #[test]
    fn paths_and_urls_are_told_apart() {
        assert_eq!(
            DatabaseLocation::from("msngate.db").file(),
            Some(Path::new("msngate.db"))
        );
        assert!(DatabaseLocation::from("msngate.db").problem().is_none());
        let url = DatabaseLocation::from("postgres://u:pw@127.0.0.1:5432/db");
        assert!(url.file().is_none());
        assert!(url.problem().is_none());
        assert!(DatabaseLocation::from("mysql://u:pw@h/db")
            .problem()
            .is_some());
        assert!(DatabaseLocation::from("").problem().is_some());
        let bad = DatabaseLocation::from("postgres://u:pw@h:notaport/db");
        assert!(bad.problem().is_some());
        // A Unix socket's directory, percent-encoded, as docs/OPERATIONS.md suggests.
        let socket = PostgresUrl::new("postgres://msngate@%2Frun%2Fpostgresql/msngate").unwrap();
        let config = socket.config().unwrap();
        assert!(matches!(
            config.get_hosts(),
            [tokio_postgres::config::Host::Unix(dir)] if dir == Path::new("/run/postgresql")
        ));
        assert!(PostgresUrl::new("msngate.db").is_none());
    }
}
