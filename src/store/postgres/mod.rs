//! The PostgreSQL implementation of [`Store`]: tokio-postgres behind a bounded deadpool pool.
//!
//! Each method is one transaction, committed before its future completes. Changes run
//! `SERIALIZABLE`, so concurrent changes to one account (from several connections, or several
//! servers) behave as SQLite's single writer: PostgreSQL aborts any that would interleave and
//! the operation is retried from the start, a bounded number of times, on the connection it
//! had. Within one server, changes to the same account first wait their turn in that
//! account's lane ([`Lanes`]), so a popular account that many users add at once costs a
//! queue, not a storm of aborted transactions. Reads run
//! `REPEATABLE READ READ ONLY`: one snapshot, never aborted; a read that is one statement runs
//! alone, its own snapshot, without `BEGIN` and `COMMIT`. A read's statements that don't
//! depend on each other are sent together (tokio-postgres pipelines the requests of futures
//! polled at once), so a logon's four reads cost six round trips to the database, not 22.
//! A pooled connection the database
//! ended while it sat idle (a restart, a failover, `pg_terminate_backend`) fails on its first
//! statement, before anything was done on it; the operation then takes a new connection
//! instead of failing. Waiting for a connection is
//! bounded (`PoolOptions::wait`), and so is each operation as a whole; either failing is
//! `StoreError::Unavailable`, which the server answers with an MSN error like any database
//! failure. Connections are plain TCP (or a Unix socket): keep the database on loopback or a
//! private network (docs/OPERATIONS.md).

mod accounts;
mod groups;
mod lists;
mod maintenance;
mod rows;
mod schema;
mod store;

use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, Object, Pool, PoolError, Runtime};
use prometheus_client::metrics::histogram::Histogram;
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, NoTls};

use self::rows::Tx;
use super::{PoolOptions, PostgresUrl, StoreError};
use crate::protocol::UserHandle;

/// How many times an operation PostgreSQL aborted for a conflict is tried in all.
const MAX_ATTEMPTS: u32 = 40;

/// An operation's budget is this many times the pool's wait: the wait itself, the work, and
/// retries after conflicts.
const OPERATION_WAITS: u32 = 3;

/// The PostgreSQL store: a pool of connections to one database.
pub struct PostgresStore {
    pool: Pool,
    url: PostgresUrl,
    options: PoolOptions,
    /// Where each call's duration is recorded, when the server measures it.
    latency: Option<Histogram>,
    lanes: Lanes,
}

/// Changes to one account from this server, one at a time: each change holds the lanes of
/// the accounts whose rows it writes (at most two: a list change writes the owner's serial and
/// the contact's) for its whole transaction, retries included.
///
/// Without them, every change to a popular account conflicted with each other one in flight:
/// PostgreSQL let one commit and aborted the rest (`SERIALIZABLE`, one row: its serial), and
/// with 1,000 users adding one contact at once some additions were still retrying, each retry
/// queued again behind the pool, when the operation's time ran out. Synapse queues work on one
/// room the same way in-process (its `Linearizer`) in front of its database's own checks.
/// Changes from other servers of a cluster still meet in PostgreSQL and are retried there.
///
/// Accounts share lanes by a hash (a fixed number of mutexes, no map to grow or sweep): two
/// accounts in one lane only wait for each other, briefly.
struct Lanes {
    lanes: Box<[tokio::sync::Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
}

/// How many lanes: with the pool's 16 connections at once, two unrelated changes rarely share.
const LANES: usize = 256;

impl Lanes {
    fn new() -> Lanes {
        Lanes {
            lanes: (0..LANES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: Default::default(),
        }
    }

    /// Waits for the lanes of `accounts`, taken in one order so that two changes never hold
    /// one each while waiting for the other's.
    async fn enter(&self, accounts: &[&UserHandle]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut indices: Vec<usize> = accounts
            .iter()
            .map(|a| (self.hasher.hash_one(a.as_str()) % LANES as u64) as usize)
            .collect();
        indices.sort_unstable();
        indices.dedup();
        let mut held = Vec::with_capacity(indices.len());
        for i in indices {
            held.push(self.lanes[i].lock().await);
        }
        held
    }
}

/// What a transaction does.
#[derive(Clone, Copy)]
enum Mode {
    Read,
    Write,
}

impl PostgresStore {
    /// Connects to the database at `url`, creating its schema or bringing it forward.
    pub async fn connect(url: &PostgresUrl, options: PoolOptions) -> Result<Self, StoreError> {
        let store = PostgresStore::new(url, options)?;
        let migrate = async {
            let mut client = store.client().await?;
            schema::migrate(&mut client).await
        };
        tokio::time::timeout(store.operation_timeout(), migrate)
            .await
            .map_err(|_| store.timed_out())??;
        Ok(store)
    }

