//! The msngate command line: `serve`, and `user` commands that manage accounts.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Arg, ArgAction, ArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use msngate::backend::registry::{self, AnyLinker, KNOWN_NETWORKS};
use msngate::config::Config;
use msngate::protocol::{FriendlyName, UserHandle};
use msngate::secrets::SecretKey;
use msngate::store::{
    self, BackendLink, DatabaseCheck, DatabaseLocation, PostgresStore, SqliteStore, StoreError,
};
use msngate_bridge_api::{LinkArgKind, LinkRequest, StoredLink};

/// An MSN Messenger 1.0 (MSNP2) server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file (see config/msngate.toml); without it, built-in defaults.
    #[arg(long, global = true, env = "MSNGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server until SIGINT or SIGTERM.
    Serve,
    /// Manages accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Checks the configuration without starting: its values, that the listeners' addresses
    /// can be bound, the database and the key file. Secrets are masked.
    CheckConfig,
    /// Copies the database to FILE, consistently even while the server runs: SQLite's online
    /// backup, or for PostgreSQL `pg_dump --format=custom` (restore with `pg_restore`). The key
    /// file is not in it: back that up too (see docs/OPERATIONS.md).
    Backup {
        /// Where to write the copy; must not exist yet.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Creates an account.
    Add {
        handle: String,
        /// The MSN password (or set MSNGATE_USER_PASSWORD, which stays out of `ps`).
        #[arg(long, env = "MSNGATE_USER_PASSWORD", hide_env_values = true)]
        password: String,
        /// The friendly name; defaults to the handle.
        #[arg(long)]
        name: Option<String>,
    },
    /// Sets an account's password.
    Passwd {
        handle: String,
        /// The new MSN password (or set MSNGATE_USER_PASSWORD).
        #[arg(long, env = "MSNGATE_USER_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Deletes an account and takes it off everyone's lists.
    Remove { handle: String },
    /// Lists the accounts and the backend each one uses.
    List,
    /// Maps an account to a backend account; takes effect at its next login. The MSN password
    /// stays the gateway's own.
    Link {
        handle: String,
        #[command(subcommand)]
        backend: LinkBackend,
    },
    /// Makes a linked account local again; takes effect at its next login.
    Unlink { handle: String },
}

/// `msngate user link HANDLE BACKEND --NAME VALUE ...`: a subcommand per backend of another
/// network in this build, made from the arguments the backend declares
/// ([`msngate_bridge_api::Linker::link_args`]).
struct LinkBackend {
    backend: String,
    /// The arguments given, by name; a flag given is `"true"`.
    args: Vec<(String, String)>,
}

/// Where a link's secret argument (a password) may come from instead, out of `ps`.
const LINK_SECRET_ENV: &str = "MSNGATE_LINK_PASSWORD";

fn link_command(network: &dyn AnyLinker) -> clap::Command {
    let mut command = clap::Command::new(network.name()).about(network.link_help());
    for arg in network.link_args() {
        let mut option = Arg::new(arg.name).long(arg.name);
        option = match arg.kind {
            LinkArgKind::Flag => option.action(ArgAction::SetTrue),
            LinkArgKind::Required | LinkArgKind::Optional => option
                .action(ArgAction::Set)
                .required(arg.kind == LinkArgKind::Required)
                .value_name(
                    arg.value_name
                        .map_or_else(|| arg.name.to_uppercase(), str::to_owned),
                ),
        };
        option = if arg.secret {
            option
                .env(LINK_SECRET_ENV)
                .hide_env_values(true)
                .help(format!(
                    "{} (or set {LINK_SECRET_ENV}, which stays out of `ps`)",
                    arg.help
                ))
        } else {
            option.help(arg.help)
        };
        command = command.arg(option);
    }
    command
}

impl clap::FromArgMatches for LinkBackend {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let Some((name, given)) = matches.subcommand() else {
            return Err(clap::Error::new(clap::error::ErrorKind::MissingSubcommand));
        };
        let mut args = Vec::new();
        for arg in registry::network(name).iter().flat_map(|n| n.link_args()) {
            let value = match arg.kind {
                LinkArgKind::Flag => given.get_flag(arg.name).then(|| "true".to_string()),
                _ => given.get_one::<String>(arg.name).cloned(),
            };
            if let Some(value) = value {
                args.push((arg.name.to_string(), value));
            }
        }
        Ok(LinkBackend {
            backend: name.to_string(),
            args,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Subcommand for LinkBackend {
    fn augment_subcommands(mut command: clap::Command) -> clap::Command {
        let networks = registry::networks();
        for network in &networks {
            command = command.subcommand(link_command(network.as_ref()));
        }
        // A backend this build lacks still parses (hidden, taking anything), so that linking
        // to it says so instead of "unrecognized subcommand".
        for name in KNOWN_NETWORKS {
            if !networks.iter().any(|n| n.name() == *name) {
                command = command.subcommand(
                    clap::Command::new(*name)
                        .hide(true)
                        .disable_help_flag(true)
                        .arg(
                            Arg::new("args")
                                .num_args(0..)
                                .trailing_var_arg(true)
                                .allow_hyphen_values(true),
                        ),
                );
            }
        }
        command
    }

    fn augment_subcommands_for_update(command: clap::Command) -> clap::Command {
        Self::augment_subcommands(command)
    }

    fn has_subcommand(name: &str) -> bool {
        KNOWN_NETWORKS.contains(&name) || registry::network(name).is_some()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("msngate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(config),
        Command::User(command) => user(&config, command),
        Command::CheckConfig => check_config(&config),
        Command::Backup { file } => backup(&config, &file),
    }
}

fn serve(config: Config) -> Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .map_err(|e| anyhow!("configuration: key `log.level`: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    raise_file_limit(config.server.max_connections);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signal_stop.cancel();
        });
        msngate::server::run(config, stop).await
    })?;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn parse_handle(handle: &str) -> Result<UserHandle> {
    handle
        .parse()
        .map_err(|e| anyhow!("invalid handle {handle:?}: {e}"))
}

fn check_password(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(anyhow!("the password must not be empty"));
    }
    Ok(())
}

fn user(config: &Config, command: UserCommand) -> Result<()> {
    let database = &config.storage.database;
    let rt = runtime()?;
    // Each use opens the store afresh, so a command that fails early creates no database.
    let open = || {
        rt.block_on(store::open(database, config.storage.pool(), None))
            .with_context(|| format!("cannot open the database {database}"))
    };
    match command {
        UserCommand::Add {
            handle,
            password,
            name,
        } => {
            let handle = parse_handle(&handle)?;
            check_password(&password)?;
            let name = match name {
                Some(n) => FriendlyName::new(&n).map_err(|e| anyhow!("invalid name: {e}"))?,
                None => FriendlyName::from_handle(&handle),
            };
            match rt.block_on(open()?.create_account(&handle, &name, &password)) {
                Err(StoreError::AccountExists) => {
                    Err(anyhow!("the account {handle} already exists"))
                }
                other => other.map_err(Into::into),
            }?;
            println!("added {handle}");
        }
        UserCommand::Passwd { handle, password } => {
            let handle = parse_handle(&handle)?;
            check_password(&password)?;
            match rt.block_on(open()?.set_password(&handle, &password)) {
                Err(StoreError::NoSuchAccount) => Err(anyhow!("no account {handle}")),
                other => other.map_err(Into::into),
            }?;
            println!("password changed for {handle}");
        }
        UserCommand::Remove { handle } => {
            let handle = parse_handle(&handle)?;
            match rt.block_on(open()?.remove_account(&handle)) {
                Err(StoreError::NoSuchAccount) => Err(anyhow!("no account {handle}")),
                other => other.map_err(Into::into),
            }?;
            println!("removed {handle}");
        }
        UserCommand::List => {
            let db = open()?;
            let refused: std::collections::HashSet<_> = rt
                .block_on(db.refused_links())?
                .into_iter()
                .map(|(h, _)| h)
                .collect();
            for (handle, name, link) in rt.block_on(db.accounts_with_links())? {
                let backend = match link {
                    Some(l) => format!("{}:{}", l.backend, l.account),
                    None => msngate::bridge::UNLINKED_BACKEND.into(),
                };
                // A link whose network refused the credentials stays refused (no retries)
                // until a logon is accepted again or it is linked anew.
                let state = if refused.contains(&handle) {
                    "\tcredentials refused: link again"
                } else {
                    ""
                };
                println!("{handle}\t{backend}\t{}{state}", name.as_str());
            }
        }
        UserCommand::Link { handle, backend } => {
            let Some(network) = registry::network(&backend.backend) else {
                return Err(anyhow!(
                    "the {} backend is not compiled into this build of msngate",
                    backend.backend
                ));
            };
            let handle = parse_handle(&handle)?;
            // The account must exist before a backend login is spent on it.
            rt.block_on(open()?.account(&handle))
                .map_err(|_| anyhow!("no account {handle}"))?;
            let key = SecretKey::load(&config.secrets, true)?.expect("created when missing");
            let request = LinkRequest {
                msn_handle: handle.to_string(),
                args: backend.args,
                data_dir: config.storage.backend_dir(&handle, network.name()),
            };
            let linked = rt.block_on(network.link(request))?;
            let backend = network.name();
            let account = linked.account;
            let link = BackendLink {
                backend: backend.into(),
                account: account.clone(),
                sealed_secret: key.seal(handle.as_str(), linked.secret.as_bytes()),
                options: linked.options,
            };
            let previous = rt.block_on(open()?.backend_link(&handle))?;
            match rt.block_on(open()?.link(&handle, &link)) {
                Err(StoreError::NoSuchAccount) => Err(anyhow!("no account {handle}")),
                other => other.map_err(Into::into),
            }?;
            if let Some(previous) = previous {
                undo_link(config, &handle, &previous);
            }
            println!("linked {handle} to {backend}:{account} (from its next login)");
        }
        UserCommand::Unlink { handle } => {
            let handle = parse_handle(&handle)?;
            let link = match rt.block_on(open()?.unlink(&handle)) {
                Err(StoreError::NoSuchAccount) => Err(anyhow!("no account {handle}")),
                Err(StoreError::NotLinked) => Err(anyhow!("{handle} is not linked to a backend")),
                other => other.map_err(anyhow::Error::from),
            }?;
            undo_link(config, &handle, &link);
            println!("unlinked {handle}; it is a local account from its next login");
        }
    }
    Ok(())
}

/// `check-config`: the configuration loaded (a bad value already stopped `run` with its key),
/// then each listener's address bound and released, the database opened read-only and the
/// key file looked at. Problems are listed, each with its key, and make the exit status 1.
fn check_config(config: &Config) -> Result<()> {
    let mut problems = Vec::new();
    let addresses = vec![
        (
            "server.notification_listen",
            Some(config.server.notification_listen),
        ),
        (
            "server.switchboard_listen",
            Some(config.server.switchboard_listen),
        ),
        ("server.dispatch_listen", config.server.dispatch_listen),
        ("msncd.listen", config.msncd.listen),
        ("http.listen", config.http.listen),
    ];
    for (key, address) in addresses.into_iter().filter_map(|(k, a)| Some((k, a?))) {
        match std::net::TcpListener::bind(address) {
            Ok(_) => println!("ok   {key} = {address} can be bound"),
            Err(e) => problems.push(format!(
                "key `{key}`: cannot listen on {address}: {e} (is msngate already running?)"
            )),
        }
    }
    // Shown masked: a PostgreSQL URL may hold a password.
    let database = &config.storage.database;
    let check = match database {
        DatabaseLocation::File(path) => SqliteStore::check(path),
        DatabaseLocation::Postgres(url) => {
            runtime()?.block_on(PostgresStore::check(url, config.storage.pool()))
        }
    };
    match check {
        Ok(DatabaseCheck::Missing) => println!(
            "ok   storage.database = {database}: not there yet; `serve` or `user add` creates it"
        ),
        Ok(DatabaseCheck::Usable { schema: 0, .. }) => println!(
            "ok   storage.database = {database}: no tables yet; `serve` or `user add` creates them"
        ),
        Ok(DatabaseCheck::Usable { schema, accounts }) => {
            println!("ok   storage.database = {database}: schema {schema}, {accounts} accounts")
        }
        Err(e) => problems.push(format!(
            "key `storage.database`: cannot use {database}: {e}"
        )),
    }
    if config.secrets.key.as_deref().is_some_and(|k| !k.is_empty()) {
        println!("ok   secrets.key = [redacted] (wins over secrets.key_file)");
    } else {
        let file = &config.secrets.key_file;
        match SecretKey::load(&config.secrets, false) {
            Ok(Some(_)) => println!("ok   secrets.key_file = {}: a key", file.display()),
            Ok(None) => println!(
                "ok   secrets.key_file = {}: not there yet; linking an account creates it",
                file.display()
            ),
            Err(e) => problems.push(format!("key `secrets.key_file`: {e}")),
        }
    }
    if config.http.metrics_token.is_some() {
        println!("ok   http.metrics_token = [redacted]");
    }
    if let Some((url, node)) = config.cluster.joined() {
        let nats = msngate::config::redact_credentials(url);
        // A NATS server that is down does not stop `serve` (the node serves its own users
        // and joins when it comes up), so this is a note, not a problem.
        match nats_reachable(url) {
            Ok(address) => {
                println!("ok   cluster.node = {node}; cluster.nats = {nats}: {address} answers")
            }
            Err(e) => println!(
                "note cluster.node = {node}; cluster.nats = {nats}: not reachable now ({e}); \
                 the node serves its own users until it is"
            ),
        }
    }
    if problems.is_empty() {
        println!("the configuration is usable");
        return Ok(());
    }
    for problem in &problems {
        eprintln!("msngate: {problem}");
    }
    Err(anyhow!(
        "{} problem{} in the configuration",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    ))
}

/// Whether a TCP connection to the NATS server of `url` (`nats://[user:pass@]host[:port]`)
/// opens within 2 s; the address that answered.
fn nats_reachable(url: &str) -> Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let with_port = match host_port.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => host_port.to_string(),
        _ => format!("{host_port}:4222"),
    };
    let mut last = anyhow!("{with_port} has no address");
    for address in with_port.to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2)) {
            Ok(_) => return Ok(address),
            Err(e) => last = anyhow!("{address}: {e}"),
        }
    }
    Err(last)
}

