//! The store test suite (`msngate::store::suite`) run against SQLite, on disk and in memory.

use std::sync::atomic::{AtomicUsize, Ordering};

use msngate::store::suite::StoreFactory;
use msngate::store::SqliteStore;

/// Stores in files of one temporary directory, removed with the factory.
struct OnDisk {
    dir: tempfile::TempDir,
    count: AtomicUsize,
}

impl OnDisk {
    fn new() -> OnDisk {
        OnDisk {
            dir: tempfile::tempdir().expect("a temporary directory"),
            count: AtomicUsize::new(0),
        }
    }
}

impl StoreFactory for OnDisk {
    type Store = SqliteStore;

    async fn create(&self) -> SqliteStore {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        SqliteStore::open(&self.dir.path().join(format!("store-{n}.db"))).expect("open")
    }

    async fn reopen(&self, store: SqliteStore) -> Option<SqliteStore> {
        let path = store.path().expect("a file").to_owned();
        // Dropping the store waits for its thread to close the database.
        drop(store);
        Some(SqliteStore::open(&path).expect("reopen"))
    }
}

struct InMemory;

impl StoreFactory for InMemory {
    type Store = SqliteStore;

    async fn create(&self) -> SqliteStore {
        SqliteStore::open_in_memory().expect("open")
    }

    async fn reopen(&self, _store: SqliteStore) -> Option<SqliteStore> {
        None
    }
}

mod sqlite_on_disk {
    msngate::store_suite!(super::OnDisk::new());
}

mod sqlite_in_memory {
    msngate::store_suite!(super::InMemory);
}
