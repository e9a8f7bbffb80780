//! The suite for the four lists, their serials and privacy.

use super::{h, n, serial_of, with_accounts, StoreFactory, AL, BL, FL, RL};
use crate::protocol::{BlpSetting, GtcSetting, UserHandle};
use crate::store::{Entry, ListChange, Permission, Store, StoreError, MAX_LIST_ENTRIES};

pub async fn forward_list_mirrors_into_reverse_list<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com"]).await;
    let (a, b) = (h("a@x.com"), h("b@x.com"));
    store.rename(&a, &n("Ay")).await.unwrap();
    let change = store.add_entry(&a, FL, &b, &n("Bee")).await.unwrap();
    assert_eq!(
        change,
        ListChange {
            serial: 2,
            reverse_serial: Some(1),
            privacy: None,
        }
    );
    let (serial, fl) = store.list(&a, FL).await.unwrap();
    assert_eq!(serial, 2);
    assert_eq!(
        fl,
        vec![Entry {
            handle: b.clone(),
            name: n("Bee")
        }]
    );
    // The RL entry carries the owner's own name at the time.
    let (serial, rl) = store.list(&b, RL).await.unwrap();
    assert_eq!(serial, 1);
    assert_eq!(
        rl,
        vec![Entry {
            handle: a.clone(),
            name: n("Ay")
        }]
    );
    assert_eq!(
        store.add_entry(&a, FL, &b, &n("Bee")).await,
        Err(StoreError::AlreadyThere)
    );
    let change = store.remove_entry(&a, FL, &b).await.unwrap();
    assert_eq!(
        change,
        ListChange {
            serial: 3,
            reverse_serial: Some(2),
            privacy: None,
        }
    );
    assert!(store.list(&b, RL).await.unwrap().1.is_empty());
    assert!(store.list(&a, FL).await.unwrap().1.is_empty());
    assert_eq!(
        store.remove_entry(&a, FL, &b).await,
        Err(StoreError::NotOnList)
    );
    // AL and BL changes touch nobody else's lists.
    let change = store.add_entry(&a, AL, &b, &n("Bee")).await.unwrap();
    assert_eq!(change.reverse_serial, None);
    assert_eq!(serial_of(&store, &b).await, 2);
}

pub async fn adding_yourself_to_your_forward_list<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let a = h("a@x.com");
    let change = store.add_entry(&a, FL, &a, &n("Me")).await.unwrap();
    assert_eq!(change.serial, 2, "both the FL and the RL moved the serial");
    assert_eq!(change.reverse_serial, Some(2));
    assert_eq!(serial_of(&store, &a).await, 2);
    assert_eq!(store.lists_of(&a, &a).await.unwrap(), vec![FL, RL]);
    let change = store.remove_entry(&a, FL, &a).await.unwrap();
    assert_eq!((change.serial, change.reverse_serial), (4, Some(4)));
    assert!(store.lists_of(&a, &a).await.unwrap().is_empty());
}

pub async fn allow_and_block_are_exclusive<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com"]).await;
    let (a, b) = (h("a@x.com"), h("b@x.com"));
    store.add_entry(&a, AL, &b, &n("B")).await.unwrap();
    assert_eq!(
        store.add_entry(&a, BL, &b, &n("B")).await,
        Err(StoreError::InOppositeList)
    );
    store.remove_entry(&a, AL, &b).await.unwrap();
    store.add_entry(&a, BL, &b, &n("B")).await.unwrap();
    assert_eq!(
        store.add_entry(&a, AL, &b, &n("B")).await,
        Err(StoreError::InOppositeList)
    );
    assert_eq!(store.lists_of(&a, &b).await.unwrap(), vec![BL]);
    // The FL is independent of both.
    store.add_entry(&a, FL, &b, &n("B")).await.unwrap();
    assert_eq!(store.lists_of(&a, &b).await.unwrap(), vec![FL, BL]);
}

