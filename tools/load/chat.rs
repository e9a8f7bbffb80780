//! `chat`: pairs of users, each pair in its own switchboard session, every sender sending
//! with a window of unacknowledged messages; throughput and ACK latency. The same pairs,
//! payloads and window then run through [`crate::relay`], a bare TCP relay in this process,
//! and its figures are reported beside msngate's as the floor on this machine.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;

use msngate::protocol::ServerCommand;

use crate::client::{resolve, Conn, READ_TIMEOUT};
use crate::relay;
use crate::stats::{opt, percentile, Meter};
use crate::target::Ctx;

#[derive(Clone, Copy)]
pub struct Chat {
    pub pairs: usize,
    pub messages: usize,
    pub window: usize,
    pub payload_bytes: usize,
}

/// A pair's connections once its session is set up; `keep` holds what must stay open (the
/// notification connections) but is not used.
pub struct Pair {
    pub keep: Vec<Conn>,
    pub sender: Conn,
    pub receiver: Conn,
}

/// XFR SB, USR on the switchboard, CAL, RNG on the callee's NS, ANS, JOI.
async fn open_session(mut a_ns: Conn, a: &str, mut b_ns: Conn, b: &str) -> Result<Pair> {
    use ServerCommand::*;
    let t = a_ns.cmd("XFR", "SB").await?;
    let XfrSb {
        address, cookie, ..
    } = a_ns.reply("XFR", t, |l| matches!(l, XfrSb { .. })).await?
    else {
        unreachable!("reply checks the kind")
    };
    let mut a_sb = Conn::connect(resolve(&address).await?).await?;
    let t = a_sb.cmd("USR", &format!("{a} {cookie}")).await?;
    a_sb.reply("USR", t, |l| matches!(l, UsrOk { .. })).await?;
    let t = a_sb.cmd("CAL", b).await?;
    a_sb.reply("CAL", t, |l| matches!(l, Cal { .. })).await?;
    let Rng {
        session_id,
        address,
        cookie,
        ..
    } = b_ns.wait_for(|l| matches!(l, Rng { .. })).await?
    else {
        unreachable!("wait_for checks the kind")
    };
    let mut b_sb = Conn::connect(resolve(&address).await?).await?;
    let t = b_sb
        .cmd("ANS", &format!("{b} {cookie} {session_id}"))
        .await?;
    b_sb.reply("ANS", t, |l| matches!(l, AnsOk { .. })).await?;
    a_sb.wait_for(|l| matches!(l, Joi { .. })).await?;
    Ok(Pair {
        keep: vec![a_ns, b_ns],
        sender: a_sb,
        receiver: b_sb,
    })
}

/// What one pair measured.
struct PairResult {
    /// ACK latencies in microseconds.
    latencies: Vec<u32>,
    received: usize,
    naks: usize,
    finished: Instant,
}

fn chat_payload(bytes: usize) -> Vec<u8> {
    let mut p = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n".to_vec();
    let text = b"Hello from the msngate load generator! ";
    let mut i = 0;
    while p.len() < bytes {
        p.push(text[i % text.len()]);
        i += 1;
    }
    p
}

