//! Accounts, their settings and their backend links.

use tokio_postgres::Row;

use super::rows::{
    account, bump_serial, execute, parse_handle, parse_name, row, rows, watchers, Db, Tx,
};
use crate::protocol::{BlpSetting, FriendlyName, GtcSetting, UserHandle};
use crate::store::password::PasswordHash;
use crate::store::values::{decode_options, encode_options};
use crate::store::{BackendLink, BlpChange, Credentials, StoreError};

/// The secret, made on first use. `/health` asks for it often: then it is only read.
pub(super) async fn server_secret(tx: &Tx<'_>) -> Result<Vec<u8>, StoreError> {
    const READ: &str = "SELECT value FROM meta WHERE key = 'server_secret'";
    if let Some(found) = row(tx, READ, &[]).await? {
        return Ok(found.try_get(0)?);
    }
    let fresh: [u8; 32] = rand::random();
    execute(
        tx,
        "INSERT INTO meta (key, value) VALUES ('server_secret', $1) ON CONFLICT (key) DO NOTHING",
        &[&&fresh[..]],
    )
    .await?;
    let found = row(tx, READ, &[])
        .await?
        .ok_or_else(|| StoreError::Corrupt("no server secret".into()))?;
    Ok(found.try_get(0)?)
}

pub(super) async fn create_account(
    tx: &Tx<'_>,
    handle: &UserHandle,
    name: &FriendlyName,
    password: &str,
) -> Result<(), StoreError> {
    let hash = PasswordHash::new(password);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let inserted = execute(
        tx,
        "INSERT INTO accounts (handle, friendly_name, salt, password_md5, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (handle) DO NOTHING",
        &[
            &handle.as_str(),
            &name.as_str(),
            &hash.salt,
            &hash.digest,
            &now,
        ],
    )
    .await?;
    if inserted == 0 {
        return Err(StoreError::AccountExists);
    }
    Ok(())
}

pub(super) async fn set_password(
    tx: &Tx<'_>,
    handle: &UserHandle,
    password: &str,
) -> Result<(), StoreError> {
    let hash = PasswordHash::new(password);
    let n = execute(
        tx,
        "UPDATE accounts SET salt = $2, password_md5 = $3 WHERE handle = $1",
        &[&handle.as_str(), &hash.salt, &hash.digest],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NoSuchAccount);
    }
    Ok(())
}

/// Deletes an account and takes it off every other account's lists.
pub(super) async fn remove_account(tx: &Tx<'_>, handle: &UserHandle) -> Result<(), StoreError> {
    let owners = rows(
        tx,
        "SELECT DISTINCT owner FROM list_entries WHERE contact = $1 ORDER BY owner",
        &[&handle.as_str()],
    )
    .await?;
    execute(
        tx,
        "DELETE FROM list_entries WHERE contact = $1",
        &[&handle.as_str()],
    )
    .await?;
    let n = execute(
        tx,
        "DELETE FROM accounts WHERE handle = $1",
        &[&handle.as_str()],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NoSuchAccount);
    }
    for owner in owners {
        let owner: &str = owner.try_get(0)?;
        if owner != handle.as_str() {
            bump_serial(tx, owner).await?;
        }
    }
    Ok(())
}

pub(super) async fn link(
    tx: &Tx<'_>,
    handle: &UserHandle,
    link: &BackendLink,
) -> Result<(), StoreError> {
    account(tx, handle).await?;
    execute(
        tx,
        "INSERT INTO backend_links (handle, backend, account, secret, options) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (handle) DO UPDATE SET backend = $2, account = $3, secret = $4, options = $5, refused_at = NULL",
        &[
            &handle.as_str(),
            &link.backend,
            &link.account,
            &link.sealed_secret,
            &encode_options(&link.options),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn unlink(tx: &Tx<'_>, handle: &UserHandle) -> Result<BackendLink, StoreError> {
    account(tx, handle).await?;
    let link = backend_link(tx, handle)
        .await?
        .ok_or(StoreError::NotLinked)?;
    execute(
        tx,
        "DELETE FROM backend_links WHERE handle = $1",
        &[&handle.as_str()],
    )
    .await?;
    Ok(link)
}

pub(super) async fn backend_link(
    tx: &impl Db,
    handle: &UserHandle,
) -> Result<Option<BackendLink>, StoreError> {
    let found = row(
        tx,
        "SELECT backend, account, secret, options FROM backend_links WHERE handle = $1",
        &[&handle.as_str()],
    )
    .await?;
    match found {
        Some(r) => link_at(&r, 0),
        None => Ok(None),
    }
}

/// The link in a row's columns `first..first + 4` (backend, account, secret, options), from
/// a `LEFT JOIN` of `backend_links`: none when the backend is NULL.
fn link_at(r: &Row, first: usize) -> Result<Option<BackendLink>, StoreError> {
    let Some(backend) = r.try_get::<_, Option<String>>(first)? else {
        return Ok(None);
    };
    Ok(Some(BackendLink {
        backend,
        account: r.try_get(first + 1)?,
        sealed_secret: r.try_get(first + 2)?,
        options: decode_options(r.try_get(first + 3)?),
    }))
}

pub(super) async fn set_link_refused(
    tx: &Tx<'_>,
    handle: &UserHandle,
    refused_at: Option<i64>,
) -> Result<(), StoreError> {
    execute(
        tx,
        "UPDATE backend_links SET refused_at = $2 WHERE handle = $1",
        &[&handle.as_str(), &refused_at],
    )
    .await?;
    Ok(())
}

pub(super) async fn refused_links(tx: &impl Db) -> Result<Vec<(UserHandle, i64)>, StoreError> {
    rows(
        tx,
        "SELECT handle, refused_at FROM backend_links WHERE refused_at IS NOT NULL ORDER BY handle",
        &[],
    )
    .await?
    .iter()
    .map(|r| Ok((parse_handle(r.try_get(0)?)?, r.try_get(1)?)))
    .collect()
}

pub(super) async fn accounts_with_links(
    tx: &impl Db,
) -> Result<Vec<(UserHandle, FriendlyName, Option<BackendLink>)>, StoreError> {
    rows(
        tx,
        "SELECT a.handle, a.friendly_name, l.backend, l.account, l.secret, l.options
         FROM accounts a LEFT JOIN backend_links l ON l.handle = a.handle ORDER BY a.handle",
        &[],
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            parse_handle(r.try_get(0)?)?,
            parse_name(r.try_get(1)?)?,
            link_at(r, 2)?,
        ))
    })
    .collect()
}

