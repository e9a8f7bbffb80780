//! The store test suite, written once and run against every [`Store`] implementation (as
//! matrix-rust-sdk's store integration tests are).
//!
//! An implementation provides a [`StoreFactory`] and instantiates the suite with
//! [`crate::store_suite!`], which generates one `#[tokio::test]` per test; see
//! `tests/store.rs`. The tests check what callers observe: results, serials and errors.

use std::future::Future;

mod accounts;
mod concurrency;
mod groups;
mod lists;
mod mirrors;

use super::{BackendLink, Store};
use crate::protocol::{FriendlyName, ListKind, UserHandle};

pub use accounts::*;
pub use concurrency::*;
pub use groups::*;
pub use lists::*;
pub use mirrors::*;

const FL: ListKind = ListKind::Forward;
const AL: ListKind = ListKind::Allow;
const BL: ListKind = ListKind::Block;
const RL: ListKind = ListKind::Reverse;

/// Makes stores of one implementation for the suite.
pub trait StoreFactory {
    type Store: Store;

    /// A new, empty store.
    fn create(&self) -> impl Future<Output = Self::Store>;

    /// Closes `store` and opens the same data again, as after a restart; `None` when the
    /// implementation keeps nothing past closing (in memory). The durability tests need it.
    fn reopen(&self, store: Self::Store) -> impl Future<Output = Option<Self::Store>>;

    /// Whether the tests are to run; an implementation whose server the environment says to
    /// skip answers `false` (and says so), and its tests pass without running.
    fn available(&self) -> bool {
        true
    }
}

/// Generates a `#[tokio::test]` for each test of the suite, each with a store from
/// `$factory` (an expression evaluated once per test).
#[macro_export]
macro_rules! store_suite {
    ($factory:expr) => {
        $crate::store_suite!(@tests $factory;
            accounts_and_passwords,
            account_settings_and_rename,
            gtc_and_blp,
            set_blp_reports_watchers_as_before,
            forward_list_mirrors_into_reverse_list,
            adding_yourself_to_your_forward_list,
            allow_and_block_are_exclusive,
            list_refusals,
            failed_changes_leave_serials_alone,
            serials_strictly_increase,
            list_limit,
            snapshot_and_lists,
            entry_lists_of_and_is_on_list,
            rename_contact,
            permissions,
            list_changes_report_privacy_of_watchers,
            forward_contacts_and_watchers,
            removing_an_account_cleans_other_lists,
            backend_links,
            refused_links,
            bridged_accounts_are_not_contacts,
            mirrors_follow_the_backend,
            mirror_contact_changes_one_contact,
            mirror_edit_keeps_other_lists,
            mirror_state_is_one_snapshot,
            mirrors_need_an_account,
            find_accounts,
            server_secret_is_stable,
            changes_survive_reopening,
            groups_are_made_renamed_and_removed,
            group_count_is_bounded,
            contacts_join_and_leave_groups,
            mirrored_groups_follow_the_backend,
            phones_are_set_and_seen_by_allowed_watchers,
            groups_and_phones_survive_reopening,
            concurrent_changes_to_one_account_serialize,
            concurrent_list_changes_keep_lists_consistent,
            many_add_one_contact_at_once,
        );
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let factory = $factory;
                if $crate::store::suite::StoreFactory::available(&factory) {
                    $crate::store::suite::$name(&factory).await;
                }
            }
        )*
    };
}

fn h(s: &str) -> UserHandle {
    s.parse().expect("a valid handle")
}

fn n(s: &str) -> FriendlyName {
    FriendlyName::new(s).expect("a valid name")
}

async fn with_accounts<F: StoreFactory>(factory: &F, accounts: &[&str]) -> F::Store {
    let store = factory.create().await;
    for a in accounts {
        store.create_account(&h(a), &n(a), "pw").await.unwrap();
    }
    store
}

fn xmpp_link(account: &str) -> BackendLink {
    BackendLink {
        backend: "xmpp".into(),
        account: account.into(),
        sealed_secret: vec![1, 2, 3],
        options: vec![
            ("server".into(), "127.0.0.1:5222".into()),
            ("plaintext".into(), "true".into()),
        ],
    }
}

async fn serial_of(store: &impl Store, handle: &UserHandle) -> u32 {
    store.account(handle).await.unwrap().serial
}
