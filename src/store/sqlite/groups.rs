//! MSNP7's contact groups and MSNP5's phone numbers.
//!
//! Groups: `contact_groups` holds an account's groups by id; group 0 exists for every account
//! without a row (its name is `~` until renamed, when it gets one). `group_members` holds which
//! groups an FL contact is in; a contact with no row is in group 0 only, so an FL written by
//! an MSNP2 client, or by a database from before groups, is all in group 0. A trigger drops a
//! contact's memberships when it leaves the FL, however that happens.
//!
//! Phones: `phones` holds each account's set properties; unset ones have no row.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, Transaction};

use super::rows::{account, bump_serial, parse_handle, parse_name, permission};
use super::Database;
use crate::protocol::{FriendlyName, ListKind, PhoneKey, UserHandle, MAX_GROUPS};
use crate::store::values::{lowest_free_id, same_name, DEFAULT_GROUP_NAME};
use crate::store::{Group, GroupChange, PhoneChange, StoreError};

impl Database {
    /// The account's groups, by id (group 0 first).
    pub fn groups(&self, owner: &UserHandle) -> Result<Vec<Group>, StoreError> {
        account(&self.conn, owner)?;
        groups(&self.conn, owner)
    }

    /// Creates a group under the lowest free id; returns the new serial and the id.
    pub fn add_group(
        &mut self,
        owner: &UserHandle,
        name: &FriendlyName,
    ) -> Result<(u32, u32), StoreError> {
        let tx = self.conn.transaction()?;
        account(&tx, owner)?;
        let existing = groups(&tx, owner)?;
        if existing.iter().any(|g| same_name(&g.name, name)) {
            return Err(StoreError::GroupExists);
        }
        if existing.len() >= MAX_GROUPS {
            return Err(StoreError::TooManyGroups);
        }
        let id = lowest_free_id(&existing);
        tx.execute(
            "INSERT INTO contact_groups (owner, id, name) VALUES (?1, ?2, ?3)",
            params![owner.as_str(), id, name.as_str()],
        )?;
        let serial = bump_serial(&tx, owner.as_str())?;
        tx.commit()?;
        Ok((serial, id))
    }

    /// Renames a group (group 0 too); returns the new serial.
    pub fn rename_group(
        &mut self,
        owner: &UserHandle,
        id: u32,
        name: &FriendlyName,
    ) -> Result<u32, StoreError> {
        let tx = self.conn.transaction()?;
        account(&tx, owner)?;
        let existing = groups(&tx, owner)?;
        if !existing.iter().any(|g| g.id == id) {
            return Err(StoreError::NoSuchGroup);
        }
        if existing
            .iter()
            .any(|g| g.id != id && same_name(&g.name, name))
        {
            return Err(StoreError::GroupExists);
        }
        tx.execute(
            "INSERT INTO contact_groups (owner, id, name) VALUES (?1, ?2, ?3)
             ON CONFLICT (owner, id) DO UPDATE SET name = excluded.name",
            params![owner.as_str(), id, name.as_str()],
        )?;
        let serial = bump_serial(&tx, owner.as_str())?;
        tx.commit()?;
        Ok(serial)
    }

