//! Starting and stopping the server: listeners, the shared [`Services`], graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::FutureExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::backend::registry;
use crate::bridge::MirroredLists;
use crate::config::Config;
use crate::connection::{self, Ended, Entered, Timeouts};
use crate::dispatch::DispatchConnection;
use crate::http::ListenerStatus;
use crate::hub::cluster::{self, ClusterError};
use crate::hub::{Cookies, Counted, Delivery, InProcess, Node, Refused};
use crate::local::{LocalBackend, TruthLists};
use crate::metrics::{self, Metrics, SlowClient};
use crate::notification::NotificationSession;
use crate::secrets::SecretKey;
pub use crate::services::Services;
use crate::services::{Backends, ContactLists};
use crate::store::{self, Store, StoreError};
use crate::switchboard::SwitchboardConnection;

/// Every backend this build has, each with its kind of contact lists: the local one, serving
/// the server with these services, and those of other networks compiled in
/// ([`registry::networks`]).
fn backends(services: Weak<Services>) -> Backends {
    let mut backends = Backends::default();
    backends.insert(LocalBackend::new(services), Arc::new(TruthLists));
    let mirror: Arc<dyn ContactLists> = Arc::new(MirroredLists);
    for network in registry::networks() {
        backends.insert_shared(network.backend(), mirror.clone());
    }
    backends
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database {path} (key `storage.database`)")]
    Store { path: String, source: StoreError },
    #[error("{0}")]
    Secrets(#[from] crate::secrets::SecretsError),
    #[error("cannot listen on {address} ({role}): {source}")]
    Listen {
        address: SocketAddr,
        role: &'static str,
        source: std::io::Error,
    },
    #[error("cannot listen on {address} (http): {source}")]
    Http {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("msncd: {0}")]
    Msncd(#[from] crate::msncd::ListenError),
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
}

/// A started server.
pub struct Running {
    pub notification_address: SocketAddr,
    pub switchboard_address: SocketAddr,
    pub dispatch_address: Option<SocketAddr>,
    /// The HTTP listener's address, when configured.
    pub http_address: Option<SocketAddr>,
    /// The msncd listeners, when configured.
    pub msncd: crate::msncd::Listening,
    pub services: Arc<Services>,
    shutdown: CancellationToken,
    /// The cluster's tasks, which outlive the connections: what their last logouts queue for
    /// NATS goes out before the node says goodbye.
    cluster_tasks: TaskTracker,
    leave: CancellationToken,
}

#[derive(Clone, Copy)]
enum Kind {
    Notification,
    Switchboard,
    Dispatch,
}

impl Kind {
    fn role(self) -> &'static str {
        match self {
            Kind::Notification => "notification",
            Kind::Switchboard => "switchboard",
            Kind::Dispatch => "dispatch",
        }
    }

    fn metrics_role(self) -> metrics::Role {
        match self {
            Kind::Notification => metrics::Role::Notification,
            Kind::Switchboard => metrics::Role::Switchboard,
            Kind::Dispatch => metrics::Role::Dispatch,
        }
    }
}

async fn bind(address: SocketAddr, role: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Listen {
            address,
            role,
            source,
        })
}

/// Opens the store, binds the listeners and starts accepting. Ports given as 0 are chosen by
/// the system; the addresses actually bound are in [`Running`] and in XFR/RNG replies.
pub async fn start(config: Config) -> Result<Running, StartError> {
    // Shown masked: a PostgreSQL URL may hold a password.
    let database = config.storage.database.to_string();
    let store_error = |source| StartError::Store {
        path: database.clone(),
        source,
    };
    let metrics = Arc::new(Metrics::new());
    let store: Arc<dyn Store> = store::open(
        &config.storage.database,
        config.storage.pool(),
        Some(metrics.store_latency.clone()),
    )
    .await
    .map_err(store_error)?;
    serve(config, store, metrics).await
}

/// Like [`start`], on a store opened by the caller instead of `storage.database`: the fuzz
/// targets run a whole server on a store in memory.
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn Store>,
) -> Result<Running, StartError> {
    serve(config, store, Arc::new(Metrics::new())).await
}