    /// The pool, without connecting yet.
    fn new(url: &PostgresUrl, options: PoolOptions) -> Result<Self, StoreError> {
        let mut config = url.config()?;
        config.connect_timeout(options.wait);
        if config.get_application_name().is_none() {
            config.application_name("msngate");
        }
        // The server gives up at the operation's bound too (a statement waiting on a lock, a
        // transaction left open), so a connection whose operation timed out here is soon
        // usable again and holds no locks. Options given in the URL win.
        if config.get_options().is_none() {
            let bound = (options.wait * OPERATION_WAITS).as_millis();
            config.options(format!(
                "-c statement_timeout={bound} -c idle_in_transaction_session_timeout={bound}"
            ));
        }
        let pool = Pool::builder(Manager::new(config, NoTls))
            .max_size(options.size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.wait))
            .create_timeout(Some(options.wait))
            .recycle_timeout(Some(options.wait))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(PostgresStore {
            pool,
            url: url.clone(),
            options,
            latency: None,
            lanes: Lanes::new(),
        })
    }

    /// Records each call's duration (waiting for a connection included) in `histogram`.
    pub fn with_latency(mut self, histogram: Histogram) -> PostgresStore {
        self.latency = Some(histogram);
        self
    }

    /// The database's URL (shown masked).
    pub fn url(&self) -> &PostgresUrl {
        &self.url
    }

    /// A connection from the pool, within the pool's wait.
    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(_) => StoreError::Unavailable(format!(
                "no database connection within {} s",
                self.options.wait.as_secs_f64()
            )),
            PoolError::Backend(e) => {
                StoreError::Unavailable(format!("cannot connect: {}", describe(&e)))
            }
            PoolError::Closed => StoreError::Closed,
            other => StoreError::Unavailable(other.to_string()),
        })
    }

    fn operation_timeout(&self) -> Duration {
        self.options.wait * OPERATION_WAITS
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "no answer from the database within {} s",
            self.operation_timeout().as_secs_f64()
        ))
    }

    fn observe(&self, started: Instant) {
        if let Some(histogram) = &self.latency {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}

/// A PostgreSQL error and its causes ("error connecting to server: Connection refused"), as
/// tokio-postgres's own text leaves them out.
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
        cause = e.source();
    }
    text
}

/// Starts a transaction of the kind `mode` asks for.
async fn begin(client: &mut Object, mode: Mode) -> Result<Tx<'_>, StoreError> {
    let builder = client.build_transaction();
    let builder = match mode {
        Mode::Write => builder.isolation_level(IsolationLevel::Serializable),
        Mode::Read => builder
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true),
    };
    Ok(builder.start().await?)
}

/// Whether PostgreSQL aborted the transaction for a conflict with another, so that running it
/// again may succeed. Besides serialization failures and deadlocks, PostgreSQL 15 sometimes
/// aborts one of several transactions locking the same rows with the internal error "new
/// multixact has more than one updating member" (seen once while 50 clients added contacts at
/// once, docs/SCALING.md); the transaction is rolled back like any other, so it is retried too.
fn retryable(error: &StoreError) -> bool {
    let StoreError::Postgres(e) = error else {
        return false;
    };
    match e.code() {
        Some(code) => {
            *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || (*code == SqlState::INTERNAL_ERROR
                    && e.as_db_error()
                        .is_some_and(|d| d.message().contains("multixact")))
        }
        None => false,
    }
}

/// Whether the connection was ended by the database (an administrator's
/// `pg_terminate_backend`, a restart, a crash) or is closed: PostgreSQL tells a session it
/// ends when it next reads from it, so a connection idle in the pool learns only on its use.
fn ended(error: &StoreError) -> bool {
    let StoreError::Postgres(e) = error else {
        return false;
    };
    e.is_closed()
        || e.code().is_some_and(|code| {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || code.code().starts_with("08")
        })
}

/// Whether PostgreSQL cancelled the statement: its `statement_timeout`, set to the operation's
/// bound, fired before the client's own timer (or an operator cancelled it).
fn cancelled_by_the_server(error: &StoreError) -> bool {
    matches!(error, StoreError::Postgres(e) if e.code() == Some(&SqlState::QUERY_CANCELED))
}

/// A short, growing, random pause before trying a conflicting transaction again, so that
/// those that conflicted don't meet again at once.
async fn backoff(attempt: u32) {
    let most = 2 * u64::from(attempt.min(10));
    tokio::time::sleep(Duration::from_millis(rand::random_range(1..=most.max(1)))).await;
}

/// Where an operation's transaction failed.
#[derive(Clone, Copy, PartialEq)]
enum Stage {
    /// At its first statement (`BEGIN`, or a read's one statement): nothing was done on the
    /// connection before it.
    Start,
    /// In the operation's statements or at `COMMIT`.
    Work,
}

