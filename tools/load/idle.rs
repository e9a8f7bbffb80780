//! `idle`: many online notification sessions that do nothing; logon rate, and the server's
//! memory per idle session when its pid is known.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::task::JoinSet;

use crate::stats::{opt, percentile, Meter};
use crate::target::Ctx;

pub struct Idle {
    pub sessions: usize,
    pub contacts: usize,
    pub concurrency: usize,
    pub settle: u64,
}

pub async fn run(ctx: &Ctx, shape: Idle) -> Result<()> {
    let Idle {
        sessions: n,
        contacts,
        concurrency,
        settle,
    } = shape;
    let rss_before = ctx.proc.map(|p| p.rss_kib()).transpose()?;
    let meter = Meter::start(ctx.proc)?;
    let started = Instant::now();
    let conns = ctx.log_in_all(0..n, concurrency).await?;
    let online_s = started.elapsed().as_secs_f64();
    let usage = meter.finish()?;
    let mut latencies: Vec<f64> = conns.iter().map(|(_, ms)| *ms).collect();
    latencies.sort_by(f64::total_cmp);

    // Every session keeps reading (ILN/NLN) like an idle client; presence lines are counted.
    let presence = Arc::new(AtomicU64::new(0));
    let distinct = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let mut readers = JoinSet::new();
    for (conn, _) in conns {
        let (presence, distinct, closed) = (presence.clone(), distinct.clone(), closed.clone());
        readers.spawn(async move {
            let mut seen = HashSet::new();
            // It returns only when the server closes the session (an error, not kept).
            let _ = conn
                .stay_online(|handle, _| {
                    presence.fetch_add(1, Ordering::Relaxed);
                    if seen.insert(handle) {
                        distinct.fetch_add(1, Ordering::Relaxed);
                    }
                    ControlFlow::Continue(())
                })
                .await;
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let rss_after = ctx.proc.map(|p| p.rss_kib()).transpose()?;
    let peak = ctx.proc.map(|p| p.status_kib("VmHWM")).transpose()?;
    // Presence may still be on its way (with a short --settle); it is given up to 10 s more.
    let expected = (n * contacts) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while distinct.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed_early = closed.load(Ordering::Relaxed);
    let per_session = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    };
    let kib = |v: Option<u64>| opt(v.map(|v| v as f64), 0);
    println!(
        "idle: sessions={n} contacts={contacts} concurrency={concurrency} online_s={online_s:.2} \
         logins_per_s={:.0} login_p50_ms={:.1} login_p99_ms={:.1} login_max_ms={:.1} \
         presence_lines={} contacts_seen={}/{} closed_early={closed_early} \
         rss_before_kib={} rss_after_kib={} rss_peak_kib={} per_session_kib={} {}",
        n as f64 / online_s,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0.0),
        presence.load(Ordering::Relaxed),
        distinct.load(Ordering::Relaxed),
        n * contacts,
        kib(rss_before),
        kib(rss_after),
        kib(peak),
        opt(per_session, 1),
        usage.fields(),
    );
    if closed_early > 0 {
        bail!("{closed_early} sessions were closed by the server while idle");
    }
    // The sessions stay connected until the server is stopped (or the tool exits).
    readers.detach_all();
    Ok(())
}
