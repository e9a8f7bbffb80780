//! The suite for contact groups (MSNP7) and phone numbers (MSNP5).

use super::{h, n, serial_of, with_accounts, StoreFactory, AL, BL, FL, RL};
use crate::protocol::{BlpSetting, PhoneKey, MAX_GROUPS};
use crate::store::{Group, GroupChange, PhoneChange, Store, StoreError};

pub async fn groups_are_made_renamed_and_removed<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let a = h("a@x.com");
    // Group 0 exists from the start, named "~".
    assert_eq!(
        store.groups(&a).await.unwrap(),
        vec![Group {
            id: 0,
            name: n("~")
        }]
    );
    assert_eq!(store.add_group(&a, &n("Friends")).await.unwrap(), (1, 1));
    assert_eq!(store.add_group(&a, &n("Work")).await.unwrap(), (2, 2));
    assert_eq!(
        store.add_group(&a, &n("FRIENDS")).await,
        Err(StoreError::GroupExists)
    );
    assert_eq!(store.rename_group(&a, 2, &n("Job")).await.unwrap(), 3);
    assert_eq!(
        store.rename_group(&a, 2, &n("friends")).await,
        Err(StoreError::GroupExists)
    );
    assert_eq!(
        store.rename_group(&a, 7, &n("X")).await,
        Err(StoreError::NoSuchGroup)
    );
    assert_eq!(store.rename_group(&a, 0, &n("Others")).await.unwrap(), 4);
    assert_eq!(store.remove_group(&a, 0).await, Err(StoreError::GroupZero));
    assert_eq!(
        store.remove_group(&a, 9).await,
        Err(StoreError::NoSuchGroup)
    );
    assert_eq!(store.remove_group(&a, 1).await.unwrap(), 5);
    // The lowest free id is used again.
    assert_eq!(store.add_group(&a, &n("New")).await.unwrap(), (6, 1));
    let names: Vec<(u32, String)> = store
        .groups(&a)
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.id, g.name.as_str().to_string()))
        .collect();
    assert_eq!(
        names,
        vec![(0, "Others".into()), (1, "New".into()), (2, "Job".into())]
    );
    // Refusals leave the serial alone.
    assert_eq!(serial_of(&store, &a).await, 6);
    assert_eq!(
        store.groups(&h("nobody@x.com")).await,
        Err(StoreError::NoSuchAccount)
    );
}

pub async fn group_count_is_bounded<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let a = h("a@x.com");
    for i in 1..MAX_GROUPS {
        store.add_group(&a, &n(&format!("g{i}"))).await.unwrap();
    }
    assert_eq!(store.groups(&a).await.unwrap().len(), MAX_GROUPS);
    assert_eq!(
        store.add_group(&a, &n("one too many")).await,
        Err(StoreError::TooManyGroups)
    );
}

