//! MSNP7's contact groups and MSNP5's phone numbers, as `../sqlite/groups.rs` keeps them: group
//! 0 exists without a row, a contact without membership rows is in group 0 only, and a
//! trigger drops a contact's memberships when it leaves the FL.

use std::collections::BTreeMap;

use super::rows::{
    account, bump_serial, execute, exists, parse_handle, parse_name, permission, row, rows, Tx,
};
use crate::protocol::{FriendlyName, ListKind, PhoneKey, UserHandle, MAX_GROUPS};
use crate::store::values::{lowest_free_id, same_name, DEFAULT_GROUP_NAME};
use crate::store::{Group, GroupChange, PhoneChange, StoreError};

pub(super) async fn account_groups(
    tx: &Tx<'_>,
    owner: &UserHandle,
) -> Result<Vec<Group>, StoreError> {
    Ok(tokio::try_join!(account(tx, owner), groups(tx, owner))?.1)
}

/// Creates a group under the lowest free id; returns the new serial and the id.
pub(super) async fn add_group(
    tx: &Tx<'_>,
    owner: &UserHandle,
    name: &FriendlyName,
) -> Result<(u32, u32), StoreError> {
    account(tx, owner).await?;
    let existing = groups(tx, owner).await?;
    if existing.iter().any(|g| same_name(&g.name, name)) {
        return Err(StoreError::GroupExists);
    }
    if existing.len() >= MAX_GROUPS {
        return Err(StoreError::TooManyGroups);
    }
    let id = lowest_free_id(&existing);
    insert_group(tx, owner, id, name).await?;
    let serial = bump_serial(tx, owner.as_str()).await?;
    Ok((serial, id))
}

pub(super) async fn rename_group(
    tx: &Tx<'_>,
    owner: &UserHandle,
    id: u32,
    name: &FriendlyName,
) -> Result<u32, StoreError> {
    account(tx, owner).await?;
    let existing = groups(tx, owner).await?;
    if !existing.iter().any(|g| g.id == id) {
        return Err(StoreError::NoSuchGroup);
    }
    if existing
        .iter()
        .any(|g| g.id != id && same_name(&g.name, name))
    {
        return Err(StoreError::GroupExists);
    }
    execute(
        tx,
        "INSERT INTO contact_groups (owner, id, name) VALUES ($1, $2, $3)
         ON CONFLICT (owner, id) DO UPDATE SET name = excluded.name",
        &[&owner.as_str(), &i64::from(id), &name.as_str()],
    )
    .await?;
    bump_serial(tx, owner.as_str()).await
}

pub(super) async fn remove_group(
    tx: &Tx<'_>,
    owner: &UserHandle,
    id: u32,
) -> Result<u32, StoreError> {
    if id == 0 {
        return Err(StoreError::GroupZero);
    }
    account(tx, owner).await?;
    let n = execute(
        tx,
        "DELETE FROM contact_groups WHERE owner = $1 AND id = $2",
        &[&owner.as_str(), &i64::from(id)],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NoSuchGroup);
    }
    execute(
        tx,
        "DELETE FROM group_members WHERE owner = $1 AND group_id = $2",
        &[&owner.as_str(), &i64::from(id)],
    )
    .await?;
    bump_serial(tx, owner.as_str()).await
}

/// Puts an FL contact in a group; with `only`, a contact in no group yet leaves group 0.
pub(super) async fn add_to_group(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
    id: u32,
    only: bool,
) -> Result<u32, StoreError> {
    account(tx, owner).await?;
    if !groups(tx, owner).await?.iter().any(|g| g.id == id) {
        return Err(StoreError::NoSuchGroup);
    }
    if !on_forward_list(tx, owner, contact).await? {
        return Err(StoreError::NotOnList);
    }
    let mut current = memberships_of(tx, owner, contact).await?;
    if current.is_empty() && !only {
        current.push(0);
        insert_member(tx, owner, contact, 0).await?;
    }
    if current.contains(&id) {
        return Err(StoreError::AlreadyThere);
    }
    insert_member(tx, owner, contact, id).await?;
    bump_serial(tx, owner.as_str()).await
}

