//! The PostgreSQL schema: its versions, applied in order in one transaction under an advisory
//! lock (so servers starting together migrate once), and a read-only look for `check-config`.
//!
//! The tables are those of SQLite (`../sqlite/schema.rs`) with PostgreSQL's types. Text that
//! is sorted (handles) uses the "C" collation, so orders match SQLite's byte order whatever
//! the database's locale.

use deadpool_postgres::Object;

use crate::store::{DatabaseCheck, StoreError};

/// Each version's statements; version N is `MIGRATIONS[N - 1]`. A version, once released, is
/// never edited: changes come as a new one.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE accounts (
    handle TEXT COLLATE "C" PRIMARY KEY,
    friendly_name TEXT COLLATE "C" NOT NULL,
    salt TEXT NOT NULL,
    password_md5 TEXT NOT NULL,
    gtc TEXT NOT NULL DEFAULT 'A' CHECK (gtc IN ('A', 'N')),
    blp TEXT NOT NULL DEFAULT 'AL' CHECK (blp IN ('AL', 'BL')),
    serial BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE TABLE list_entries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner TEXT COLLATE "C" NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
    list TEXT NOT NULL CHECK (list IN ('FL', 'AL', 'BL', 'RL')),
    contact TEXT COLLATE "C" NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (owner, list, contact)
);
CREATE INDEX list_entries_by_contact ON list_entries (contact, list);
CREATE TABLE backend_links (
    handle TEXT COLLATE "C" PRIMARY KEY REFERENCES accounts(handle) ON DELETE CASCADE,
    backend TEXT NOT NULL,
    account TEXT NOT NULL,
    secret BYTEA NOT NULL,
    options TEXT NOT NULL DEFAULT '',
    refused_at BIGINT
);
CREATE TABLE contact_groups (
    owner TEXT COLLATE "C" NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
    id BIGINT NOT NULL CHECK (id >= 0),
    name TEXT NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE TABLE group_members (
    owner TEXT COLLATE "C" NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
    contact TEXT COLLATE "C" NOT NULL,
    group_id BIGINT NOT NULL,
    PRIMARY KEY (owner, contact, group_id)
);
CREATE FUNCTION leaving_the_fl_leaves_its_groups() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM group_members WHERE owner = OLD.owner AND contact = OLD.contact;
    RETURN OLD;
END
$$;
CREATE TRIGGER leaving_the_fl_leaves_its_groups
AFTER DELETE ON list_entries FOR EACH ROW WHEN (OLD.list = 'FL')
EXECUTE FUNCTION leaving_the_fl_leaves_its_groups();
CREATE TABLE phones (
    owner TEXT COLLATE "C" NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
    key TEXT NOT NULL CHECK (key IN ('PHH', 'PHW', 'PHM', 'MOB', 'MBE')),
    value TEXT NOT NULL,
    PRIMARY KEY (owner, key)
);
"#];

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Any number, the same in every msngate ("msngate" in ASCII): the advisory lock migrations
/// hold.
const MIGRATION_LOCK: i64 = 0x006d_736e_6761_7465;

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)";

/// Creates the schema or brings it forward; refuses one written by a newer msngate.
pub(super) async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(VERSION_TABLE).await?;
    let version = match tx
        .query_opt("SELECT version FROM schema_version", &[])
        .await?
    {
        Some(row) => row.try_get::<_, i64>(0)?,
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema(version));
    }
    for statements in &MIGRATIONS[version as usize..] {
        tx.batch_execute(statements).await?;
    }
    tx.execute("UPDATE schema_version SET version = $1", &[&SCHEMA_VERSION])
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Reads the schema version and the number of accounts, changing nothing.
pub(super) async fn check(client: &mut Object) -> Result<DatabaseCheck, StoreError> {
    let tx = client.build_transaction().read_only(true).start().await?;
    let has_version = tx
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await?
        .try_get::<_, bool>(0)?;
    let schema = if has_version {
        tx.query_opt("SELECT version FROM schema_version", &[])
            .await?
            .map(|row| row.try_get::<_, i64>(0))
            .transpose()?
            .unwrap_or(0)
    } else {
        0
    };
    if schema > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema(schema));
    }
    let accounts = if schema == 0 {
        0
    } else {
        tx.query_one("SELECT count(*) FROM accounts", &[])
            .await?
            .try_get(0)?
    };
    tx.commit().await?;
    Ok(DatabaseCheck::Usable { schema, accounts })
}
