//! The suite for accounts, settings, links, search and durability.

use super::{h, n, serial_of, with_accounts, xmpp_link, StoreFactory, AL, BL, FL, RL};
use crate::protocol::{BlpSetting, FriendlyName, GtcSetting, UserHandle};
use crate::store::password::{md5_hex, verify_response};
use crate::store::{BackendLink, Permission, Store, StoreError};

pub async fn accounts_and_passwords<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let a = h("a@x.com");
    assert_eq!(
        store.create_account(&a, &n("Other"), "pw").await,
        Err(StoreError::AccountExists)
    );
    let creds = store.credentials(&a).await.unwrap().unwrap();
    assert_eq!(creds.name, n("a@x.com"), "the first name stays");
    let answer = |salt: &str, password: &str| md5_hex(&format!("{salt}{password}"));
    assert!(verify_response(
        &creds.password,
        &answer(&creds.password.salt, "pw")
    ));
    assert!(!verify_response(
        &creds.password,
        &answer(&creds.password.salt, "wrong")
    ));
    store.set_password(&a, "new").await.unwrap();
    let changed = store.credentials(&a).await.unwrap().unwrap();
    assert_ne!(creds.password.salt, changed.password.salt);
    assert!(verify_response(
        &changed.password,
        &answer(&changed.password.salt, "new")
    ));
    assert!(!verify_response(
        &changed.password,
        &answer(&changed.password.salt, "pw")
    ));
    let nobody = h("nobody@x.com");
    assert!(store.credentials(&nobody).await.unwrap().is_none());
    assert_eq!(
        store.set_password(&nobody, "x").await,
        Err(StoreError::NoSuchAccount)
    );
}

pub async fn account_settings_and_rename<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let a = h("a@x.com");
    let account = store.account(&a).await.unwrap();
    assert_eq!(account.handle, a);
    assert_eq!(account.name, n("a@x.com"));
    assert_eq!(account.gtc, GtcSetting::Ask);
    assert_eq!(account.blp, BlpSetting::AllowAll);
    assert_eq!(account.serial, 0);
    assert_eq!(store.rename(&a, &n("New Name")).await, Ok(1));
    assert_eq!(store.account(&a).await.unwrap().name, n("New Name"));
    assert_eq!(
        store.credentials(&a).await.unwrap().unwrap().name,
        n("New Name")
    );
    let nobody = h("nobody@x.com");
    assert_eq!(store.account(&nobody).await, Err(StoreError::NoSuchAccount));
    assert_eq!(
        store.rename(&nobody, &n("X")).await,
        Err(StoreError::NoSuchAccount)
    );
}

pub async fn gtc_and_blp<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com"]).await;
    let a = h("a@x.com");
    assert_eq!(
        store.set_gtc(&a, GtcSetting::Ask).await,
        Err(StoreError::AlreadyInMode)
    );
    assert_eq!(store.set_gtc(&a, GtcSetting::NoAsk).await, Ok(1));
    assert_eq!(
        store.set_blp(&a, BlpSetting::AllowAll).await,
        Err(StoreError::AlreadyInMode)
    );
    assert_eq!(
        store
            .set_blp(&a, BlpSetting::BlockAll)
            .await
            .unwrap()
            .serial,
        2
    );
    let account = store.snapshot(&a).await.unwrap().account;
    assert_eq!(
        (account.gtc, account.blp, account.serial),
        (GtcSetting::NoAsk, BlpSetting::BlockAll, 2)
    );
    assert_eq!(store.set_gtc(&a, GtcSetting::Ask).await, Ok(3));
    assert_eq!(
        store
            .set_blp(&a, BlpSetting::AllowAll)
            .await
            .unwrap()
            .serial,
        4
    );
    let nobody = h("nobody@x.com");
    assert_eq!(
        store.set_gtc(&nobody, GtcSetting::NoAsk).await,
        Err(StoreError::NoSuchAccount)
    );
    assert_eq!(
        store.set_blp(&nobody, BlpSetting::BlockAll).await,
        Err(StoreError::NoSuchAccount)
    );
}

