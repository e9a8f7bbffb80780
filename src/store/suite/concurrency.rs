//! The suite for changes made at the same time (several connections of one server, or
//! several servers on one database): they apply as if one after the other.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use super::{h, n, serial_of, with_accounts, StoreFactory, AL, BL, FL, RL};
use crate::protocol::UserHandle;
use crate::store::{ListChange, Store, StoreError};

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Runs the futures concurrently (interleaved on this task) and returns their outputs in order.
async fn join_all<'a, T>(futures: Vec<Boxed<'a, T>>) -> Vec<T> {
    let mut pending: Vec<Option<Boxed<'a, T>>> = futures.into_iter().map(Some).collect();
    let mut done: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(future) = slot {
                if let Poll::Ready(value) = future.as_mut().poll(cx) {
                    *out = Some(value);
                    *slot = None;
                }
            }
        }
        if pending.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    done.into_iter().map(|v| v.expect("finished")).collect()
}

/// A store with the account `one` and `many` others, `{prefix}0@x.com` and up; gives their
/// handles.
async fn one_and_many<F: StoreFactory>(
    factory: &F,
    one: &str,
    prefix: &str,
    many: usize,
) -> (F::Store, UserHandle, Vec<UserHandle>) {
    let handles: Vec<String> = (0..many).map(|i| format!("{prefix}{i}@x.com")).collect();
    let mut accounts: Vec<&str> = handles.iter().map(String::as_str).collect();
    accounts.push(one);
    let store = with_accounts(factory, &accounts).await;
    (store, h(one), handles.iter().map(|c| h(c)).collect())
}

pub async fn concurrent_changes_to_one_account_serialize<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let a = h("a@x.com");
    const CHANGES: u32 = 16;
    let names: Vec<_> = (0..CHANGES).map(|i| n(&format!("Name {i}"))).collect();
    let renames = names
        .iter()
        .map(|name| Box::pin(store.rename(&a, name)) as Boxed<'_, Result<u32, StoreError>>)
        .collect();
    let mut serials: Vec<u32> = join_all(renames)
        .await
        .into_iter()
        .map(|r| r.expect("every rename succeeds"))
        .collect();
    serials.sort_unstable();
    assert_eq!(
        serials,
        (1..=CHANGES).collect::<Vec<_>>(),
        "each change got its own serial, none lost"
    );
    assert_eq!(serial_of(&store, &a).await, CHANGES);
}

/// Many users add one popular contact at the same moment (more of them than the pool has
/// connections): every addition succeeds, and the contact's serial moves once for each.
pub async fn many_add_one_contact_at_once<F: StoreFactory>(factory: &F) {
    const FANS: usize = 1000;
    let (store, star, fans) = one_and_many(factory, "star@x.com", "fan", FANS).await;
    let name = n("Star");
    let additions = fans
        .iter()
        .map(|f| {
            Box::pin(store.add_entry(f, FL, &star, &name))
                as Boxed<'_, Result<ListChange, StoreError>>
        })
        .collect();
    let mut serials: Vec<u32> = join_all(additions)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let change = r.unwrap_or_else(|e| panic!("fan{i}'s addition failed: {e}"));
            change.reverse_serial.expect("the star's RL changed")
        })
        .collect();
    serials.sort_unstable();
    assert_eq!(serials, (1..=FANS as u32).collect::<Vec<_>>());
    let (serial, reverse) = store.list(&star, RL).await.unwrap();
    assert_eq!((serial, reverse.len()), (FANS as u32, FANS));
}

pub async fn concurrent_list_changes_keep_lists_consistent<F: StoreFactory>(factory: &F) {
    const CONTACTS: usize = 8;
    let (store, a, contacts) = one_and_many(factory, "a@x.com", "c", CONTACTS).await;
    let name = n("Someone");
    // A adds everyone while everyone adds A: both sides change A's lists and serial.
    let mut changes: Vec<Boxed<'_, Result<ListChange, StoreError>>> = Vec::new();
    for c in &contacts {
        changes.push(Box::pin(store.add_entry(&a, FL, c, &name)));
        changes.push(Box::pin(store.add_entry(c, FL, &a, &name)));
    }
    let results = join_all(changes).await;
    let mut serials_of_a = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        let change = result.expect("every addition succeeds");
        let a_serial = if i % 2 == 0 {
            change.serial
        } else {
            change.reverse_serial.expect("A's RL changed")
        };
        serials_of_a.push(a_serial);
    }
    serials_of_a.sort_unstable();
    let expected: Vec<u32> = (1..=2 * CONTACTS as u32).collect();
    assert_eq!(serials_of_a, expected, "A's serial moved once per change");
    let (_, forward) = store.list(&a, FL).await.unwrap();
    let (_, reverse) = store.list(&a, RL).await.unwrap();
    assert_eq!((forward.len(), reverse.len()), (CONTACTS, CONTACTS));
    for c in &contacts {
        assert!(store.is_on_list(c, RL, &a).await.unwrap());
        assert!(store.is_on_list(c, FL, &a).await.unwrap());
    }

    // AL and BL stay exclusive when both are asked for at once.
    for c in &contacts {
        let both: Vec<Boxed<'_, Result<ListChange, StoreError>>> = vec![
            Box::pin(store.add_entry(&a, AL, c, &name)),
            Box::pin(store.add_entry(&a, BL, c, &name)),
        ];
        let results = join_all(both).await;
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::InOppositeList)))
            .count();
        assert_eq!(
            (results.iter().filter(|r| r.is_ok()).count(), refused),
            (1, 1),
            "{results:?}"
        );
        let lists = store.lists_of(&a, c).await.unwrap();
        assert!(
            !(lists.contains(&AL) && lists.contains(&BL)),
            "{c} is on both: {lists:?}"
        );
    }
}
