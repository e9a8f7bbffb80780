//! [`Delivery`] across several nodes that meet on NATS: [`Cluster`] wraps this node's
//! [`InProcess`] and knows, from broadcasts, who is logged in on the other nodes.
//!
//! - Membership: every node broadcasts a heartbeat each [`HEARTBEAT`] (name, notification
//!   address, load); a node not heard from for [`SILENCE`] is dropped, and with it its users
//!   (their watchers here see FLN). A node heard for the first time (or restarted) is asked
//!   for its users.
//! - Directory: logins, state and name changes and logouts are broadcast, so `presence` and
//!   `visible_status` answer from memory. Of two logins of one handle the later one stays; the
//!   node holding the older one sends it `OUT OTH`.
//! - Delivery: a line for a user on another node goes to that node's subject in one canonical
//!   form ([`wire`]) and is written there in the user's dialect.
//! - Dispatch: each handle goes to the live node that wins rendezvous hashing
//!   ([`directory::rendezvous`]).
//!
//! Nothing here waits on the network from a caller's task: everything bound for NATS goes
//! through one bounded queue, and `bus` does the I/O with time limits.

mod bus;
mod directory;
mod inbound;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tracing::warn;

use super::switchboard::SessionHandle;
use super::{ClusterStatus, Delivery, InProcess, OnlineUser};
use crate::backend::Account;
use crate::connection::Peer;
use crate::protocol::{Dialect, FriendlyName, ServerCommand, SharedLine, Status, UserHandle};
use crate::store::Store;
use directory::{rendezvous, Directory, Members};
use wire::{Broadcast, Direct, UserEntry};

pub use bus::{start, ClusterError};

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node may stay silent before the others drop it.
pub const SILENCE: Duration = Duration::from_secs(3);
/// Messages waiting for NATS; past this, new ones are dropped (and logged).
const OUTBOUND_QUEUE: usize = 8192;
/// Users per snapshot message (NATS's default payload limit is 1 MiB).
const SNAPSHOT_PART: usize = 500;
/// Watchers per presence message.
const PRESENCE_PART: usize = 1000;

/// A message for NATS: its subject and body.
struct Outbound {
    subject: String,
    body: Bytes,
}

/// Logs a recurring problem at most once per interval, with how many were not logged.
struct Quiet {
    last: AtomicU64,
    unlogged: AtomicU64,
}

impl Quiet {
    const INTERVAL_SECS: u64 = 10;

    fn new() -> Quiet {
        Quiet {
            last: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// `Some(count not logged before)` when this one should be logged.
    fn should_log(&self) -> Option<u64> {
        let now = unix_micros() / 1_000_000;
        let last = self.last.load(Ordering::Relaxed);
        if now >= last + Self::INTERVAL_SECS
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.unlogged.swap(0, Ordering::Relaxed));
        }
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// [`Delivery`] for a node of a cluster.
pub struct Cluster {
    local: InProcess,
    node: String,
    /// Random per process (see [`Broadcast::Heartbeat`]).
    instance: u64,
    /// This node's notification server, `public_host:port`.
    notification_address: String,
    directory: Directory,
    members: Members,
    /// Each local login's peer id and stamp.
    stamps: DashMap<UserHandle, (u64, u64)>,
    last_stamp: AtomicU64,
    outbound: mpsc::Sender<Outbound>,
    full: Quiet,
    same_name: Quiet,
    store: Arc<dyn Store>,
    /// Set by the NATS client's events.
    connected: Arc<AtomicBool>,
    /// This cluster, for the tasks it starts.
    me: Weak<Cluster>,
    /// Messages not sent (`msngate_cluster_messages_dropped_total`).
    dropped: Counter,
}

impl Cluster {
    fn new(
        node: String,
        notification_address: String,
        store: Arc<dyn Store>,
        connected: Arc<AtomicBool>,
        dropped: Counter,
    ) -> (Arc<Cluster>, mpsc::Receiver<Outbound>) {
        let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
        let cluster = Arc::new_cyclic(|me| Cluster {
            local: InProcess::default(),
            node,
            instance: rand::random(),
            notification_address,
            directory: Directory::default(),
            members: Members::default(),
            stamps: DashMap::new(),
            last_stamp: AtomicU64::new(0),
            outbound,
            full: Quiet::new(),
            same_name: Quiet::new(),
            store,
            connected,
            me: me.clone(),
            dropped,
        });
        (cluster, queue)
    }

    /// Queues a message for NATS without waiting; a full queue drops it.
    fn publish(&self, subject: String, body: Bytes) -> bool {
        match self.outbound.try_send(Outbound { subject, body }) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.inc();
                if let Some(unlogged) = self.full.should_log() {
                    warn!(
                        unlogged,
                        "the queue to NATS is full; cluster messages are dropped"
                    );
                }
                false
            }
        }
    }