/// Makes the groups of the listed FL contacts those their backend names (see
/// `Store::mirror_groups`).
pub(super) async fn mirror_groups(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contacts: &[(UserHandle, Vec<FriendlyName>)],
) -> Result<Vec<GroupChange>, StoreError> {
    account(tx, owner).await?;
    let mut existing = groups(tx, owner).await?;
    let mut changes = Vec::new();
    for (contact, names) in contacts {
        if !on_forward_list(tx, owner, contact).await? {
            continue;
        }
        let mut target: Vec<u32> = Vec::new();
        for name in names {
            let id = match existing.iter().find(|g| same_name(&g.name, name)) {
                Some(g) => g.id,
                None if existing.len() >= MAX_GROUPS => {
                    changes.push(GroupChange::Dropped {
                        contact: contact.clone(),
                        name: name.clone(),
                    });
                    continue;
                }
                None => {
                    let id = lowest_free_id(&existing);
                    insert_group(tx, owner, id, name).await?;
                    existing.push(Group {
                        id,
                        name: name.clone(),
                    });
                    let serial = bump_serial(tx, owner.as_str()).await?;
                    changes.push(GroupChange::Created {
                        serial,
                        id,
                        name: name.clone(),
                    });
                    id
                }
            };
            if !target.contains(&id) {
                target.push(id);
            }
        }
        let current = memberships_of(tx, owner, contact).await?;
        // Group 0 stands for "no group on the other network"; one joined from MSN stays.
        if current.contains(&0) && !target.contains(&0) {
            target.push(0);
        }
        target.sort_unstable();
        let shown = |ids: &[u32]| {
            if ids.is_empty() {
                vec![0]
            } else {
                ids.to_vec()
            }
        };
        let (before, after) = (shown(&current), shown(&target));
        if before == after {
            continue;
        }
        execute(
            tx,
            "DELETE FROM group_members WHERE owner = $1 AND contact = $2",
            &[&owner.as_str(), &contact.as_str()],
        )
        .await?;
        for id in &target {
            insert_member(tx, owner, contact, *id).await?;
        }
        let name = forward_name(tx, owner, contact).await?;
        for id in after.iter().filter(|id| !before.contains(id)) {
            let serial = bump_serial(tx, owner.as_str()).await?;
            changes.push(GroupChange::Joined {
                serial,
                contact: contact.clone(),
                name: name.clone(),
                id: *id,
            });
        }
        for id in before.iter().filter(|id| !after.contains(id)) {
            let serial = bump_serial(tx, owner.as_str()).await?;
            changes.push(GroupChange::Left {
                serial,
                contact: contact.clone(),
                id: *id,
            });
        }
    }
    Ok(changes)
}

/// Takes an FL contact out of one group; it stays on the FL and on the other's RL.
pub(super) async fn remove_from_group(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
    id: u32,
) -> Result<u32, StoreError> {
    account(tx, owner).await?;
    if !groups(tx, owner).await?.iter().any(|g| g.id == id) {
        return Err(StoreError::NoSuchGroup);
    }
    if !on_forward_list(tx, owner, contact).await? {
        return Err(StoreError::NotOnList);
    }
    let current = memberships_of(tx, owner, contact).await?;
    let effective = if current.is_empty() { vec![0] } else { current };
    if !effective.contains(&id) {
        return Err(StoreError::NotInGroup);
    }
    execute(
        tx,
        "DELETE FROM group_members WHERE owner = $1 AND contact = $2 AND group_id = $3",
        &[&owner.as_str(), &contact.as_str(), &i64::from(id)],
    )
    .await?;
    bump_serial(tx, owner.as_str()).await
}

