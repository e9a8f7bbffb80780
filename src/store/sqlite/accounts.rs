//! Accounts, their settings and their backend links.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::rows::{account, bump_serial, parse_handle, parse_name, watchers};
use super::Database;
use crate::protocol::{BlpSetting, FriendlyName, GtcSetting, UserHandle};
use crate::store::password::PasswordHash;
use crate::store::values::{decode_options, encode_options};
use crate::store::{Account, BackendLink, BlpChange, Credentials, StoreError};

impl Database {
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
             ON CONFLICT (handle) DO UPDATE SET backend = ?2, account = ?3, secret = ?4, options = ?5, refused_at = NULL",
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
            .prepare_cached(
                "SELECT salt, password_md5, friendly_name FROM accounts WHERE handle = ?1",
            )?
            .query_row([handle.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        row.map(|(salt, digest, name)| {
            Ok(Credentials {
                password: PasswordHash { salt, digest },
                name: parse_name(&name)?,
                link: backend_link(&self.conn, handle)?,
            })
        })
        .transpose()
    }

    pub fn account(&self, handle: &UserHandle) -> Result<Account, StoreError> {
        account(&self.conn, handle)
    }

    pub fn set_gtc(&mut self, handle: &UserHandle, gtc: GtcSetting) -> Result<u32, StoreError> {
        let tx = self.conn.transaction()?;
        let serial = set_setting(&tx, handle, "gtc", &gtc.to_string(), |a| a.gtc == gtc)?;
        tx.commit()?;
        Ok(serial)
    }

    /// Changes the privacy mode. The watchers come with how the account's settings treated
    /// them before the change, read in the same transaction.
    pub fn set_blp(
        &mut self,
        handle: &UserHandle,
        blp: BlpSetting,
    ) -> Result<BlpChange, StoreError> {
        let tx = self.conn.transaction()?;
        let watchers = watchers(&tx, handle)?;
        let serial = set_setting(&tx, handle, "blp", &blp.to_string(), |a| a.blp == blp)?;
        tx.commit()?;
        Ok(BlpChange { serial, watchers })
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

/// Changes one of the account's settings (`column` is one of ours, never user input);
/// the same value again is `AlreadyInMode`, as GTC and BLP answer it with 218.
fn set_setting(
    tx: &Transaction<'_>,
    handle: &UserHandle,
    column: &'static str,
    value: &str,
    unchanged: impl FnOnce(&Account) -> bool,
) -> Result<u32, StoreError> {
    if unchanged(&account(tx, handle)?) {
        return Err(StoreError::AlreadyInMode);
    }
    tx.execute(
        &format!("UPDATE accounts SET {column} = ?2 WHERE handle = ?1"),
        params![handle.as_str(), value],
    )?;
    bump_serial(tx, handle.as_str())
}

pub(super) fn backend_link(
    conn: &Connection,
    handle: &UserHandle,
) -> Result<Option<BackendLink>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT backend, account, secret, options FROM backend_links WHERE handle = ?1",
        )?
        .query_row([handle.as_str()], |r| {
            Ok(BackendLink {
                backend: r.get(0)?,
                account: r.get(1)?,
                sealed_secret: r.get(2)?,
                options: decode_options(&r.get::<_, String>(3)?),
            })
        })
        .optional()?)
}
