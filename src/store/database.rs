//! The SQLite database: accounts, their four lists, GTC, BLP and the list serial.
//!
//! Every method is one transaction, committed with `synchronous=FULL` before it returns, so a
//! change the server acknowledges is on disk first. Methods are synchronous; the server calls
//! them on the store thread (see [`super::Store`]), the command line calls them directly.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::password::PasswordHash;
use super::StoreError;
use crate::protocol::{BlpSetting, FriendlyName, GtcSetting, ListKind, UserHandle};

/// The most entries one list may hold; ADD past it gets error 210.
pub const MAX_LIST_ENTRIES: usize = 1000;

const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    handle TEXT PRIMARY KEY,
    friendly_name TEXT NOT NULL,
    salt TEXT NOT NULL,
    password_md5 TEXT NOT NULL,
    gtc TEXT NOT NULL DEFAULT 'A' CHECK (gtc IN ('A', 'N')),
    blp TEXT NOT NULL DEFAULT 'AL' CHECK (blp IN ('AL', 'BL')),
    serial INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS list_entries (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
    list TEXT NOT NULL CHECK (list IN ('FL', 'AL', 'BL', 'RL')),
    contact TEXT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (owner, list, contact)
);
CREATE INDEX IF NOT EXISTS list_entries_by_contact ON list_entries (contact, list);
CREATE TABLE IF NOT EXISTS backend_links (
    handle TEXT PRIMARY KEY REFERENCES accounts(handle) ON DELETE CASCADE,
    backend TEXT NOT NULL,
    account TEXT NOT NULL,
    secret BLOB NOT NULL,
    options TEXT NOT NULL DEFAULT '',
    refused_at INTEGER
);
";

/// An account's settings as SYN sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub handle: UserHandle,
    pub name: FriendlyName,
    pub gtc: GtcSetting,
    pub blp: BlpSetting,
    pub serial: u32,
}

/// One entry of a list: a handle and the friendly name stored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub handle: UserHandle,
    pub name: FriendlyName,
}

/// Everything SYN sends: the settings and the four lists in SYN order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub account: Account,
    pub lists: Vec<(ListKind, Vec<Entry>)>,
}

/// What logging in needs to know about a handle.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub password: PasswordHash,
    pub name: FriendlyName,
}

/// A list change and its consequences for the other account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListChange {
    /// The owner's new serial.
    pub serial: u32,
    /// For FL changes: the contact's new serial after its RL changed.
    pub reverse_serial: Option<u32>,
}

/// How one account's privacy settings treat another: what presence and CAL checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub blp: BlpSetting,
    pub in_allow_list: bool,
    pub in_block_list: bool,
}

impl Permission {
    /// Whether the other account may see this one's state and call it (draft section 7.6).
    pub fn allows(self) -> bool {
        !self.in_block_list && (self.blp == BlpSetting::AllowAll || self.in_allow_list)
    }

    /// The same entries judged under another BLP setting.
    pub fn with_blp(self, blp: BlpSetting) -> Permission {
        Permission { blp, ..self }
    }
}

/// An account's mapping to a backend account, as stored. The secret is sealed (see
/// [`crate::secrets`]); options are non-secret `key=value` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendLink {
    /// "xmpp" or "matrix".
    pub backend: String,
    /// The backend account: a JID, a Matrix user id.
    pub account: String,
    pub sealed_secret: Vec<u8>,
    pub options: Vec<(String, String)>,
}