/// Sets or clears one of the account's phone properties, moving its serial and those of the
/// watchers it lets see them.
pub(super) async fn set_phone(
    tx: &Tx<'_>,
    owner: &UserHandle,
    key: PhoneKey,
    value: Option<&FriendlyName>,
) -> Result<PhoneChange, StoreError> {
    account(tx, owner).await?;
    match value {
        Some(v) => {
            execute(
                tx,
                "INSERT INTO phones (owner, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (owner, key) DO UPDATE SET value = excluded.value",
                &[&owner.as_str(), &key.code(), &v.as_str()],
            )
            .await?
        }
        None => {
            execute(
                tx,
                "DELETE FROM phones WHERE owner = $1 AND key = $2",
                &[&owner.as_str(), &key.code()],
            )
            .await?
        }
    };
    let serial = bump_serial(tx, owner.as_str()).await?;
    let mut watchers = Vec::new();
    for watcher in forward_holders(tx, owner).await? {
        if &watcher != owner && permission(tx, owner, &watcher).await?.allows() {
            let s = bump_serial(tx, watcher.as_str()).await?;
            watchers.push((watcher, s));
        }
    }
    Ok(PhoneChange { serial, watchers })
}

pub(super) async fn account_phones(
    tx: &Tx<'_>,
    owner: &UserHandle,
) -> Result<Vec<(PhoneKey, FriendlyName)>, StoreError> {
    Ok(tokio::try_join!(account(tx, owner), phones(tx, owner))?.1)
}

