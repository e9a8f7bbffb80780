//! The store test suite (`msngate::store::suite`) run against SQLite, on disk and in memory,
//! and against PostgreSQL (a server the test starts; see tests/support/postgres.rs).

use std::sync::atomic::{AtomicUsize, Ordering};

use msngate::store::suite::StoreFactory;
use msngate::store::{PoolOptions, PostgresStore, PostgresUrl, SqliteStore};

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

#[path = "support"]
mod support {
    pub mod postgres;
    pub mod process;
}

/// Stores in databases of the test process's PostgreSQL server, a fresh one for each store.
struct OnPostgres;

impl StoreFactory for OnPostgres {
    type Store = PostgresStore;

    async fn create(&self) -> PostgresStore {
        let url = support::postgres::Postgres::shared()
            .await
            .create_database()
            .await;
        let url = PostgresUrl::new(url).expect("a postgres:// URL");
        PostgresStore::connect(&url, PoolOptions::default())
            .await
            .expect("connect")
    }

    async fn reopen(&self, store: PostgresStore) -> Option<PostgresStore> {
        let url = store.url().clone();
        drop(store);
        Some(
            PostgresStore::connect(&url, PoolOptions::default())
                .await
                .expect("reconnect"),
        )
    }

    fn available(&self) -> bool {
        !support::postgres::skipped()
    }
}

mod postgres {
    msngate::store_suite!(super::OnPostgres);
}

/// Random sequences of list changes, by several accounts, keep the store's invariants after
/// every step: AL and BL never share a contact; someone is on an account's RL exactly when
/// that account is on their FL; a change that succeeds raises the owner's serial (and, for
/// the FL, the contact's, whose RL changed) and one that fails changes no serial.
mod list_invariants {
    use std::collections::{HashMap, HashSet};

    use msngate::protocol::{FriendlyName, ListKind, UserHandle};
    use msngate::store::{PoolOptions, PostgresStore, PostgresUrl, SqliteStore, Store};
    use proptest::prelude::*;

    const ACCOUNTS: usize = 4;

    fn handle(i: usize) -> UserHandle {
        // The last one never gets an account: changes naming it must fail cleanly.
        format!("user{i}@example.com").parse().unwrap()
    }

    #[derive(Debug, Clone)]
    struct Change {
        owner: usize,
        list: ListKind,
        contact: usize,
        add: bool,
    }

    fn change() -> impl Strategy<Value = Change> {
        let lists = vec![
            ListKind::Forward,
            ListKind::Allow,
            ListKind::Block,
            ListKind::Reverse,
        ];
        (
            0..ACCOUNTS,
            proptest::sample::select(lists),
            0..=ACCOUNTS,
            any::<bool>(),
        )
            .prop_map(|(owner, list, contact, add)| Change {
                owner,
                list,
                contact,
                add,
            })
    }

    async fn lists(store: &impl Store) -> (HashMap<(usize, ListKind), HashSet<usize>>, Vec<u32>) {
        let mut lists = HashMap::new();
        let mut serials = Vec::new();
        for owner in 0..ACCOUNTS {
            let snapshot = store.snapshot(&handle(owner)).await.unwrap();
            serials.push(snapshot.account.serial);
            for (kind, entries) in snapshot.lists {
                let on: HashSet<usize> = entries
                    .iter()
                    .map(|e| (0..=ACCOUNTS).find(|i| handle(*i) == e.handle).unwrap())
                    .collect();
                lists.insert((owner, kind), on);
            }
        }
        (lists, serials)
    }

    fn check(lists: &HashMap<(usize, ListKind), HashSet<usize>>) -> Result<(), TestCaseError> {
        let get = |owner, kind| lists.get(&(owner, kind)).cloned().unwrap_or_default();
        for a in 0..ACCOUNTS {
            let both: Vec<_> = get(a, ListKind::Allow)
                .intersection(&get(a, ListKind::Block))
                .copied()
                .collect();
            prop_assert!(both.is_empty(), "AL and BL of {a} share {both:?}");
            for b in 0..ACCOUNTS {
                prop_assert_eq!(
                    get(a, ListKind::Forward).contains(&b),
                    get(b, ListKind::Reverse).contains(&a),
                    "{} on the FL of {} but RL disagrees",
                    b,
                    a
                );
            }
        }
        Ok(())
    }

    /// Plays `changes` into `store`, checking the invariants after each.
    async fn play(store: impl Store, changes: Vec<Change>) -> Result<(), TestCaseError> {
        for i in 0..ACCOUNTS {
            let name = FriendlyName::new(&format!("User {i}")).unwrap();
            store.create_account(&handle(i), &name, "pw").await.unwrap();
        }
        let (_, mut serials) = lists(&store).await;
        for c in changes {
            let (owner, contact) = (handle(c.owner), handle(c.contact));
            let name = FriendlyName::new("Contact").unwrap();
            let result = if c.add {
                store.add_entry(&owner, c.list, &contact, &name).await
            } else {
                store.remove_entry(&owner, c.list, &contact).await
            };
            let (now, after) = lists(&store).await;
            check(&now)?;
            match result {
                Ok(change) => {
                    prop_assert!(
                        after[c.owner] > serials[c.owner],
                        "{c:?}: serial did not rise"
                    );
                    prop_assert_eq!(change.serial, after[c.owner]);
                    if c.list == ListKind::Forward && c.contact < ACCOUNTS && c.contact != c.owner {
                        prop_assert_eq!(change.reverse_serial, Some(after[c.contact]));
                        prop_assert!(after[c.contact] > serials[c.contact]);
                    }
                }
                Err(_) => prop_assert_eq!(&after, &serials, "{:?} failed but changed a serial", c),
            }
            serials = after;
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn list_changes_keep_the_invariants(changes in proptest::collection::vec(change(), 1..40)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(play(SqliteStore::open_in_memory().unwrap(), changes))?;
        }
    }

    // The same on PostgreSQL, a fresh database per case; fewer cases, each costs a database.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn list_changes_keep_the_invariants_on_postgres(changes in proptest::collection::vec(change(), 1..40)) {
            if super::support::postgres::skipped() {
                return Ok(());
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let url = super::support::postgres::Postgres::shared().await.create_database().await;
                let url = PostgresUrl::new(url).expect("a postgres:// URL");
                let store = PostgresStore::connect(&url, PoolOptions::default()).await.expect("connect");
                play(store, changes).await
            })?;
        }
    }
}
