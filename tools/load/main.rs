//! `msngate-load`: load and speed figures for an MSNP server (see docs/PERFORMANCE.md and
//! docs/SCALING.md), msngate or any other server of the MSNP2 to MSNP7 dialects.
//!
//! Either self-contained (the default, `--server BIN`): it makes a temporary directory with a
//! config (free loopback ports) and a database with the run's accounts, starts the server
//! binary as a separate process, and reads its CPU and memory from /proc. Or pointed at a
//! running server: `--ns host:port` (repeatable; sessions spread round-robin) or `--dispatch
//! host:port` (each logon through the `XFR NS` referral), with accounts that it creates with
//! `--msngate BIN --config FILE` (`msngate user add`) or that exist already; server CPU and
//! memory then only with `--server-pid PID`.
//!
//! Accounts are `PREFIX{i}@load.test` (`--accounts PREFIX`, default `load`), i from 0, all
//! with `--password`; a scenario needing n accounts uses 0 to n-1 (see each scenario).
//!
//! ```text
//! cargo build --release
//! target/release/msngate-load logon
//! target/release/msngate-load chat --pairs 50 --messages 2000 --window 16
//! target/release/msngate-load --ns 10.0.0.5:1863 --msngate msngate --config prod.toml fanout
//! ```
//!
//! Each scenario prints one line of key=value pairs; `--quick` runs it at tiny sizes (CI).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};

use msngate::protocol::Dialect;

mod accounts;
mod chat;
mod client;
mod fanout;
mod floor;
mod hold;
mod idle;
mod logon;
mod relay;
mod server;
mod stats;
mod target;

use accounts::{provision, Accounts, Plan, Provision};
use client::{resolve, Entry};
use server::{raise_fd_limit, Proc, Server};
use target::Ctx;

/// Load and speed figures for an MSNP server: logons, idle sessions, switchboard chat,
/// presence fan-out.
#[derive(Parser)]
#[command(name = "msngate-load")]
struct Cli {
    /// The server binary to start, default target/release/msngate (self-contained mode, the
    /// mode when neither --ns nor --dispatch is given).
    #[arg(
        long,
        global = true,
        value_name = "BIN",
        conflicts_with_all = ["ns", "dispatch", "server_pid", "msngate"]
    )]
    server: Option<PathBuf>,
    /// A running notification server, host:port; repeat it for several (sessions spread
    /// round-robin).
    #[arg(long = "ns", global = true, value_name = "HOST:PORT")]
    ns: Vec<String>,
    /// A running dispatch server, host:port: every logon follows its XFR NS referral.
    #[arg(long, global = true, value_name = "HOST:PORT", conflicts_with = "ns")]
    dispatch: Option<String>,
    /// With --config: create the accounts on a running server with `BIN user add` (accounts
    /// that exist already are kept). Without it they must exist.
    #[arg(long, global = true, value_name = "BIN", requires = "config")]
    msngate: Option<PathBuf>,
    /// The config file of the running server, for --msngate.
    #[arg(long, global = true, value_name = "FILE", requires = "msngate")]
    config: Option<PathBuf>,
    /// Account handles are PREFIX{i}@load.test, i from 0.
    #[arg(long, global = true, default_value = "load", value_name = "PREFIX")]
    accounts: String,
    /// Every account's password.
    #[arg(
        long,
        global = true,
        default_value = "load-password",
        env = "MSNGATE_LOAD_PASSWORD",
        hide_env_values = true
    )]
    password: String,
    /// The pid of a running server on this machine, to report its CPU and memory.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Where the temporary directory (config, database, server log) is made (self-contained).
    #[arg(long, global = true)]
    tmp: Option<PathBuf>,
    /// Keep the temporary directory afterwards (its path is printed).
    #[arg(long, global = true)]
    keep: bool,
    /// The started server's `log.level` (its log goes to server.log in the directory).
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    /// Abandon the run after this many seconds (setup not included).
    #[arg(long, default_value_t = 600, global = true)]
    time_limit: u64,
    /// The protocol dialect the clients log on with: MSNP2 (MSN 1.0) to MSNP7 (MSN 4.x).
    #[arg(long, default_value = "MSNP2", value_parser = parse_dialect, global = true)]
    dialect: Dialect,
    /// Tiny sizes, only to show that the tool and the server work (CI); explicit sizes win.
    #[arg(long, global = true)]
    quick: bool,
    /// Sessions held online and idle through the scenario (on the accounts after its own,
    /// each with 10 of them on its forward list), to measure it with that many online.
    #[arg(long, default_value_t = 0, global = true, value_name = "N")]
    hold: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone, Copy)]