    /// Removes a group; its contacts stay on the FL, in their other groups (or group 0).
    pub fn remove_group(&mut self, owner: &UserHandle, id: u32) -> Result<u32, StoreError> {
        if id == 0 {
            return Err(StoreError::GroupZero);
        }
        let tx = self.conn.transaction()?;
        account(&tx, owner)?;
        let n = tx.execute(
            "DELETE FROM contact_groups WHERE owner = ?1 AND id = ?2",
            params![owner.as_str(), id],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchGroup);
        }
        tx.execute(
            "DELETE FROM group_members WHERE owner = ?1 AND group_id = ?2",
            params![owner.as_str(), id],
        )?;
        let serial = bump_serial(&tx, owner.as_str())?;
        tx.commit()?;
        Ok(serial)
    }

    /// Puts an FL contact in a group. With `only`, a contact still in no group (group 0 by
    /// default, as right after its ADD) is put in this group instead; otherwise it keeps
    /// group 0 too.
    pub fn add_to_group(
        &mut self,
        owner: &UserHandle,
        contact: &UserHandle,
        id: u32,
        only: bool,
    ) -> Result<u32, StoreError> {
        let tx = self.conn.transaction()?;
        account(&tx, owner)?;
        if !groups(&tx, owner)?.iter().any(|g| g.id == id) {
            return Err(StoreError::NoSuchGroup);
        }
        if !on_forward_list(&tx, owner, contact)? {
            return Err(StoreError::NotOnList);
        }
        let mut current = memberships_of(&tx, owner, contact)?;
        if current.is_empty() && !only {
            current.push(0);
            insert_member(&tx, owner, contact, 0)?;
        }
        if current.contains(&id) {
            return Err(StoreError::AlreadyThere);
        }
        insert_member(&tx, owner, contact, id)?;
        let serial = bump_serial(&tx, owner.as_str())?;
        tx.commit()?;
        Ok(serial)
    }

    /// A contact's stored groups (empty: group 0 only).
    pub fn groups_of(
        &self,
        owner: &UserHandle,
        contact: &UserHandle,
    ) -> Result<Vec<u32>, StoreError> {
        memberships_of(&self.conn, owner, contact)
    }

    /// Makes the groups of the listed FL contacts those their backend names (see
    /// `Store::mirror_groups`).
    pub fn mirror_groups(
        &mut self,
        owner: &UserHandle,
        contacts: &[(UserHandle, Vec<FriendlyName>)],
    ) -> Result<Vec<GroupChange>, StoreError> {
        let tx = self.conn.transaction()?;
        account(&tx, owner)?;
        let mut existing = groups(&tx, owner)?;
        let mut changes = Vec::new();
        for (contact, names) in contacts {
            if !on_forward_list(&tx, owner, contact)? {
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
                        tx.execute(
                            "INSERT INTO contact_groups (owner, id, name) VALUES (?1, ?2, ?3)",
                            params![owner.as_str(), id, name.as_str()],
                        )?;
                        existing.push(Group {
                            id,
                            name: name.clone(),
                        });
                        let serial = bump_serial(&tx, owner.as_str())?;
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
            let current = memberships_of(&tx, owner, contact)?;
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
            tx.execute(
                "DELETE FROM group_members WHERE owner = ?1 AND contact = ?2",
                params![owner.as_str(), contact.as_str()],
            )?;
            for id in &target {
                insert_member(&tx, owner, contact, *id)?;
            }
            let name = forward_name(&tx, owner, contact)?;
            for id in after.iter().filter(|id| !before.contains(id)) {
                let serial = bump_serial(&tx, owner.as_str())?;
                changes.push(GroupChange::Joined {
                    serial,
                    contact: contact.clone(),
                    name: name.clone(),
                    id: *id,
                });
            }
            for id in before.iter().filter(|id| !after.contains(id)) {
                let serial = bump_serial(&tx, owner.as_str())?;
                changes.push(GroupChange::Left {
                    serial,
                    contact: contact.clone(),
                    id: *id,
                });
            }
        }
        tx.commit()?;
        Ok(changes)
    }

    /// Takes an FL contact out of one group; it stays on the FL (in group 0 when it was in
    /// no other), and its RL entry is left alone.
    pub fn remove_from_group(
        &mut self,
        owner: &UserHandle,
        contact: &UserHandle,
        id: u32,
    ) -> Result<u32, StoreError> {
        let tx = self.conn.transaction()?;
        account(&tx, owner)?;
        if !groups(&tx, owner)?.iter().any(|g| g.id == id) {
            return Err(StoreError::NoSuchGroup);
        }
        if !on_forward_list(&tx, owner, contact)? {
            return Err(StoreError::NotOnList);
        }
        let current = memberships_of(&tx, owner, contact)?;
        let effective = if current.is_empty() { vec![0] } else { current };
        if !effective.contains(&id) {
            return Err(StoreError::NotInGroup);
        }
        tx.execute(
            "DELETE FROM group_members WHERE owner = ?1 AND contact = ?2 AND group_id = ?3",
            params![owner.as_str(), contact.as_str(), id],
        )?;
        let serial = bump_serial(&tx, owner.as_str())?;
        tx.commit()?;
        Ok(serial)
    }

    /// Sets (`Some`) or clears (`None`) one of the account's phone properties. The account's
    /// serial moves on, and so does that of each watcher the account lets see it (their `SYN`
    /// shows the property), who are returned with their new serial.
    pub fn set_phone(
        &mut self,
        owner: &UserHandle,
        key: PhoneKey,
        value: Option<&FriendlyName>,
    ) -> Result<PhoneChange, StoreError> {
        let tx = self.conn.transaction()?;
        account(&tx, owner)?;
        match value {
            Some(v) => tx.execute(
                "INSERT INTO phones (owner, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (owner, key) DO UPDATE SET value = excluded.value",
                params![owner.as_str(), key.code(), v.as_str()],
            )?,
            None => tx.execute(
                "DELETE FROM phones WHERE owner = ?1 AND key = ?2",
                params![owner.as_str(), key.code()],
            )?,
        };
        let serial = bump_serial(&tx, owner.as_str())?;
        let mut watchers = Vec::new();
        for watcher in forward_holders(&tx, owner)? {
            if &watcher != owner && permission(&tx, owner, &watcher)?.allows() {
                let s = bump_serial(&tx, watcher.as_str())?;
                watchers.push((watcher, s));
            }
        }
        tx.commit()?;
        Ok(PhoneChange { serial, watchers })
    }

    /// The account's own phone properties (set ones only).
    pub fn phones(&self, owner: &UserHandle) -> Result<Vec<(PhoneKey, FriendlyName)>, StoreError> {
        account(&self.conn, owner)?;
        phones(&self.conn, owner)
    }
}

