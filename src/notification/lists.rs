//! SYN, LST, BLP, ADD and REM: the stored lists and settings, and what their changes tell
//! other users.

use crate::connection::Replies;
use crate::protocol::{
    BlpSetting, ErrorCode, FriendlyName, ListItem, ListKind, ServerCommand, TrId, UserHandle,
};
use crate::server::Services;
use crate::store::{Database, Entry, Permission, StoreError};

use super::presence;

/// `SYN`: nothing but the serial when the client's copy is current, else everything.
pub async fn synchronize(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    client_serial: u32,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let owner = me.clone();
    let snapshot = services.store.call(move |db| db.snapshot(&owner)).await?;
    let serial = snapshot.account.serial;
    out.push(ServerCommand::Syn { trid, serial });
    if client_serial == serial {
        return Ok(());
    }
    out.push(ServerCommand::Gtc {
        trid,
        serial,
        setting: snapshot.account.gtc,
    });
    out.push(ServerCommand::Blp {
        trid,
        serial,
        setting: snapshot.account.blp,
    });
    for (list, entries) in snapshot.lists {
        push_list(out, trid, list, serial, entries);
    }
    Ok(())
}

/// `LST`: one list on demand.
pub async fn send_list(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    list: ListKind,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let owner = me.clone();
    let (serial, entries) = services.store.call(move |db| db.list(&owner, list)).await?;
    push_list(out, trid, list, serial, entries);
    Ok(())
}

fn push_list(out: &mut Replies, trid: TrId, list: ListKind, serial: u32, entries: Vec<Entry>) {
    if entries.is_empty() {
        out.push(ServerCommand::Lst {
            trid,
            list,
            serial,
            item: None,
        });
    }
    let total = entries.len();
    for (i, entry) in entries.into_iter().enumerate() {
        let item = ListItem {
            index: i + 1,
            total,
            handle: entry.handle,
            name: entry.name,
        };
        out.push(ServerCommand::Lst {
            trid,
            list,
            serial,
            item: Some(item),
        });
    }
}

/// `BLP`: changes who may see the user; watchers whose view changes are told at once.
pub async fn set_privacy_mode(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    setting: BlpSetting,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let owner = me.clone();
    let (serial, watchers) = services
        .store
        .call(move |db| {
            let watchers = db.watchers(&owner)?;
            let serial = db.set_blp(&owner, setting)?;
            Ok((serial, watchers))
        })
        .await?;
    out.push(ServerCommand::Blp {
        trid,
        serial,
        setting,
    });
    let changes: Vec<_> = watchers
        .into_iter()
        .map(|(w, p)| (w, p, p.with_blp(setting)))
        .collect();
    presence::privacy_changed(services, me, &changes);
    Ok(())
}

/// What a list change did, as read in the same store call.
struct Outcome {
    serial: u32,
    reverse_serial: Option<u32>,
    /// For AL/BL changes of someone on the RL: the contact's permission before and after.
    privacy: Option<(Permission, Permission)>,
    /// For FL additions: whether the new contact lets the user see them.
    contact_allows_me: bool,
}

fn change_list(
    db: &mut Database,
    owner: &UserHandle,
    list: ListKind,
    contact: &UserHandle,
    add: Option<&FriendlyName>,
) -> Result<Outcome, StoreError> {
    // Only AL/BL changes can change what a watcher (someone with the owner on their FL) sees.
    let privacy_matters = matches!(list, ListKind::Allow | ListKind::Block)
        && db.is_on_list(owner, ListKind::Reverse, contact)?;
    let before = if privacy_matters {
        Some(db.permission(owner, contact)?)
    } else {
        None
    };
    let change = match add {
        Some(name) => db.add_entry(owner, list, contact, name)?,
        None => db.remove_entry(owner, list, contact)?,
    };
    let privacy = match before {
        Some(before) => Some((before, db.permission(owner, contact)?)),
        None => None,
    };
    let contact_allows_me =
        add.is_some() && list == ListKind::Forward && db.permission(contact, owner)?.allows();
    Ok(Outcome {
        serial: change.serial,
        reverse_serial: change.reverse_serial,
        privacy,
        contact_allows_me,
    })
}

/// `ADD`: adds to the FL, AL or BL, and tells the contact and the user what follows from it.
pub async fn add(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    list: ListKind,
    contact: UserHandle,
    name: FriendlyName,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let (owner, target, stored_name) = (me.clone(), contact.clone(), name.clone());
    let outcome = services
        .store
        .call(move |db| change_list(db, &owner, list, &target, Some(&stored_name)))
        .await?;
    out.push(ServerCommand::Add {
        trid,
        list,
        serial: outcome.serial,
        handle: contact.clone(),
        name,
    });
    if let (Some(serial), Some((_, my_name))) = (outcome.reverse_serial, services.hub.presence(me))
    {
        services.hub.send(
            &contact,
            &ServerCommand::Add {
                trid: TrId(0),
                list: ListKind::Reverse,
                serial,
                handle: me.clone(),
                name: my_name,
            },
        );
    }
    if outcome.contact_allows_me {
        if let Some((status, contact_name)) = services.hub.visible_status(&contact) {
            out.push(ServerCommand::Iln {
                trid,
                status,
                handle: contact.clone(),
                name: contact_name,
            });
        }
    }
    if let Some((before, after)) = outcome.privacy {
        presence::privacy_changed(services, me, &[(contact, before, after)]);
    }
    Ok(())
}

/// `REM`: removes from the FL, AL or BL.
pub async fn remove(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    list: ListKind,
    contact: UserHandle,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let (owner, target) = (me.clone(), contact.clone());
    let outcome = services
        .store
        .call(move |db| change_list(db, &owner, list, &target, None))
        .await?;
    out.push(ServerCommand::Rem {
        trid,
        list,
        serial: outcome.serial,
        handle: contact.clone(),
    });
    if let Some(serial) = outcome.reverse_serial {
        services.hub.send(
            &contact,
            &ServerCommand::Rem {
                trid: TrId(0),
                list: ListKind::Reverse,
                serial,
                handle: me.clone(),
            },
        );
    }
    if let Some((before, after)) = outcome.privacy {
        presence::privacy_changed(services, me, &[(contact, before, after)]);
    }
    Ok(())
}
