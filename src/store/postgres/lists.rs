//! The four lists, their serial, privacy checks and the mirrors of bridged accounts' lists.

use std::collections::HashSet;

use futures_util::future::try_join_all;

use super::accounts::backend_link;
use super::groups;
use super::rows::{
    account, bump_serial, execute, has_entry, parse_blp, parse_handle, parse_name, permission, row,
    rows, Db, Tx,
};
use crate::protocol::{FriendlyName, ListKind, UserHandle};
use crate::store::{
    Entry, ListChange, MirrorChange, MirrorEdit, MirrorState, Permission, Snapshot, StoreError,
    MAX_LIST_ENTRIES,
};

/// The settings and all four lists, read in one transaction so they match the serial; its
/// statements go to the database together.
pub(super) async fn snapshot(tx: &Tx<'_>, handle: &UserHandle) -> Result<Snapshot, StoreError> {
    let lists = ListKind::SYNC_ORDER
        .map(|kind| async move { Ok::<_, StoreError>((kind, entries(tx, handle, kind).await?)) });
    let (account, lists, groups, memberships, phones, contact_phones) = tokio::try_join!(
        account(tx, handle),
        try_join_all(lists),
        groups::groups(tx, handle),
        groups::memberships(tx, handle),
        groups::phones(tx, handle),
        groups::contact_phones(tx, handle),
    )?;
    Ok(Snapshot {
        account,
        lists,
        groups,
        memberships,
        phones,
        contact_phones,
    })
}

pub(super) async fn list(
    tx: &Tx<'_>,
    handle: &UserHandle,
    kind: ListKind,
) -> Result<(u32, Vec<Entry>), StoreError> {
    let (account, entries) = tokio::try_join!(account(tx, handle), entries(tx, handle, kind))?;
    Ok((account.serial, entries))
}

pub(super) async fn rename_contact(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
    name: &FriendlyName,
) -> Result<u32, StoreError> {
    let n = execute(
        tx,
        "UPDATE list_entries SET name = $3 WHERE owner = $1 AND list = 'FL' AND contact = $2",
        &[&owner.as_str(), &contact.as_str(), &name.as_str()],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NotOnList);
    }
    bump_serial(tx, owner.as_str()).await
}

/// Adds `contact` to one of the owner's FL, AL or BL; the FL also puts the owner on the
/// contact's RL, under the owner's current friendly name.
pub(super) async fn add_entry(
    tx: &Tx<'_>,
    owner: &UserHandle,
    kind: ListKind,
    contact: &UserHandle,
    name: &FriendlyName,
) -> Result<ListChange, StoreError> {
    if kind == ListKind::Reverse {
        return Err(StoreError::ReverseListIsServerOnly);
    }
    // The checks' statements go to the database together; their answers are judged in order.
    let (owner_account, _, link, there, in_opposite, count) = tokio::try_join!(
        account(tx, owner),
        account(tx, contact),
        backend_link(tx, contact),
        has_entry(tx, owner, kind, contact),
        async {
            match kind.opposite() {
                Some(opposite) => has_entry(tx, owner, opposite, contact).await,
                None => Ok(false),
            }
        },
        count_entries(tx, owner, kind),
    )?;
    // A bridged account's contacts are its backend's; it can't be put on local lists.
    if contact != owner && link.is_some() {
        return Err(StoreError::NoSuchAccount);
    }
    if there {
        return Err(StoreError::AlreadyThere);
    }
    if in_opposite {
        return Err(StoreError::InOppositeList);
    }
    if count >= MAX_LIST_ENTRIES {
        return Err(StoreError::ListFull);
    }
    let before = privacy_before(tx, owner, kind, contact).await?;
    insert_entry(tx, owner, kind, contact, name).await?;
    let mut serial = bump_serial(tx, owner.as_str()).await?;
    let mut reverse_serial = None;
    if kind == ListKind::Forward && !has_entry(tx, contact, ListKind::Reverse, owner).await? {
        insert_entry(tx, contact, ListKind::Reverse, owner, &owner_account.name).await?;
        let s = bump_serial(tx, contact.as_str()).await?;
        if contact == owner {
            serial = s;
        }
        reverse_serial = Some(s);
    }
    let privacy = privacy_after(tx, owner, contact, before).await?;
    Ok(ListChange {
        serial,
        reverse_serial,
        privacy,
    })
}