/// Sends `messages` MSG A with at most `window` unacknowledged, reads the ACKs, and reads
/// the receiver's copies, all at once.
async fn run_pair(
    pair: Pair,
    shape: Chat,
    payload: Arc<Vec<u8>>,
    start: Arc<Barrier>,
) -> Result<PairResult> {
    let Pair {
        sender,
        receiver,
        keep: _keep,
    } = pair;
    let Conn {
        reader: mut ack_reader,
        mut writer,
        trid: first_trid,
    } = sender;
    let mut msg_reader = receiver.reader;
    let messages = shape.messages;
    let credits = Semaphore::new(shape.window);
    let in_flight: Mutex<VecDeque<(u32, Instant)>> =
        Mutex::new(VecDeque::with_capacity(shape.window));
    start.wait().await;

    let send = async {
        let mut buf = Vec::with_capacity(payload.len() + 32);
        for k in 0..messages {
            credits.acquire().await?.forget();
            let trid = first_trid + 1 + k as u32;
            buf.clear();
            buf.extend_from_slice(format!("MSG {trid} A {}\r\n", payload.len()).as_bytes());
            buf.extend_from_slice(&payload);
            in_flight
                .lock()
                .expect("not poisoned")
                .push_back((trid, Instant::now()));
            writer.write_all(&buf).await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let acks = async {
        let mut latencies = Vec::with_capacity(messages);
        let mut naks = 0;
        for _ in 0..messages {
            let line = tokio::time::timeout(READ_TIMEOUT, ack_reader.next())
                .await
                .map_err(|_| anyhow!("no ACK within {READ_TIMEOUT:?}"))??
                .ok_or_else(|| anyhow!("the sender's switchboard connection was closed"))?;
            let (acked, trid) = match line {
                ServerCommand::Ack { trid } => (true, trid.0),
                ServerCommand::Nak { trid } => (false, trid.0),
                other => bail!("unexpected line {:?}", other.to_string()),
            };
            let line = line.to_string();
            let (expected, sent) = in_flight
                .lock()
                .expect("not poisoned")
                .pop_front()
                .ok_or_else(|| anyhow!("{line:?} without a message in flight"))?;
            if trid != expected {
                bail!("{line:?} out of order: expected TrID {expected}");
            }
            if acked {
                latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            } else {
                naks += 1;
            }
            credits.add_permits(1);
        }
        Ok((latencies, naks))
    };
    let receive = async {
        for _ in 0..messages {
            let line = tokio::time::timeout(READ_TIMEOUT, msg_reader.next())
                .await
                .map_err(|_| anyhow!("no MSG within {READ_TIMEOUT:?}"))??
                .ok_or_else(|| anyhow!("the receiver's switchboard connection was closed"))?;
            let ServerCommand::Msg { payload: body, .. } = line else {
                bail!("receiver: unexpected line {:?}", line.to_string());
            };
            if body.len() != payload.len() {
                let len = body.len();
                bail!("receiver: payload of {len} bytes, sent {}", payload.len());
            }
        }
        Ok::<_, anyhow::Error>(messages)
    };
    let (sent, acked, received) = tokio::join!(send, acks, receive);
    sent?;
    let (latencies, naks) = acked?;
    let received = received?;
    Ok(PairResult {
        latencies,
        received,
        naks,
        finished: Instant::now(),
    })
}

/// What all pairs of one run measured.
pub struct Outcome {
    pub elapsed_s: f64,
    pub msgs_per_s: f64,
    pub received: usize,
    pub naks: usize,
    /// Sorted ACK latencies in ms.
    pub ack_ms: Vec<f64>,
}

/// Runs every pair at once from a common start.
async fn drive(ready: Vec<Pair>, shape: Chat, before_start: impl FnOnce()) -> Result<Outcome> {
    let payload = Arc::new(chat_payload(shape.payload_bytes));
    let start = Arc::new(Barrier::new(ready.len() + 1));
    let mut tasks = JoinSet::new();
    for pair in ready {
        tasks.spawn(run_pair(pair, shape, payload.clone(), start.clone()));
    }
    before_start();
    start.wait().await;
    let started = Instant::now();
    let mut latencies: Vec<u32> = Vec::with_capacity(shape.pairs * shape.messages);
    let (mut received, mut naks, mut finished) = (0, 0, started);
    while let Some(r) = tasks.join_next().await {
        let r = r??;
        latencies.extend(r.latencies);
        received += r.received;
        naks += r.naks;
        finished = finished.max(r.finished);
    }
    let elapsed_s = finished.duration_since(started).as_secs_f64();
    let mut ack_ms: Vec<f64> = latencies.iter().map(|&us| us as f64 / 1000.0).collect();
    ack_ms.sort_by(f64::total_cmp);
    Ok(Outcome {
        elapsed_s,
        msgs_per_s: (shape.pairs * shape.messages) as f64 / elapsed_s,
        received,
        naks,
        ack_ms,
    })
}

pub async fn run(ctx: &Ctx, shape: Chat) -> Result<()> {
    let pairs = shape.pairs;
    let setup = Instant::now();
    let mut conns = ctx.log_in_all(0..2 * pairs, 100).await?;
    let receivers: Vec<Conn> = conns.drain(pairs..).map(|(c, _)| c).collect();
    let mut sessions = JoinSet::new();
    for (i, ((a_ns, _), b_ns)) in conns.into_iter().zip(receivers).enumerate() {
        let (a, b) = (ctx.accounts.handle(i), ctx.accounts.handle(pairs + i));
        sessions.spawn(async move {
            open_session(a_ns, &a, b_ns, &b)
                .await
                .with_context(|| format!("switchboard session {a} -> {b}"))
        });
    }
    let mut ready = Vec::with_capacity(pairs);
    while let Some(r) = sessions.join_next().await {
        ready.push(r??);
    }
    let setup_s = setup.elapsed().as_secs_f64();

    let rss_before = ctx.proc.map(|p| p.rss_kib()).transpose()?;
    let mut meter = None;
    let gate = drive(ready, shape, || meter = Some(Meter::start(ctx.proc))).await?;
    let usage = meter.expect("started")?.finish()?;
    let rss_after = ctx.proc.map(|p| p.rss_kib()).transpose()?;

    // The floor: the same client against a bare relay, right after.
    let relay_addr: SocketAddr = relay::start().await?;
    let ready = relay::pairs(relay_addr, pairs).await?;
    let mut relay_meter = None;
    let floor = drive(ready, shape, || relay_meter = Some(Meter::start(None))).await?;
    // The relay and its clients share this process: its CPU is the floor's whole cost.
    let relay_cpu = relay_meter.expect("started")?.finish()?.own;

    let total = pairs * shape.messages;
    let p = |o: &Outcome, q| percentile(&o.ack_ms, q);
    let kib = |v: Option<u64>| v.map_or("na".to_string(), |v| v.to_string());
    println!(
        "chat: pairs={pairs} messages_per_sender={} window={} payload_bytes={} \
         setup_s={setup_s:.2} elapsed_s={:.2} msgs_per_s={:.0} received={}/{total} naks={} \
         ack_p50_ms={:.2} ack_p99_ms={:.2} ack_max_ms={:.2} server_cpu_us_per_msg={} {} \
         rss_before_kib={} rss_after_kib={} relay_msgs_per_s={:.0} relay_received={}/{total} \
         relay_ack_p50_ms={:.2} relay_ack_p99_ms={:.2} relay_ack_max_ms={:.2} \
         relay_and_clients_cpu_s={relay_cpu:.2} \
         ratio_msngate_to_relay={:.3}",
        shape.messages,
        shape.window,
        chat_payload(shape.payload_bytes).len(),
        gate.elapsed_s,
        gate.msgs_per_s,
        gate.received,
        gate.naks,
        p(&gate, 50.0),
        p(&gate, 99.0),
        gate.ack_ms.last().copied().unwrap_or(0.0),
        opt(usage.server.map(|s| s * 1e6 / total as f64), 2),
        usage.fields(),
        kib(rss_before),
        kib(rss_after),
        floor.msgs_per_s,
        floor.received,
        p(&floor, 50.0),
        p(&floor, 99.0),
        floor.ack_ms.last().copied().unwrap_or(0.0),
        gate.msgs_per_s / floor.msgs_per_s,
    );
    if gate.received != total || gate.naks > 0 {
        bail!(
            "{} messages were not delivered",
            total - gate.received + gate.naks
        );
    }
    if floor.received != total {
        bail!("the relay lost {} messages", total - floor.received);
    }
    Ok(())
}