    fn broadcast(&self, message: &Broadcast) {
        match serde_json::to_vec(message) {
            Ok(body) => {
                self.publish(wire::BROADCAST.to_string(), body.into());
            }
            Err(error) => warn!(%error, "could not encode a cluster message"),
        }
    }

    fn direct(&self, node: &str, message: &Direct) {
        match serde_json::to_vec(message) {
            Ok(body) => {
                self.publish(wire::node_subject(node), body.into());
            }
            Err(error) => warn!(%error, "could not encode a cluster message"),
        }
    }

    /// A stamp later than every earlier one of this node.
    fn next_stamp(&self) -> u64 {
        let now = unix_micros();
        let mut last = self.last_stamp.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_stamp.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// The entry other nodes keep for a local user.
    fn entry(&self, handle: &UserHandle, user: &OnlineUser) -> Option<UserEntry> {
        let (_, stamp) = *self.stamps.get(handle)?;
        Some(UserEntry {
            handle: handle.to_string(),
            status: user.status.to_string(),
            name: user.name.as_str().to_string(),
            dialect: user.peer.dialect().to_string(),
            stamp,
        })
    }

    /// Tells the other nodes a local user's login, state and name.
    fn announce(&self, handle: &UserHandle) {
        let Some(user) = self.local.user(handle) else {
            return;
        };
        if let Some(user) = self.entry(handle, &user) {
            self.broadcast(&Broadcast::Online {
                node: self.node.clone(),
                instance: self.instance,
                user,
            });
        }
    }
}

impl Delivery for Cluster {
    fn log_in(
        &self,
        handle: UserHandle,
        peer: Peer,
        name: FriendlyName,
        backend: Arc<Account>,
    ) -> Option<OnlineUser> {
        let stamp = self.next_stamp();
        self.stamps.insert(handle.clone(), (peer.id(), stamp));
        let replaces_visible = self
            .directory
            .get(&handle)
            .is_some_and(|u| u.status.is_visible());
        let previous = self.local.log_in(handle.clone(), peer, name, backend);
        self.announce(&handle);
        // After the login is in place here: its FLN is this node's to send now.
        if let Some(cluster) = replaces_visible.then(|| self.me.upgrade()).flatten() {
            tokio::spawn(async move { cluster.replaced_elsewhere(handle).await });
        }
        previous
    }

    fn log_out(&self, handle: &UserHandle, peer_id: u64) -> Option<OnlineUser> {
        let user = self.local.log_out(handle, peer_id)?;
        if let Some((_, (_, stamp))) = self.stamps.remove_if(handle, |_, (id, _)| *id == peer_id) {
            self.broadcast(&Broadcast::Offline {
                node: self.node.clone(),
                instance: self.instance,
                handle: handle.to_string(),
                stamp,
            });
        }
        Some(user)
    }

    fn backend(&self, handle: &UserHandle) -> Option<Arc<Account>> {
        self.local.backend(handle)
    }

    fn peer_status(&self, handle: &UserHandle, peer_id: u64) -> Option<Status> {
        self.local.peer_status(handle, peer_id)
    }

    fn presence(&self, handle: &UserHandle) -> Option<(Status, FriendlyName)> {
        self.local
            .presence(handle)
            .or_else(|| self.directory.get(handle).map(|u| (u.status, u.name)))
    }

