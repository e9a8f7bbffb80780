//! The four lists, their serial, privacy checks and the mirrors of bridged accounts' lists.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::accounts::backend_link;
use super::groups;
use super::rows::{
    account, bump_serial, has_entry, list_code, parse_blp, parse_handle, parse_name, permission,
    watchers,
};
use super::Database;
use crate::protocol::{FriendlyName, ListKind, UserHandle};
use crate::store::{
    Entry, ListChange, MirrorChange, MirrorEdit, Permission, Snapshot, StoreError, MAX_LIST_ENTRIES,
};

impl Database {
    /// The settings and all four lists; read within [`Database::read`], so they match the
    /// serial.
    pub fn snapshot(&self, handle: &UserHandle) -> Result<Snapshot, StoreError> {
        let account = account(&self.conn, handle)?;
        let mut lists = Vec::with_capacity(4);
        for kind in ListKind::SYNC_ORDER {
            lists.push((kind, entries(&self.conn, handle, kind)?));
        }
        let forward: Vec<UserHandle> = lists
            .iter()
            .filter(|(kind, _)| *kind == ListKind::Forward)
            .flat_map(|(_, entries)| entries.iter().map(|e| e.handle.clone()))
            .collect();
        let snapshot = Snapshot {
            account,
            lists,
            groups: groups::groups(&self.conn, handle)?,
            memberships: groups::memberships(&self.conn, handle)?,
            phones: groups::phones(&self.conn, handle)?,
            contact_phones: groups::contact_phones(&self.conn, handle, &forward)?,
        };
        Ok(snapshot)
    }

    /// One list and the serial it belongs to (read within [`Database::read`]).
    pub fn list(
        &self,
        handle: &UserHandle,
        kind: ListKind,
    ) -> Result<(u32, Vec<Entry>), StoreError> {
        let serial = account(&self.conn, handle)?.serial;
        let list = entries(&self.conn, handle, kind)?;
        Ok((serial, list))
    }

