//! The suite for the mirrored lists of bridged accounts.

use super::{h, n, serial_of, with_accounts, xmpp_link, StoreFactory, AL, BL, FL, RL};
use crate::store::{Entry, MirrorChange, Store, StoreError};

pub async fn bridged_accounts_are_not_contacts<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com"]).await;
    let (a, b) = (h("a@x.com"), h("b@x.com"));
    store.link(&b, &xmpp_link("b@xmpp.example")).await.unwrap();
    assert_eq!(
        store.add_entry(&a, FL, &b, &n("B")).await,
        Err(StoreError::NoSuchAccount)
    );
    assert!(store.lists_of(&a, &b).await.unwrap().is_empty());
    // A bridged account may still be on its own lists.
    store.add_entry(&b, FL, &b, &n("Me")).await.unwrap();
    store.unlink(&b).await.unwrap();
    store.add_entry(&a, FL, &b, &n("B")).await.unwrap();
}

pub async fn mirrors_follow_the_backend<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let a = h("a@x.com");
    let contacts = vec![
        (h("bob@xmpp.org"), n("Bob"), vec![FL, AL, RL]),
        (h("eve@xmpp.org"), n("Eve"), vec![RL]),
    ];
    let changes = store.mirror_all(&a, &contacts).await.unwrap();
    let change = |added, list, handle: &str, name: &str, serial| MirrorChange {
        added,
        list,
        handle: h(handle),
        name: n(name),
        serial,
    };
    assert_eq!(
        changes,
        vec![
            change(true, FL, "bob@xmpp.org", "Bob", 1),
            change(true, AL, "bob@xmpp.org", "Bob", 2),
            change(true, RL, "bob@xmpp.org", "Bob", 3),
            change(true, RL, "eve@xmpp.org", "Eve", 4),
        ]
    );
    assert!(
        store.mirror_all(&a, &contacts).await.unwrap().is_empty(),
        "nothing changed"
    );
    assert_eq!(serial_of(&store, &a).await, 4);
    // Bob drops to the FL only; Eve disappears; a rename alone moves the serial.
    let contacts = vec![(h("bob@xmpp.org"), n("Bobby"), vec![FL])];
    let changes = store.mirror_all(&a, &contacts).await.unwrap();
    let summary: Vec<_> = changes
        .iter()
        .map(|c| (c.added, c.list, c.handle.as_str().to_owned()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (false, RL, "eve@xmpp.org".to_owned()),
            (false, AL, "bob@xmpp.org".to_owned()),
            (false, RL, "bob@xmpp.org".to_owned())
        ]
    );
    let (serial, fl) = store.list(&a, FL).await.unwrap();
    assert_eq!(
        fl,
        vec![Entry {
            handle: h("bob@xmpp.org"),
            name: n("Bobby")
        }]
    );
    assert_eq!(serial, 8);
    let renamed = vec![(h("bob@xmpp.org"), n("Robert"), vec![FL])];
    assert!(store.mirror_all(&a, &renamed).await.unwrap().is_empty());
    assert_eq!(serial_of(&store, &a).await, 9, "a rename moves the serial");
    assert!(store.mirror_all(&a, &[]).await.unwrap().len() == 1);
    assert!(store
        .snapshot(&a)
        .await
        .unwrap()
        .lists
        .iter()
        .all(|(_, l)| l.is_empty()));
}

pub async fn mirror_contact_changes_one_contact<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let a = h("a@x.com");
    let (bob, carol) = (h("bob@xmpp.org"), h("carol@xmpp.org"));
    store
        .mirror_all(&a, &[(bob.clone(), n("Bob"), vec![FL])])
        .await
        .unwrap();
    let changes = store
        .mirror_contact(&a, &carol, &n("Carol"), &[RL, FL])
        .await
        .unwrap();
    let lists: Vec<_> = changes
        .iter()
        .map(|c| (c.added, c.list, c.serial))
        .collect();
    assert_eq!(lists, vec![(true, FL, 2), (true, RL, 3)]);
    assert_eq!(
        store.lists_of(&a, &bob).await.unwrap(),
        vec![FL],
        "others stay"
    );
    let changes = store
        .mirror_contact(&a, &carol, &n("Carol"), &[])
        .await
        .unwrap();
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|c| !c.added));
    assert!(store.lists_of(&a, &carol).await.unwrap().is_empty());
    assert!(store
        .mirror_contact(&a, &carol, &n("Carol"), &[])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(serial_of(&store, &a).await, 5);
}

