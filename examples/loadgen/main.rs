//! Load generator for msngate: reproducible speed and memory numbers (see docs/PERFORMANCE.md).
//!
//! It creates a temporary directory with a config file (free loopback ports) and a database
//! with the benchmark's accounts, starts the server binary as a separate process, drives it
//! over loopback TCP like MSN Messenger 1.0 clients would, prints one result line per phase,
//! and stops the server again. Every phase is bounded by counts and by `--time-limit`.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example loadgen -- idle --sessions 2000 --contacts 10
//! cargo run --release --example loadgen -- chat --pairs 50 --messages 2000 --window 16
//! ```
//!
//! Scenarios:
//! - `idle`: N notification sessions log in (VER, INF, USR MD5 I/S, SYN, CHG NLN) with K
//!   contacts each on their FL, then stay connected doing nothing. Reports the server's RSS
//!   before the first connection and with all N online, and the login throughput.
//! - `chat`: P pairs of users, each pair in its own switchboard session (XFR SB, USR, CAL,
//!   RNG, ANS); every sender sends M `MSG A` messages keeping W unacknowledged in flight.
//!   Reports messages relayed per second and the ACK latency distribution.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;

use msngate::protocol::{Dialect, FriendlyName, ListKind, ServerCommand, UserHandle};
use msngate::store::{SqliteStore, Store};

mod client;
mod server;

use client::{login, password, Conn, READ_TIMEOUT};
use server::{own_cpu_s, raise_fd_limit, Server};

/// Benchmarks an msngate server binary over loopback.
#[derive(Parser)]
#[command(about)]
struct Cli {
    /// The server binary to start (built with `cargo build --release`).
    #[arg(long, default_value = "target/release/msngate", global = true)]
    server: PathBuf,
    /// Where the temporary directory (config, database, server log) is created.
    #[arg(long, global = true)]
    tmp: Option<PathBuf>,
    /// Keep the temporary directory afterwards (its path is printed).
    #[arg(long, global = true)]
    keep: bool,
    /// The server's `log.level` (its log goes to server.log in the temporary directory).
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    /// Abandon the run after this many seconds (setup not included).
    #[arg(long, default_value_t = 600, global = true)]
    time_limit: u64,
    /// The protocol dialect the clients log in with: MSNP2 (MSN 1.0) to MSNP7 (MSN 4.x).
    #[arg(long, default_value = "MSNP2", value_parser = parse_dialect, global = true)]
    dialect: Dialect,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone, Copy)]
