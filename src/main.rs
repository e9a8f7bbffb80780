//! The msngate command line: `serve`, and `user` commands that manage accounts.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use msngate::config::Config;
use msngate::protocol::{FriendlyName, UserHandle};
use msngate::secrets::SecretKey;
use msngate::store::{BackendLink, SqliteStore, Store, StoreError};
use msngate_bridge_api::BackendError;

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

#[derive(Subcommand)]
enum LinkBackend {
    /// An XMPP account: the MSN contact list becomes its roster.
    Xmpp {
        /// The XMPP account, e.g. alice@example.org.
        #[arg(long)]
        jid: String,
        /// The XMPP password (or set MSNGATE_LINK_PASSWORD, which stays out of `ps`).
        #[arg(long, env = "MSNGATE_LINK_PASSWORD", hide_env_values = true)]
        password: String,
        /// Connect to this HOST:PORT instead of looking the server up in DNS.
        #[arg(long, value_name = "HOST:PORT")]
        server: Option<String>,
        /// Connect without TLS. Only for servers on a trusted network: the password would
        /// cross it in clear.
        #[arg(long)]
        plaintext: bool,
    },
    /// A Matrix account: its direct chats and rooms become the MSN contact list. Logs in once
    /// and keeps an access token and device (never the password); `unlink` logs that device out.
    Matrix {
        /// The homeserver's client API, e.g. https://matrix.example.org.
        #[arg(long)]
        homeserver: String,
        /// The Matrix user, e.g. @alice:example.org.
        #[arg(long)]
        user: String,
        /// The Matrix password (or set MSNGATE_LINK_PASSWORD, which stays out of `ps`).
        #[arg(long, env = "MSNGATE_LINK_PASSWORD", hide_env_values = true)]
        password: String,
    },
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

/// A bare JID: local@domain, without spaces or a resource.
fn check_jid(jid: &str) -> Result<()> {
    let valid = match jid.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains(['@', '/'])
                && !jid.chars().any(|c| c.is_whitespace() || c.is_control())
                && jid.len() <= 3071
        }
        None => false,
    };
    if !valid {
        return Err(anyhow!(
            "invalid JID {jid:?}: expected a bare JID like alice@example.org"
        ));
    }
    Ok(())
}

fn check_server(server: &str) -> Result<()> {
    let valid = server
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid {
        return Err(anyhow!("invalid server {server:?}: expected HOST:PORT"));
    }
    Ok(())
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
    let open = || {
        SqliteStore::open(database)
            .with_context(|| format!("cannot open the database {}", database.display()))
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
            let handle = parse_handle(&handle)?;
            // The account must exist before a backend login is spent on it.
            rt.block_on(open()?.account(&handle))
                .map_err(|_| anyhow!("no account {handle}"))?;
            let key = SecretKey::load(&config.secrets, true)?.expect("created when missing");
            let (backend, account, secret, options) = match backend {
                LinkBackend::Xmpp {
                    jid,
                    password,
                    server,
                    plaintext,
                } => {
                    check_jid(&jid)?;
                    check_password(&password)?;
                    let mut options = Vec::new();
                    if let Some(server) = server {
                        check_server(&server)?;
                        options.push(("server".to_string(), server));
                    }
                    if plaintext {
                        options.push(("plaintext".to_string(), "true".to_string()));
                    }
                    ("xmpp", jid, password, options)
                }
                LinkBackend::Matrix {
                    homeserver,
                    user,
                    password,
                } => {
                    check_password(&password)?;
                    // A directory per link, so relinking never meets the previous store
                    // (removed when that device is logged out below).
                    let stamp = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis();
                    let store = config
                        .storage
                        .backend_dir(&handle, "matrix")
                        .join(stamp.to_string());
                    let linked = runtime()?.block_on(msngate_bridge_matrix::link(
                        &homeserver,
                        &user,
                        &password,
                        &store,
                    ));
                    let linked = linked.map_err(|e| match e {
                        BackendError::BadCredentials => {
                            anyhow!("the homeserver refused the password of {user}")
                        }
                        e => anyhow!("cannot log {user} in at {homeserver}: {e}"),
                    })?;
                    ("matrix", linked.account, linked.secret, linked.options)
                }
            };
            let link = BackendLink {
                backend: backend.into(),
                account: account.clone(),
                sealed_secret: key.seal(handle.as_str(), secret.as_bytes()),
                options,
            };
            let previous = rt.block_on(open()?.backend_link(&handle))?;
            match rt.block_on(open()?.link(&handle, &link)) {
                Err(StoreError::NoSuchAccount) => Err(anyhow!("no account {handle}")),
                other => other.map_err(Into::into),
            }?;
            if let Some(previous) = previous {
                log_out_device(config, &handle, &previous);
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
            log_out_device(config, &handle, &link);
            println!("unlinked {handle}; it is a local account from its next login");
        }
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Ends what a backend link kept on the backend's side: a Matrix device is logged out and its
/// local store removed. Failures are reported and not fatal: the link is already gone.
fn log_out_device(config: &Config, handle: &UserHandle, link: &BackendLink) {
    if link.backend != "matrix" {
        return;
    }
    let secret = SecretKey::load(&config.secrets, false)
        .ok()
        .flatten()
        .and_then(|key| key.open(handle.as_str(), &link.sealed_secret).ok())
        .map(|s| String::from_utf8_lossy(&s).into_owned());
    let Some(secret) = secret else {
        eprintln!(
            "msngate: cannot open the stored Matrix token; the device of {} stays logged in",
            link.account
        );
        return;
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(msngate_bridge_matrix::unlink(
            &link.account,
            &secret,
            &link.options,
        ))
        .map_err(|e| anyhow!("{e}"))
    });
    match result {
        Ok(()) => println!("logged the Matrix device of {} out", link.account),
        Err(e) => eprintln!(
            "msngate: could not log the Matrix device of {} out: {e}",
            link.account
        ),
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