enum Scenario {
    /// Full logons (VER, INF, USR MD5 I/S, SYN, CHG) per second, one at a time and many at
    /// once; server CPU per logon. Uses accounts 0..max(sequential, concurrent).
    Logon {
        /// Logons one after another [default: 1000; --quick 5].
        #[arg(long)]
        sequential: Option<usize>,
        /// Logons in the concurrent phase [default: 2000; --quick 20].
        #[arg(long)]
        concurrent: Option<usize>,
        /// Logons in progress at once in the concurrent phase [default: 100; --quick 4].
        #[arg(long)]
        concurrency: Option<usize>,
        /// FL contacts per account (the next K accounts) [default: 10; --quick 2].
        #[arg(long)]
        contacts: Option<usize>,
    },
    /// Many online, idle notification sessions: logon rate, memory per session (with the
    /// server's pid). Uses accounts 0..sessions.
    Idle {
        /// Sessions (and accounts) [default: 2000; --quick 20].
        #[arg(long)]
        sessions: Option<usize>,
        /// FL contacts per account (the next K accounts) [default: 10; --quick 2].
        #[arg(long)]
        contacts: Option<usize>,
        /// Logons in progress at once [default: 100; --quick 4].
        #[arg(long)]
        concurrency: Option<usize>,
        /// Seconds to wait after the last logon before measuring memory [default: 3; --quick 0].
        #[arg(long)]
        settle: Option<u64>,
    },
    /// Switchboard chat throughput and ACK latency, beside a bare in-process TCP relay (the
    /// floor). Senders are accounts 0..pairs, receivers pairs..2*pairs.
    Chat {
        /// Switchboard sessions, each with one sender and one receiver [default: 50; --quick 2].
        #[arg(long)]
        pairs: Option<usize>,
        /// Messages each sender sends [default: 2000; --quick 50].
        #[arg(long)]
        messages: Option<usize>,
        /// Unacknowledged messages each sender keeps in flight [default: 16; --quick 4].
        #[arg(long)]
        window: Option<usize>,
        /// MSG payload size in bytes, the 61-byte text/plain MIME header included.
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
    },
    /// Not a load: serves fixed answers to a logon's lines, keeping nothing, until killed; the
    /// floor under `logon`'s server CPU (run `logon --contacts 0` against it with --ns and
    /// --server-pid).
    Floor {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:18630")]
        listen: SocketAddr,
    },
    /// Presence fan-out: account 0 changes state, watchers 1..=N (each with account 0 on its
    /// FL) read the NLN; time to the last and the median watcher, per round.
    Fanout {
        /// Watchers [default: 1000; --quick 5].
        #[arg(long)]
        watchers: Option<usize>,
        /// State changes, alternately BSY and NLN [default: 5; --quick 3].
        #[arg(long)]
        rounds: Option<usize>,
        /// Watcher logons in progress at once [default: 100; --quick 4].
        #[arg(long)]
        concurrency: Option<usize>,
    },
}

/// A scenario with every size decided.
enum Shape {
    Logon(logon::Logon),
    Idle(idle::Idle),
    Chat(chat::Chat),
    Fanout(fanout::Fanout),
}

impl Shape {
    fn of(scenario: Scenario, quick: bool) -> Shape {
        let pick = |v: Option<usize>, full: usize, tiny: usize| {
            v.unwrap_or(if quick { tiny } else { full })
        };
        match scenario {
            Scenario::Logon {
                sequential,
                concurrent,
                concurrency,
                contacts,
            } => Shape::Logon(logon::Logon {
                sequential: pick(sequential, 1000, 5),
                concurrent: pick(concurrent, 2000, 20),
                concurrency: pick(concurrency, 100, 4),
                contacts: pick(contacts, 10, 2),
            }),
            Scenario::Idle {
                sessions,
                contacts,
                concurrency,
                settle,
            } => Shape::Idle(idle::Idle {
                sessions: pick(sessions, 2000, 20),
                contacts: pick(contacts, 10, 2),
                concurrency: pick(concurrency, 100, 4),
                settle: settle.unwrap_or(if quick { 0 } else { 3 }),
            }),
            Scenario::Chat {
                pairs,
                messages,
                window,
                payload_bytes,
            } => Shape::Chat(chat::Chat {
                pairs: pick(pairs, 50, 2),
                messages: pick(messages, 2000, 50),
                window: pick(window, 16, 4),
                payload_bytes,
            }),
            Scenario::Fanout {
                watchers,
                rounds,
                concurrency,
            } => Shape::Fanout(fanout::Fanout {
                watchers: pick(watchers, 1000, 5),
                rounds: pick(rounds, 5, 3),
                concurrency: pick(concurrency, 100, 4),
            }),
            Scenario::Floor { .. } => unreachable!("main serves the floor before any load"),
        }
    }