    /// Renames a contact on the owner's FL.
    pub fn rename_contact(
        &mut self,
        owner: &UserHandle,
        contact: &UserHandle,
        name: &FriendlyName,
    ) -> Result<u32, StoreError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "UPDATE list_entries SET name = ?3 WHERE owner = ?1 AND list = 'FL' AND contact = ?2",
            params![owner.as_str(), contact.as_str(), name.as_str()],
        )?;
        if n == 0 {
            return Err(StoreError::NotOnList);
        }
        let serial = bump_serial(&tx, owner.as_str())?;
        tx.commit()?;
        Ok(serial)
    }

    /// Adds `contact` to one of the owner's FL, AL or BL. Adding to the FL also puts the owner
    /// on the contact's RL, under the owner's current friendly name.
    pub fn add_entry(
        &mut self,
        owner: &UserHandle,
        kind: ListKind,
        contact: &UserHandle,
        name: &FriendlyName,
    ) -> Result<ListChange, StoreError> {
        if kind == ListKind::Reverse {
            return Err(StoreError::ReverseListIsServerOnly);
        }
        let tx = self.conn.transaction()?;
        let owner_account = account(&tx, owner)?;
        account(&tx, contact)?;
        // A bridged account's contacts are its backend's; it can't be put on local lists.
        if contact != owner && backend_link(&tx, contact)?.is_some() {
            return Err(StoreError::NoSuchAccount);
        }
        if has_entry(&tx, owner, kind, contact)? {
            return Err(StoreError::AlreadyThere);
        }
        if let Some(opposite) = kind.opposite() {
            if has_entry(&tx, owner, opposite, contact)? {
                return Err(StoreError::InOppositeList);
            }
        }
        if count_entries(&tx, owner, kind)? >= MAX_LIST_ENTRIES {
            return Err(StoreError::ListFull);
        }
        let before = privacy_before(&tx, owner, kind, contact)?;
        insert_entry(&tx, owner, kind, contact, name)?;
        let mut serial = bump_serial(&tx, owner.as_str())?;
        let mut reverse_serial = None;
        if kind == ListKind::Forward && !has_entry(&tx, contact, ListKind::Reverse, owner)? {
            insert_entry(&tx, contact, ListKind::Reverse, owner, &owner_account.name)?;
            let s = bump_serial(&tx, contact.as_str())?;
            if contact == owner {
                serial = s;
            }
            reverse_serial = Some(s);
        }
        let privacy = privacy_after(&tx, owner, contact, before)?;
        tx.commit()?;
        Ok(ListChange {
            serial,
            reverse_serial,
            privacy,
        })
    }

    /// Removes `contact` from one of the owner's FL, AL or BL (and the owner from the
    /// contact's RL when it was the FL).
    pub fn remove_entry(
        &mut self,
        owner: &UserHandle,
        kind: ListKind,
        contact: &UserHandle,
    ) -> Result<ListChange, StoreError> {
        if kind == ListKind::Reverse {
            return Err(StoreError::ReverseListIsServerOnly);
        }
        let tx = self.conn.transaction()?;
        account(&tx, owner)?;
        let before = privacy_before(&tx, owner, kind, contact)?;
        let n = tx.execute(
            "DELETE FROM list_entries WHERE owner = ?1 AND list = ?2 AND contact = ?3",
            params![owner.as_str(), list_code(kind), contact.as_str()],
        )?;
        if n == 0 {
            return Err(StoreError::NotOnList);
        }
        let mut serial = bump_serial(&tx, owner.as_str())?;
        let mut reverse_serial = None;
        if kind == ListKind::Forward {
            let removed = tx.execute(
                "DELETE FROM list_entries WHERE owner = ?1 AND list = 'RL' AND contact = ?2",
                params![contact.as_str(), owner.as_str()],
            )?;
            if removed > 0 {
                let s = bump_serial(&tx, contact.as_str())?;
                if contact == owner {
                    serial = s;
                }
                reverse_serial = Some(s);
            }
        }
        let privacy = privacy_after(&tx, owner, contact, before)?;
        tx.commit()?;
        Ok(ListChange {
            serial,
            reverse_serial,
            privacy,
        })
    }

    /// One entry of one of `owner`'s lists.
    pub fn entry(
        &self,
        owner: &UserHandle,
        kind: ListKind,
        contact: &UserHandle,
    ) -> Result<Option<Entry>, StoreError> {
        let name: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT name FROM list_entries WHERE owner = ?1 AND list = ?2 AND contact = ?3",
            )?
            .query_row(
                params![owner.as_str(), list_code(kind), contact.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        name.map(|n| {
            Ok(Entry {
                handle: contact.clone(),
                name: parse_name(&n)?,
            })
        })
        .transpose()
    }

    /// The lists of `owner`'s that `contact` is on, in SYN order.
    pub fn lists_of(
        &self,
        owner: &UserHandle,
        contact: &UserHandle,
    ) -> Result<Vec<ListKind>, StoreError> {
        let mut lists = Vec::new();
        for kind in ListKind::SYNC_ORDER {
            if has_entry(&self.conn, owner, kind, contact)? {
                lists.push(kind);
            }
        }
        Ok(lists)
    }

    /// Whether `contact` is on one of `owner`'s lists.
    pub fn is_on_list(
        &self,
        owner: &UserHandle,
        kind: ListKind,
        contact: &UserHandle,
    ) -> Result<bool, StoreError> {
        has_entry(&self.conn, owner, kind, contact)
    }

    /// Makes a bridged account's stored lists show what its backend says about one contact:
    /// on exactly `lists`, under `name`. Each addition or removal moves the serial on and is
    /// returned, so the client can be told with `ADD 0`/`REM 0`.
    pub fn mirror_contact(
        &mut self,
        owner: &UserHandle,
        contact: &UserHandle,
        name: &FriendlyName,
        lists: &[ListKind],
    ) -> Result<Vec<MirrorChange>, StoreError> {
        let tx = self.conn.transaction()?;
        account(&tx, owner)?;
        let changes = mirror_one(&tx, owner, contact, name, lists)?;
        tx.commit()?;
        Ok(changes)
    }

    /// Makes a bridged account's stored lists match its backend's whole contact list.
    pub fn mirror_all(
        &mut self,
        owner: &UserHandle,
        contacts: &[(UserHandle, FriendlyName, Vec<ListKind>)],
    ) -> Result<Vec<MirrorChange>, StoreError> {
        let tx = self.conn.transaction()?;
        account(&tx, owner)?;
        let mut changes = Vec::new();
        let wanted: std::collections::HashSet<&UserHandle> =
            contacts.iter().map(|(h, _, _)| h).collect();
        let stored: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT DISTINCT contact FROM list_entries WHERE owner = ?1")?;
            let rows = stmt.query_map([owner.as_str()], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for contact in stored {
            let contact = parse_handle(&contact)?;
            if !wanted.contains(&contact) {
                let name = FriendlyName::from_handle(&contact);
                changes.extend(mirror_one(&tx, owner, &contact, &name, &[])?);
            }
        }
        for (contact, name, lists) in contacts {
            changes.extend(mirror_one(&tx, owner, contact, name, lists)?);
        }
        tx.commit()?;
        Ok(changes)
    }

    /// Puts a contact of a bridged account on the lists in `add` and takes it off those in
    /// `remove`, leaving the others as stored, after the backend did the same. The lists are
    /// read in the same transaction, so changes the backend reported meanwhile stay. Returns
    /// the changes and the owner's serial after them.
    pub fn mirror_edit(
        &mut self,
        owner: &UserHandle,
        contact: &UserHandle,
        name: &FriendlyName,
        add: &[ListKind],
        remove: &[ListKind],
    ) -> Result<MirrorEdit, StoreError> {
        let tx = self.conn.transaction()?;
        account(&tx, owner)?;
        let mut lists = Vec::new();
        for kind in ListKind::SYNC_ORDER {
            let keep = has_entry(&tx, owner, kind, contact)? && !remove.contains(&kind);
            if keep || add.contains(&kind) {
                lists.push(kind);
            }
        }
        let changes = mirror_one(&tx, owner, contact, name, &lists)?;
        let serial = account(&tx, owner)?.serial;
        tx.commit()?;
        Ok(MirrorEdit { changes, serial })
    }

    /// How `owner`'s privacy settings treat `other`.
    pub fn permission(
        &self,
        owner: &UserHandle,
        other: &UserHandle,
    ) -> Result<Permission, StoreError> {
        permission(&self.conn, owner, other)
    }

    /// The contacts on `handle`'s FL, each with whether that contact lets `handle` see it.
    pub fn forward_contacts(
        &self,
        handle: &UserHandle,
    ) -> Result<Vec<(UserHandle, bool)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.contact, a.blp,
                    EXISTS (SELECT 1 FROM list_entries x WHERE x.owner = f.contact AND x.list = 'AL' AND x.contact = ?1),
                    EXISTS (SELECT 1 FROM list_entries x WHERE x.owner = f.contact AND x.list = 'BL' AND x.contact = ?1)
             FROM list_entries f JOIN accounts a ON a.handle = f.contact
             WHERE f.owner = ?1 AND f.list = 'FL' ORDER BY f.id",
        )?;
        let rows = stmt.query_map([handle.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (contact, blp, in_al, in_bl) = row?;
            let permission = Permission {
                blp: parse_blp(&blp)?,
                in_allow_list: in_al,
                in_block_list: in_bl,
            };
            Ok((parse_handle(&contact)?, permission.allows()))
        })
        .collect()
    }

    /// Everyone who has `handle` on their FL (its RL), each with how `handle`'s settings
    /// treat them.
    pub fn watchers(
        &self,
        handle: &UserHandle,
    ) -> Result<Vec<(UserHandle, Permission)>, StoreError> {
        watchers(&self.conn, handle)
    }
}