pub async fn mirror_edit_keeps_other_lists<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let a = h("a@x.com");
    let bob = h("bob@xmpp.org");
    store
        .mirror_contact(&a, &bob, &n("Bob"), &[AL, RL])
        .await
        .unwrap();
    let edit = store
        .mirror_edit(&a, &bob, &n("Bob"), &[FL], &[])
        .await
        .unwrap();
    assert_eq!(edit.changes.len(), 1);
    assert_eq!((edit.changes[0].added, edit.changes[0].list), (true, FL));
    assert_eq!(edit.serial, 3);
    assert_eq!(store.lists_of(&a, &bob).await.unwrap(), vec![FL, AL, RL]);
    let edit = store
        .mirror_edit(&a, &bob, &n("Bob"), &[BL], &[AL])
        .await
        .unwrap();
    let lists: Vec<_> = edit.changes.iter().map(|c| (c.added, c.list)).collect();
    assert_eq!(lists, vec![(false, AL), (true, BL)]);
    assert_eq!(edit.serial, 5);
    assert_eq!(store.lists_of(&a, &bob).await.unwrap(), vec![FL, BL, RL]);
    // Nothing to do: no change, and the serial as it stands.
    let edit = store
        .mirror_edit(&a, &bob, &n("Bob"), &[FL], &[AL])
        .await
        .unwrap();
    assert_eq!((edit.changes, edit.serial), (vec![], 5));
    let edit = store
        .mirror_edit(&a, &bob, &n("Bob"), &[], &[RL, FL, BL])
        .await
        .unwrap();
    assert_eq!(edit.changes.len(), 3);
    assert!(store.lists_of(&a, &bob).await.unwrap().is_empty());
}

pub async fn mirrors_need_an_account<F: StoreFactory>(factory: &F) {
    let store = factory.create().await;
    let (nobody, bob) = (h("nobody@x.com"), h("bob@xmpp.org"));
    assert_eq!(
        store
            .mirror_all(&nobody, &[(bob.clone(), n("Bob"), vec![FL])])
            .await,
        Err(StoreError::NoSuchAccount)
    );
    assert_eq!(
        store.mirror_contact(&nobody, &bob, &n("Bob"), &[FL]).await,
        Err(StoreError::NoSuchAccount)
    );
    assert_eq!(
        store
            .mirror_edit(&nobody, &bob, &n("Bob"), &[FL], &[])
            .await,
        Err(StoreError::NoSuchAccount)
    );
}

pub async fn mirror_state_is_one_snapshot<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let (a, bob) = (h("a@x.com"), h("bob@xmpp.org"));
    let empty = store.mirror_state(&a, &bob).await.unwrap();
    assert_eq!((empty.lists, empty.serial, empty.name), (vec![], 0, None));
    store
        .mirror_all(&a, &[(bob.clone(), n("Bob"), vec![FL, RL])])
        .await
        .unwrap();
    let state = store.mirror_state(&a, &bob).await.unwrap();
    assert_eq!(state.serial, serial_of(&store, &a).await);
    assert_eq!(state.serial, 2);
    assert_eq!(state.name, Some(n("Bob")));
    let mut lists = state.lists;
    lists.sort_by_key(|l| l.to_string());
    assert_eq!(lists, vec![FL, RL]);
    assert_eq!(
        store.mirror_state(&h("nobody@x.com"), &bob).await,
        Err(StoreError::NoSuchAccount)
    );
}
