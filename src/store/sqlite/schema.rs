//! The SQLite schema: opening a database, creating its tables and bringing older ones forward.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::Database;
use crate::store::StoreError;

pub(super) const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    handle TEXT PRIMARY KEY,
    friendly_name TEXT NOT NULL,
    salt TEXT NOT NULL,
    password_md5 TEXT NOT NULL,
    gtc TEXT NOT NULL DEFAULT 'A' CHECK (gtc IN ('A', 'N')),
    blp TEXT NOT NULL DEFAULT 'AL' CHECK (blp IN ('AL', 'BL')),
    serial INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS list_entries (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
    list TEXT NOT NULL CHECK (list IN ('FL', 'AL', 'BL', 'RL')),
    contact TEXT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (owner, list, contact)
);
CREATE INDEX IF NOT EXISTS list_entries_by_contact ON list_entries (contact, list);
CREATE TABLE IF NOT EXISTS backend_links (
    handle TEXT PRIMARY KEY REFERENCES accounts(handle) ON DELETE CASCADE,
    backend TEXT NOT NULL,
    account TEXT NOT NULL,
    secret BLOB NOT NULL,
    options TEXT NOT NULL DEFAULT '',
    refused_at INTEGER
);
CREATE TABLE IF NOT EXISTS contact_groups (
    owner TEXT NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
    id INTEGER NOT NULL CHECK (id >= 0),
    name TEXT NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE TABLE IF NOT EXISTS group_members (
    owner TEXT NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
    contact TEXT NOT NULL,
    group_id INTEGER NOT NULL,
    PRIMARY KEY (owner, contact, group_id)
);
CREATE TRIGGER IF NOT EXISTS leaving_the_fl_leaves_its_groups
AFTER DELETE ON list_entries WHEN old.list = 'FL'
BEGIN
    DELETE FROM group_members WHERE owner = old.owner AND contact = old.contact;
END;
CREATE TABLE IF NOT EXISTS phones (
    owner TEXT NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
    key TEXT NOT NULL CHECK (key IN ('PHH', 'PHW', 'PHM', 'MOB', 'MBE')),
    value TEXT NOT NULL,
    PRIMARY KEY (owner, key)
);
";

impl Database {
    /// Opens (and if needed creates) the database file.
    pub fn open(path: &Path) -> Result<Database, StoreError> {
        Database::prepare(Connection::open(path)?)
    }

    /// A database in memory, gone when it is dropped: for tests and fuzzing.
    pub fn open_in_memory() -> Result<Database, StoreError> {
        Database::prepare(Connection::open_in_memory()?)
    }

    /// A second connection to a database file the store thread has opened (and brought to
    /// the current schema), for reads only: `query_only` refuses any write, and it never
    /// waits for a lock (a busy database answers at once, and the read goes to the store
    /// thread instead).
    pub fn open_reader(path: &Path) -> Result<Database, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(Database { conn })
    }

    /// Runs `f` in one read transaction, so that its queries see one state of the database
    /// (deferred: it takes no write lock, and in WAL mode waits for no writer).
    pub fn read<R>(
        &mut self,
        f: impl FnOnce(&mut Database) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        // Prepared once per connection, like every statement of a logon.
        self.conn.prepare_cached("BEGIN DEFERRED")?.execute([])?;
        let result = f(self);
        // Nothing to commit either way; ending the transaction lets go of its snapshot.
        let ended = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut commit| commit.execute([]));
        if ended.is_err() && !self.conn.is_autocommit() {
            // Never leave the connection inside the transaction: the next BEGIN would fail.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let value = result?;
        ended?;
        Ok(value)
    }

    fn prepare(mut conn: Connection) -> Result<Database, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Every transaction takes the write lock when it begins, waiting for it like any lock.
        // A deferred one that reads and then writes cannot wait: if another process (`msngate
        // user`, another node of a cluster) wrote meanwhile, its write fails at once with
        // SQLITE_BUSY. With one connection in the process this changes nothing.
        conn.set_transaction_behavior(TransactionBehavior::Immediate);
        // An in-memory database answers "memory" and stays so; nothing to make durable there.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL makes a commit durable before the reply goes out, even across a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema(version));
        }
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Database { conn })
    }
}