impl std::fmt::Debug for BackendLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendLink")
            .field("backend", &self.backend)
            .field("account", &self.account)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn encode_options(options: &[(String, String)]) -> String {
    options.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn decode_options(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The database of one msngate instance.
pub struct Database {
    conn: Connection,
}

fn list_code(kind: ListKind) -> &'static str {
    kind.code()
}

impl Database {
    /// Opens (and if needed creates) the database file.
    pub fn open(path: &Path) -> Result<Database, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL makes a commit durable before the reply goes out, even across a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema(version));
        }
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Database { conn })
    }

    /// A random secret kept in the database, created on first use. Fake login challenges for
    /// unknown handles derive from it so they stay the same across restarts.
    pub fn server_secret(&mut self) -> Result<Vec<u8>, StoreError> {
        let tx = self.conn.transaction()?;
        let existing: Option<Vec<u8>> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'server_secret'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let secret = match existing {
            Some(s) => s,
            None => {
                let s: [u8; 32] = rand::random();
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('server_secret', ?1)",
                    [&s[..]],
                )?;
                s.to_vec()
            }
        };
        tx.commit()?;
        Ok(secret)
    }

    pub fn create_account(
        &mut self,
        handle: &UserHandle,
        name: &FriendlyName,
        password: &str,
    ) -> Result<(), StoreError> {
        let hash = PasswordHash::new(password);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let inserted = self.conn.execute(
            "INSERT INTO accounts (handle, friendly_name, salt, password_md5, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (handle) DO NOTHING",
            params![handle.as_str(), name.as_str(), hash.salt, hash.digest, now],
        )?;
        if inserted == 0 {
            return Err(StoreError::AccountExists);
        }
        Ok(())
    }

    pub fn set_password(&mut self, handle: &UserHandle, password: &str) -> Result<(), StoreError> {
        let hash = PasswordHash::new(password);
        let n = self.conn.execute(
            "UPDATE accounts SET salt = ?2, password_md5 = ?3 WHERE handle = ?1",
            params![handle.as_str(), hash.salt, hash.digest],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchAccount);
        }
        Ok(())
    }

    /// Deletes an account and takes it off every other account's lists.
    pub fn remove_account(&mut self, handle: &UserHandle) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let owners: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT DISTINCT owner FROM list_entries WHERE contact = ?1")?;
            let rows = stmt.query_map([handle.as_str()], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute(
            "DELETE FROM list_entries WHERE contact = ?1",
            [handle.as_str()],
        )?;
        let n = tx.execute("DELETE FROM accounts WHERE handle = ?1", [handle.as_str()])?;
        if n == 0 {
            return Err(StoreError::NoSuchAccount);
        }
        for owner in owners {
            if owner != handle.as_str() {
                bump_serial(&tx, &owner)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Maps an account to a backend account, replacing any earlier mapping. It takes effect
    /// at the account's next login.
    pub fn link(&mut self, handle: &UserHandle, link: &BackendLink) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        account(&tx, handle)?;
        tx.execute(
            "INSERT INTO backend_links (handle, backend, account, secret, options) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (handle) DO UPDATE SET backend = ?2, account = ?3, secret = ?4, options = ?5",
            params![handle.as_str(), link.backend, link.account, link.sealed_secret, encode_options(&link.options)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes an account's backend mapping, returning what it was.
    pub fn unlink(&mut self, handle: &UserHandle) -> Result<BackendLink, StoreError> {
        let tx = self.conn.transaction()?;
        account(&tx, handle)?;
        let link = backend_link(&tx, handle)?.ok_or(StoreError::NotLinked)?;
        tx.execute(
            "DELETE FROM backend_links WHERE handle = ?1",
            [handle.as_str()],
        )?;
        tx.commit()?;
        Ok(link)
    }

    /// The account's backend mapping; `None` for a local account.
    pub fn backend_link(&self, handle: &UserHandle) -> Result<Option<BackendLink>, StoreError> {
        backend_link(&self.conn, handle)
    }

    /// Records whether the account's backend refused its linked credentials (at the time
    /// given, Unix seconds), or clears that after a login the backend accepted.
    pub fn set_link_refused(
        &mut self,
        handle: &UserHandle,
        refused_at: Option<i64>,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE backend_links SET refused_at = ?2 WHERE handle = ?1",
            rusqlite::params![handle.as_str(), refused_at],
        )?;
        Ok(())
    }

    /// The accounts whose backend refused their linked credentials, with when (Unix seconds).
    pub fn refused_links(&self) -> Result<Vec<(UserHandle, i64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT handle, refused_at FROM backend_links WHERE refused_at IS NOT NULL ORDER BY handle",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|r| {
            let (h, at) = r?;
            Ok((parse_handle(&h)?, at))
        })
        .collect()
    }

    /// Every account with its backend mapping, sorted by handle.
    pub fn accounts_with_links(
        &self,
    ) -> Result<Vec<(UserHandle, FriendlyName, Option<BackendLink>)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT a.handle, a.friendly_name, l.backend, l.account, l.secret, l.options
             FROM accounts a LEFT JOIN backend_links l ON l.handle = a.handle ORDER BY a.handle",
        )?;
        let rows = stmt.query_map([], |r| {
            let link = match r.get::<_, Option<String>>(2)? {
                Some(backend) => Some(BackendLink {
                    backend,
                    account: r.get(3)?,
                    sealed_secret: r.get(4)?,
                    options: decode_options(&r.get::<_, String>(5)?),
                }),
                None => None,
            };
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, link))
        })?;
        rows.map(|r| {
            let (h, n, link) = r?;
            Ok((parse_handle(&h)?, parse_name(&n)?, link))
        })
        .collect()
    }

    pub fn credentials(&self, handle: &UserHandle) -> Result<Option<Credentials>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT salt, password_md5, friendly_name FROM accounts WHERE handle = ?1",
                [handle.as_str()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(salt, digest, name)| {
            Ok(Credentials {
                password: PasswordHash { salt, digest },
                name: parse_name(&name)?,
            })
        })
        .transpose()
    }

    pub fn account(&self, handle: &UserHandle) -> Result<Account, StoreError> {
        account(&self.conn, handle)
    }

    /// The settings and all four lists, read in one transaction so they match the serial.
    pub fn snapshot(&mut self, handle: &UserHandle) -> Result<Snapshot, StoreError> {
        let tx = self.conn.transaction()?;
        let account = account(&tx, handle)?;
        let mut lists = Vec::with_capacity(4);
        for kind in ListKind::SYNC_ORDER {
            lists.push((kind, entries(&tx, handle, kind)?));
        }
        tx.commit()?;
        Ok(Snapshot { account, lists })
    }

    /// One list and the serial it belongs to.
    pub fn list(
        &mut self,
        handle: &UserHandle,
        kind: ListKind,
    ) -> Result<(u32, Vec<Entry>), StoreError> {
        let tx = self.conn.transaction()?;
        let serial = account(&tx, handle)?.serial;
        let list = entries(&tx, handle, kind)?;
        tx.commit()?;
        Ok((serial, list))
    }

    pub fn set_gtc(&mut self, handle: &UserHandle, gtc: GtcSetting) -> Result<u32, StoreError> {
        self.set_setting(handle, "gtc", &gtc.to_string(), |a| a.gtc == gtc)
    }

    pub fn set_blp(&mut self, handle: &UserHandle, blp: BlpSetting) -> Result<u32, StoreError> {
        self.set_setting(handle, "blp", &blp.to_string(), |a| a.blp == blp)
    }

    /// Changes one of the account's settings (`column` is one of ours, never user input);
    /// the same value again is `AlreadyInMode`, as GTC and BLP answer it with 218.
    fn set_setting(
        &mut self,
        handle: &UserHandle,
        column: &'static str,
        value: &str,
        unchanged: impl FnOnce(&Account) -> bool,
    ) -> Result<u32, StoreError> {
        let tx = self.conn.transaction()?;
        if unchanged(&account(&tx, handle)?) {
            return Err(StoreError::AlreadyInMode);
        }
        tx.execute(
            &format!("UPDATE accounts SET {column} = ?2 WHERE handle = ?1"),
            params![handle.as_str(), value],
        )?;
        let serial = bump_serial(&tx, handle.as_str())?;
        tx.commit()?;
        Ok(serial)
    }

    /// Sets the account's own friendly name.
    pub fn rename(&mut self, handle: &UserHandle, name: &FriendlyName) -> Result<u32, StoreError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "UPDATE accounts SET friendly_name = ?2 WHERE handle = ?1",
            params![handle.as_str(), name.as_str()],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchAccount);
        }
        let serial = bump_serial(&tx, handle.as_str())?;
        tx.commit()?;
        Ok(serial)
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
        tx.commit()?;
        Ok(ListChange {
            serial,
            reverse_serial,
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
        tx.commit()?;
        Ok(ListChange {
            serial,
            reverse_serial,
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
        let blp = account(&self.conn, handle)?.blp;
        let mut stmt = self.conn.prepare_cached(
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

    /// Accounts whose handle or friendly name contains `text` (case-insensitive), at most
    /// `limit` of them.
    pub fn find(
        &self,
        text: &str,
        limit: usize,
    ) -> Result<Vec<(UserHandle, FriendlyName)>, StoreError> {
        let pattern = format!("%{}%", text.replace(['%', '_', '\\'], ""));
        let mut stmt = self.conn.prepare(
            "SELECT handle, friendly_name FROM accounts
             WHERE handle LIKE ?1 OR friendly_name LIKE ?1 ORDER BY handle LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![pattern, limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|r| {
            let (h, n) = r?;
            Ok((parse_handle(&h)?, parse_name(&n)?))
        })
        .collect()
    }
}

fn account(conn: &Connection, handle: &UserHandle) -> Result<Account, StoreError> {
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

fn permission(
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

fn has_entry(
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

fn count_entries(
    conn: &Connection,
    owner: &UserHandle,
    kind: ListKind,
) -> Result<usize, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM list_entries WHERE owner = ?1 AND list = ?2",
        params![owner.as_str(), list_code(kind)],
        |r| r.get(0),
    )?;
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

/// Moves the account's serial on by one; it wraps within 1..=u32::MAX.
fn bump_serial(tx: &Transaction<'_>, handle: &str) -> Result<u32, StoreError> {
    let serial: i64 = tx.query_row(
        "UPDATE accounts SET serial = (serial % 4294967295) + 1 WHERE handle = ?1 RETURNING serial",
        [handle],
        |r| r.get(0),
    )?;
    Ok(serial as u32)
}

fn parse_handle(s: &str) -> Result<UserHandle, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("handle {s:?}")))
}

fn parse_name(s: &str) -> Result<FriendlyName, StoreError> {
    FriendlyName::new(s).map_err(|_| StoreError::Corrupt("friendly name".into()))
}

fn parse_blp(s: &str) -> Result<BlpSetting, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("blp {s:?}")))
}

/// Brings a database of an older schema forward. Version 3 added `backend_links.refused_at`.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has_refused: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('backend_links') WHERE name = 'refused_at'")?
        .exists([])?;
    if !has_refused {
        conn.execute_batch("ALTER TABLE backend_links ADD COLUMN refused_at INTEGER")?;
    }
    Ok(())
}

