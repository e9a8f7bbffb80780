//! Persistence: the SQLite [`Database`] and the [`Store`] that serves it to async code.
//!
//! The database lives on one dedicated thread; async tasks send it closures over a bounded
//! channel and await the answer, so no database work ever runs on a tokio worker thread.

mod database;
pub mod password;

use std::path::Path;

use tokio::sync::{mpsc, oneshot};

pub use database::{
    Account, BackendLink, Credentials, Database, Entry, ListChange, MirrorChange, Permission,
    Snapshot, MAX_LIST_ENTRIES,
};
pub use password::PasswordHash;

/// Why a store operation failed. The domain variants map to MSN error codes in one place,
/// [`crate::notification::error_code`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such account")]
    NoSuchAccount,
    #[error("an account with that handle already exists")]
    AccountExists,
    #[error("already on that list")]
    AlreadyThere,
    #[error("not on that list")]
    NotOnList,
    #[error("already on the opposite list (AL and BL are exclusive)")]
    InOppositeList,
    #[error("the list is full ({MAX_LIST_ENTRIES} entries)")]
    ListFull,
    #[error("the account is not linked to a backend")]
    NotLinked,
    #[error("the setting already has that value")]
    AlreadyInMode,
    #[error("only the server changes the reverse list")]
    ReverseListIsServerOnly,
    #[error("the database was written by a newer msngate (schema {0})")]
    NewerSchema(i64),
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store thread has stopped")]
    Closed,
}

impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

type Job = Box<dyn FnOnce(&mut Database) + Send>;

/// How many database requests may wait at once before callers wait to enqueue.
const QUEUE_DEPTH: usize = 1024;

/// A handle to the store thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
}

impl Store {
    /// Opens the database and starts its thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut db = Database::open(path)?;
        let (jobs, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("msngate-store".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job(&mut db);
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the store thread: {e}")))?;
        Ok(Store { jobs })
    }

    /// Runs `f` on the store thread and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Database) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let _ = tx.send(f(db));
        });
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}