/// What a logon checks: the password, the name, and the link (one statement).
pub(super) async fn credentials(
    tx: &impl Db,
    handle: &UserHandle,
) -> Result<Option<Credentials>, StoreError> {
    let found = row(
        tx,
        "SELECT a.salt, a.password_md5, a.friendly_name, l.backend, l.account, l.secret, l.options
         FROM accounts a LEFT JOIN backend_links l ON l.handle = a.handle WHERE a.handle = $1",
        &[&handle.as_str()],
    )
    .await?;
    let Some(r) = found else {
        return Ok(None);
    };
    Ok(Some(Credentials {
        password: PasswordHash {
            salt: r.try_get(0)?,
            digest: r.try_get(1)?,
        },
        name: parse_name(r.try_get(2)?)?,
        link: link_at(&r, 3)?,
    }))
}

pub(super) async fn set_gtc(
    tx: &Tx<'_>,
    handle: &UserHandle,
    gtc: GtcSetting,
) -> Result<u32, StoreError> {
    let current = account(tx, handle).await?;
    if current.gtc == gtc {
        return Err(StoreError::AlreadyInMode);
    }
    execute(
        tx,
        "UPDATE accounts SET gtc = $2 WHERE handle = $1",
        &[&handle.as_str(), &gtc.to_string()],
    )
    .await?;
    bump_serial(tx, handle.as_str()).await
}

/// Changes the privacy mode; the watchers come with how the old setting treated them.
pub(super) async fn set_blp(
    tx: &Tx<'_>,
    handle: &UserHandle,
    blp: BlpSetting,
) -> Result<BlpChange, StoreError> {
    let watchers = watchers(tx, handle).await?;
    if account(tx, handle).await?.blp == blp {
        return Err(StoreError::AlreadyInMode);
    }
    execute(
        tx,
        "UPDATE accounts SET blp = $2 WHERE handle = $1",
        &[&handle.as_str(), &blp.to_string()],
    )
    .await?;
    let serial = bump_serial(tx, handle.as_str()).await?;
    Ok(BlpChange { serial, watchers })
}

pub(super) async fn rename(
    tx: &Tx<'_>,
    handle: &UserHandle,
    name: &FriendlyName,
) -> Result<u32, StoreError> {
    let n = execute(
        tx,
        "UPDATE accounts SET friendly_name = $2 WHERE handle = $1",
        &[&handle.as_str(), &name.as_str()],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NoSuchAccount);
    }
    bump_serial(tx, handle.as_str()).await
}

/// Accounts whose handle or friendly name contains `text` (case-insensitive, as SQLite's
/// `LIKE` for ASCII), at most `limit` of them.
pub(super) async fn find(
    tx: &impl Db,
    text: &str,
    limit: usize,
) -> Result<Vec<(UserHandle, FriendlyName)>, StoreError> {
    let pattern = format!("%{}%", text.replace(['%', '_', '\\'], ""));
    rows(
        tx,
        "SELECT handle, friendly_name FROM accounts
         WHERE handle ILIKE $1 OR friendly_name ILIKE $1 ORDER BY handle LIMIT $2",
        &[&pattern, &(limit.min(i64::MAX as usize) as i64)],
    )
    .await?
    .iter()
    .map(|r| Ok((parse_handle(r.try_get(0)?)?, parse_name(r.try_get(1)?)?)))
    .collect()
}
