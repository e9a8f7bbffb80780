//! The hub: who is online, with which state and name, and how to reach them; where each
//! switchboard session runs ([`Delivery`]); and what this node keeps for itself: switchboard
//! cookies, the login throttle, connection counts ([`Node`]).
//!
//! Everything one session sends to another user (presence, `ADD 0 RL`, `RNG`, `OUT OTH`) and
//! every lookup of who is online or where a switchboard session runs goes through
//! [`Delivery`]. [`InProcess`] implements it in this process's memory; [`cluster::Cluster`]
//! wraps an `InProcess` and reaches the users of other nodes over NATS.
//!
//! Everything here is synchronous. Locks (DashMap shards, the cookie mutex) are held only for
//! a map operation and never across an `.await`; sending to a [`Peer`] never waits.

pub mod cluster;
mod cookies;
mod rate;
pub mod switchboard;
mod throttle;

use std::sync::Arc;

use dashmap::DashMap;

pub use cookies::{CookieGrant, Cookies};
pub use rate::{MessageRate, Verdict, MAX_SLOWDOWN};
pub use throttle::{ConnectionCounts, Counted, LogLimiter, LoginThrottle, Refused, ThrottleLimits};

use crate::backend::Account;
use crate::connection::{Live, Peer};
use crate::protocol::{Dialect, FriendlyName, ServerCommand, SharedLine, Status, UserHandle};
use switchboard::SessionHandle;

/// A logged-in notification session.
#[derive(Clone, Debug)]
pub struct OnlineUser {
    pub peer: Peer,
    /// FLN from login until the first CHG.
    pub status: Status,
    pub name: FriendlyName,
    /// The account's backend session (local, or the network its account is linked to).
    pub backend: Arc<Account>,
}

/// A node's view of its cluster.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    pub node: String,
    /// Whether the connection to NATS is up.
    pub nats_connected: bool,
    /// The other live nodes, by name, with the users online on each (their last heartbeat).
    pub nodes: std::collections::BTreeMap<String, usize>,
    /// Users known to be online on the other nodes.
    pub remote_users: usize,
}

/// How sessions reach other users and switchboard sessions, wherever those run.
pub trait Delivery: Send + Sync + 'static {
    /// Registers a new login, returning the one it replaces, if any (which the caller ends
    /// with `OUT OTH`).
    fn log_in(
        &self,
        handle: UserHandle,
        peer: Peer,
        name: FriendlyName,
        backend: Arc<Account>,
    ) -> Option<OnlineUser>;

    /// Removes a login, but only if it is still the one with this peer id (a newer login of
    /// the same handle must not be removed by the old connection's cleanup). Returns it.
    fn log_out(&self, handle: &UserHandle, peer_id: u64) -> Option<OnlineUser>;

    /// The backend session of a logged-in user.
    fn backend(&self, handle: &UserHandle) -> Option<Arc<Account>>;

    /// The state of a user's login, if it is still the connection with this peer id.
    fn peer_status(&self, handle: &UserHandle, peer_id: u64) -> Option<Status>;

    /// The state and name of a logged-in user.
    fn presence(&self, handle: &UserHandle) -> Option<(Status, FriendlyName)>;

    /// The state a user shows to others who are allowed to see them.
    fn visible_status(&self, handle: &UserHandle) -> Option<(Status, FriendlyName)> {
        self.presence(handle).filter(|(s, _)| s.is_visible())
    }

    /// A logged-in user's notification connection.
    fn peer(&self, handle: &UserHandle) -> Option<Peer>;

    /// The dialect of a logged-in user's notification connection, wherever it is (a
    /// switchboard connection of the user speaks it too).
    fn dialect(&self, handle: &UserHandle) -> Option<Dialect> {
        self.peer(handle).map(|p| p.dialect())
    }

    /// The notification server (`host:port`) the dispatch server refers `handle` to; `None`
    /// for this node's own.
    fn notification_address(&self, _handle: &UserHandle) -> Option<String> {
        None
    }

    /// How this node sees its cluster (for `/health`); `None` for a server on its own.
    fn cluster_status(&self) -> Option<ClusterStatus> {
        None
    }

    /// Sets a user's state, returning the previous one.
    fn set_status(&self, handle: &UserHandle, status: Status) -> Option<Status>;

    fn set_name(&self, handle: &UserHandle, name: FriendlyName);

    /// Sends a command to a user's notification connection if they are logged in.
    fn send(&self, handle: &UserHandle, command: &ServerCommand) -> bool;

    /// Sends a presence line (NLN, FLN) to a watcher. Only sessions past their first CHG get
    /// presence: before it a client is still synchronizing, and the ILN burst of that first
    /// CHG gives it every state at once.
    fn send_presence(&self, watcher: &UserHandle, line: &SharedLine) -> bool;

    /// [`Delivery::send_presence`] to many watchers at once (one state change's fan-out),
    /// which a cluster sends in one message per node.
    fn send_presence_to(&self, watchers: &mut dyn Iterator<Item = &UserHandle>, line: &SharedLine) {
        for watcher in watchers {
            self.send_presence(watcher, line);
        }
    }

    /// Registers a running switchboard session under an id no other session has; `false`
    /// when the id is taken.
    fn add_switchboard(&self, id: u32, session: SessionHandle) -> bool;

    /// Where the switchboard session `id` runs, if it still does.
    fn switchboard(&self, id: u32) -> Option<SessionHandle>;

    fn remove_switchboard(&self, id: u32);

    fn switchboard_count(&self) -> usize;

    /// The backend sessions of the users logged in here (a snapshot, for health and metrics).
    fn accounts(&self) -> Vec<Arc<Account>>;
}

