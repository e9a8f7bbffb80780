//! `fanout`: presence fan-out. One user has N watchers (accounts with the user on their
//! forward list, all online, spread over the notification servers); the user changes state
//! (`CHG`, alternately BSY and NLN) and the time until each watcher has read the `NLN` is
//! taken: the last watcher's and the median watcher's, per round.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use msngate::protocol::{ServerCommand, Status, UserHandle};

use crate::client::{Conn, READ_TIMEOUT};
use crate::stats::{median, opt, percentile, Meter};
use crate::target::Ctx;

pub struct Fanout {
    pub watchers: usize,
    pub rounds: usize,
    pub concurrency: usize,
}

/// A watcher read the user's state: (watcher, state, when).
type Seen = (usize, Status, Instant);

pub async fn run(ctx: &Ctx, shape: Fanout) -> Result<()> {
    let n = shape.watchers;
    let user: UserHandle = ctx
        .accounts
        .handle(0)
        .parse()
        .map_err(|e| anyhow!("user handle: {e:?}"))?;
    let setup = Instant::now();
    let watchers = ctx.log_in_all(1..n + 1, shape.concurrency).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let mut readers = JoinSet::new();
    for (w, (conn, _)) in watchers.into_iter().enumerate() {
        readers.spawn(watch(w, conn, user.clone(), tx.clone()));
    }
    drop(tx);
    let (mut me, _) = ctx.log_in(0).await?;
    // The logon's own NLN must reach everyone before the rounds start.
    collect(&mut rx, n, Status::Online, Instant::now()).await?;
    let setup_s = setup.elapsed().as_secs_f64();

    let (mut lasts, mut medians, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..shape.rounds {
        let status = if round % 2 == 0 {
            Status::Busy
        } else {
            Status::Online
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let meter = Meter::start(ctx.proc)?;
        let started = Instant::now();
        let t = me.cmd("CHG", status.code()).await?;
        let mut ms = collect(&mut rx, n, status, started).await?;
        let usage = meter.finish()?;
        me.reply("CHG", t, |l| matches!(l, ServerCommand::Chg { .. }))
            .await?;
        ms.sort_by(f64::total_cmp);
        lasts.push(ms.last().copied().unwrap_or(0.0));
        medians.push(percentile(&ms, 50.0));
        cpus.push(usage.server.map(|s| s * 1000.0));
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let cpu: Option<Vec<f64>> = cpus.iter().copied().collect();
    println!(
        "fanout: watchers={n} nodes={} rounds={} setup_s={setup_s:.2} watchers_seen={n}/{n} \
         last_ms={} p50_ms={} last_median_ms={:.2} p50_median_ms={:.2} \
         server_cpu_ms_per_round={} server_cpu_us_per_watcher={}",
        ctx.entry.nodes(),
        shape.rounds,
        list(&lasts),
        list(&medians),
        median(&lasts),
        median(&medians),
        cpu.as_deref().map_or("na".to_string(), list),
        opt(cpu.map(|c| median(&c) * 1000.0 / n as f64), 2),
    );
    readers.abort_all();
    Ok(())
}

/// Waits until every watcher has read `status`, and returns each one's time since `started`
/// in ms. Earlier states still arriving are skipped.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    n: usize,
    status: Status,
    started: Instant,
) -> Result<Vec<f64>> {
    let mut times: Vec<Option<f64>> = vec![None; n];
    let mut left = n;
    while left > 0 {
        let (w, seen, at) = tokio::time::timeout(READ_TIMEOUT, rx.recv())
            .await
            .map_err(|_| anyhow!("{left} of {n} watchers did not see {status} in time"))?
            .ok_or_else(|| anyhow!("every watcher's connection ended"))?;
        if seen == status && times[w].is_none() {
            times[w] = Some(at.saturating_duration_since(started).as_secs_f64() * 1000.0);
            left -= 1;
        }
    }
    Ok(times.into_iter().flatten().collect())
}

/// A watcher's session: reads everything, reports the user's states, answers challenges.
async fn watch(
    w: usize,
    conn: Conn,
    user: UserHandle,
    tx: mpsc::UnboundedSender<Seen>,
) -> Result<()> {
    conn.stay_online(|handle, status| {
        if handle != user || tx.send((w, status, Instant::now())).is_ok() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    })
    .await
    .with_context(|| format!("watcher {w}"))
}
