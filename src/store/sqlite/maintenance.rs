//! What an operator does to the database besides serving: a consistent copy while the server
//! runs (SQLite's online backup API), and a read-only look for `msngate check-config`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::schema::SCHEMA_VERSION;
use super::{Database, SqliteStore};
use crate::store::{StoreError, StoreFuture};

/// What a read-only look at a database file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseCheck {
    /// The file does not exist yet; `serve` creates it.
    Missing,
    /// It opens, and its schema is this version (this build's or older, migrated at start).
    Usable { schema: i64, accounts: i64 },
}

impl SqliteStore {
    /// Copies the database to `destination` (which must not exist) with SQLite's online
    /// backup, on the store thread: the copy is one consistent snapshot even while other
    /// connections (a running server) write. The copy is then checked with `integrity_check`.
    pub fn backup_to<'a>(&'a self, destination: &'a Path) -> StoreFuture<'a, ()> {
        let destination = destination.to_owned();
        self.call(move |db| db.backup_to(&destination))
    }

    /// Opens `path` read-only, without creating or migrating anything, and says what it holds.
    pub fn check(path: &Path) -> Result<DatabaseCheck, StoreError> {
        if !path.exists() {
            return Ok(DatabaseCheck::Missing);
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let schema: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if schema > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema(schema));
        }
        let accounts = if schema == 0 {
            0
        } else {
            conn.query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))?
        };
        Ok(DatabaseCheck::Usable { schema, accounts })
    }
}

impl Database {
    fn backup_to(&mut self, destination: &Path) -> Result<(), StoreError> {
        if destination.exists() {
            return Err(StoreError::Corrupt(format!(
                "{} already exists; a backup never overwrites a file",
                destination.display()
            )));
        }
        let mut copy = Connection::open(destination)?;
        {
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut copy)?;
            // Small steps with pauses, so a running server's writes are not held up.
            backup.run_to_completion(128, Duration::from_millis(2), None)?;
        }
        let verdict: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if verdict != "ok" {
            return Err(StoreError::Corrupt(format!(
                "the copy fails its integrity check: {verdict}"
            )));
        }
        Ok(())
    }
}
