//! Row-level helpers that accounts, lists and groups all use: reading an account, parsing
//! stored values, the serial, and who may see whom. Below the three, so they need not import
//! each other in a circle.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::protocol::{ListKind, UserHandle};
pub(super) use crate::store::values::{parse_blp, parse_handle, parse_name};
use crate::store::{Account, Permission, StoreError};

pub(super) fn account(conn: &Connection, handle: &UserHandle) -> Result<Account, StoreError> {
    let row = conn
        .prepare_cached("SELECT friendly_name, gtc, blp, serial FROM accounts WHERE handle = ?1")?
        .query_row([handle.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    let (name, gtc, blp, serial) = row.ok_or(StoreError::NoSuchAccount)?;
    Ok(Account {
        handle: handle.clone(),
        name: parse_name(&name)?,
        gtc: gtc
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("gtc {gtc:?}")))?,
        blp: parse_blp(&blp)?,
        serial: serial as u32,
    })
}

/// Moves the account's serial on by one; it wraps within 1..=u32::MAX.
pub(super) fn bump_serial(tx: &Transaction<'_>, handle: &str) -> Result<u32, StoreError> {
    let serial: i64 = tx.query_row(
        "UPDATE accounts SET serial = (serial % 4294967295) + 1 WHERE handle = ?1 RETURNING serial",
        [handle],
        |r| r.get(0),
    )?;
    Ok(serial as u32)
}

pub(super) fn watchers(
    conn: &Connection,
    handle: &UserHandle,
) -> Result<Vec<(UserHandle, Permission)>, StoreError> {
    let blp = account(conn, handle)?.blp;
    let mut stmt = conn.prepare_cached(
        "SELECT r.contact,
                EXISTS (SELECT 1 FROM list_entries x WHERE x.owner = ?1 AND x.list = 'AL' AND x.contact = r.contact),
                EXISTS (SELECT 1 FROM list_entries x WHERE x.owner = ?1 AND x.list = 'BL' AND x.contact = r.contact)
         FROM list_entries r WHERE r.owner = ?1 AND r.list = 'RL' ORDER BY r.id",
    )?;
    let rows = stmt.query_map([handle.as_str()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, bool>(1)?,
            r.get::<_, bool>(2)?,
        ))
    })?;
    rows.map(|row| {
        let (watcher, in_al, in_bl) = row?;
        Ok((
            parse_handle(&watcher)?,
            Permission {
                blp,
                in_allow_list: in_al,
                in_block_list: in_bl,
            },
        ))
    })
    .collect()
}

pub(super) fn permission(
    conn: &Connection,
    owner: &UserHandle,
    other: &UserHandle,
) -> Result<Permission, StoreError> {
    let blp = account(conn, owner)?.blp;
    Ok(Permission {
        blp,
        in_allow_list: has_entry(conn, owner, ListKind::Allow, other)?,
        in_block_list: has_entry(conn, owner, ListKind::Block, other)?,
    })
}

pub(super) fn has_entry(
    conn: &Connection,
    owner: &UserHandle,
    kind: ListKind,
    contact: &UserHandle,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM list_entries WHERE owner = ?1 AND list = ?2 AND contact = ?3",
        )?
        .exists(params![owner.as_str(), list_code(kind), contact.as_str()])?)
}

pub(super) fn list_code(kind: ListKind) -> &'static str {
    kind.code()
}
