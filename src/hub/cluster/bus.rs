//! The NATS side of a cluster node: connecting, the heartbeat, reading both subjects, and the
//! one task that publishes, every wait bounded. When NATS is unreachable the node goes on
//! serving its own users; the others drop it after their silence limit, and it them, until
//! NATS is back and the nodes exchange their directories again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::wire::{self, Broadcast};
use super::{Cluster, Outbound, Quiet, HEARTBEAT};
use crate::store::Store;

/// The longest one publish, subscribe or flush may take.
const NATS_BOUND: Duration = Duration::from_secs(2);
/// Messages NATS may hold for one subscription before it drops them as a slow consumer.
const SUBSCRIPTION_CAPACITY: usize = 8192;

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot use the NATS server {url}: {reason}")]
    Nats { url: String, reason: String },
}

/// Starts this node's part of the cluster on NATS at `url`: the [`Cluster`] to use as the hub's
/// [`super::Delivery`], with its tasks on `tracker` until `shutdown`. A NATS server that is
/// down is not an error: the client keeps trying in the background, and the node serves its
/// own users meanwhile.
pub async fn start(
    url: &str,
    node: &str,
    notification_address: String,
    store: Arc<dyn Store>,
    dropped: Counter,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Arc<Cluster>, ClusterError> {
    let shown = crate::config::redact_credentials(url);
    let failed = |reason: String| ClusterError::Nats {
        url: shown.clone(),
        reason,
    };
    let events_node = node.to_string();
    // Each failed reconnect is an error event: one line per interval is enough.
    let errors = Arc::new(Quiet::new());
    let connected = Arc::new(AtomicBool::new(false));
    let connected_events = connected.clone();
    let options = async_nats::ConnectOptions::new()
        .name(format!("msngate {node}"))
        .retry_on_initial_connect()
        .connection_timeout(NATS_BOUND)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(move |event| {
            let (node, errors) = (events_node.clone(), errors.clone());
            let connected = connected_events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        connected.store(true, Ordering::Relaxed);
                        info!(%node, "connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        connected.store(false, Ordering::Relaxed);
                        warn!(
                            %node,
                            "lost NATS: serving this node's users only until it is back"
                        );
                    }
                    other => {
                        if let Some(unlogged) = errors.should_log() {
                            warn!(%node, event = %other, unlogged, "NATS");
                        }
                    }
                }
            }
        });
    let client = tokio::time::timeout(NATS_BOUND, options.connect(url))
        .await
        .map_err(|_| failed("connecting took too long".into()))?
        .map_err(|e| failed(e.to_string()))?;
    let subscribe = |subject: String| {
        let client = client.clone();
        async move {
            tokio::time::timeout(NATS_BOUND, client.subscribe(subject))
                .await
                .map_err(|_| "subscribing took too long".to_string())?
                .map_err(|e| e.to_string())
        }
    };
    let broadcasts = subscribe(wire::BROADCAST.to_string())
        .await
        .map_err(failed)?;
    let direct = subscribe(wire::node_subject(node)).await.map_err(failed)?;

    let (cluster, queue) = Cluster::new(
        node.to_string(),
        notification_address,
        store,
        connected,
        dropped,
    );
    info!(%node, nats = %shown, "joining the cluster");
    tracker.spawn(publish_loop(
        client.clone(),
        cluster.clone(),
        queue,
        shutdown.clone(),
    ));
    tracker.spawn(heartbeat_loop(cluster.clone(), shutdown.clone()));
    tracker.spawn(read_loop(cluster.clone(), broadcasts, direct, shutdown));
    Ok(cluster)
}