async fn serve(
    config: Config,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) -> Result<Running, StartError> {
    let database = config.storage.database.to_string();
    let store_error = |source| StartError::Store {
        path: database.clone(),
        source,
    };
    let challenge_key = store.server_secret().await.map_err(store_error)?;
    let secret_key = SecretKey::load(&config.secrets, false)?;

    let ns = bind(config.server.notification_listen, "notification").await?;
    let sb = bind(config.server.switchboard_listen, "switchboard").await?;
    let ds = match config.server.dispatch_listen {
        Some(address) => Some(bind(address, "dispatch").await?),
        None => None,
    };
    let http = match config.http.listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Http { address, source })?,
        ),
        None => None,
    };
    let local = |l: &TcpListener| l.local_addr().expect("a bound listener has an address");
    let (ns_addr, sb_addr) = (local(&ns), local(&sb));
    let ds_port = ds.as_ref().map(|l| local(l).port());
    let host = config.server.public_host.clone();
    let notification_address = format!("{host}:{}", ns_addr.port());
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let (cluster_tasks, leave) = (TaskTracker::new(), CancellationToken::new());
    // One node alone keeps everything in memory; a node of a cluster reaches the others'
    // users over NATS.
    let hub: Arc<dyn Delivery> = match config.cluster.joined() {
        Some((url, node)) => {
            let joined = cluster::start(
                url,
                node,
                notification_address.clone(),
                store.clone(),
                metrics.cluster_dropped.clone(),
                &cluster_tasks,
                leave.clone(),
            )
            .await;
            joined?
        }
        None => Arc::new(InProcess::default()),
    };
    let services = Arc::new_cyclic(|services| Services {
        hub,
        node: Node::new(
            Cookies::new(Duration::from_secs(config.server.cookie_lifetime_secs)),
            config.server.max_connections,
            &config.limits,
        ),
        store,
        challenge_key,
        notification_address,
        switchboard_address: format!("{host}:{}", sb_addr.port()),
        dispatch_address: ds_port
            .map(|port| format!("{host}:{port}"))
            .unwrap_or_default(),
        tracker,
        secret_key,
        backends: backends(services.clone()),
        metrics,
        config,
    });
    let mut listeners = vec![(ns, Kind::Notification), (sb, Kind::Switchboard)];
    let dispatch_address = ds.as_ref().map(local);
    if let Some(ds) = ds {
        listeners.push((ds, Kind::Dispatch));
    }
    let mut statuses = Vec::new();
    for (listener, kind) in listeners {
        let status = ListenerStatus::new(kind.role(), local(&listener));
        statuses.push(status.clone());
        let (services, shutdown) = (services.clone(), shutdown.clone());
        services.tracker.clone().spawn(async move {
            accept_loop(listener, kind, services, shutdown).await;
            status.accepting.store(false, Ordering::Relaxed);
        });
    }
    let http_address = http.as_ref().map(local);
    if let Some(http) = http {
        crate::http::start(http, services.clone(), statuses, shutdown.clone());
    }
    info!(notification = %ns_addr, switchboard = %sb_addr, dispatch = ?dispatch_address, "msngate is listening");
    // msncd's internal MSN client connects to the addresses just bound.
    let msncd_addresses = crate::msncd::client::Addresses {
        notification: ns_addr,
        switchboard: sb_addr,
    };
    let msncd = crate::msncd::start(
        &services.config.msncd,
        msncd_addresses,
        services.tracker.clone(),
        shutdown.clone(),
        services.metrics.clone(),
    )
    .await;
    let msncd = match msncd {
        Ok(m) => m,
        Err(e) => {
            shutdown.cancel();
            leave.cancel();
            return Err(e.into());
        }
    };
    Ok(Running {
        notification_address: ns_addr,
        switchboard_address: sb_addr,
        dispatch_address,
        http_address,
        msncd,
        services,
        shutdown,
        cluster_tasks,
        leave,
    })
}

impl Running {
    /// Stops accepting, sends `OUT SSD` to everyone, and waits (up to 10 s) for every
    /// connection and session to finish; then a cluster node publishes what their logouts
    /// queued and says goodbye (up to 5 s more).
    pub async fn shutdown(self) {
        info!("shutting down");
        self.shutdown.cancel();
        self.services.node.live.shut_down();
        finish(&self.services.tracker, 10, "connections and sessions").await;
        self.leave.cancel();
        finish(&self.cluster_tasks, 5, "the cluster's tasks").await;
        info!("stopped");
    }
}

