//! The msngate command line: `serve`, and `user` commands that manage accounts.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use msngate::config::Config;
use msngate::protocol::{FriendlyName, UserHandle};
use msngate::store::{Database, StoreError};

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
        #[arg(long)]
        password: String,
        /// The friendly name; defaults to the handle.
        #[arg(long)]
        name: Option<String>,
    },
    /// Sets an account's password.
    Passwd {
        handle: String,
        #[arg(long)]
        password: String,
    },
    /// Deletes an account and takes it off everyone's lists.
    Remove { handle: String },
    /// Lists the accounts.
    List,
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
        Command::User(command) => user(&config.storage.database, command),
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

fn user(database: &Path, command: UserCommand) -> Result<()> {
    let open = || {
        Database::open(database)
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
            match open()?.create_account(&handle, &name, &password) {
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
            match open()?.set_password(&handle, &password) {
                Err(StoreError::NoSuchAccount) => Err(anyhow!("no account {handle}")),
                other => other.map_err(Into::into),
            }?;
            println!("password changed for {handle}");
        }
        UserCommand::Remove { handle } => {
            let handle = parse_handle(&handle)?;
            match open()?.remove_account(&handle) {
                Err(StoreError::NoSuchAccount) => Err(anyhow!("no account {handle}")),
                other => other.map_err(Into::into),
            }?;
            println!("removed {handle}");
        }
        UserCommand::List => {
            for (handle, name) in open()?.accounts()? {
                println!("{handle}\tlocal\t{}", name.as_str());
            }
        }
    }
    Ok(())
}