pub async fn contacts_join_and_leave_groups<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com", "c@x.com"]).await;
    let (a, b, c) = (h("a@x.com"), h("b@x.com"), h("c@x.com"));
    store.add_group(&a, &n("Friends")).await.unwrap();
    store.add_group(&a, &n("Work")).await.unwrap();
    assert_eq!(
        store.add_to_group(&a, &b, 1, false).await,
        Err(StoreError::NotOnList)
    );
    store.add_entry(&a, FL, &b, &n("B")).await.unwrap();
    store.add_entry(&a, FL, &c, &n("C")).await.unwrap();
    // b was added without a group (an MSNP2 client): in group 0, shown as no membership.
    assert!(store.snapshot(&a).await.unwrap().memberships.is_empty());
    let s = serial_of(&store, &a).await;
    // Joining another group keeps group 0.
    assert_eq!(store.add_to_group(&a, &b, 1, false).await.unwrap(), s + 1);
    assert_eq!(
        store.add_to_group(&a, &b, 1, false).await,
        Err(StoreError::AlreadyThere)
    );
    assert_eq!(
        store.add_to_group(&a, &b, 0, false).await,
        Err(StoreError::AlreadyThere)
    );
    assert_eq!(
        store.add_to_group(&a, &b, 5, false).await,
        Err(StoreError::NoSuchGroup)
    );
    // `only` (an ADD with a group): c leaves group 0 for group 2.
    store.add_to_group(&a, &c, 2, true).await.unwrap();
    let m = store.snapshot(&a).await.unwrap().memberships;
    assert_eq!((m[&b].clone(), m[&c].clone()), (vec![0, 1], vec![2]));
    // Leaving a group keeps the contact on the FL and the owner on the contact's RL.
    let rl_serial = serial_of(&store, &b).await;
    store.remove_from_group(&a, &b, 0).await.unwrap();
    assert_eq!(
        store.remove_from_group(&a, &b, 0).await,
        Err(StoreError::NotInGroup)
    );
    assert_eq!(
        store.remove_from_group(&a, &b, 9).await,
        Err(StoreError::NoSuchGroup)
    );
    store.remove_from_group(&a, &b, 1).await.unwrap();
    assert!(store.is_on_list(&a, FL, &b).await.unwrap());
    assert!(store.is_on_list(&b, RL, &a).await.unwrap());
    assert_eq!(serial_of(&store, &b).await, rl_serial);
    // In no group: group 0 again.
    assert!(!store
        .snapshot(&a)
        .await
        .unwrap()
        .memberships
        .contains_key(&b));
    store.remove_from_group(&a, &b, 0).await.unwrap();
    // Removing a group takes its members out of it; off the FL, out of every group.
    store.remove_group(&a, 2).await.unwrap();
    assert!(!store
        .snapshot(&a)
        .await
        .unwrap()
        .memberships
        .contains_key(&c));
    store.add_to_group(&a, &c, 1, false).await.unwrap();
    store.remove_entry(&a, FL, &c).await.unwrap();
    store.add_entry(&a, FL, &c, &n("C")).await.unwrap();
    assert!(!store
        .snapshot(&a)
        .await
        .unwrap()
        .memberships
        .contains_key(&c));
    // Other lists have no groups.
    store.add_entry(&a, AL, &c, &n("C")).await.unwrap();
    store.add_entry(&a, BL, &b, &n("B")).await.unwrap();
    assert!(store.snapshot(&a).await.unwrap().memberships.is_empty());
}

pub async fn phones_are_set_and_seen_by_allowed_watchers<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com", "c@x.com"]).await;
    let (a, b, c) = (h("a@x.com"), h("b@x.com"), h("c@x.com"));
    store.add_entry(&b, FL, &a, &n("A")).await.unwrap();
    store.add_entry(&c, FL, &a, &n("A")).await.unwrap();
    store.add_entry(&a, BL, &c, &n("C")).await.unwrap();
    let (sa, sb) = (serial_of(&store, &a).await, serial_of(&store, &b).await);
    let change = store
        .set_phone(&a, PhoneKey::Home, Some(&n("1 (222) 3333")))
        .await
        .unwrap();
    // b sees it and its serial moves; c is blocked and sees nothing.
    assert_eq!(
        change,
        PhoneChange {
            serial: sa + 1,
            watchers: vec![(b.clone(), sb + 1)],
        }
    );
    store
        .set_phone(&a, PhoneKey::MobileAllowed, Some(&n("Y")))
        .await
        .unwrap();
    assert_eq!(
        store.phones(&a).await.unwrap(),
        vec![
            (PhoneKey::Home, n("1 (222) 3333")),
            (PhoneKey::MobileAllowed, n("Y"))
        ]
    );
    let own = store.snapshot(&a).await.unwrap();
    assert_eq!(own.phones.len(), 2);
    let seen = store.snapshot(&b).await.unwrap().contact_phones;
    assert_eq!(seen[&a], store.phones(&a).await.unwrap(), "in key order");
    assert!(store.snapshot(&c).await.unwrap().contact_phones.is_empty());
    // With BLP BL only those on the AL see them.
    store.set_blp(&a, BlpSetting::BlockAll).await.unwrap();
    assert!(store.snapshot(&b).await.unwrap().contact_phones.is_empty());
    store.add_entry(&a, AL, &b, &n("B")).await.unwrap();
    assert_eq!(
        store.snapshot(&b).await.unwrap().contact_phones[&a].len(),
        2
    );
    store.set_blp(&a, BlpSetting::AllowAll).await.unwrap();
    // Clearing removes the property.
    store.set_phone(&a, PhoneKey::Home, None).await.unwrap();
    assert_eq!(
        store.phones(&a).await.unwrap(),
        vec![(PhoneKey::MobileAllowed, n("Y"))]
    );
    assert_eq!(
        store
            .set_phone(&h("nobody@x.com"), PhoneKey::Home, None)
            .await,
        Err(StoreError::NoSuchAccount)
    );
}