/// An account's groups, group 0 first.
pub(super) fn groups(conn: &Connection, owner: &UserHandle) -> Result<Vec<Group>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT id, name FROM contact_groups WHERE owner = ?1 ORDER BY id")?;
    let rows = stmt.query_map([owner.as_str()], |r| {
        Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name) = row?;
        out.push(Group {
            id,
            name: parse_name(&name)?,
        });
    }
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
pub(super) fn memberships(
    conn: &Connection,
    owner: &UserHandle,
) -> Result<BTreeMap<UserHandle, Vec<u32>>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT contact, group_id FROM group_members WHERE owner = ?1 ORDER BY contact, group_id",
    )?;
    let rows = stmt.query_map([owner.as_str()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
    })?;
    let mut out: BTreeMap<UserHandle, Vec<u32>> = BTreeMap::new();
    for row in rows {
        let (contact, id) = row?;
        out.entry(parse_handle(&contact)?).or_default().push(id);
    }
    Ok(out)
}

/// The phone properties of each FL contact that lets the owner see it, for `BPR` in `SYN`.
pub(super) fn contact_phones(
    conn: &Connection,
    owner: &UserHandle,
    forward: &[UserHandle],
) -> Result<BTreeMap<UserHandle, Vec<(PhoneKey, FriendlyName)>>, StoreError> {
    let mut out = BTreeMap::new();
    for contact in forward {
        let known = account(conn, contact).optional_account()?;
        if known && permission(conn, contact, owner)?.allows() {
            let set = phones(conn, contact)?;
            if !set.is_empty() {
                out.insert(contact.clone(), set);
            }
        }
    }
    Ok(out)
}

pub(super) fn phones(
    conn: &Connection,
    owner: &UserHandle,
) -> Result<Vec<(PhoneKey, FriendlyName)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT key, value FROM phones WHERE owner = ?1")?;
    let rows = stmt.query_map([owner.as_str()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (key, value) = row?;
        let key = key
            .parse::<PhoneKey>()
            .map_err(|_| StoreError::Corrupt(format!("phone key {key:?}")))?;
        out.push((key, parse_name(&value)?));
    }
    out.sort_by_key(|(k, _)| *k);
    Ok(out)
}

/// Whether a lookup found the account: `NoSuchAccount` becomes `false`.
trait OptionalAccount {
    fn optional_account(self) -> Result<bool, StoreError>;
}

impl<T> OptionalAccount for Result<T, StoreError> {
    fn optional_account(self) -> Result<bool, StoreError> {
        match self {
            Ok(_) => Ok(true),
            Err(StoreError::NoSuchAccount) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn on_forward_list(
    tx: &Transaction<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached(
            "SELECT 1 FROM list_entries WHERE owner = ?1 AND list = 'FL' AND contact = ?2",
        )?
        .exists(params![owner.as_str(), contact.as_str()])?)
}

fn forward_name(
    tx: &Transaction<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
) -> Result<FriendlyName, StoreError> {
    let name: String = tx
        .prepare_cached(
            "SELECT name FROM list_entries WHERE owner = ?1 AND list = 'FL' AND contact = ?2",
        )?
        .query_row(params![owner.as_str(), contact.as_str()], |r| r.get(0))?;
    parse_name(&name)
}

fn memberships_of(
    tx: &Connection,
    owner: &UserHandle,
    contact: &UserHandle,
) -> Result<Vec<u32>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT group_id FROM group_members WHERE owner = ?1 AND contact = ?2 ORDER BY group_id",
    )?;
    let rows = stmt.query_map(params![owner.as_str(), contact.as_str()], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn insert_member(
    tx: &Transaction<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
    id: u32,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT OR IGNORE INTO group_members (owner, contact, group_id) VALUES (?1, ?2, ?3)",
        params![owner.as_str(), contact.as_str(), id],
    )?;
    Ok(())
}

/// Everyone with `owner` on their FL.
fn forward_holders(
    tx: &Transaction<'_>,
    owner: &UserHandle,
) -> Result<Vec<UserHandle>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT owner FROM list_entries WHERE list = ?1 AND contact = ?2 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![ListKind::Forward.code(), owner.as_str()], |r| {
        r.get::<_, String>(0)
    })?;
    rows.map(|r| parse_handle(&r?)).collect()
}