pub async fn set_blp_reports_watchers_as_before<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com", "c@x.com"]).await;
    let (a, b, c) = (h("a@x.com"), h("b@x.com"), h("c@x.com"));
    store.add_entry(&b, FL, &a, &n("A")).await.unwrap();
    store.add_entry(&c, FL, &a, &n("A")).await.unwrap();
    store.add_entry(&a, AL, &c, &n("C")).await.unwrap();
    let change = store.set_blp(&a, BlpSetting::BlockAll).await.unwrap();
    let under = |blp, in_allow_list| Permission {
        blp,
        in_allow_list,
        in_block_list: false,
    };
    assert_eq!(change.serial, store.account(&a).await.unwrap().serial);
    assert_eq!(
        change.watchers,
        vec![
            (b.clone(), under(BlpSetting::AllowAll, false)),
            (c.clone(), under(BlpSetting::AllowAll, true)),
        ]
    );
    let change = store.set_blp(&a, BlpSetting::AllowAll).await.unwrap();
    assert_eq!(
        change.watchers,
        vec![
            (b, under(BlpSetting::BlockAll, false)),
            (c, under(BlpSetting::BlockAll, true)),
        ]
    );
}

pub async fn removing_an_account_cleans_other_lists<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com"]).await;
    let (a, b) = (h("a@x.com"), h("b@x.com"));
    store.add_entry(&a, FL, &b, &n("B")).await.unwrap();
    store.add_entry(&b, BL, &a, &n("A")).await.unwrap();
    store.link(&b, &xmpp_link("b@xmpp.example")).await.unwrap();
    let before = serial_of(&store, &a).await;
    store.remove_account(&b).await.unwrap();
    let snapshot = store.snapshot(&a).await.unwrap();
    assert!(snapshot.lists.iter().all(|(_, l)| l.is_empty()));
    assert!(snapshot.account.serial > before);
    assert_eq!(store.account(&b).await, Err(StoreError::NoSuchAccount));
    assert!(store.credentials(&b).await.unwrap().is_none());
    assert_eq!(store.backend_link(&b).await.unwrap(), None);
    assert_eq!(
        store.remove_account(&b).await,
        Err(StoreError::NoSuchAccount)
    );
    // The handle can be taken again, with nothing left over.
    store.create_account(&b, &n("New B"), "pw").await.unwrap();
    assert!(store.lists_of(&b, &a).await.unwrap().is_empty());
    assert_eq!(serial_of(&store, &b).await, 0);
}

pub async fn backend_links<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["b@x.com", "a@x.com"]).await;
    let (a, b) = (h("a@x.com"), h("b@x.com"));
    assert_eq!(store.backend_link(&a).await.unwrap(), None);
    assert_eq!(store.credentials(&a).await.unwrap().unwrap().link, None);
    let link = xmpp_link("a@xmpp.example");
    store.link(&a, &link).await.unwrap();
    assert_eq!(store.backend_link(&a).await.unwrap(), Some(link.clone()));
    // A login reads the link with the password.
    assert_eq!(
        store.credentials(&a).await.unwrap().unwrap().link,
        Some(link.clone())
    );
    assert!(
        !format!("{link:?}").contains("[1, 2, 3]"),
        "secret in Debug"
    );
    assert_eq!(
        store.accounts_with_links().await.unwrap(),
        vec![
            (a.clone(), n("a@x.com"), Some(link.clone())),
            (b.clone(), n("b@x.com"), None),
        ]
    );
    let other = BackendLink {
        backend: "matrix".into(),
        account: "@a:matrix.example".into(),
        sealed_secret: vec![9],
        options: vec![],
    };
    store.link(&a, &other).await.unwrap();
    assert_eq!(store.backend_link(&a).await.unwrap(), Some(other.clone()));
    assert_eq!(store.unlink(&a).await.unwrap(), other);
    assert_eq!(store.backend_link(&a).await.unwrap(), None);
    assert_eq!(store.credentials(&a).await.unwrap().unwrap().link, None);
    assert_eq!(store.unlink(&a).await, Err(StoreError::NotLinked));
    let nobody = h("nobody@x.com");
    assert_eq!(
        store.link(&nobody, &link).await,
        Err(StoreError::NoSuchAccount)
    );
    assert_eq!(store.unlink(&nobody).await, Err(StoreError::NoSuchAccount));
    // Links change no list and no serial.
    assert_eq!(serial_of(&store, &a).await, 0);
}