pub async fn list_refusals<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com"]).await;
    let (a, b, nobody) = (h("a@x.com"), h("b@x.com"), h("zz@x.com"));
    assert_eq!(
        store.add_entry(&a, RL, &b, &n("B")).await,
        Err(StoreError::ReverseListIsServerOnly)
    );
    store.add_entry(&b, FL, &a, &n("A")).await.unwrap();
    assert_eq!(
        store.remove_entry(&a, RL, &b).await,
        Err(StoreError::ReverseListIsServerOnly)
    );
    assert_eq!(
        store.add_entry(&a, FL, &nobody, &n("Z")).await,
        Err(StoreError::NoSuchAccount)
    );
    assert_eq!(
        store.add_entry(&nobody, FL, &a, &n("A")).await,
        Err(StoreError::NoSuchAccount)
    );
    assert_eq!(
        store.remove_entry(&nobody, FL, &a).await,
        Err(StoreError::NoSuchAccount)
    );
    assert_eq!(
        store.remove_entry(&a, AL, &b).await,
        Err(StoreError::NotOnList)
    );
}

pub async fn failed_changes_leave_serials_alone<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com"]).await;
    let (a, b, nobody) = (h("a@x.com"), h("b@x.com"), h("zz@x.com"));
    store.add_entry(&a, FL, &b, &n("B")).await.unwrap();
    store.add_entry(&a, AL, &b, &n("B")).await.unwrap();
    let before = (serial_of(&store, &a).await, serial_of(&store, &b).await);
    assert_eq!(before, (2, 1));
    let failures = [
        store.add_entry(&a, FL, &b, &n("B")).await.err(),
        store.add_entry(&a, BL, &b, &n("B")).await.err(),
        store.add_entry(&a, RL, &b, &n("B")).await.err(),
        store.add_entry(&a, FL, &nobody, &n("Z")).await.err(),
        store.remove_entry(&a, BL, &b).await.err(),
        store.remove_entry(&b, FL, &a).await.err(),
        store.set_gtc(&a, GtcSetting::Ask).await.err(),
        store
            .set_blp(&a, BlpSetting::AllowAll)
            .await
            .map(|_| ())
            .err(),
        store.rename_contact(&a, &nobody, &n("Z")).await.err(),
        store.unlink(&a).await.map(|_| ()).err(),
    ];
    assert!(failures.iter().all(Option::is_some), "{failures:?}");
    assert_eq!(
        (serial_of(&store, &a).await, serial_of(&store, &b).await),
        before
    );
    assert_eq!(store.lists_of(&a, &b).await.unwrap(), vec![FL, AL]);
    assert_eq!(store.lists_of(&b, &a).await.unwrap(), vec![RL]);
}

pub async fn serials_strictly_increase<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com"]).await;
    let (a, b) = (h("a@x.com"), h("b@x.com"));
    let mut seen = vec![serial_of(&store, &a).await];
    let mut step = |serial: u32| {
        assert!(serial > *seen.last().unwrap(), "{serial} after {seen:?}");
        seen.push(serial);
    };
    step(store.add_entry(&a, FL, &b, &n("B")).await.unwrap().serial);
    step(store.add_entry(&a, AL, &b, &n("B")).await.unwrap().serial);
    step(store.rename_contact(&a, &b, &n("Bee")).await.unwrap());
    step(store.set_gtc(&a, GtcSetting::NoAsk).await.unwrap());
    step(
        store
            .set_blp(&a, BlpSetting::BlockAll)
            .await
            .unwrap()
            .serial,
    );
    step(store.rename(&a, &n("Ay")).await.unwrap());
    // Someone else's FL change moves the owner's serial through its RL.
    step(
        store
            .add_entry(&b, FL, &a, &n("A"))
            .await
            .unwrap()
            .reverse_serial
            .unwrap(),
    );
    step(store.remove_entry(&a, AL, &b).await.unwrap().serial);
    step(
        store
            .remove_entry(&b, FL, &a)
            .await
            .unwrap()
            .reverse_serial
            .unwrap(),
    );
    step(store.remove_entry(&a, FL, &b).await.unwrap().serial);
    assert_eq!(serial_of(&store, &a).await, *seen.last().unwrap());
}

pub async fn list_limit<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com", "c@x.com"]).await;
    let (a, b, c) = (h("a@x.com"), h("b@x.com"), h("c@x.com"));
    // Fill the AL to one short of the limit in one transaction.
    let others: Vec<_> = (1..MAX_LIST_ENTRIES)
        .map(|i| (h(&format!("c{i}@x.com")), n("C"), vec![AL]))
        .collect();
    store.mirror_all(&a, &others).await.unwrap();
    assert_eq!(
        store.list(&a, AL).await.unwrap().1.len(),
        MAX_LIST_ENTRIES - 1
    );
    store.add_entry(&a, AL, &b, &n("B")).await.unwrap();
    let before = serial_of(&store, &a).await;
    assert_eq!(
        store.add_entry(&a, AL, &c, &n("C")).await,
        Err(StoreError::ListFull)
    );
    assert_eq!(serial_of(&store, &a).await, before);
    // The limit is per list.
    store.add_entry(&a, BL, &c, &n("C")).await.unwrap();
    store.remove_entry(&a, AL, &b).await.unwrap();
    store.add_entry(&a, AL, &b, &n("B")).await.unwrap();
}

