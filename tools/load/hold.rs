//! `--hold N`: N more sessions online and idle through a scenario, so that its figures are
//! taken with that many sessions on the server (docs/SCALING.md, "Per-operation cost with
//! sessions online"). They use the accounts after the scenario's own, each with the next
//! [`CONTACTS`] of them on its forward list, as `idle`'s do.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use tokio::task::JoinSet;

use crate::target::Ctx;

/// Forward-list entries of each held account.
pub const CONTACTS: usize = 10;

/// Logons in progress at once while the held sessions come online.
const CONCURRENCY: usize = 100;

/// The held sessions, online until [`Held::release`].
pub struct Held {
    sessions: usize,
    readers: JoinSet<()>,
    closed: Arc<AtomicUsize>,
}

/// Accounts `first..first + n` log on and stay online; prints a `hold:` line.
pub async fn start(ctx: &Ctx, first: usize, n: usize) -> Result<Held> {
    let mut held = Held {
        sessions: n,
        readers: JoinSet::new(),
        closed: Arc::default(),
    };
    if n == 0 {
        return Ok(held);
    }
    let started = Instant::now();
    let conns = ctx.log_in_all(first..first + n, CONCURRENCY).await?;
    let online_s = started.elapsed().as_secs_f64();
    for (conn, _) in conns {
        let closed = held.closed.clone();
        held.readers.spawn(async move {
            // It returns only when the server closes the session (an error, not kept).
            let _ = conn.stay_online(|_, _| ControlFlow::Continue(())).await;
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    let rss = match ctx.proc {
        Some(p) => p.rss_kib()?.to_string(),
        None => "na".to_owned(),
    };
    println!("hold: sessions={n} contacts={CONTACTS} online_s={online_s:.2} server_rss_kib={rss}");
    Ok(held)
}

impl Held {
    /// After the scenario: fails if the server closed any held session meanwhile. The sessions
    /// stay connected until the tool exits (after the server's stop, when it started it).
    pub fn release(mut self) -> Result<()> {
        let closed = self.closed.load(Ordering::Relaxed);
        self.readers.detach_all();
        if closed > 0 {
            bail!(
                "{closed} of the {} held sessions were closed by the server during the run",
                self.sessions
            );
        }
        Ok(())
    }
}