enum Scenario {
    /// Many logged-in, online, idle notification sessions: memory per session, login rate.
    Idle {
        /// Notification sessions (and accounts).
        #[arg(long, default_value_t = 2000)]
        sessions: usize,
        /// FL contacts per account (the next K accounts), so presence work is realistic.
        #[arg(long, default_value_t = 10)]
        contacts: usize,
        /// Logins in progress at once.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Seconds to wait after the last login before measuring memory.
        #[arg(long, default_value_t = 3)]
        settle: u64,
    },
    /// Pairs of users chatting in switchboard sessions: relay throughput and ACK latency.
    Chat {
        /// Switchboard sessions, each with one sender and one receiver.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Messages each sender sends.
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Unacknowledged messages each sender keeps in flight.
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// MSG payload size in bytes, the 61-byte text/plain MIME header included.
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let fd_limit = raise_fd_limit();
    let needed = match cli.scenario {
        Scenario::Idle { sessions, .. } => sessions + 64,
        Scenario::Chat { pairs, .. } => pairs * 4 + 64,
    };
    if fd_limit < needed as libc::rlim_t {
        bail!("the open-file limit is {fd_limit}, the run needs about {needed}: raise `ulimit -n`");
    }
    let server_bin = cli
        .server
        .canonicalize()
        .with_context(|| format!("server binary {}", cli.server.display()))?;
    let base = cli.tmp.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("msngate-loadgen-")
        .tempdir_in(&base)
        .with_context(|| format!("temporary directory in {}", base.display()))?;
    println!(
        "loadgen: server={} dir={} fd_limit={fd_limit}",
        server_bin.display(),
        dir.path().display()
    );

    let result = run(&cli, &server_bin, dir.path());
    if cli.keep || result.is_err() {
        let kept = dir.keep();
        println!("loadgen: kept {}", kept.display());
    }
    result
}

fn run(cli: &Cli, server_bin: &Path, dir: &Path) -> Result<()> {
    let db_path = dir.join("msngate.db");
    // Accounts and lists are written with the library directly, before the server starts.
    let accounts = match cli.scenario {
        Scenario::Idle {
            sessions, contacts, ..
        } => {
            if contacts >= sessions {
                bail!("--contacts must be smaller than --sessions");
            }
            let handles: Vec<String> = (0..sessions).map(|i| handle("u", i)).collect();
            create_accounts(&db_path, &handles, contacts)?;
            handles
        }
        Scenario::Chat { pairs, .. } => {
            let mut handles: Vec<String> = (0..pairs).map(|i| handle("s", i)).collect();
            handles.extend((0..pairs).map(|i| handle("r", i)));
            create_accounts(&db_path, &handles, 0)?;
            handles
        }
    };
    let max_connections = accounts.len() * 2 + 100;
    let server = Server::start(server_bin, dir, &db_path, &cli.log_level, max_connections)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let limit = Duration::from_secs(cli.time_limit);
    let outcome = runtime.block_on(async {
        tokio::time::timeout(limit, async {
            match cli.scenario {
                Scenario::Idle {
                    contacts,
                    concurrency,
                    settle,
                    ..
                } => {
                    idle(
                        &server,
                        &accounts,
                        contacts,
                        concurrency,
                        settle,
                        cli.dialect,
                    )
                    .await
                }
                Scenario::Chat {
                    pairs,
                    messages,
                    window,
                    payload_bytes,
                } => {
                    let shape = (pairs, messages, window, payload_bytes);
                    chat(&server, &accounts, shape, cli.dialect).await
                }
            }
        })
        .await
        .map_err(|_| anyhow!("time limit of {}s reached", cli.time_limit))?
    });
    let stopped = server.stop();
    // Client connections are dropped only now, after the server has said OUT SSD to them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = &outcome {
        eprintln!(
            "loadgen: failed: {e:#}; server log: {}",
            dir.join("server.log").display()
        );
    }
    let stop_ms = stopped?;
    println!("shutdown: sigterm_to_exit_ms={stop_ms}");
    outcome
}

/// `--dialect MSNP7` (or `msnp7`, or `7`).
fn parse_dialect(s: &str) -> Result<Dialect, String> {
    let name = if s.bytes().all(|b| b.is_ascii_digit()) {
        format!("MSNP{s}")
    } else {
        s.to_ascii_uppercase()
    };
    Dialect::from_name(&name).ok_or_else(|| format!("{s}: not a dialect (MSNP2 to MSNP7)"))
}

fn handle(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}@bench.test")
}

/// Creates the accounts, and gives account i the next `contacts` accounts on its FL.
fn create_accounts(db_path: &Path, handles: &[String], contacts: usize) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(write_accounts(db_path, handles, contacts))
}