pub async fn groups_and_phones_survive_reopening<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com"]).await;
    let (a, b) = (h("a@x.com"), h("b@x.com"));
    store.add_group(&a, &n("Friends")).await.unwrap();
    store.add_entry(&a, FL, &b, &n("B")).await.unwrap();
    store.add_to_group(&a, &b, 1, false).await.unwrap();
    store
        .set_phone(&a, PhoneKey::Work, Some(&n("555")))
        .await
        .unwrap();
    let before = store.snapshot(&a).await.unwrap();
    let Some(store) = factory.reopen(store).await else {
        return;
    };
    assert_eq!(store.snapshot(&a).await.unwrap(), before);
}

pub async fn mirrored_groups_follow_the_backend<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let (a, b, c) = (h("a@x.com"), h("b@x.com"), h("c@x.com"));
    store
        .mirror_all(
            &a,
            &[(b.clone(), n("B"), vec![FL]), (c.clone(), n("C"), vec![FL])],
        )
        .await
        .unwrap();
    let s = serial_of(&store, &a).await;
    // b in two groups the account lacks: both made, b joins them and leaves group 0.
    let changes = store
        .mirror_groups(&a, &[(b.clone(), vec![n("Friends"), n("Work")])])
        .await
        .unwrap();
    let created = |serial, id, name: &str| GroupChange::Created {
        serial,
        id,
        name: n(name),
    };
    let joined = |serial, id| GroupChange::Joined {
        serial,
        contact: b.clone(),
        name: n("B"),
        id,
    };
    let left = |serial, id| GroupChange::Left {
        serial,
        contact: b.clone(),
        id,
    };
    assert_eq!(
        changes,
        vec![
            created(s + 1, 1, "Friends"),
            created(s + 2, 2, "Work"),
            joined(s + 3, 1),
            joined(s + 4, 2),
            left(s + 5, 0),
        ]
    );
    // The same again changes nothing; names compare without case; unlisted contacts stay.
    let again = [(b.clone(), vec![n("work"), n("FRIENDS")])];
    assert!(store.mirror_groups(&a, &again).await.unwrap().is_empty());
    assert_eq!(serial_of(&store, &a).await, s + 5);
    // Out of Work; then in no group: group 0 again. Empty groups stay.
    let changes = store
        .mirror_groups(&a, &[(b.clone(), vec![n("Friends")])])
        .await
        .unwrap();
    assert_eq!(changes, vec![left(s + 6, 2)]);
    let changes = store
        .mirror_groups(&a, &[(b.clone(), vec![])])
        .await
        .unwrap();
    assert_eq!(changes, vec![joined(s + 7, 0), left(s + 8, 1)]);
    assert_eq!(store.groups(&a).await.unwrap().len(), 3);
    assert_eq!(
        store.mirror_state(&a, &b).await.unwrap().groups,
        Vec::<u32>::new()
    );
    // A contact not on the FL is left alone.
    let d = h("d@x.com");
    assert!(store
        .mirror_groups(&a, &[(d, vec![n("Friends")])])
        .await
        .unwrap()
        .is_empty());
    // Past MAX_GROUPS a group is dropped, without a serial.
    for i in 3..MAX_GROUPS {
        store.add_group(&a, &n(&format!("g{i}"))).await.unwrap();
    }
    let s = serial_of(&store, &a).await;
    let changes = store
        .mirror_groups(&a, &[(c.clone(), vec![n("Overflow")])])
        .await
        .unwrap();
    assert_eq!(
        changes,
        vec![GroupChange::Dropped {
            contact: c.clone(),
            name: n("Overflow")
        }]
    );
    assert_eq!(serial_of(&store, &a).await, s);
}