/// Removes `contact` from one of the owner's FL, AL or BL (and the owner from the contact's
/// RL when it was the FL).
pub(super) async fn remove_entry(
    tx: &Tx<'_>,
    owner: &UserHandle,
    kind: ListKind,
    contact: &UserHandle,
) -> Result<ListChange, StoreError> {
    if kind == ListKind::Reverse {
        return Err(StoreError::ReverseListIsServerOnly);
    }
    account(tx, owner).await?;
    let before = privacy_before(tx, owner, kind, contact).await?;
    if delete_entry(tx, owner, kind, contact).await? == 0 {
        return Err(StoreError::NotOnList);
    }
    let mut serial = bump_serial(tx, owner.as_str()).await?;
    let mut reverse_serial = None;
    if kind == ListKind::Forward && delete_entry(tx, contact, ListKind::Reverse, owner).await? > 0 {
        let s = bump_serial(tx, contact.as_str()).await?;
        if contact == owner {
            serial = s;
        }
        reverse_serial = Some(s);
    }
    let privacy = privacy_after(tx, owner, contact, before).await?;
    Ok(ListChange {
        serial,
        reverse_serial,
        privacy,
    })
}

pub(super) async fn entry(
    tx: &impl Db,
    owner: &UserHandle,
    kind: ListKind,
    contact: &UserHandle,
) -> Result<Option<Entry>, StoreError> {
    let found = row(
        tx,
        "SELECT name FROM list_entries WHERE owner = $1 AND list = $2 AND contact = $3",
        &[&owner.as_str(), &kind.code(), &contact.as_str()],
    )
    .await?;
    found
        .map(|r| {
            Ok(Entry {
                handle: contact.clone(),
                name: parse_name(r.try_get(0)?)?,
            })
        })
        .transpose()
}

/// The lists of `owner`'s that `contact` is on, in SYN order.
pub(super) async fn lists_of(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
) -> Result<Vec<ListKind>, StoreError> {
    let on = try_join_all(ListKind::SYNC_ORDER.map(|kind| has_entry(tx, owner, kind, contact)));
    Ok(ListKind::SYNC_ORDER
        .into_iter()
        .zip(on.await?)
        .filter_map(|(kind, on)| on.then_some(kind))
        .collect())
}

pub(super) async fn mirror_state(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
) -> Result<MirrorState, StoreError> {
    let (lists, account, entry, groups) = tokio::try_join!(
        lists_of(tx, owner, contact),
        account(tx, owner),
        entry(tx, owner, ListKind::Forward, contact),
        groups::memberships_of(tx, owner, contact),
    )?;
    Ok(MirrorState {
        lists,
        serial: account.serial,
        name: entry.map(|e| e.name),
        groups,
    })
}

pub(super) async fn mirror_contact(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
    name: &FriendlyName,
    lists: &[ListKind],
) -> Result<Vec<MirrorChange>, StoreError> {
    account(tx, owner).await?;
    mirror_one(tx, owner, contact, name, lists).await
}

pub(super) async fn mirror_all(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contacts: &[(UserHandle, FriendlyName, Vec<ListKind>)],
) -> Result<Vec<MirrorChange>, StoreError> {
    account(tx, owner).await?;
    let mut changes = Vec::new();
    let wanted: HashSet<&UserHandle> = contacts.iter().map(|(h, _, _)| h).collect();
    // In the order first added, as SQLite's DISTINCT gives them.
    let stored = rows(
        tx,
        "SELECT contact FROM list_entries WHERE owner = $1 GROUP BY contact ORDER BY min(id)",
        &[&owner.as_str()],
    )
    .await?;
    for contact in stored {
        let contact = parse_handle(contact.try_get(0)?)?;
        if !wanted.contains(&contact) {
            let name = FriendlyName::from_handle(&contact);
            changes.extend(mirror_one(tx, owner, &contact, &name, &[]).await?);
        }
    }
    for (contact, name, lists) in contacts {
        changes.extend(mirror_one(tx, owner, contact, name, lists).await?);
    }
    Ok(changes)
}

/// Puts a contact of a bridged account on the lists in `add` and off those in `remove`, the
/// others as stored in this transaction.
pub(super) async fn mirror_edit(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
    name: &FriendlyName,
    add: &[ListKind],
    remove: &[ListKind],
) -> Result<MirrorEdit, StoreError> {
    account(tx, owner).await?;
    let mut lists = Vec::new();
    for kind in ListKind::SYNC_ORDER {
        let keep = has_entry(tx, owner, kind, contact).await? && !remove.contains(&kind);
        if keep || add.contains(&kind) {
            lists.push(kind);
        }
    }
    let changes = mirror_one(tx, owner, contact, name, &lists).await?;
    let serial = account(tx, owner).await?.serial;
    Ok(MirrorEdit { changes, serial })
}

