//! `logon`: full logons per second, one at a time and many at once, and the server's CPU per
//! logon when its pid is known.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::client::Conn;
use crate::stats::{percentile, Meter, Usage};
use crate::target::Ctx;

pub struct Logon {
    pub sequential: usize,
    pub concurrent: usize,
    pub concurrency: usize,
    pub contacts: usize,
}

/// One phase's result.
struct Phase {
    count: usize,
    wall_s: f64,
    latencies: Vec<f64>,
    usage: Usage,
}

impl Phase {
    fn fields(&self, name: &str) -> String {
        format!(
            "{name}_logons={} {name}_s={:.2} {name}_logons_per_s={:.0} {name}_p50_ms={:.2} \
             {name}_p99_ms={:.2} {name}_max_ms={:.2} {name}_server_cpu_ms_per_logon={}",
            self.count,
            self.wall_s,
            self.count as f64 / self.wall_s,
            percentile(&self.latencies, 50.0),
            percentile(&self.latencies, 99.0),
            self.latencies.last().copied().unwrap_or(0.0),
            self.usage.server_ms_per(self.count),
        )
    }
}

pub async fn run(ctx: &Ctx, shape: Logon) -> Result<()> {
    // Sequential: each account logs on once the previous one is online. The sessions stay
    // online until the phase ends, as in the concurrent phase, so both see the same presence
    // work (contacts coming online), and closing is not part of either.
    let meter = Meter::start(ctx.proc)?;
    let started = Instant::now();
    let mut held: Vec<Conn> = Vec::with_capacity(shape.sequential);
    let mut latencies = Vec::with_capacity(shape.sequential);
    for i in 0..shape.sequential {
        let (conn, ms) = ctx.log_in(i).await?;
        held.push(conn);
        latencies.push(ms);
    }
    let wall_s = started.elapsed().as_secs_f64();
    let usage = meter.finish()?;
    latencies.sort_by(f64::total_cmp);
    let sequential = Phase {
        count: shape.sequential,
        wall_s,
        latencies,
        usage,
    };
    drop(held);
    // Let the server end those sessions before the next phase logs the same accounts on.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let meter = Meter::start(ctx.proc)?;
    let started = Instant::now();
    let conns = ctx
        .log_in_all(0..shape.concurrent, shape.concurrency)
        .await?;
    let wall_s = started.elapsed().as_secs_f64();
    let usage = meter.finish()?;
    let mut latencies: Vec<f64> = conns.iter().map(|(_, ms)| *ms).collect();
    latencies.sort_by(f64::total_cmp);
    let concurrent = Phase {
        count: shape.concurrent,
        wall_s,
        latencies,
        usage,
    };
    println!(
        "logon: contacts={} concurrency={} {} {} {}",
        shape.contacts,
        shape.concurrency,
        sequential.fields("seq"),
        concurrent.fields("conc"),
        concurrent.usage.fields(),
    );
    drop(conns);
    Ok(())
}