pub async fn refused_links<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com", "c@x.com"]).await;
    let (a, b, c) = (h("a@x.com"), h("b@x.com"), h("c@x.com"));
    let link = xmpp_link("a@xmpp.example");
    store.link(&a, &link).await.unwrap();
    store.link(&c, &link).await.unwrap();
    assert_eq!(store.refused_links().await.unwrap(), vec![]);
    store.set_link_refused(&c, Some(7)).await.unwrap();
    store
        .set_link_refused(&a, Some(1_700_000_000))
        .await
        .unwrap();
    // An account without a link has nothing to refuse.
    store.set_link_refused(&b, Some(1)).await.unwrap();
    assert_eq!(
        store.refused_links().await.unwrap(),
        vec![(a.clone(), 1_700_000_000), (c.clone(), 7)]
    );
    store.set_link_refused(&a, None).await.unwrap();
    assert_eq!(store.refused_links().await.unwrap(), vec![(c.clone(), 7)]);
    // Unlinking and linking again starts afresh.
    store.set_link_refused(&a, Some(5)).await.unwrap();
    store.unlink(&a).await.unwrap();
    store.link(&a, &link).await.unwrap();
    assert_eq!(store.refused_links().await.unwrap(), vec![(c.clone(), 7)]);
    // So does linking again over a refused link ("credentials refused: link again").
    store.link(&c, &xmpp_link("c@xmpp.example")).await.unwrap();
    assert_eq!(store.refused_links().await.unwrap(), vec![]);
}

pub async fn find_accounts<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["carol@x.com", "alice@x.com", "bob@y.org"]).await;
    store
        .rename(&h("bob@y.org"), &n("Bob Smith"))
        .await
        .unwrap();
    let found = |r: Vec<(UserHandle, FriendlyName)>| -> Vec<String> {
        r.into_iter().map(|(h, _)| h.to_string()).collect()
    };
    assert_eq!(
        found(store.find("x.com", 10).await.unwrap()),
        vec!["alice@x.com", "carol@x.com"]
    );
    assert_eq!(
        store.find("SMITH", 10).await.unwrap(),
        vec![(h("bob@y.org"), n("Bob Smith"))]
    );
    assert_eq!(
        found(store.find("x.com", 1).await.unwrap()),
        vec!["alice@x.com"]
    );
    assert!(store.find("nobody", 10).await.unwrap().is_empty());
    // Wildcards in the text are not wildcards.
    assert!(store.find("a%e", 10).await.unwrap().is_empty());
    assert!(store.find("_", 10).await.unwrap().len() == 3);
}

pub async fn server_secret_is_stable<F: StoreFactory>(factory: &F) {
    let store = factory.create().await;
    let secret = store.server_secret().await.unwrap();
    assert_eq!(secret.len(), 32);
    assert_eq!(store.server_secret().await.unwrap(), secret);
    let other = factory.create().await;
    assert_ne!(other.server_secret().await.unwrap(), secret);
    if let Some(store) = factory.reopen(store).await {
        assert_eq!(store.server_secret().await.unwrap(), secret);
    }
}

pub async fn changes_survive_reopening<F: StoreFactory>(factory: &F) {
    let store = with_accounts(factory, &["a@x.com", "b@x.com"]).await;
    let (a, b) = (h("a@x.com"), h("b@x.com"));
    store.add_entry(&a, FL, &b, &n("Bee")).await.unwrap();
    store.add_entry(&a, BL, &b, &n("Bee")).await.unwrap();
    store.set_gtc(&a, GtcSetting::NoAsk).await.unwrap();
    store.link(&b, &xmpp_link("b@xmpp.example")).await.unwrap();
    store.set_password(&a, "new").await.unwrap();
    let snapshot = store.snapshot(&a).await.unwrap();
    let salt = store.credentials(&a).await.unwrap().unwrap().password.salt;
    let Some(store) = factory.reopen(store).await else {
        return;
    };
    assert_eq!(store.snapshot(&a).await.unwrap(), snapshot);
    assert_eq!(snapshot.account.serial, 3);
    assert_eq!(
        store.credentials(&a).await.unwrap().unwrap().password.salt,
        salt
    );
    assert_eq!(
        store.backend_link(&b).await.unwrap(),
        Some(xmpp_link("b@xmpp.example"))
    );
    assert_eq!(store.list(&b, RL).await.unwrap().1.len(), 1);
}