/// [`Delivery`] within this process.
#[derive(Default)]
pub struct InProcess {
    users: DashMap<UserHandle, OnlineUser>,
    switchboards: DashMap<u32, SessionHandle>,
}

impl InProcess {
    /// A logged-in user's entry.
    pub fn user(&self, handle: &UserHandle) -> Option<OnlineUser> {
        self.users.get(handle).map(|u| u.clone())
    }

    /// Everyone logged in here.
    pub fn snapshot(&self) -> Vec<(UserHandle, OnlineUser)> {
        self.users
            .iter()
            .map(|u| (u.key().clone(), u.value().clone()))
            .collect()
    }

    pub fn online_count(&self) -> usize {
        self.users.len()
    }
}

impl Delivery for InProcess {
    fn log_in(
        &self,
        handle: UserHandle,
        peer: Peer,
        name: FriendlyName,
        backend: Arc<Account>,
    ) -> Option<OnlineUser> {
        let user = OnlineUser {
            peer,
            status: Status::Offline,
            name,
            backend,
        };
        self.users.insert(handle, user)
    }

    fn log_out(&self, handle: &UserHandle, peer_id: u64) -> Option<OnlineUser> {
        self.users
            .remove_if(handle, |_, u| u.peer.id() == peer_id)
            .map(|(_, u)| u)
    }

    fn backend(&self, handle: &UserHandle) -> Option<Arc<Account>> {
        self.users.get(handle).map(|u| u.backend.clone())
    }

    fn peer_status(&self, handle: &UserHandle, peer_id: u64) -> Option<Status> {
        self.users
            .get(handle)
            .filter(|u| u.peer.id() == peer_id)
            .map(|u| u.status)
    }

    fn presence(&self, handle: &UserHandle) -> Option<(Status, FriendlyName)> {
        self.users.get(handle).map(|u| (u.status, u.name.clone()))
    }

    fn peer(&self, handle: &UserHandle) -> Option<Peer> {
        self.users.get(handle).map(|u| u.peer.clone())
    }

    fn set_status(&self, handle: &UserHandle, status: Status) -> Option<Status> {
        self.users
            .get_mut(handle)
            .map(|mut u| std::mem::replace(&mut u.status, status))
    }

    fn set_name(&self, handle: &UserHandle, name: FriendlyName) {
        if let Some(mut u) = self.users.get_mut(handle) {
            u.name = name;
        }
    }

    fn send(&self, handle: &UserHandle, command: &ServerCommand) -> bool {
        match self.peer(handle) {
            Some(peer) => peer.send_command(command),
            None => false,
        }
    }

    fn send_presence(&self, watcher: &UserHandle, line: &SharedLine) -> bool {
        let peer = self
            .users
            .get(watcher)
            .filter(|u| u.status != Status::Offline)
            .map(|u| u.peer.clone());
        peer.is_some_and(|p| p.send(line))
    }

    fn add_switchboard(&self, id: u32, session: SessionHandle) -> bool {
        match self.switchboards.entry(id) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(slot) => {
                slot.insert(session);
                true
            }
        }
    }

    fn switchboard(&self, id: u32) -> Option<SessionHandle> {
        self.switchboards.get(&id).map(|s| s.clone())
    }

    fn remove_switchboard(&self, id: u32) {
        self.switchboards.remove(&id);
    }

    fn accounts(&self) -> Vec<Arc<Account>> {
        self.users.iter().map(|u| u.backend.clone()).collect()
    }

    fn switchboard_count(&self) -> usize {
        self.switchboards.len()
    }
}

/// What this node keeps for itself: cookies it issued, failed logins, connections per address.
pub struct Node {
    pub cookies: Cookies,
    /// Failed logins, for throttling (notification logins, and so msncd's too).
    pub throttle: LoginThrottle,
    /// Bad switchboard cookies are logged once per address and minute.
    pub bad_cookies: LogLimiter,
    /// Open connections, in all and per client address.
    pub connections: ConnectionCounts,
    /// The open connections' outboxes, which a shutdown goes through.
    pub live: Live,
    /// Connections refused for a limit are logged once per address and minute.
    pub refused_connections: LogLimiter,
    /// Switchboard messages per user and second.
    pub messages: MessageRate,
    /// Refused floods are logged once per address and minute.
    pub floods: LogLimiter,
}

impl Node {
    pub fn new(
        cookies: Cookies,
        max_connections: usize,
        limits: &crate::config::LimitsConfig,
    ) -> Node {
        let (per_address, count_loopback) = limits.per_address();
        Node {
            cookies,
            throttle: LoginThrottle::new(limits.throttle()),
            bad_cookies: LogLimiter::new(std::time::Duration::from_secs(60)),
            connections: ConnectionCounts::new(max_connections, per_address, count_loopback),
            live: Live::default(),
            refused_connections: LogLimiter::new(std::time::Duration::from_secs(60)),
            messages: MessageRate::new(limits.messages_per_second, limits.message_burst),
            floods: LogLimiter::new(std::time::Duration::from_secs(60)),
        }
    }
}
