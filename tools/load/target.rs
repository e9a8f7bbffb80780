//! What a scenario runs against: where sessions log on, the accounts, the dialect, and the
//! server process when it is known (for its CPU and memory).

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use msngate::protocol::Dialect;

use crate::accounts::Accounts;
use crate::client::{login, Conn, Entry};
use crate::server::Proc;

#[derive(Clone)]
pub struct Ctx {
    pub entry: Entry,
    pub accounts: Accounts,
    pub dialect: Dialect,
    /// The server process, if the tool started it or `--server-pid` names it.
    pub proc: Option<Proc>,
}

impl Ctx {
    /// Account `i` logs on (at node `i` round-robin); returns the connection and the time from
    /// connect to the `CHG` reply in ms.
    pub async fn log_in(&self, i: usize) -> Result<(Conn, f64)> {
        let handle = self.accounts.handle(i);
        let started = Instant::now();
        let (conn, _) = login(
            self.entry.route(i),
            &handle,
            &self.accounts.password,
            self.dialect,
        )
        .await
        .with_context(|| format!("logon {handle}"))?;
        Ok((conn, started.elapsed().as_secs_f64() * 1000.0))
    }

    /// Accounts `range` log on, at most `concurrency` at a time; the connections and logon
    /// times in account order.
    pub async fn log_in_all(
        &self,
        range: Range<usize>,
        concurrency: usize,
    ) -> Result<Vec<(Conn, f64)>> {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let first = range.start;
        for i in range.clone() {
            let (permits, ctx) = (permits.clone(), self.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await?;
                let (conn, ms) = ctx.log_in(i).await?;
                Ok::<_, anyhow::Error>((i - first, conn, ms))
            });
        }
        let mut done: Vec<Option<(Conn, f64)>> = range.map(|_| None).collect();
        while let Some(r) = tasks.join_next().await {
            let (i, conn, ms) = r??;
            done[i] = Some((conn, ms));
        }
        Ok(done.into_iter().map(|d| d.expect("every logon")).collect())
    }
}