pub async fn snapshot_and_lists<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com", "c@x.com"]).await;
    let (a, b, c) = (h("a@x.com"), h("b@x.com"), h("c@x.com"));
    store.add_entry(&a, FL, &c, &n("Cee")).await.unwrap();
    store.add_entry(&a, FL, &b, &n("Bee")).await.unwrap();
    store.add_entry(&a, BL, &c, &n("Cee")).await.unwrap();
    store.add_entry(&b, FL, &a, &n("A")).await.unwrap();
    let snapshot = store.snapshot(&a).await.unwrap();
    assert_eq!(snapshot.account, store.account(&a).await.unwrap());
    assert_eq!(snapshot.account.serial, 4);
    let entry = |handle: &UserHandle, name: &str| Entry {
        handle: handle.clone(),
        name: n(name),
    };
    assert_eq!(
        snapshot.lists,
        vec![
            (FL, vec![entry(&c, "Cee"), entry(&b, "Bee")]),
            (AL, vec![]),
            (BL, vec![entry(&c, "Cee")]),
            (RL, vec![entry(&b, "b@x.com")]),
        ]
    );
    for (kind, entries) in &snapshot.lists {
        assert_eq!(store.list(&a, *kind).await.unwrap(), (4, entries.clone()));
    }
    let nobody = h("nobody@x.com");
    assert_eq!(
        store.snapshot(&nobody).await,
        Err(StoreError::NoSuchAccount)
    );
    assert_eq!(
        store.list(&nobody, FL).await,
        Err(StoreError::NoSuchAccount)
    );
}

pub async fn entry_lists_of_and_is_on_list<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com", "c@x.com"]).await;
    let (a, b, c) = (h("a@x.com"), h("b@x.com"), h("c@x.com"));
    store.add_entry(&a, BL, &b, &n("Bee")).await.unwrap();
    store.add_entry(&a, FL, &b, &n("Bee")).await.unwrap();
    store.add_entry(&b, FL, &a, &n("A")).await.unwrap();
    assert_eq!(
        store.entry(&a, FL, &b).await.unwrap(),
        Some(Entry {
            handle: b.clone(),
            name: n("Bee")
        })
    );
    assert_eq!(store.entry(&a, AL, &b).await.unwrap(), None);
    assert_eq!(store.entry(&a, FL, &c).await.unwrap(), None);
    assert_eq!(store.lists_of(&a, &b).await.unwrap(), vec![FL, BL, RL]);
    assert!(store.lists_of(&a, &c).await.unwrap().is_empty());
    assert!(store.is_on_list(&a, BL, &b).await.unwrap());
    assert!(store.is_on_list(&a, RL, &b).await.unwrap());
    assert!(!store.is_on_list(&a, AL, &b).await.unwrap());
    assert!(!store.is_on_list(&b, BL, &a).await.unwrap());
}

pub async fn rename_contact<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com"]).await;
    let (a, b) = (h("a@x.com"), h("b@x.com"));
    store.add_entry(&a, AL, &b, &n("B")).await.unwrap();
    assert_eq!(
        store.rename_contact(&a, &b, &n("Bee")).await,
        Err(StoreError::NotOnList),
        "only FL entries have names of the owner's choosing"
    );
    store.add_entry(&a, FL, &b, &n("B")).await.unwrap();
    assert_eq!(store.rename_contact(&a, &b, &n("Bee")).await, Ok(3));
    assert_eq!(
        store.entry(&a, FL, &b).await.unwrap().unwrap().name,
        n("Bee")
    );
    assert_eq!(store.entry(&a, AL, &b).await.unwrap().unwrap().name, n("B"));
    assert_eq!(serial_of(&store, &b).await, 1, "b's lists did not change");
}