fn backend_link(conn: &Connection, handle: &UserHandle) -> Result<Option<BackendLink>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT backend, account, secret, options FROM backend_links WHERE handle = ?1",
            [handle.as_str()],
            |r| {
                Ok(BackendLink {
                    backend: r.get(0)?,
                    account: r.get(1)?,
                    sealed_secret: r.get(2)?,
                    options: decode_options(&r.get::<_, String>(3)?),
                })
            },
        )
        .optional()?)
}

/// One addition to or removal from a bridged account's stored lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorChange {
    pub added: bool,
    pub list: ListKind,
    pub handle: UserHandle,
    pub name: FriendlyName,
    pub serial: u32,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::password::{self, verify_response};

    fn h(s: &str) -> UserHandle {
        s.parse().unwrap()
    }

    fn n(s: &str) -> FriendlyName {
        FriendlyName::new(s).unwrap()
    }

    fn db_with(accounts: &[&str]) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::open(&dir.path().join("t.db")).unwrap();
        for a in accounts {
            db.create_account(&h(a), &n(a), "pw").unwrap();
        }
        (dir, db)
    }

    #[test]
    fn accounts_and_passwords() {
        let (_dir, mut db) = db_with(&["a@x.com"]);
        assert_eq!(
            db.create_account(&h("a@x.com"), &n("A"), "pw"),
            Err(StoreError::AccountExists)
        );
        let creds = db.credentials(&h("a@x.com")).unwrap().unwrap();
        let response = password::md5_hex(&format!("{}pw", creds.password.salt));
        assert!(verify_response(&creds.password, &response));
        assert!(!verify_response(
            &creds.password,
            &password::md5_hex(&format!("{}wrong", creds.password.salt))
        ));
        db.set_password(&h("a@x.com"), "new").unwrap();
        let creds2 = db.credentials(&h("a@x.com")).unwrap().unwrap();
        assert_ne!(creds.password.salt, creds2.password.salt);
        assert!(db.credentials(&h("nobody@x.com")).unwrap().is_none());
        assert_eq!(
            db.set_password(&h("nobody@x.com"), "x"),
            Err(StoreError::NoSuchAccount)
        );
    }

    #[test]
    fn forward_list_mirrors_into_reverse_list() {
        let (_dir, mut db) = db_with(&["a@x.com", "b@x.com"]);
        let change = db
            .add_entry(&h("a@x.com"), ListKind::Forward, &h("b@x.com"), &n("Bee"))
            .unwrap();
        assert_eq!(
            change,
            ListChange {
                serial: 1,
                reverse_serial: Some(1)
            }
        );
        let (serial, rl) = db.list(&h("b@x.com"), ListKind::Reverse).unwrap();
        assert_eq!(serial, 1);
        assert_eq!(
            rl,
            vec![Entry {
                handle: h("a@x.com"),
                name: n("a@x.com")
            }]
        );
        assert_eq!(
            db.add_entry(&h("a@x.com"), ListKind::Forward, &h("b@x.com"), &n("Bee")),
            Err(StoreError::AlreadyThere)
        );
        let change = db
            .remove_entry(&h("a@x.com"), ListKind::Forward, &h("b@x.com"))
            .unwrap();
        assert_eq!(
            change,
            ListChange {
                serial: 2,
                reverse_serial: Some(2)
            }
        );
        assert!(db
            .list(&h("b@x.com"), ListKind::Reverse)
            .unwrap()
            .1
            .is_empty());
        assert_eq!(
            db.remove_entry(&h("a@x.com"), ListKind::Forward, &h("b@x.com")),
            Err(StoreError::NotOnList)
        );
    }

    #[test]
    fn allow_and_block_are_exclusive() {
        let (_dir, mut db) = db_with(&["a@x.com", "b@x.com"]);
        db.add_entry(&h("a@x.com"), ListKind::Allow, &h("b@x.com"), &n("B"))
            .unwrap();
        assert_eq!(
            db.add_entry(&h("a@x.com"), ListKind::Block, &h("b@x.com"), &n("B")),
            Err(StoreError::InOppositeList)
        );
        assert_eq!(
            db.add_entry(&h("a@x.com"), ListKind::Reverse, &h("b@x.com"), &n("B")),
            Err(StoreError::ReverseListIsServerOnly)
        );
        assert_eq!(
            db.add_entry(&h("a@x.com"), ListKind::Forward, &h("zz@x.com"), &n("Z")),
            Err(StoreError::NoSuchAccount)
        );
    }

    #[test]
    fn settings_and_serials() {
        let (_dir, mut db) = db_with(&["a@x.com"]);
        let a = h("a@x.com");
        assert_eq!(
            db.set_gtc(&a, GtcSetting::Ask),
            Err(StoreError::AlreadyInMode)
        );
        assert_eq!(db.set_gtc(&a, GtcSetting::NoAsk), Ok(1));
        assert_eq!(
            db.set_blp(&a, BlpSetting::AllowAll),
            Err(StoreError::AlreadyInMode)
        );
        assert_eq!(db.set_blp(&a, BlpSetting::BlockAll), Ok(2));
        let snap = db.snapshot(&a).unwrap();
        assert_eq!(snap.account.serial, 2);
        assert_eq!(snap.account.gtc, GtcSetting::NoAsk);
        assert_eq!(snap.account.blp, BlpSetting::BlockAll);
        assert_eq!(db.rename(&a, &n("New Name")), Ok(3));
        assert_eq!(db.account(&a).unwrap().name, n("New Name"));
    }

    #[test]
    fn permissions() {
        let (_dir, mut db) = db_with(&["a@x.com", "b@x.com", "c@x.com"]);
        let (a, b, c) = (h("a@x.com"), h("b@x.com"), h("c@x.com"));
        db.add_entry(&b, ListKind::Forward, &a, &n("A")).unwrap();
        db.add_entry(&c, ListKind::Forward, &a, &n("A")).unwrap();
        assert!(db.permission(&a, &b).unwrap().allows());
        db.add_entry(&a, ListKind::Block, &b, &n("B")).unwrap();
        assert!(!db.permission(&a, &b).unwrap().allows());
        db.set_blp(&a, BlpSetting::BlockAll).unwrap();
        assert!(!db.permission(&a, &c).unwrap().allows());
        db.add_entry(&a, ListKind::Allow, &c, &n("C")).unwrap();
        let watchers: Vec<_> = db
            .watchers(&a)
            .unwrap()
            .into_iter()
            .map(|(w, p)| (w, p.allows()))
            .collect();
        assert_eq!(watchers, vec![(b.clone(), false), (c.clone(), true)]);
        assert_eq!(db.forward_contacts(&c).unwrap(), vec![(a.clone(), true)]);
        assert_eq!(db.forward_contacts(&b).unwrap(), vec![(a.clone(), false)]);
    }

    #[test]
    fn removing_an_account_cleans_other_lists() {
        let (_dir, mut db) = db_with(&["a@x.com", "b@x.com"]);
        let (a, b) = (h("a@x.com"), h("b@x.com"));
        db.add_entry(&a, ListKind::Forward, &b, &n("B")).unwrap();
        db.add_entry(&b, ListKind::Block, &a, &n("A")).unwrap();
        db.remove_account(&b).unwrap();
        let snap = db.snapshot(&a).unwrap();
        assert!(snap.lists.iter().all(|(_, l)| l.is_empty()));
        assert!(snap.account.serial > 1);
        assert_eq!(db.remove_account(&b), Err(StoreError::NoSuchAccount));
    }

    #[test]
    fn self_on_own_forward_list() {
        let (_dir, mut db) = db_with(&["a@x.com"]);
        let a = h("a@x.com");
        let change = db.add_entry(&a, ListKind::Forward, &a, &n("Me")).unwrap();
        assert_eq!(change.serial, change.reverse_serial.unwrap());
        assert_eq!(db.account(&a).unwrap().serial, change.serial);
    }

    #[test]
    fn backend_links() {
        let (_dir, mut db) = db_with(&["a@x.com"]);
        let a = h("a@x.com");
        assert_eq!(db.backend_link(&a).unwrap(), None);
        let link = BackendLink {
            backend: "xmpp".into(),
            account: "a@xmpp.example".into(),
            sealed_secret: vec![1, 2, 3],
            options: vec![
                ("server".into(), "127.0.0.1:5222".into()),
                ("plaintext".into(), "true".into()),
            ],
        };
        db.link(&a, &link).unwrap();
        assert_eq!(db.backend_link(&a).unwrap(), Some(link.clone()));
        assert!(!format!("{link:?}").contains("[1, 2, 3]"));
        let listed = db.accounts_with_links().unwrap();
        assert_eq!(
            listed[0].2.as_ref().map(|l| l.account.as_str()),
            Some("a@xmpp.example")
        );
        assert_eq!(db.unlink(&a).unwrap(), link);
        assert_eq!(db.unlink(&a), Err(StoreError::NotLinked));
        assert_eq!(
            db.link(&h("nobody@x.com"), &link),
            Err(StoreError::NoSuchAccount)
        );
        db.link(&a, &link).unwrap();
        db.remove_account(&a).unwrap();
        assert_eq!(db.backend_link(&a).unwrap(), None);
    }

    #[test]
    fn a_refused_link_is_recorded_until_a_login_is_accepted_or_it_is_linked_again() {
        let (_dir, mut db) = db_with(&["a@x.com", "b@x.com"]);
        let a = h("a@x.com");
        let link = BackendLink {
            backend: "xmpp".into(),
            account: "a@xmpp.example".into(),
            sealed_secret: vec![1],
            options: vec![],
        };
        db.link(&a, &link).unwrap();
        assert_eq!(db.refused_links().unwrap(), vec![]);
        db.set_link_refused(&a, Some(1_700_000_000)).unwrap();
        // An account without a link has nothing to refuse.
        db.set_link_refused(&h("b@x.com"), Some(1)).unwrap();
        assert_eq!(
            db.refused_links().unwrap(),
            vec![(a.clone(), 1_700_000_000)]
        );
        db.set_link_refused(&a, None).unwrap();
        assert_eq!(db.refused_links().unwrap(), vec![]);
        db.set_link_refused(&a, Some(5)).unwrap();
        db.unlink(&a).unwrap();
        db.link(&a, &link).unwrap();
        assert_eq!(db.refused_links().unwrap(), vec![]);
    }

    #[test]
    fn a_version_2_database_migrates_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            let v2 = SCHEMA.replace(",\n    refused_at INTEGER", "");
            assert_ne!(v2, SCHEMA);
            conn.execute_batch(&v2).unwrap();
            conn.execute_batch(
                "INSERT INTO accounts (handle, friendly_name, salt, password_md5, created_at)
                 VALUES ('a@x.com', 'A', 's', 'p', 0);
                 INSERT INTO backend_links (handle, backend, account, secret)
                 VALUES ('a@x.com', 'xmpp', 'a@xmpp.example', x'01');
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let mut db = Database::open(&path).unwrap();
        let a = h("a@x.com");
        assert_eq!(
            db.backend_link(&a).unwrap().unwrap().account,
            "a@xmpp.example"
        );
        db.set_link_refused(&a, Some(9)).unwrap();
        assert_eq!(db.refused_links().unwrap(), vec![(a, 9)]);
    }

    #[test]
    fn mirrors_follow_the_backend() {
        let (_dir, mut db) = db_with(&["a@x.com"]);
        let a = h("a@x.com");
        let (fl, al, rl) = (ListKind::Forward, ListKind::Allow, ListKind::Reverse);
        let contacts = vec![
            (h("bob@xmpp.org"), n("Bob"), vec![fl, al, rl]),
            (h("eve@xmpp.org"), n("Eve"), vec![rl]),
        ];
        let changes = db.mirror_all(&a, &contacts).unwrap();
        assert_eq!(changes.len(), 4);
        assert_eq!(changes.last().unwrap().serial, 4);
        assert!(
            db.mirror_all(&a, &contacts).unwrap().is_empty(),
            "nothing changed"
        );
        // Bob drops to the FL only; Eve disappears; a rename alone moves the serial.
        let contacts = vec![(h("bob@xmpp.org"), n("Bobby"), vec![fl])];
        let changes = db.mirror_all(&a, &contacts).unwrap();
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.added, c.list, c.handle.as_str().to_owned()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (false, rl, "eve@xmpp.org".to_owned()),
                (false, al, "bob@xmpp.org".to_owned()),
                (false, rl, "bob@xmpp.org".to_owned())
            ]
        );
        let (serial, fl_entries) = db.list(&a, fl).unwrap();
        assert_eq!(
            fl_entries,
            vec![Entry {
                handle: h("bob@xmpp.org"),
                name: n("Bobby")
            }]
        );
        assert_eq!(serial, 8);
        let one = db
            .mirror_contact(&a, &h("carol@xmpp.org"), &n("Carol"), &[rl])
            .unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].added);
    }

    #[test]
    fn list_limit() {
        let (_dir, mut db) = db_with(&["a@x.com"]);
        let a = h("a@x.com");
        for i in 0..MAX_LIST_ENTRIES {
            let c = h(&format!("c{i}@x.com"));
            db.create_account(&c, &n("C"), "pw").unwrap();
            db.add_entry(&a, ListKind::Allow, &c, &n("C")).unwrap();
        }
        let extra = h("extra@x.com");
        db.create_account(&extra, &n("E"), "pw").unwrap();
        assert_eq!(
            db.add_entry(&a, ListKind::Allow, &extra, &n("E")),
            Err(StoreError::ListFull)
        );
    }
}