/// For an AL or BL change concerning someone with the owner on their FL (on the owner's RL):
/// how the owner's settings treat that contact before the change.
fn privacy_before(
    conn: &Connection,
    owner: &UserHandle,
    kind: ListKind,
    contact: &UserHandle,
) -> Result<Option<Permission>, StoreError> {
    let matters = matches!(kind, ListKind::Allow | ListKind::Block)
        && has_entry(conn, owner, ListKind::Reverse, contact)?;
    if !matters {
        return Ok(None);
    }
    Ok(Some(permission(conn, owner, contact)?))
}

fn privacy_after(
    conn: &Connection,
    owner: &UserHandle,
    contact: &UserHandle,
    before: Option<Permission>,
) -> Result<Option<(Permission, Permission)>, StoreError> {
    match before {
        Some(before) => Ok(Some((before, permission(conn, owner, contact)?))),
        None => Ok(None),
    }
}

fn entries(
    conn: &Connection,
    owner: &UserHandle,
    kind: ListKind,
) -> Result<Vec<Entry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT contact, name FROM list_entries WHERE owner = ?1 AND list = ?2 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![owner.as_str(), list_code(kind)], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    rows.map(|r| {
        let (h, n) = r?;
        Ok(Entry {
            handle: parse_handle(&h)?,
            name: parse_name(&n)?,
        })
    })
    .collect()
}

fn count_entries(
    conn: &Connection,
    owner: &UserHandle,
    kind: ListKind,
) -> Result<usize, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM list_entries WHERE owner = ?1 AND list = ?2")?
        .query_row(params![owner.as_str(), list_code(kind)], |r| r.get(0))?;
    Ok(n as usize)
}

fn insert_entry(
    tx: &Transaction<'_>,
    owner: &UserHandle,
    kind: ListKind,
    contact: &UserHandle,
    name: &FriendlyName,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO list_entries (owner, list, contact, name) VALUES (?1, ?2, ?3, ?4)",
        params![
            owner.as_str(),
            list_code(kind),
            contact.as_str(),
            name.as_str()
        ],
    )?;
    Ok(())
}

fn mirror_one(
    tx: &Transaction<'_>,
    owner: &UserHandle,
    contact: &UserHandle,
    name: &FriendlyName,
    lists: &[ListKind],
) -> Result<Vec<MirrorChange>, StoreError> {
    let mut changes = Vec::new();
    for kind in ListKind::SYNC_ORDER {
        let present = has_entry(tx, owner, kind, contact)?;
        let wanted = lists.contains(&kind);
        if wanted && !present {
            insert_entry(tx, owner, kind, contact, name)?;
        } else if !wanted && present {
            tx.execute(
                "DELETE FROM list_entries WHERE owner = ?1 AND list = ?2 AND contact = ?3",
                params![owner.as_str(), list_code(kind), contact.as_str()],
            )?;
        } else {
            if wanted {
                // Keep the backend's name; a rename alone moves the serial so SYN sends it.
                let renamed = tx.execute(
                    "UPDATE list_entries SET name = ?4 WHERE owner = ?1 AND list = ?2 AND contact = ?3 AND name != ?4",
                    params![owner.as_str(), list_code(kind), contact.as_str(), name.as_str()],
                )?;
                if renamed > 0 {
                    bump_serial(tx, owner.as_str())?;
                }
            }
            continue;
        }
        let serial = bump_serial(tx, owner.as_str())?;
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