/// What an operation does after a failure.
enum Next {
    /// Runs again on the same connection.
    Again,
    /// Runs again on a new connection, the pool's having been ended by the database.
    OnNewConnection,
    GiveUp,
}

/// An operation's tries so far, and the rule for the next.
struct Tries {
    attempt: u32,
    replaced: usize,
    /// How many connections the pool holds, so how many ended ones it can hand out.
    pool: usize,
}

impl Tries {
    fn new(pool: usize) -> Tries {
        Tries {
            attempt: 1,
            replaced: 0,
            pool,
        }
    }

    /// After `error` at `stage`: a connection the database had ended before the operation's
    /// first statement is replaced (nothing was done on it, and the pool holds at most one
    /// such per connection); a conflict is run again after a pause, a bounded number of times;
    /// anything else is the operation's error.
    async fn after(&mut self, error: &StoreError, stage: Stage) -> Next {
        if stage == Stage::Start && ended(error) && self.replaced <= self.pool {
            self.replaced += 1;
            return Next::OnNewConnection;
        }
        if retryable(error) && self.attempt < MAX_ATTEMPTS {
            self.attempt += 1;
            backoff(self.attempt).await;
            return Next::Again;
        }
        Next::GiveUp
    }
}

/// Runs `$body` (a future using the transaction `$tx`) as one transaction of `$mode` on
/// `$store`, tried again as [`Tries`] says, within the operation's time; it gives a
/// `StoreFuture`. A change names the accounts whose rows it writes, `[a, b]`, and waits for
/// their [`Lanes`] first (within the operation's time too).
macro_rules! transaction {
    ($store:expr, $mode:expr, |$tx:ident| $body:expr) => {
        $crate::store::postgres::transaction!($store, $mode, [], |$tx| $body)
    };
    ($store:expr, $mode:expr, [$($account:expr),*], |$tx:ident| $body:expr) => {
        $crate::store::postgres::operation!($store, [$($account),*], |client| {
            use $crate::store::postgres::Stage;
            match $crate::store::postgres::begin(client, $mode).await {
                Err(e) => Err((e, Stage::Start)),
                Ok($tx) => match $body.await {
                    Ok(value) => match $tx.commit().await {
                        Ok(()) => Ok(value),
                        Err(e) => Err((StoreError::from(e), Stage::Work)),
                    },
                    Err(e) => Err((e, Stage::Work)),
                },
            }
        })
    };
}
use transaction;

/// Runs `$body`, a read of one statement on the pooled connection `$client`, without a
/// transaction: one statement sees one snapshot of the database, as a `REPEATABLE READ`
/// transaction would, and spares the round trips of `BEGIN` and `COMMIT`. It is tried again
/// and bounded as a transaction is.
macro_rules! statement {
    ($store:expr, |$client:ident| $body:expr) => {
        $crate::store::postgres::operation!($store, [], |client| {
            let $client = &*client;
            $body
                .await
                .map_err(|e| (e, $crate::store::postgres::Stage::Start))
        })
    };
}
use statement;

/// The frame of every operation: the accounts' [`Lanes`], a pooled connection, `$attempt` (an
/// expression using the connection `$client`, giving the value or the error and where it
/// failed) tried again as [`Tries`] says, all within the operation's time; it gives a
/// `StoreFuture`.
macro_rules! operation {
    ($store:expr, [$($account:expr),*], |$client:ident| $attempt:expr) => {{
        let store: &PostgresStore = $store;
        Box::pin(async move {
            let started = std::time::Instant::now();
            let work = async {
                let _lanes = store.lanes.enter(&[$($account),*]).await;
                let mut client = store.client().await?;
                let mut tries = $crate::store::postgres::Tries::new(store.options.size);
                loop {
                    use $crate::store::postgres::Next;
                    let (failed, stage) = {
                        let $client = &mut client;
                        match $attempt {
                            Ok(value) => break Ok(value),
                            Err(failed) => failed,
                        }
                    };
                    match tries.after(&failed, stage).await {
                        Next::Again => {}
                        Next::OnNewConnection => {
                            drop(deadpool_postgres::Object::take(client));
                            client = store.client().await?;
                        }
                        Next::GiveUp => break Err(failed),
                    }
                }
            };
            let result = match tokio::time::timeout(store.operation_timeout(), work).await {
                // The server's own bound (`statement_timeout`, the same time) can end it first.
                Ok(Err(e)) if $crate::store::postgres::cancelled_by_the_server(&e) => {
                    Err(store.timed_out())
                }
                Ok(result) => result,
                Err(_) => Err(store.timed_out()),
            };
            store.observe(started);
            result
        })
    }};
}
use operation;