/// Brings a database of an older schema forward. Version 3 added `backend_links.refused_at`;
/// version 4 added groups and phones, new tables `SCHEMA` creates (an FL contact without a
/// group row is in group 0, so existing lists need no rows).
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has_refused: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('backend_links') WHERE name = 'refused_at'")?
        .exists([])?;
    if !has_refused {
        conn.execute_batch("ALTER TABLE backend_links ADD COLUMN refused_at INTEGER")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::UserHandle;

    fn h(s: &str) -> UserHandle {
        s.parse().unwrap()
    }

    #[test]
    fn a_version_2_database_migrates_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            let v2 = SCHEMA.replace(",\n    refused_at INTEGER", "");
            assert_ne!(v2, SCHEMA);
            conn.execute_batch(&v2).unwrap();
            conn.execute_batch(
                "INSERT INTO accounts (handle, friendly_name, salt, password_md5, created_at)
                 VALUES ('a@x.com', 'A', 's', 'p', 0);
                 INSERT INTO backend_links (handle, backend, account, secret)
                 VALUES ('a@x.com', 'xmpp', 'a@xmpp.example', x'01');
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let mut db = Database::open(&path).unwrap();
        let a = h("a@x.com");
        assert_eq!(
            db.backend_link(&a).unwrap().unwrap().account,
            "a@xmpp.example"
        );
        db.set_link_refused(&a, Some(9)).unwrap();
        assert_eq!(db.refused_links().unwrap(), vec![(a, 9)]);
    }

    #[test]
    fn a_version_3_database_migrates_without_loss_and_gets_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            let conn = Connection::open(&path).unwrap();
            let v3 = &SCHEMA[..SCHEMA
                .find("CREATE TABLE IF NOT EXISTS contact_groups")
                .unwrap()];
            conn.execute_batch(v3).unwrap();
            conn.execute_batch(
                "INSERT INTO accounts (handle, friendly_name, salt, password_md5, serial, created_at)
                 VALUES ('a@x.com', 'A', 's', 'p', 7, 0), ('b@x.com', 'B', 's', 'p', 3, 0);
                 INSERT INTO list_entries (owner, list, contact, name)
                 VALUES ('a@x.com', 'FL', 'b@x.com', 'B'), ('b@x.com', 'RL', 'a@x.com', 'A');
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        }
        let mut db = Database::open(&path).unwrap();
        let (a, b) = (h("a@x.com"), h("b@x.com"));
        let snapshot = db.snapshot(&a).unwrap();
        assert_eq!(snapshot.account.serial, 7);
        assert_eq!(snapshot.lists[0].1.len(), 1);
        assert_eq!(snapshot.groups.len(), 1);
        assert!(snapshot.memberships.is_empty(), "all in group 0");
        let name = crate::protocol::FriendlyName::new("Friends").unwrap();
        let (serial, id) = db.add_group(&a, &name).unwrap();
        assert_eq!((serial, id), (8, 1));
        assert_eq!(db.add_to_group(&a, &b, 1, false).unwrap(), 9);
        assert_eq!(db.snapshot(&a).unwrap().memberships[&b], vec![0, 1]);
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            Database::open(&path),
            Err(StoreError::NewerSchema(v)) if v == SCHEMA_VERSION + 1
        ));
        let tables: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0);
    }

    /// Two processes on one file (here two connections on two threads), both making changes
    /// that read before they write: every change succeeds, none fails with SQLITE_BUSY.
    #[test]
    fn two_writers_on_one_file_wait_for_each_other() {
        use crate::protocol::{FriendlyName, ListKind};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let name = FriendlyName::new("x").unwrap();
        let users: Vec<UserHandle> = (0..40).map(|i| h(&format!("u{i}@example.com"))).collect();
        let mut db = Database::open(&path).unwrap();
        for u in &users {
            db.create_account(u, &name, "pw").unwrap();
        }
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (path, users, name) = (path.clone(), users.clone(), name.clone());
                std::thread::spawn(move || {
                    let mut db = Database::open(&path).unwrap();
                    for (i, owner) in users.iter().enumerate().filter(|(i, _)| i % 2 == w) {
                        for contact in users.iter().skip(i + 1).take(10) {
                            db.add_entry(owner, ListKind::Forward, contact, &name)
                                .unwrap_or_else(|e| panic!("writer {w}: {e}"));
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("no writer failed");
        }
    }

    #[test]
    fn a_file_database_is_durable_and_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("t.db")).unwrap();
        let mode: String = db
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        let synchronous: i64 = db
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), synchronous), ("wal", 2));
    }
}
