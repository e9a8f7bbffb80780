//! The accounts a run uses, `PREFIX{i}@load.test` for i from 0 with one password, and how they
//! and their forward lists come to exist: written into the database before the tool starts
//! the server itself, created with `msngate user add` for a server it did not start, or
//! expected to exist. Forward-list entries on a running server are made as a client makes
//! them, with `ADD FL` (already-present ones are kept).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use msngate::protocol::{Dialect, FriendlyName, ListKind, UserHandle};
use msngate::store::{SqliteStore, Store};

use crate::client::{login, Entry};

/// The handle convention: `PREFIX{i}@load.test`, one password for all.
#[derive(Clone, Debug)]
pub struct Accounts {
    pub prefix: String,
    pub password: String,
}

impl Accounts {
    pub fn handle(&self, i: usize) -> String {
        format!("{}{i}@load.test", self.prefix)
    }

    fn parsed(&self, i: usize) -> Result<UserHandle> {
        let h = self.handle(i);
        h.parse().map_err(|e| anyhow!("handle {h}: {e:?}"))
    }
}

/// What a scenario needs: accounts 0..accounts, and (owner, contact) forward-list entries.
pub struct Plan {
    pub accounts: usize,
    pub forward: Vec<(usize, usize)>,
}

impl Plan {
    /// `n` accounts, each with the next `k` (wrapping) on its forward list.
    pub fn ring(n: usize, k: usize) -> Plan {
        let forward = (0..n)
            .flat_map(|i| (1..=k.min(n.saturating_sub(1))).map(move |d| (i, (i + d) % n)))
            .collect();
        Plan {
            accounts: n,
            forward,
        }
    }

    /// This plan and `n` more accounts after its own, each with the next `k` of those `n`
    /// (wrapping) on its forward list: the sessions `--hold` keeps online.
    pub fn and_ring(mut self, n: usize, k: usize) -> Plan {
        let first = self.accounts;
        let ring = Plan::ring(n, k);
        self.accounts += ring.accounts;
        let shifted = ring.forward.into_iter();
        self.forward
            .extend(shifted.map(|(owner, contact)| (first + owner, first + contact)));
        self
    }
}

/// How the accounts come to exist.
pub enum Provision {
    /// Written into this database with the library before the server starts.
    Database(PathBuf),
    /// `BIN --config FILE user add` for each, on a server the tool did not start.
    Cli { bin: PathBuf, config: PathBuf },
    /// They exist already.
    Existing,
}