/// An account's groups, group 0 first.
pub(super) async fn groups(tx: &Tx<'_>, owner: &UserHandle) -> Result<Vec<Group>, StoreError> {
    let mut out = rows(
        tx,
        "SELECT id, name FROM contact_groups WHERE owner = $1 ORDER BY id",
        &[&owner.as_str()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Group {
            id: group_id(r.try_get(0)?)?,
            name: parse_name(r.try_get(1)?)?,
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    if out.first().is_none_or(|g| g.id != 0) {
        out.insert(
            0,
            Group {
                id: 0,
                name: parse_name(DEFAULT_GROUP_NAME)?,
            },
        );
    }
    Ok(out)
}

/// The stored groups of each FL contact that is in any (others are in group 0 only).
pub(super) async fn memberships(
    tx: &Tx<'_>,
    owner: &UserHandle,
) -> Result<BTreeMap<UserHandle, Vec<u32>>, StoreError> {
    let mut out: BTreeMap<UserHandle, Vec<u32>> = BTreeMap::new();
    for r in rows(
        tx,
        "SELECT contact, group_id FROM group_members WHERE owner = $1 ORDER BY contact, group_id",
        &[&owner.as_str()],
    )
    .await?
    {
        out.entry(parse_handle(r.try_get(0)?)?)
            .or_default()
            .push(group_id(r.try_get(1)?)?);
    }
    Ok(out)
}

/// The phone properties of each FL contact that lets the owner see it, for `BPR` in `SYN`.
///
/// One statement, not one per contact as on SQLite: each is a round trip here, and a login's
/// SYN would otherwise cost a few per contact. The condition is `Permission::allows` of the
/// contact's settings towards the owner: not on its BL, and BLP AL or on its AL.
pub(super) async fn contact_phones(
    tx: &Tx<'_>,
    owner: &UserHandle,
) -> Result<BTreeMap<UserHandle, Vec<(PhoneKey, FriendlyName)>>, StoreError> {
    let found = rows(
        tx,
        "SELECT p.owner, p.key, p.value
         FROM list_entries f
         JOIN accounts c ON c.handle = f.contact
         JOIN phones p ON p.owner = f.contact
         WHERE f.owner = $1 AND f.list = 'FL'
           AND NOT EXISTS (SELECT 1 FROM list_entries x
                           WHERE x.owner = f.contact AND x.list = 'BL' AND x.contact = $1)
           AND (c.blp = 'AL' OR EXISTS (SELECT 1 FROM list_entries x
                           WHERE x.owner = f.contact AND x.list = 'AL' AND x.contact = $1))",
        &[&owner.as_str()],
    )
    .await?;
    let mut out: BTreeMap<UserHandle, Vec<(PhoneKey, FriendlyName)>> = BTreeMap::new();
    for r in found {
        let key: &str = r.try_get(1)?;
        let key = key
            .parse::<PhoneKey>()
            .map_err(|_| StoreError::Corrupt(format!("phone key {key:?}")))?;
        out.entry(parse_handle(r.try_get(0)?)?)
            .or_default()
            .push((key, parse_name(r.try_get(2)?)?));
    }
    for set in out.values_mut() {
        set.sort_by_key(|(k, _)| *k);
    }
    Ok(out)
}

pub(super) async fn phones(
    tx: &Tx<'_>,
    owner: &UserHandle,
) -> Result<Vec<(PhoneKey, FriendlyName)>, StoreError> {
    let mut out = rows(
        tx,
        "SELECT key, value FROM phones WHERE owner = $1",
        &[&owner.as_str()],
    )
    .await?
    .iter()
    .map(|r| {
        let key: &str = r.try_get(0)?;
        let key = key
            .parse::<PhoneKey>()
            .map_err(|_| StoreError::Corrupt(format!("phone key {key:?}")))?;
        Ok((key, parse_name(r.try_get(1)?)?))
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    out.sort_by_key(|(k, _)| *k);
    Ok(out)
}

/// A contact's stored groups (empty: group 0 only).
pub(super) async fn memberships_of(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
) -> Result<Vec<u32>, StoreError> {
    rows(
        tx,
        "SELECT group_id FROM group_members WHERE owner = $1 AND contact = $2 ORDER BY group_id",
        &[&owner.as_str(), &contact.as_str()],
    )
    .await?
    .iter()
    .map(|r| group_id(r.try_get(0)?))
    .collect()
}

fn group_id(stored: i64) -> Result<u32, StoreError> {
    u32::try_from(stored).map_err(|_| StoreError::Corrupt(format!("group id {stored}")))
}

async fn insert_group(
    tx: &Tx<'_>,
    owner: &UserHandle,
    id: u32,
    name: &FriendlyName,
) -> Result<(), StoreError> {
    execute(
        tx,
        "INSERT INTO contact_groups (owner, id, name) VALUES ($1, $2, $3)",
        &[&owner.as_str(), &i64::from(id), &name.as_str()],
    )
    .await?;
    Ok(())
}

async fn on_forward_list(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
) -> Result<bool, StoreError> {
    exists(
        tx,
        "SELECT 1 FROM list_entries WHERE owner = $1 AND list = 'FL' AND contact = $2",
        &[&owner.as_str(), &contact.as_str()],
    )
    .await
}

async fn forward_name(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
) -> Result<FriendlyName, StoreError> {
    let found = row(
        tx,
        "SELECT name FROM list_entries WHERE owner = $1 AND list = 'FL' AND contact = $2",
        &[&owner.as_str(), &contact.as_str()],
    )
    .await?
    .ok_or(StoreError::NotOnList)?;
    parse_name(found.try_get(0)?)
}

async fn insert_member(
    tx: &Tx<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
    id: u32,
) -> Result<(), StoreError> {
    execute(
        tx,
        "INSERT INTO group_members (owner, contact, group_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&owner.as_str(), &contact.as_str(), &i64::from(id)],
    )
    .await?;
    Ok(())
}

/// Everyone with `owner` on their FL.
async fn forward_holders(tx: &Tx<'_>, owner: &UserHandle) -> Result<Vec<UserHandle>, StoreError> {
    rows(
        tx,
        "SELECT owner FROM list_entries WHERE list = $1 AND contact = $2 ORDER BY id",
        &[&ListKind::Forward.code(), &owner.as_str()],
    )
    .await?
    .iter()
    .map(|r| parse_handle(r.try_get(0)?))
    .collect()
}