async fn write_accounts(db_path: &Path, handles: &[String], contacts: usize) -> Result<()> {
    let db = SqliteStore::open(db_path)?;
    let parsed: Vec<UserHandle> = handles
        .iter()
        .map(|h| h.parse().map_err(|e| anyhow!("handle {h}: {e:?}")))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    for h in &parsed {
        db.create_account(h, &FriendlyName::from_handle(h), &password(h.as_str()))
            .await?;
    }
    let create_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let n = parsed.len();
    for (i, owner) in parsed.iter().enumerate() {
        for k in 1..=contacts {
            let contact = &parsed[(i + k) % n];
            db.add_entry(
                owner,
                ListKind::Forward,
                contact,
                &FriendlyName::from_handle(contact),
            )
            .await?;
        }
    }
    let add_s = started.elapsed().as_secs_f64();
    let entries = n * contacts;
    println!(
        "setup: accounts={n} create_s={create_s:.2} per_account_ms={:.3} fl_entries={entries} \
         add_s={add_s:.2} per_entry_ms={:.3}",
        create_s * 1000.0 / n as f64,
        if entries > 0 {
            add_s * 1000.0 / entries as f64
        } else {
            0.0
        },
    );
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Logs everyone in, at most `concurrency` at a time; returns the connections and the
/// login latencies in ms, in account order.
async fn log_in_all(
    ns: SocketAddr,
    handles: &[String],
    concurrency: usize,
    dialect: Dialect,
) -> Result<Vec<(Conn, f64)>> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (i, h) in handles.iter().enumerate() {
        let (permits, h) = (permits.clone(), h.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let started = Instant::now();
            let conn = login(ns, &h, dialect)
                .await
                .with_context(|| format!("login {h}"))?;
            Ok::<_, anyhow::Error>((i, conn, started.elapsed().as_secs_f64() * 1000.0))
        });
    }
    let mut done: Vec<Option<(Conn, f64)>> = (0..handles.len()).map(|_| None).collect();
    while let Some(r) = tasks.join_next().await {
        let (i, conn, ms) = r??;
        done[i] = Some((conn, ms));
    }
    Ok(done.into_iter().map(|d| d.expect("every login")).collect())
}

