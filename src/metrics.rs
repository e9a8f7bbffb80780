//! The server's Prometheus metrics: one [`Metrics`] per server (in `Services`), served by the
//! HTTP listener's `/metrics` in the Prometheus text format.
//!
//! Built on `prometheus-client` (the Prometheus project's Rust client) rather than the
//! `metrics` facade: its registry is a value, not a process-wide recorder, so two servers in
//! one test process count apart and nothing is global (docs/ARCHITECTURE.md, "No globals").
//! The handles of hot paths are resolved once here, so counting there is one atomic add.
//! Values that are a state rather than an event (users online, backend sessions by state,
//! switchboard sessions) are read from the hub when scraped, costing the hot paths nothing.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

/// Static strings: counting a message allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    backend: &'static str,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StaticBackendLabel {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    backend: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The local backend's name (`crate::local::NAME`, a higher layer).
const LOCAL: &str = "local";

/// The roles whose open connections are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Notification,
    Switchboard,
    Dispatch,
    Msncd,
}

impl Role {
    const ALL: [Role; 4] = [
        Role::Notification,
        Role::Switchboard,
        Role::Dispatch,
        Role::Msncd,
    ];

    fn name(self) -> &'static str {
        match self {
            Role::Notification => "notification",
            Role::Switchboard => "switchboard",
            Role::Dispatch => "dispatch",
            Role::Msncd => "msncd",
        }
    }
}

/// Which way a relayed message went: `out` from an MSN user of this server (to local
/// contacts or to another network through the backend), `in` from another network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
}

