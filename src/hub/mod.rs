//! The hub: who is online, with which state and name, and how to reach them; switchboard
//! cookies; running switchboard sessions.
//!
//! Everything here is in memory and synchronous. Locks (DashMap shards, the cookie mutex) are
//! held only for a map operation and never across an `.await`; sending to a [`Peer`] never
//! waits.

mod cookies;
pub mod switchboard;
mod throttle;

use std::sync::Arc;

use dashmap::DashMap;

pub use cookies::{CookieGrant, Cookies};
pub use throttle::{AddressCounts, LogLimiter, LoginThrottle, OwnedAddressSlot, ThrottleLimits};

use crate::backend::Account;
use crate::connection::Peer;
use crate::protocol::{FriendlyName, ServerCommand, SharedLine, Status, UserHandle};
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

/// The shared in-memory state of the server.
pub struct Hub {
    users: DashMap<UserHandle, OnlineUser>,
    pub cookies: Cookies,
    switchboards: DashMap<u32, SessionHandle>,
    /// Failed logins, for throttling (notification logins, and so msncd's too).
    pub throttle: LoginThrottle,
    /// Bad switchboard cookies are logged once per address and minute.
    pub bad_cookies: LogLimiter,
    /// Open connections per client address.
    pub addresses: Arc<AddressCounts>,
    /// Connections refused for a limit are logged once per address and minute.
    pub refused_connections: LogLimiter,
}

impl Hub {
    pub fn new(
        cookies: Cookies,
        limits: ThrottleLimits,
        (per_address, count_loopback): (usize, bool),
    ) -> Hub {
        Hub {
            users: DashMap::new(),
            cookies,
            switchboards: DashMap::new(),
            throttle: LoginThrottle::new(limits),
            bad_cookies: LogLimiter::new(std::time::Duration::from_secs(60)),
            addresses: Arc::new(AddressCounts::new(per_address, count_loopback)),
            refused_connections: LogLimiter::new(std::time::Duration::from_secs(60)),
        }
    }

    /// Registers a new login, returning the session it replaces, if any.
    pub fn log_in(
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

    /// The backend session of a logged-in user.
    pub fn backend(&self, handle: &UserHandle) -> Option<Arc<Account>> {
        self.users.get(handle).map(|u| u.backend.clone())
    }

    /// The state of a user's login, if it is still the connection with this peer id.
    pub fn peer_status(&self, handle: &UserHandle, peer_id: u64) -> Option<Status> {
        self.users
            .get(handle)
            .filter(|u| u.peer.id() == peer_id)
            .map(|u| u.status)
    }

    /// Removes a login, but only if it is still the one with this peer id (a newer login of
    /// the same handle must not be removed by the old connection's cleanup). Returns the state
    /// it had.
    pub fn log_out(&self, handle: &UserHandle, peer_id: u64) -> Option<OnlineUser> {
        self.users
            .remove_if(handle, |_, u| u.peer.id() == peer_id)
            .map(|(_, u)| u)
    }

    /// The state and name of a logged-in user.
    pub fn presence(&self, handle: &UserHandle) -> Option<(Status, FriendlyName)> {
        self.users.get(handle).map(|u| (u.status, u.name.clone()))
    }

    /// The state a user shows to others who are allowed to see them.
    pub fn visible_status(&self, handle: &UserHandle) -> Option<(Status, FriendlyName)> {
        self.presence(handle).filter(|(s, _)| s.is_visible())
    }

    pub fn peer(&self, handle: &UserHandle) -> Option<Peer> {
        self.users.get(handle).map(|u| u.peer.clone())
    }

    /// Sets a user's state, returning the previous one.
    pub fn set_status(&self, handle: &UserHandle, status: Status) -> Option<Status> {
        self.users
            .get_mut(handle)
            .map(|mut u| std::mem::replace(&mut u.status, status))
    }

    pub fn set_name(&self, handle: &UserHandle, name: FriendlyName) {
        if let Some(mut u) = self.users.get_mut(handle) {
            u.name = name;
        }
    }

    /// Sends a command to a user's notification connection if they are logged in.
    pub fn send(&self, handle: &UserHandle, command: &ServerCommand) -> bool {
        match self.peer(handle) {
            Some(peer) => peer.send_command(command),
            None => false,
        }
    }

    /// Sends a presence line (NLN, FLN) to a watcher. Only sessions past their first CHG get
    /// presence: before it a client is still synchronizing, and the ILN burst of that first
    /// CHG gives it every state at once.
    pub fn send_presence(&self, watcher: &UserHandle, line: &SharedLine) -> bool {
        let peer = self
            .users
            .get(watcher)
            .filter(|u| u.status != Status::Offline)
            .map(|u| u.peer.clone());
        peer.is_some_and(|p| p.send(line))
    }

    pub fn add_switchboard(&self, id: u32, session: SessionHandle) {
        self.switchboards.insert(id, session);
    }

    pub fn switchboard(&self, id: u32) -> Option<SessionHandle> {
        self.switchboards.get(&id).map(|s| s.clone())
    }

    pub fn remove_switchboard(&self, id: u32) {
        self.switchboards.remove(&id);
    }

    pub fn switchboard_count(&self) -> usize {
        self.switchboards.len()
    }
}
