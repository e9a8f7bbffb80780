//! Connections that read the database file on the thread that asks, instead of handing the
//! read to the store thread.
//!
//! A read on the store thread is two thread hand-offs (the job to the thread, the answer back
//! to a tokio worker), each a wake-up and a context switch, which cost more CPU than the read
//! itself: a logon's four store calls were about a third of its server CPU. The reads that
//! go here are index lookups of one account's rows, a few pages that live in the page cache,
//! done in WAL mode, where a reader waits for no writer. What could make one wait goes to the
//! store thread instead: no free connection (more reads at once than [`MAX_READERS`]), one
//! that cannot be opened, or a database that answers busy (see [`Database::open_reader`]).

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::ErrorCode;

use super::Database;
use crate::store::StoreError;

/// At most this many reading connections: one per thread reading at that moment, which is
/// at most the runtime's workers (the rest go to the store thread).
pub(super) const MAX_READERS: usize = 8;

/// The reading connections of one database file, opened when first needed and kept.
pub(super) struct Readers {
    path: PathBuf,
    pool: Mutex<Pool>,
}

struct Pool {
    /// The connections not in use.
    idle: Vec<Database>,
    /// How many there are in all, in use or not.
    open: usize,
}

impl Readers {
    pub(super) fn new(path: PathBuf) -> Readers {
        Readers {
            path,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
        }
    }

    /// Runs `f` in one read transaction on a reading connection; `None` when it should go to
    /// the store thread instead (no connection free, or the database busy).
    pub(super) fn read<R>(
        &self,
        f: &impl Fn(&mut Database) -> Result<R, StoreError>,
    ) -> Option<Result<R, StoreError>> {
        let mut db = self.take()?;
        let result = db.read(f);
        let busy = matches!(
            &result,
            Err(StoreError::Sqlite(e))
                if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
        );
        self.give_back(db);
        if busy {
            return None;
        }
        Some(result)
    }

    fn take(&self) -> Option<Database> {
        {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(db) = pool.idle.pop() {
                return Some(db);
            }
            if pool.open >= MAX_READERS {
                return None;
            }
            pool.open += 1;
        }
        match Database::open_reader(&self.path) {
            Ok(db) => Some(db),
            Err(e) => {
                tracing::warn!("cannot open a reading connection to the database: {e}");
                self.pool.lock().unwrap_or_else(|e| e.into_inner()).open -= 1;
                None
            }
        }
    }

    /// Keeps `db` for the next read, unless a failure left it inside a transaction.
    fn give_back(&self, db: Database) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if db.conn.is_autocommit() {
            pool.idle.push(db);
        } else {
            pool.open -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use rusqlite::Connection;

    use crate::protocol::{FriendlyName, UserHandle};
    use crate::store::{SqliteStore, Store};

    /// While a change waits for the database (another process, such as `msngate user`,
    /// holding the write lock), the reads of logons and lists are answered at once from what
    /// is committed, instead of queueing behind the change on the store thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_behind_a_change_that_waits_for_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).unwrap();
        let handle: UserHandle = "a@example.com".parse().unwrap();
        let name = |n: &str| n.parse::<FriendlyName>().unwrap();
        store
            .create_account(&handle, &name("a"), "secret")
            .await
            .unwrap();

        let committed = Arc::new(AtomicBool::new(false));
        let (held, hold) = std::sync::mpsc::channel();
        let other = std::thread::spawn({
            let (path, committed) = (path.clone(), committed.clone());
            move || {
                let conn = Connection::open(&path).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE; UPDATE accounts SET friendly_name = 'b';")
                    .unwrap();
                held.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(1500));
                conn.execute_batch("COMMIT").unwrap();
                committed.store(true, Ordering::SeqCst);
            }
        });
        hold.recv().unwrap();
        let renamed_to = name("c");
        let (renamed, read) = tokio::join!(store.rename(&handle, &renamed_to), async {
            // The rename is on the store thread by now, waiting for the lock.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let credentials = store.credentials(&handle).await.unwrap().unwrap();
            (credentials.name, committed.load(Ordering::SeqCst))
        });
        other.join().unwrap();
        assert_eq!(
            read,
            (name("a"), false),
            "read before the other's commit, not after"
        );
        renamed.unwrap();
        let now = store.credentials(&handle).await.unwrap().unwrap();
        assert_eq!(now.name, name("c"));
    }
}