    /// The accounts and forward-list entries the scenario needs.
    fn plan(&self) -> Plan {
        match self {
            Shape::Logon(s) => Plan::ring(s.sequential.max(s.concurrent), s.contacts),
            Shape::Idle(s) => Plan::ring(s.sessions, s.contacts),
            Shape::Chat(s) => Plan::ring(2 * s.pairs, 0),
            Shape::Fanout(s) => Plan {
                accounts: s.watchers + 1,
                forward: (1..=s.watchers).map(|w| (w, 0)).collect(),
            },
        }
    }

    /// The accounts and entries of the scenario and of `hold` held sessions after them.
    fn plan_holding(&self, hold: usize) -> Plan {
        self.plan().and_ring(hold, hold::CONTACTS)
    }

    /// Open files the tool needs (its sockets, and the in-process relay's for chat).
    fn files(&self) -> usize {
        64 + match self {
            Shape::Logon(s) => s.sequential.max(s.concurrent),
            Shape::Idle(s) => s.sessions,
            Shape::Chat(s) => 8 * s.pairs,
            Shape::Fanout(s) => s.watchers + 1,
        }
    }

    fn check(&self) -> Result<()> {
        let bad = match self {
            Shape::Idle(s) => s.sessions == 0 || s.contacts >= s.sessions,
            Shape::Logon(s) => s.concurrent == 0 || s.contacts >= s.concurrent.max(s.sequential),
            Shape::Chat(s) => s.pairs == 0 || s.window == 0,
            Shape::Fanout(s) => s.watchers == 0,
        };
        if bad {
            bail!("sizes out of range: counts must be positive, --contacts below the accounts");
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Scenario::Floor { listen } = cli.scenario {
        return Ok(floor::serve(listen)?);
    }
    let shape = Shape::of(cli.scenario, cli.quick);
    shape.check()?;
    let fd_limit = raise_fd_limit();
    let needed = shape.files() + cli.hold;
    if fd_limit < needed as libc::rlim_t {
        bail!("the open-file limit is {fd_limit}, the run needs about {needed}: raise `ulimit -n`");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let accounts = Accounts {
        prefix: cli.accounts.clone(),
        password: cli.password.clone(),
    };
    if cli.ns.is_empty() && cli.dispatch.is_none() {
        return self_contained(&cli, &shape, accounts, runtime, fd_limit);
    }
    let outcome = runtime.block_on(async {
        let entry = match &cli.dispatch {
            Some(ds) => Entry::Dispatch(resolve(ds).await?),
            None => {
                let mut nodes: Vec<SocketAddr> = Vec::new();
                for ns in &cli.ns {
                    nodes.push(resolve(ns).await?);
                }
                Entry::Ns(nodes)
            }
        };
        println!("load: {} fd_limit={fd_limit}", entry.describe());
        let how = match (&cli.msngate, &cli.config) {
            (Some(bin), Some(config)) => Provision::Cli {
                bin: bin.clone(),
                config: config.clone(),
            },
            _ => Provision::Existing,
        };
        let plan = shape.plan_holding(cli.hold);
        provision(&how, &accounts, &plan, Some(&entry), cli.dialect).await?;
        let ctx = Ctx {
            entry,
            accounts,
            dialect: cli.dialect,
            proc: cli.server_pid.map(|pid| Proc { pid }),
        };
        run(&cli, &ctx, shape).await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

/// Starts the server itself: accounts into a fresh database, then the server on it.
fn self_contained(
    cli: &Cli,
    shape: &Shape,
    accounts: Accounts,
    runtime: tokio::runtime::Runtime,
    fd_limit: libc::rlim_t,
) -> Result<()> {
    let bin = cli
        .server
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/release/msngate"));
    let bin = bin
        .canonicalize()
        .with_context(|| format!("server binary {}", bin.display()))?;
    let dir = temporary_dir(cli.tmp.as_deref())?;
    println!(
        "load: server={} dir={} fd_limit={fd_limit}",
        bin.display(),
        dir.display()
    );
    let db = dir.join("msngate.db");
    let plan = shape.plan_holding(cli.hold);
    let outcome = (|| {
        runtime.block_on(provision(
            &Provision::Database(db.clone()),
            &accounts,
            &plan,
            None,
            cli.dialect,
        ))?;
        let max_connections = plan.accounts * 2 + 100;
        let server = Server::start(&bin, &dir, &db, &cli.log_level, max_connections)?;
        let ctx = Ctx {
            entry: Entry::Ns(vec![server.ns]),
            accounts,
            dialect: cli.dialect,
            proc: Some(server.proc),
        };
        let outcome = runtime.block_on(run(cli, &ctx, Shape::of(cli.scenario, cli.quick)));
        let stopped = server.stop();
        // Client connections are dropped only now, after the server has said OUT SSD to them.
        runtime.shutdown_timeout(Duration::from_secs(1));
        if let Err(e) = &outcome {
            eprintln!(
                "load: failed: {e:#}; server log: {}",
                dir.join("server.log").display()
            );
        }
        let stop_ms = stopped?;
        println!("shutdown: sigterm_to_exit_ms={stop_ms}");
        outcome
    })();
    if cli.keep || outcome.is_err() {
        println!("load: kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

async fn run(cli: &Cli, ctx: &Ctx, shape: Shape) -> Result<()> {
    let limit = Duration::from_secs(cli.time_limit);
    let first_held = shape.plan().accounts;
    let scenario = async {
        let held = hold::start(ctx, first_held, cli.hold).await?;
        match shape {
            Shape::Logon(s) => logon::run(ctx, s).await,
            Shape::Idle(s) => idle::run(ctx, s).await,
            Shape::Chat(s) => chat::run(ctx, s).await,
            Shape::Fanout(s) => fanout::run(ctx, s).await,
        }?;
        held.release()
    };
    tokio::time::timeout(limit, scenario)
        .await
        .map_err(|_| anyhow!("time limit of {}s reached", cli.time_limit))?
}

/// A new, private directory for the config, database and server log.
fn temporary_dir(base: Option<&Path>) -> Result<PathBuf> {
    let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let dir = base.join(format!("msngate-load-{}-{nanos:09}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_are_named_or_numbered() {
        assert_eq!(parse_dialect("7"), Ok(Dialect::Msnp7));
        assert_eq!(parse_dialect("msnp5"), Ok(Dialect::Msnp5));
        assert_eq!(parse_dialect("MSNP2"), Ok(Dialect::Msnp2));
        assert!(parse_dialect("MSNP9").is_err());
    }

    #[test]
    fn quick_sizes_are_tiny_and_given_sizes_win() {
        let cli = Cli::try_parse_from(["msngate-load", "--quick", "fanout", "--rounds", "2"])
            .expect("parses");
        let Shape::Fanout(f) = Shape::of(cli.scenario, cli.quick) else {
            panic!("fanout")
        };
        assert_eq!((f.watchers, f.rounds), (5, 2));
        let cli = Cli::try_parse_from(["msngate-load", "idle"]).expect("parses");
        let Shape::Idle(i) = Shape::of(cli.scenario, cli.quick) else {
            panic!("idle")
        };
        assert_eq!((i.sessions, i.contacts), (2000, 10));
    }

    #[test]
    fn the_modes_exclude_each_other() {
        let both = [
            "msngate-load",
            "--server",
            "x",
            "--ns",
            "127.0.0.1:1",
            "idle",
        ];
        assert!(Cli::try_parse_from(both).is_err());
        let both = ["msngate-load", "--ns", "a:1", "--dispatch", "b:1", "idle"];
        assert!(Cli::try_parse_from(both).is_err());
        let half = [
            "msngate-load",
            "--ns",
            "a:1",
            "--msngate",
            "msngate",
            "idle",
        ];
        assert!(
            Cli::try_parse_from(half).is_err(),
            "--msngate needs --config"
        );
        let cluster = ["msngate-load", "--ns", "a:1", "--ns", "b:2", "fanout"];
        assert_eq!(Cli::try_parse_from(cluster).expect("parses").ns.len(), 2);
    }
}