/// Publishes what the node queued, one message at a time within [`NATS_BOUND`]; while NATS is
/// away, messages are dropped (and counted in the log) instead of piling up. On `shutdown`
/// (which comes after the connections ended) what is still queued goes out first, within
/// [`NATS_BOUND`] in all, so the last logouts reach the other nodes before the goodbye.
async fn publish_loop(
    client: async_nats::Client,
    cluster: Arc<Cluster>,
    mut queue: mpsc::Receiver<Outbound>,
    shutdown: CancellationToken,
) {
    let lost = Quiet::new();
    loop {
        let message = tokio::select! {
            m = queue.recv() => m,
            _ = shutdown.cancelled() => None,
        };
        let Some(message) = message else {
            break;
        };
        publish(&client, &cluster, &lost, message).await;
    }
    let rest = async {
        while let Ok(message) = queue.try_recv() {
            publish(&client, &cluster, &lost, message).await;
        }
    };
    if tokio::time::timeout(NATS_BOUND, rest).await.is_err() {
        warn!("could not publish the last cluster messages in time");
    }
    // Leaving: the others drop this node now rather than after the silence limit.
    if client.connection_state() == State::Connected {
        let bye = Broadcast::Bye {
            node: cluster.node.clone(),
            instance: cluster.instance,
        };
        if let Ok(body) = serde_json::to_vec(&bye) {
            let sent = async {
                client.publish(wire::BROADCAST, body.into()).await.ok()?;
                client.flush().await.ok()
            };
            if tokio::time::timeout(NATS_BOUND, sent).await.is_err() {
                warn!("could not say goodbye to the cluster in time");
            }
        }
    }
}

/// Publishes one message within [`NATS_BOUND`], or drops it (counted, logged once a while).
async fn publish(
    client: &async_nats::Client,
    cluster: &Cluster,
    lost: &Quiet,
    Outbound { subject, body }: Outbound,
) {
    if client.connection_state() != State::Connected {
        cluster.dropped.inc();
        if let Some(unlogged) = lost.should_log() {
            warn!(
                unlogged,
                "NATS is not connected; cluster messages are dropped"
            );
        }
        return;
    }
    match tokio::time::timeout(NATS_BOUND, client.publish(subject, body)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            cluster.dropped.inc();
            if let Some(unlogged) = lost.should_log() {
                warn!(error = %e, unlogged, "could not publish to NATS");
            }
        }
        Err(_) => {
            cluster.dropped.inc();
            if let Some(unlogged) = lost.should_log() {
                warn!(
                    unlogged,
                    "publishing to NATS took too long; message dropped"
                );
            }
        }
    }
}

/// Says this node is alive every [`HEARTBEAT`] and drops the nodes that went silent.
async fn heartbeat_loop(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let gone = cluster.beat();
        if !gone.is_empty() {
            cluster.tell_watchers(gone, false).await;
        }
    }
}

/// Reads both subjects in one task, so what one node says is handled in the order it said it.
async fn read_loop(
    cluster: Arc<Cluster>,
    mut broadcasts: async_nats::Subscriber,
    mut direct: async_nats::Subscriber,
    shutdown: CancellationToken,
) {
    let malformed = Quiet::new();
    loop {
        tokio::select! {
            message = broadcasts.next() => {
                let Some(message) = message else { break };
                match serde_json::from_slice::<Broadcast>(&message.payload) {
                    Ok(b) => {
                        let gone = cluster.on_broadcast(b);
                        if !gone.is_empty() {
                            let cluster = cluster.clone();
                            tokio::spawn(async move { cluster.tell_watchers(gone, false).await });
                        }
                    }
                    Err(e) => {
                        if let Some(unlogged) = malformed.should_log() {
                            warn!(error = %e, unlogged, "ignoring a malformed cluster broadcast");
                        }
                    }
                }
            }
            message = direct.next() => {
                let Some(message) = message else { break };
                match wire::decode_direct(&message.payload) {
                    Ok(incoming) => {
                        debug!(subject = %message.subject, "cluster message");
                        let back = cluster.on_direct(incoming);
                        if !back.is_empty() {
                            let cluster = cluster.clone();
                            tokio::spawn(async move { cluster.tell_watchers(back, true).await });
                        }
                    }
                    Err(e) => {
                        if let Some(unlogged) = malformed.should_log() {
                            warn!(error = %e, unlogged, "ignoring a malformed cluster message");
                        }
                    }
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
    error!("the NATS subscriptions ended; this node no longer hears the cluster");
}