/// Creates what `plan` needs (accounts, then forward lists), printing a `setup:` line.
pub async fn provision(
    how: &Provision,
    accounts: &Accounts,
    plan: &Plan,
    entry: Option<&Entry>,
    dialect: Dialect,
) -> Result<()> {
    let started = Instant::now();
    let created = match how {
        Provision::Database(db) => return write_database(db, accounts, plan).await,
        Provision::Cli { bin, config } => {
            let (bin, config) = (bin.clone(), config.clone());
            let accounts = accounts.clone();
            let n = plan.accounts;
            tokio::task::spawn_blocking(move || cli_add(&bin, &config, &accounts, n)).await??
        }
        Provision::Existing => 0,
    };
    let create_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let entry = entry.ok_or_else(|| anyhow!("no server address to add list entries on"))?;
    let added = add_entries(entry, accounts, plan, dialect).await?;
    println!(
        "setup: accounts={} created={created} create_s={create_s:.2} fl_entries={} \
         fl_added={added} add_s={:.2}",
        plan.accounts,
        plan.forward.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Creates the accounts and lists with the library, into a database no server has open.
async fn write_database(db_path: &Path, accounts: &Accounts, plan: &Plan) -> Result<()> {
    let db = SqliteStore::open(db_path)?;
    let parsed: Vec<UserHandle> = (0..plan.accounts)
        .map(|i| accounts.parsed(i))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    for h in &parsed {
        db.create_account(h, &FriendlyName::from_handle(h), &accounts.password)
            .await?;
    }
    let create_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for &(owner, contact) in &plan.forward {
        let contact = &parsed[contact];
        let name = FriendlyName::from_handle(contact);
        db.add_entry(&parsed[owner], ListKind::Forward, contact, &name)
            .await?;
    }
    let add_s = started.elapsed().as_secs_f64();
    let (n, entries) = (parsed.len(), plan.forward.len());
    println!(
        "setup: accounts={n} created={n} create_s={create_s:.2} per_account_ms={:.3} \
         fl_entries={entries} fl_added={entries} add_s={add_s:.2} per_entry_ms={:.3}",
        create_s * 1000.0 / n.max(1) as f64,
        add_s * 1000.0 / entries.max(1) as f64,
    );
    Ok(())
}

/// `msngate user add` for accounts 0..n (the password through the environment, out of `ps`);
/// an account that exists already is fine. Returns how many were new.
fn cli_add(bin: &Path, config: &Path, accounts: &Accounts, n: usize) -> Result<usize> {
    let mut created = 0;
    for i in 0..n {
        let handle = accounts.handle(i);
        let out = Command::new(bin)
            .arg("--config")
            .arg(config)
            .args(["user", "add", &handle])
            .env("MSNGATE_USER_PASSWORD", &accounts.password)
            .env_remove("MSNGATE_CONFIG")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            created += 1;
        } else if !stderr.contains("already exists") {
            bail!("{} user add {handle}: {}", bin.display(), stderr.trim());
        }
    }
    Ok(created)
}

/// Logs each owner on and adds the contacts missing from its forward list; returns how many
/// entries were added.
async fn add_entries(
    entry: &Entry,
    accounts: &Accounts,
    plan: &Plan,
    dialect: Dialect,
) -> Result<usize> {
    let mut by_owner: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &(owner, contact) in &plan.forward {
        by_owner.entry(owner).or_default().push(contact);
    }
    let permits = Arc::new(Semaphore::new(50));
    let mut tasks = JoinSet::new();
    for (owner, contacts) in by_owner {
        let (permits, entry, accounts) = (permits.clone(), entry.clone(), accounts.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let handle = accounts.handle(owner);
            let (mut conn, synced) =
                login(entry.route(owner), &handle, &accounts.password, dialect)
                    .await
                    .with_context(|| format!("logon {handle} to add its contacts"))?;
            let present: HashSet<UserHandle> = synced.forward.into_iter().collect();
            let mut added = 0;
            for contact in contacts {
                let contact = accounts.parsed(contact)?;
                if !present.contains(&contact) {
                    conn.add_forward(&contact).await?;
                    added += 1;
                }
            }
            conn.log_out().await?;
            Ok::<_, anyhow::Error>(added)
        });
    }
    let mut added = 0;
    while let Some(r) = tasks.join_next().await {
        added += r??;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_follow_the_convention() {
        let accounts = Accounts {
            prefix: "load".into(),
            password: "pw".into(),
        };
        assert_eq!(accounts.handle(0), "load0@load.test");
        assert_eq!(accounts.handle(4999), "load4999@load.test");
        assert!(accounts.parsed(12).is_ok());
    }

    #[test]
    fn a_ring_gives_each_account_the_next_ones() {
        let plan = Plan::ring(4, 2);
        assert_eq!(plan.accounts, 4);
        assert_eq!(
            plan.forward,
            [
                (0, 1),
                (0, 2),
                (1, 2),
                (1, 3),
                (2, 3),
                (2, 0),
                (3, 0),
                (3, 1)
            ]
        );
        // Never oneself, however many contacts are asked for.
        assert_eq!(Plan::ring(2, 5).forward, [(0, 1), (1, 0)]);
        assert!(Plan::ring(3, 0).forward.is_empty());
    }

    #[test]
    fn a_second_ring_follows_the_first_and_stays_apart() {
        let plan = Plan::ring(2, 1).and_ring(3, 1);
        assert_eq!(plan.accounts, 5);
        assert_eq!(plan.forward, [(0, 1), (1, 0), (2, 3), (3, 4), (4, 2)]);
        assert_eq!(Plan::ring(2, 1).and_ring(0, 10).forward, [(0, 1), (1, 0)]);
    }
}