/// Waits up to `secs` for the tasks on `tracker` to end, saying so when they don't.
async fn finish(tracker: &TaskTracker, secs: u64, what: &str) {
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(secs), tracker.wait())
        .await
        .is_err()
    {
        warn!("{what} did not finish within {secs} s");
    }
}

/// Runs the server until `stop` is cancelled (by a signal, in `main`).
pub async fn run(config: Config, stop: CancellationToken) -> Result<(), StartError> {
    let running = start(config).await?;
    stop.cancelled().await;
    running.shutdown().await;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    services: Arc<Services>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        let (stream, address) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let counted = match services.node.connections.open(address.ip()) {
            Ok(counted) => counted,
            Err(refused) => {
                if let Some(unlogged) = services.node.refused_connections.should_log(address.ip()) {
                    match refused {
                        Refused::Full => {
                            warn!(%address, unlogged, "connection limit reached; closing the new connection")
                        }
                        Refused::Address => {
                            warn!(%address, unlogged, "too many connections from this address; closing the new one")
                        }
                    }
                }
                drop(stream);
                continue;
            }
        };
        // The connection's future is made here, so that the task holds it and not also the
        // stream and address it was made from (docs/PERFORMANCE.md, idle sessions). Each kind
        // is spawned as its own future type: one task type for all three would size every
        // notification session's task by the largest of them.
        let s = services.clone();
        let (timeouts, live) = (
            timeouts(&services.config, address.ip()),
            &services.node.live,
        );
        let held = |entered| Held {
            services: services.clone(),
            kind,
            counted,
            entered,
        };
        match kind {
            Kind::Notification => {
                let (entered, serving) = connection::serve(stream, timeouts, live, {
                    move |peer| NotificationSession::new(s, peer, address)
                });
                held(entered).spawn(serving)
            }
            Kind::Switchboard => {
                let (entered, serving) = connection::serve(stream, timeouts, live, {
                    move |peer| SwitchboardConnection::new(s, peer, address)
                });
                held(entered).spawn(serving)
            }
            Kind::Dispatch => {
                let (entered, serving) = connection::serve(stream, timeouts, live, {
                    move |_| DispatchConnection::new(s, address)
                });
                held(entered).spawn(serving)
            }
        }
    }
}

/// What a connection holds for its whole life besides its own future: its place under the
/// connection limits and its entry among the open connections (`connection::Live`, which a
/// shutdown goes through), both given back when it is dropped however the task ended, and the
/// metrics it reports when it ends. Part of every session's task: 40 bytes
/// (docs/PERFORMANCE.md).
struct Held {
    services: Arc<Services>,
    kind: Kind,
    counted: Counted,
    entered: Entered,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.services.node.connections.close(self.counted);
        self.services.node.live.leave(&self.entered);
    }
}

impl Held {
    fn spawn(self, serving: impl std::future::Future<Output = Ended> + Send + 'static) {
        let tracker = self.services.tracker.clone();
        self.services
            .metrics
            .connections(self.kind.metrics_role())
            .inc();
        // A combinator rather than an `async` block: awaiting the future would move it into
        // the block's state beside the block's own copy of it.
        tracker.spawn(serving.map(move |ended| {
            let metrics = &self.services.metrics;
            metrics.connections(self.kind.metrics_role()).dec();
            match ended {
                Ended::QueueFull => metrics.slow_client(SlowClient::QueueFull),
                Ended::SlowWrite => metrics.slow_client(SlowClient::SlowWrite),
                Ended::Normally => {}
            }
            drop(self);
        }));
    }
}

/// A client connection's limits, from the configuration and the client's address.
fn timeouts(config: &Config, address: IpAddr) -> Timeouts {
    let (s, limits) = (&config.server, &config.limits);
    Timeouts {
        login: Duration::from_secs(s.login_timeout_secs),
        write: Duration::from_secs(s.write_timeout_secs),
        pace: limits
            .apply_to(address)
            .then_some((limits.commands_per_second, limits.command_burst)),
        keepalive: Duration::from_secs(s.keepalive_secs),
    }
}