/// Why the server disconnected a client that was too slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowClient {
    /// Its outbound queue filled up.
    QueueFull,
    /// A write blocked past `server.write_timeout_secs`.
    SlowWrite,
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    connections: [Gauge; 4],
    pub logons: Counter,
    pub failed_logons: Counter,
    messages: Family<MessageLabels, Counter>,
    /// `messages{backend="local",direction="out"}`, resolved once: every MSG between local
    /// users counts there, the hottest path counted.
    local_out: Counter,
    pub switchboard_sessions_started: Counter,
    switchboard_sessions: Gauge,
    online_users: Family<BackendLabel, Gauge>,
    backend_sessions: Family<StateLabels, Gauge>,
    backend_reconnects: Family<StaticBackendLabel, Counter>,
    slow_clients: [Counter; 2],
    /// Seconds per store call, from the caller's side (queueing included).
    pub store_latency: Histogram,
    /// Messages for other nodes not sent: the queue to NATS was full, or NATS away.
    pub cluster_dropped: Counter,
    /// The other live nodes, users known online on them, and whether NATS is connected
    /// (a node of a cluster only; set when scraped).
    cluster_nodes: Gauge,
    cluster_remote_users: Gauge,
    cluster_nats_connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("msngate");
        let connections_family = Family::<RoleLabel, Gauge>::default();
        let connections = Role::ALL
            .map(|role| connections_family.get_or_create_owned(&RoleLabel { role: role.name() }));
        registry.register(
            "connections",
            "Open client connections, by role",
            connections_family,
        );
        let online_users = Family::<BackendLabel, Gauge>::default();
        registry.register(
            "online_users",
            "Users logged in, by the backend of their account",
            online_users.clone(),
        );
        let logons = Counter::default();
        registry.register("logons", "Successful MSN logons", logons.clone());
        let failed_logons = Counter::default();
        registry.register(
            "failed_logons",
            "Refused MSN logons (wrong password, unknown handle, throttled, backend refused)",
            failed_logons.clone(),
        );
        let messages = Family::<MessageLabels, Counter>::default();
        let local_out = messages.get_or_create_owned(&MessageLabels {
            backend: LOCAL,
            direction: "out",
        });
        registry.register(
            "messages_relayed",
            "Chat messages relayed, by the backend of the sender (out) or of the network it came from (in)",
            messages.clone(),
        );
        let switchboard_sessions = Gauge::default();
        registry.register(
            "switchboard_sessions",
            "Switchboard (chat) sessions running",
            switchboard_sessions.clone(),
        );
        let switchboard_sessions_started = Counter::default();
        registry.register(
            "switchboard_sessions_started",
            "Switchboard (chat) sessions started",
            switchboard_sessions_started.clone(),
        );
        let backend_sessions = Family::<StateLabels, Gauge>::default();
        registry.register(
            "backend_sessions",
            "Backend sessions of logged-in users, by backend and connection state",
            backend_sessions.clone(),
        );
        let backend_reconnects = Family::<StaticBackendLabel, Counter>::default();
        registry.register(
            "backend_reconnects",
            "Backend connections lost and being re-established",
            backend_reconnects.clone(),
        );
        let slow_family = Family::<ReasonLabel, Counter>::default();
        let slow_clients = ["queue_full", "slow_write"]
            .map(|reason| slow_family.get_or_create_owned(&ReasonLabel { reason }));
        registry.register(
            "slow_clients_disconnected",
            "Clients disconnected for not reading: a full outbound queue or a write past its timeout",
            slow_family,
        );
        // 50 µs to about 3 s.
        let store_latency = Histogram::new(exponential_buckets(0.000_05, 3.0, 11));
        registry.register_with_unit(
            "store_call_duration",
            "Time a store call takes, queueing included",
            Unit::Seconds,
            store_latency.clone(),
        );
        let cluster_dropped = Counter::default();
        registry.register(
            "cluster_messages_dropped",
            "Messages for other nodes of the cluster not sent (queue to NATS full, NATS away)",
            cluster_dropped.clone(),
        );
        let cluster_nodes = Gauge::default();
        registry.register(
            "cluster_nodes",
            "Other nodes of the cluster heard from (0 alone)",
            cluster_nodes.clone(),
        );
        let cluster_remote_users = Gauge::default();
        registry.register(
            "cluster_remote_users",
            "Users online on the other nodes of the cluster",
            cluster_remote_users.clone(),
        );
        let cluster_nats_connected = Gauge::default();
        registry.register(
            "cluster_nats_connected",
            "1 when this node of a cluster is connected to NATS",
            cluster_nats_connected.clone(),
        );
        Metrics {
            cluster_dropped,
            cluster_nodes,
            cluster_remote_users,
            cluster_nats_connected,
            registry,
            connections,
            logons,
            failed_logons,
            messages,
            local_out,
            switchboard_sessions_started,
            switchboard_sessions,
            online_users,
            backend_sessions,
            backend_reconnects,
            slow_clients,
            store_latency,
        }
    }

    /// The gauge of open connections of one role.
    pub fn connections(&self, role: Role) -> &Gauge {
        let index = Role::ALL.iter().position(|r| *r == role).unwrap_or(0);
        &self.connections[index]
    }

    pub fn message_relayed(&self, backend: &'static str, direction: Direction) {
        if direction == Direction::Out && backend == LOCAL {
            self.local_out.inc();
            return;
        }
        let direction = match direction {
            Direction::Out => "out",
            Direction::In => "in",
        };
        self.messages
            .get_or_create(&MessageLabels { backend, direction })
            .inc();
    }

    pub fn backend_reconnect(&self, backend: &'static str) {
        self.backend_reconnects
            .get_or_create(&StaticBackendLabel { backend })
            .inc();
    }

    pub fn slow_client(&self, why: SlowClient) {
        self.slow_clients[why as usize].inc();
    }

    /// Sets the cluster's gauges (before [`Metrics::encode`]): other live nodes, users online
    /// on them, and whether NATS is connected.
    pub fn set_cluster(&self, nodes: usize, remote_users: usize, nats_connected: bool) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.cluster_nodes.set(count(nodes));
        self.cluster_remote_users.set(count(remote_users));
        self.cluster_nats_connected.set(i64::from(nats_connected));
    }

    /// The metrics in the Prometheus text format, after setting the scraped gauges from a
    /// snapshot: each online user's backend and its connection state, and the number of
    /// switchboard sessions.
    pub fn encode(&self, sessions: &[(&str, &'static str)], switchboards: usize) -> String {
        self.online_users.clear();
        self.backend_sessions.clear();
        for (backend, state) in sessions {
            self.online_users
                .get_or_create(&BackendLabel {
                    backend: backend.to_string(),
                })
                .inc();
            self.backend_sessions
                .get_or_create(&StateLabels {
                    backend: backend.to_string(),
                    state,
                })
                .inc();
        }
        self.switchboard_sessions
            .set(i64::try_from(switchboards).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_the_prefix_suffixes_and_labels() {
        let m = Metrics::new();
        m.connections(Role::Switchboard).inc();
        m.logons.inc();
        m.message_relayed("xmpp", Direction::In);
        m.slow_client(SlowClient::SlowWrite);
        m.store_latency.observe(0.001);
        let text = m.encode(&[("local", "connected"), ("local", "connected")], 3);
        for line in [
            "msngate_connections{role=\"switchboard\"} 1",
            "msngate_connections{role=\"msncd\"} 0",
            "msngate_logons_total 1",
            "msngate_failed_logons_total 0",
            "msngate_messages_relayed_total{backend=\"xmpp\",direction=\"in\"} 1",
            "msngate_slow_clients_disconnected_total{reason=\"slow_write\"} 1",
            "msngate_slow_clients_disconnected_total{reason=\"queue_full\"} 0",
            "msngate_online_users{backend=\"local\"} 2",
            "msngate_backend_sessions{backend=\"local\",state=\"connected\"} 2",
            "msngate_switchboard_sessions 3",
            "msngate_store_call_duration_seconds_count 1",
            "msngate_cluster_nodes 0",
            "msngate_cluster_messages_dropped_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // A user gone since the last scrape is no longer counted.
        let text = m.encode(&[], 0);
        assert!(!text.contains("msngate_online_users{"), "{text}");
        m.set_cluster(2, 7, true);
        m.cluster_dropped.inc();
        let text = m.encode(&[], 0);
        for line in [
            "msngate_cluster_nodes 2",
            "msngate_cluster_remote_users 7",
            "msngate_cluster_nats_connected 1",
            "msngate_cluster_messages_dropped_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