async fn idle(
    server: &Server,
    handles: &[String],
    contacts: usize,
    concurrency: usize,
    settle: u64,
    dialect: Dialect,
) -> Result<()> {
    let n = handles.len();
    let rss_before = server.rss_kib()?;
    let cpu_before = server.cpu_s()?;
    let store_before = server.store_cpu_s().unwrap_or(f64::NAN);
    let own_before = own_cpu_s()?;
    let started = Instant::now();
    let conns = log_in_all(server.ns, handles, concurrency, dialect).await?;
    let online_s = started.elapsed().as_secs_f64();
    let cpu_login = server.cpu_s()? - cpu_before;
    let store_login = server.store_cpu_s().unwrap_or(f64::NAN) - store_before;
    let own_login = own_cpu_s()? - own_before;
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
            // The write half stays alive in this task, so the session stays open.
            let Conn {
                mut reader,
                writer: _writer,
                ..
            } = conn;
            let mut seen = HashSet::new();
            loop {
                match reader.next().await {
                    Ok(None) | Err(_) => {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(Some(
                        ServerCommand::Iln { handle, .. } | ServerCommand::Nln { handle, .. },
                    )) => {
                        presence.fetch_add(1, Ordering::Relaxed);
                        if seen.insert(handle) {
                            distinct.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(_)) => {}
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let rss_after = server.rss_kib()?;
    let hwm = server.status_kib("VmHWM")?;
    let closed_early = closed.load(Ordering::Relaxed);
    let per_session = (rss_after as f64 - rss_before as f64) / n as f64;
    println!(
        "idle: sessions={n} contacts={contacts} concurrency={concurrency} online_s={online_s:.2} \
         logins_per_s={:.0} login_p50_ms={:.1} login_p99_ms={:.1} login_max_ms={:.1} \
         presence_lines={} contacts_seen={}/{} closed_early={closed_early} rss_before_kib={rss_before} \
         rss_after_kib={rss_after} rss_peak_kib={hwm} per_session_kib={per_session:.1} \
         server_cpu_s={cpu_login:.2} store_thread_cpu_s={store_login:.2} \
         loadgen_cpu_s={own_login:.2}",
        n as f64 / online_s,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0.0),
        presence.load(Ordering::Relaxed),
        distinct.load(Ordering::Relaxed),
        n * contacts,
    );
    if closed_early > 0 {
        bail!("{closed_early} sessions were closed by the server while idle");
    }
    // The sessions stay connected until the server is stopped.
    readers.detach_all();
    Ok(())
}

/// A pair's connections once its switchboard session is set up.
struct Pair {
    _sender_ns: Conn,
    _receiver_ns: Conn,
    sender_sb: Conn,
    receiver_sb: Conn,
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
    let sb: SocketAddr = address.parse()?;
    let mut a_sb = Conn::connect(sb).await?;
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
    let mut b_sb = Conn::connect(address.parse()?).await?;
    let t = b_sb
        .cmd("ANS", &format!("{b} {cookie} {session_id}"))
        .await?;
    b_sb.reply("ANS", t, |l| matches!(l, AnsOk { .. })).await?;
    a_sb.wait_for(|l| matches!(l, Joi { .. })).await?;
    Ok(Pair {
        _sender_ns: a_ns,
        _receiver_ns: b_ns,
        sender_sb: a_sb,
        receiver_sb: b_sb,
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
    messages: usize,
    window: usize,
    payload: Arc<Vec<u8>>,
    start: Arc<Barrier>,
) -> Result<PairResult> {
    let Pair {
        sender_sb,
        receiver_sb,
        _sender_ns,
        _receiver_ns,
    } = pair;
    let Conn {
        reader: mut ack_reader,
        mut writer,
        trid: first_trid,
    } = sender_sb;
    let mut msg_reader = receiver_sb.reader;
    let credits = Semaphore::new(window);
    let in_flight: Mutex<VecDeque<(u32, Instant)>> = Mutex::new(VecDeque::with_capacity(window));
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

async fn chat(
    server: &Server,
    handles: &[String],
    (pairs, messages, window, payload_bytes): (usize, usize, usize, usize),
    dialect: Dialect,
) -> Result<()> {
    let setup = Instant::now();
    let mut conns = log_in_all(server.ns, handles, 100, dialect).await?;
    let receivers: Vec<Conn> = conns.drain(pairs..).map(|(c, _)| c).collect();
    let mut sessions = JoinSet::new();
    for (i, ((a_ns, _), b_ns)) in conns.into_iter().zip(receivers).enumerate() {
        let (a, b) = (handles[i].clone(), handles[pairs + i].clone());
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

    let payload = Arc::new(chat_payload(payload_bytes));
    let start = Arc::new(Barrier::new(pairs + 1));
    let mut tasks = JoinSet::new();
    for pair in ready {
        tasks.spawn(run_pair(
            pair,
            messages,
            window,
            payload.clone(),
            start.clone(),
        ));
    }
    let rss_before = server.rss_kib()?;
    let cpu_before = server.cpu_s()?;
    let store_before = server.store_cpu_s().unwrap_or(f64::NAN);
    let own_before = own_cpu_s()?;
    start.wait().await;
    let started = Instant::now();
    let mut latencies: Vec<u32> = Vec::with_capacity(pairs * messages);
    let (mut received, mut naks, mut finished) = (0, 0, started);
    while let Some(r) = tasks.join_next().await {
        let r = r??;
        latencies.extend(r.latencies);
        received += r.received;
        naks += r.naks;
        finished = finished.max(r.finished);
    }
    let elapsed = finished.duration_since(started).as_secs_f64();
    let cpu = server.cpu_s()? - cpu_before;
    let store_cpu = server.store_cpu_s().unwrap_or(f64::NAN) - store_before;
    let own = own_cpu_s()? - own_before;
    let rss_after = server.rss_kib()?;
    let hwm = server.status_kib("VmHWM")?;
    let mut ms: Vec<f64> = latencies.iter().map(|&us| us as f64 / 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let total = pairs * messages;
    println!(
        "chat: pairs={pairs} messages_per_sender={messages} window={window} \
         payload_bytes={} setup_s={setup_s:.2} elapsed_s={elapsed:.2} msgs_per_s={:.0} \
         received={received}/{total} naks={naks} ack_p50_ms={:.2} ack_p99_ms={:.2} \
         ack_max_ms={:.2} server_cpu_s={cpu:.2} server_cpu_us_per_msg={:.1} \
         store_thread_cpu_s={store_cpu:.2} loadgen_cpu_s={own:.2} rss_before_kib={rss_before} rss_after_kib={rss_after} \
         rss_peak_kib={hwm}",
        payload.len(),
        total as f64 / elapsed,
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(0.0),
        cpu * 1e6 / total as f64,
    );
    if received != total || naks > 0 {
        bail!("{} messages were not delivered", total - received + naks);
    }
    Ok(())
}