/// `backup FILE`: a consistent copy of the database, also while the server runs.
fn backup(config: &Config, file: &std::path::Path) -> Result<()> {
    let database = &config.storage.database;
    if database.file().is_some_and(|path| !path.exists()) {
        return Err(anyhow!("there is no database at {database}"));
    }
    if file.exists() {
        return Err(anyhow!(
            "{} already exists; a backup never overwrites a file",
            file.display()
        ));
    }
    let cannot_open = || format!("cannot open the database {database}");
    let rt = runtime()?;
    let copied = match database {
        DatabaseLocation::File(path) => {
            let store = SqliteStore::open(path).with_context(cannot_open)?;
            rt.block_on(store.backup_to(file))
        }
        DatabaseLocation::Postgres(url) => {
            // Connecting first checks the URL and the schema before pg_dump is run.
            let store = rt
                .block_on(PostgresStore::connect(url, config.storage.pool()))
                .with_context(cannot_open)?;
            rt.block_on(store.backup_to(file))
        }
    };
    copied.with_context(|| format!("cannot back up to {}", file.display()))?;
    println!("backed up {database} to {}", file.display());
    if config.secrets.key.as_deref().is_some_and(|k| !k.is_empty()) {
        println!(
            "the key that opens linked accounts' secrets is secrets.key (MSNGATE__SECRETS__KEY): \
             keep a copy of it with this backup"
        );
    } else {
        println!(
            "the key that opens linked accounts' secrets is in {}: copy it with this backup \
             (without it, linked accounts must be linked again)",
            config.secrets.key_file.display()
        );
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Ends what a backend link kept on the backend's side (a Matrix device is logged out and its
/// local store removed). Failures are reported and not fatal: the link is already gone.
fn undo_link(config: &Config, handle: &UserHandle, link: &BackendLink) {
    let Some(network) = registry::network(&link.backend) else {
        eprintln!(
            "msngate: the {} backend is not compiled into this build; whatever the link of {} \
             left on that network stays",
            link.backend, link.account
        );
        return;
    };
    let secret = SecretKey::load(&config.secrets, false)
        .ok()
        .flatten()
        .and_then(|key| key.open(handle.as_str(), &link.sealed_secret).ok())
        .map(|s| String::from_utf8_lossy(&s).into_owned());
    let stored = StoredLink {
        account: link.account.clone(),
        secret,
        options: link.options.clone(),
    };
    match runtime().map(|rt| rt.block_on(network.unlink(stored))) {
        Ok(Ok(Some(report))) => println!("{report}"),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => eprintln!("msngate: {e}"),
        Err(e) => eprintln!("msngate: {e:#}"),
    }
}

/// Each client is a file descriptor: raise the soft limit (often 1024) towards the hard one so
/// `max_connections` can be reached, and say so when it can't.
#[cfg(unix)]
fn raise_file_limit(max_connections: usize) {
    let wanted = max_connections + 256;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let target = (wanted as libc::rlim_t).min(limit.rlim_max);
        if target > limit.rlim_cur {
            limit.rlim_cur = target;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
            && limit.rlim_cur < wanted as libc::rlim_t
        {
            tracing::warn!(
                open_files = limit.rlim_cur,
                max_connections,
                "the open-file limit is below server.max_connections; raise it (ulimit -n) to serve that many"
            );
        }
    }
}

#[cfg(not(unix))]
fn raise_file_limit(_: usize) {}