pub async fn permissions<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com", "c@x.com"]).await;
    let (a, b, c) = (h("a@x.com"), h("b@x.com"), h("c@x.com"));
    let permission = store.permission(&a, &b).await.unwrap();
    assert_eq!(
        permission,
        Permission {
            blp: BlpSetting::AllowAll,
            in_allow_list: false,
            in_block_list: false
        }
    );
    assert!(permission.allows());
    store.add_entry(&a, BL, &b, &n("B")).await.unwrap();
    assert!(store.permission(&a, &b).await.unwrap().in_block_list);
    assert!(!store.permission(&a, &b).await.unwrap().allows());
    store.set_blp(&a, BlpSetting::BlockAll).await.unwrap();
    assert!(!store.permission(&a, &c).await.unwrap().allows());
    store.add_entry(&a, AL, &c, &n("C")).await.unwrap();
    assert!(store.permission(&a, &c).await.unwrap().allows());
    // Permission is one-way.
    assert!(!store.permission(&c, &a).await.unwrap().in_allow_list);
    assert_eq!(
        store.permission(&h("nobody@x.com"), &a).await,
        Err(StoreError::NoSuchAccount)
    );
}

pub async fn list_changes_report_privacy_of_watchers<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com", "c@x.com"]).await;
    let (a, b, c) = (h("a@x.com"), h("b@x.com"), h("c@x.com"));
    store.add_entry(&b, FL, &a, &n("A")).await.unwrap();
    let open = Permission {
        blp: BlpSetting::AllowAll,
        in_allow_list: false,
        in_block_list: false,
    };
    let blocked = Permission {
        in_block_list: true,
        ..open
    };
    // b watches a (a is on b's FL), so a's AL/BL changes about b matter to b.
    let change = store.add_entry(&a, BL, &b, &n("B")).await.unwrap();
    assert_eq!(change.privacy, Some((open, blocked)));
    let change = store.remove_entry(&a, BL, &b).await.unwrap();
    assert_eq!(change.privacy, Some((blocked, open)));
    // c does not watch a; FL changes never concern privacy.
    let change = store.add_entry(&a, BL, &c, &n("C")).await.unwrap();
    assert_eq!(change.privacy, None);
    let change = store.add_entry(&a, FL, &b, &n("B")).await.unwrap();
    assert_eq!(change.privacy, None);
}

pub async fn forward_contacts_and_watchers<F: StoreFactory>(factory: &F) {
    let handles = ["a@x.com", "b@x.com", "c@x.com", "d@x.com", "e@x.com"];
    let store = with_accounts(factory, &handles).await;
    let [a, b, c, d, e] = handles.map(h);
    // d is on a's AL before d watches a; e is on it without watching.
    store.add_entry(&a, AL, &d, &n("D")).await.unwrap();
    store.add_entry(&b, FL, &a, &n("A")).await.unwrap();
    store.add_entry(&c, FL, &a, &n("A")).await.unwrap();
    store.add_entry(&d, FL, &a, &n("A")).await.unwrap();
    store.add_entry(&a, BL, &b, &n("B")).await.unwrap();
    store.set_blp(&a, BlpSetting::BlockAll).await.unwrap();
    store.add_entry(&a, AL, &c, &n("C")).await.unwrap();
    store.add_entry(&a, AL, &e, &n("E")).await.unwrap();
    let allowed = Permission {
        blp: BlpSetting::BlockAll,
        in_allow_list: true,
        in_block_list: false,
    };
    let blocked = Permission {
        in_allow_list: false,
        in_block_list: true,
        ..allowed
    };
    // In the order they came to watch a, each as a's settings treat them.
    assert_eq!(
        store.watchers(&a).await.unwrap(),
        vec![
            (b.clone(), blocked),
            (c.clone(), allowed),
            (d.clone(), allowed)
        ]
    );
    assert_eq!(
        store
            .watchers(&a)
            .await
            .unwrap()
            .into_iter()
            .map(|(w, p)| (w, p.allows()))
            .collect::<Vec<_>>(),
        vec![(b.clone(), false), (c.clone(), true), (d.clone(), true)]
    );
    assert_eq!(
        store.forward_contacts(&c).await.unwrap(),
        vec![(a.clone(), true)]
    );
    assert_eq!(
        store.forward_contacts(&b).await.unwrap(),
        vec![(a.clone(), false)]
    );
    assert!(store.forward_contacts(&a).await.unwrap().is_empty());
    assert!(store.watchers(&b).await.unwrap().is_empty());
    assert_eq!(
        store.watchers(&h("nobody@x.com")).await,
        Err(StoreError::NoSuchAccount)
    );
}