    fn dialect(&self, handle: &UserHandle) -> Option<Dialect> {
        self.local
            .dialect(handle)
            .or_else(|| self.directory.get(handle).map(|u| u.dialect))
    }

    fn peer(&self, handle: &UserHandle) -> Option<Peer> {
        self.local.peer(handle)
    }

    fn set_status(&self, handle: &UserHandle, status: Status) -> Option<Status> {
        let previous = self.local.set_status(handle, status)?;
        self.announce(handle);
        Some(previous)
    }

    fn set_name(&self, handle: &UserHandle, name: FriendlyName) {
        self.local.set_name(handle, name);
        self.announce(handle);
    }

    fn send(&self, handle: &UserHandle, command: &ServerCommand) -> bool {
        if self.local.peer(handle).is_some() {
            return self.local.send(handle, command);
        }
        let Some(user) = self.directory.get(handle) else {
            return false;
        };
        match wire::encode_delivery(std::slice::from_ref(handle), false, command) {
            Some(body) => self.publish(wire::node_subject(&user.node), body),
            None => false,
        }
    }

    fn send_presence(&self, watcher: &UserHandle, line: &SharedLine) -> bool {
        if self.announced_elsewhere_line(line) {
            return false;
        }
        if self.local.peer(watcher).is_some() {
            return self.local.send_presence(watcher, line);
        }
        let Some(user) = self
            .directory
            .get(watcher)
            .filter(|u| u.status != Status::Offline)
        else {
            return false;
        };
        match wire::encode_delivery(std::slice::from_ref(watcher), true, line.command()) {
            Some(body) => self.publish(wire::node_subject(&user.node), body),
            None => false,
        }
    }

    /// Watchers here get the line at once; those on other nodes (past their first CHG) in
    /// one message per node, of at most [`PRESENCE_PART`] handles.
    fn send_presence_to(&self, watchers: &mut dyn Iterator<Item = &UserHandle>, line: &SharedLine) {
        if self.announced_elsewhere_line(line) {
            return;
        }
        let mut by_node: HashMap<String, Vec<UserHandle>> = HashMap::new();
        for watcher in watchers {
            if self.local.peer(watcher).is_some() {
                self.local.send_presence(watcher, line);
            } else if let Some(user) = self
                .directory
                .get(watcher)
                .filter(|u| u.status != Status::Offline)
            {
                by_node.entry(user.node).or_default().push(watcher.clone());
            }
        }
        for (node, watchers) in by_node {
            for part in watchers.chunks(PRESENCE_PART) {
                if let Some(body) = wire::encode_delivery(part, true, line.command()) {
                    self.publish(wire::node_subject(&node), body);
                }
            }
        }
    }

    fn add_switchboard(&self, id: u32, session: SessionHandle) -> bool {
        self.local.add_switchboard(id, session)
    }

    fn switchboard(&self, id: u32) -> Option<SessionHandle> {
        self.local.switchboard(id)
    }

    fn remove_switchboard(&self, id: u32) {
        self.local.remove_switchboard(id)
    }

    fn switchboard_count(&self) -> usize {
        self.local.switchboard_count()
    }

    fn accounts(&self) -> Vec<Arc<Account>> {
        self.local.accounts()
    }

    fn cluster_status(&self) -> Option<ClusterStatus> {
        Some(ClusterStatus {
            node: self.node.clone(),
            nats_connected: self.connected.load(Ordering::Relaxed),
            nodes: self
                .members
                .live()
                .into_iter()
                .map(|(node, _, load)| (node, load))
                .collect(),
            remote_users: self.directory.len(),
        })
    }

    fn notification_address(&self, handle: &UserHandle) -> Option<String> {
        let live = self.members.live();
        let mut nodes: Vec<(&str, &str)> = live
            .iter()
            .map(|(node, address, _)| (node.as_str(), address.as_str()))
            .collect();
        nodes.push((&self.node, &self.notification_address));
        let chosen = rendezvous(handle, nodes.iter().map(|(n, _)| *n))?;
        nodes
            .iter()
            .find(|(n, _)| *n == chosen)
            .map(|(_, a)| a.to_string())
    }
}