/// The contacts on `handle`'s FL, each with whether that contact lets `handle` see it.
pub(super) async fn forward_contacts(
    tx: &impl Db,
    handle: &UserHandle,
) -> Result<Vec<(UserHandle, bool)>, StoreError> {
    rows(
        tx,
        "SELECT f.contact, a.blp,
                EXISTS (SELECT 1 FROM list_entries x WHERE x.owner = f.contact AND x.list = 'AL' AND x.contact = $1),
                EXISTS (SELECT 1 FROM list_entries x WHERE x.owner = f.contact AND x.list = 'BL' AND x.contact = $1)
         FROM list_entries f JOIN accounts a ON a.handle = f.contact
         WHERE f.owner = $1 AND f.list = 'FL' ORDER BY f.id",
        &[&handle.as_str()],
    )
    .await?
    .iter()
    .map(|r| {
        let permission = Permission {
            blp: parse_blp(r.try_get(1)?)?,
            in_allow_list: r.try_get(2)?,
            in_block_list: r.try_get(3)?,
        };
        Ok((parse_handle(r.try_get(0)?)?, permission.allows()))
    })
    .collect()
}

/// For an AL or BL change concerning someone on the owner's RL: how the owner's settings
/// treat that contact before the change.
async fn privacy_before(
    tx: &Tx<'_>,
    owner: &UserHandle,
    kind: ListKind,
    contact: &UserHandle,
) -> Result<Option<Permission>, StoreError> {
    let matters = matches!(kind, ListKind::Allow | ListKind::Block)
        && has_entry(tx, owner, ListKind::Reverse, contact).await?;
    if !matters {
        return Ok(None);
    }
    Ok(Some(permission(tx, owner, contact).await?))
}

async fn privacy_after(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
    before: Option<Permission>,
) -> Result<Option<(Permission, Permission)>, StoreError> {
    match before {
        Some(before) => Ok(Some((before, permission(tx, owner, contact).await?))),
        None => Ok(None),
    }
}

async fn entries(
    tx: &Tx<'_>,
    owner: &UserHandle,
    kind: ListKind,
) -> Result<Vec<Entry>, StoreError> {
    rows(
        tx,
        "SELECT contact, name FROM list_entries WHERE owner = $1 AND list = $2 ORDER BY id",
        &[&owner.as_str(), &kind.code()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Entry {
            handle: parse_handle(r.try_get(0)?)?,
            name: parse_name(r.try_get(1)?)?,
        })
    })
    .collect()
}

async fn count_entries(
    tx: &Tx<'_>,
    owner: &UserHandle,
    kind: ListKind,
) -> Result<usize, StoreError> {
    let n: i64 = row(
        tx,
        "SELECT COUNT(*) FROM list_entries WHERE owner = $1 AND list = $2",
        &[&owner.as_str(), &kind.code()],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()?
    .unwrap_or(0);
    Ok(n as usize)
}

async fn insert_entry(
    tx: &Tx<'_>,
    owner: &UserHandle,
    kind: ListKind,
    contact: &UserHandle,
    name: &FriendlyName,
) -> Result<(), StoreError> {
    execute(
        tx,
        "INSERT INTO list_entries (owner, list, contact, name) VALUES ($1, $2, $3, $4)",
        &[
            &owner.as_str(),
            &kind.code(),
            &contact.as_str(),
            &name.as_str(),
        ],
    )
    .await?;
    Ok(())
}

async fn delete_entry(
    tx: &Tx<'_>,
    owner: &UserHandle,
    kind: ListKind,
    contact: &UserHandle,
) -> Result<u64, StoreError> {
    execute(
        tx,
        "DELETE FROM list_entries WHERE owner = $1 AND list = $2 AND contact = $3",
        &[&owner.as_str(), &kind.code(), &contact.as_str()],
    )
    .await
}

async fn mirror_one(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
    name: &FriendlyName,
    lists: &[ListKind],
) -> Result<Vec<MirrorChange>, StoreError> {
    let mut changes = Vec::new();
    for kind in ListKind::SYNC_ORDER {
        let present = has_entry(tx, owner, kind, contact).await?;
        let wanted = lists.contains(&kind);
        if wanted && !present {
            insert_entry(tx, owner, kind, contact, name).await?;
        } else if !wanted && present {
            delete_entry(tx, owner, kind, contact).await?;
        } else {
            if wanted {
                // Keep the backend's name; a rename alone moves the serial so SYN sends it.
                let renamed = execute(
                    tx,
                    "UPDATE list_entries SET name = $4 WHERE owner = $1 AND list = $2 AND contact = $3 AND name != $4",
                    &[&owner.as_str(), &kind.code(), &contact.as_str(), &name.as_str()],
                )
                .await?;
                if renamed > 0 {
                    bump_serial(tx, owner.as_str()).await?;
                }
            }
            continue;
        }
        let serial = bump_serial(tx, owner.as_str()).await?;
        changes.push(MirrorChange {
            added: wanted,
            list: kind,
            handle: contact.clone(),
            name: name.clone(),
            serial,
        });
    }
    Ok(changes)
}
