//! What an operator does to a PostgreSQL database besides serving: a read-only look for
//! `msngate check-config`, and a backup with `pg_dump`.
//!
//! `pg_dump` gets the connection settings in its environment (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGDATABASE` and `PGPASSWORD`), never on its command line, so the password does not show in
//! `ps`. It writes its custom format (one consistent snapshot, even while servers write),
//! which `pg_restore --list` then reads through as a check; `pg_restore` brings it back.

use std::path::Path;
use std::process::{Command, Stdio};

use tokio_postgres::config::Host;

use super::{schema, PostgresStore};
use crate::store::{DatabaseCheck, PoolOptions, PostgresUrl, StoreError};

impl PostgresStore {
    /// Connects and says what the database holds, creating or migrating nothing.
    pub async fn check(
        url: &PostgresUrl,
        options: PoolOptions,
    ) -> Result<DatabaseCheck, StoreError> {
        let store = PostgresStore::new(url, options)?;
        let look = async {
            let mut client = store.client().await?;
            schema::check(&mut client).await
        };
        tokio::time::timeout(store.operation_timeout(), look)
            .await
            .map_err(|_| store.timed_out())?
    }

    /// Writes a `pg_dump` of the database to `destination`, which must not exist, and checks
    /// that `pg_restore` can read it.
    pub async fn backup_to(&self, destination: &Path) -> Result<(), StoreError> {
        if destination.exists() {
            return Err(StoreError::Corrupt(format!(
                "{} already exists; a backup never overwrites a file",
                destination.display()
            )));
        }
        let mut dump = Command::new("pg_dump");
        dump.args(["--format=custom", "--no-password", "--file"])
            .arg(destination);
        self.connection_env(&mut dump)?;
        let mut list = Command::new("pg_restore");
        list.arg("--list").arg(destination);
        tokio::task::spawn_blocking(move || {
            run(dump, "pg_dump")?;
            run(list, "pg_restore --list")
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// The connection settings of the URL as libpq's environment variables.
    fn connection_env(&self, command: &mut Command) -> Result<(), StoreError> {
        let config = self.url.config()?;
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        for name in [
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD",
            "PGSERVICE",
            "PGOPTIONS",
        ] {
            command.env_remove(name);
        }
        if !hosts.is_empty() {
            command.env("PGHOST", hosts.join(","));
        }
        if !ports.is_empty() {
            command.env("PGPORT", ports.join(","));
        }
        if let Some(user) = config.get_user() {
            command.env("PGUSER", user);
        }
        if let Some(database) = config.get_dbname() {
            command.env("PGDATABASE", database);
        }
        if let Some(password) = config.get_password() {
            command.env("PGPASSWORD", String::from_utf8_lossy(password).as_ref());
        }
        command.env("PGAPPNAME", "msngate-backup").env(
            "PGCONNECT_TIMEOUT",
            self.options.wait.as_secs().max(2).to_string(),
        );
        Ok(())
    }
}

/// Runs a PostgreSQL client program to its end; its complaint is the error.
fn run(mut command: Command, what: &str) -> Result<(), StoreError> {
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot run {what}: {e} (install PostgreSQL's client programs, Debian's \
                 postgresql-client, of the server's version or newer)"
            ))
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(StoreError::Unavailable(format!(
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}
