//! What a node knows of the others: which nodes are alive ([`Members`]) and who is logged in
//! on each ([`Directory`]). Both are plain maps under short locks, answered from memory, so the
//! hub's synchronous lookups never wait for the network.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use md5::{Digest, Md5};

use crate::protocol::{Dialect, FriendlyName, Status, UserHandle};

use super::wire::UserEntry;

/// A user logged in on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUser {
    pub node: String,
    pub status: Status,
    pub name: FriendlyName,
    pub dialect: Dialect,
    pub stamp: u64,
}

impl RemoteUser {
    /// The entry as it came from `node`; `None` when a field does not parse.
    pub fn from_entry(node: &str, entry: &UserEntry) -> Option<(UserHandle, RemoteUser)> {
        let handle = entry.handle.parse().ok()?;
        let user = RemoteUser {
            node: node.to_string(),
            status: entry.status.parse().ok()?,
            name: FriendlyName::new(&entry.name).ok()?,
            dialect: Dialect::from_name(&entry.dialect)?,
            stamp: entry.stamp,
        };
        Some((handle, user))
    }
}

/// Of two logins of one handle, whether `(stamp, node)` is the later one. Ties (same
/// microsecond on two clocks) go to the greater node name, the same way on every node.
pub fn later(a: (u64, &str), b: (u64, &str)) -> bool {
    a > b
}

/// What [`Directory::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// A later login of the handle is known.
    Refused,
    /// The handle was known; now with this login or state.
    Changed,
    /// The handle was not known.
    Added,
}

/// Users logged in on other nodes.
#[derive(Default)]
pub struct Directory {
    users: DashMap<UserHandle, RemoteUser>,
    /// Logins that ended recently, by handle: (node, stamp, when). A node's broadcasts and its
    /// direct messages arrive on two subscriptions, whose order between them is not kept, so
    /// a snapshot taken before a logout may be read after it; it must not bring the login back.
    ended: DashMap<UserHandle, (String, u64, Instant)>,
}

/// How long an ended login is remembered (see [`Directory::ended`]); far longer than any
/// message spends between two nodes.
const ENDED_MEMORY: Duration = Duration::from_secs(60);

impl Directory {
    pub fn get(&self, handle: &UserHandle) -> Option<RemoteUser> {
        self.users.get(handle).map(|u| u.clone())
    }

    /// Takes a login or change unless a later login of the handle is already known.
    pub fn upsert(&self, handle: UserHandle, user: RemoteUser) -> Upsert {
        let ended = self
            .ended
            .get(&handle)
            .is_some_and(|e| e.0 == user.node && e.1 == user.stamp);
        if ended {
            return Upsert::Refused;
        }
        match self.users.entry(handle) {
            dashmap::Entry::Occupied(mut slot) => {
                let known = slot.get();
                let same_login = known.node == user.node && known.stamp == user.stamp;
                if same_login || later((user.stamp, &user.node), (known.stamp, &known.node)) {
                    slot.insert(user);
                    Upsert::Changed
                } else {
                    Upsert::Refused
                }
            }
            dashmap::Entry::Vacant(slot) => {
                slot.insert(user);
                Upsert::Added
            }
        }
    }

    /// Removes the handle if its known login is the one from `node` with `stamp`.
    pub fn remove_login(&self, handle: &UserHandle, node: &str, stamp: u64) -> Option<RemoteUser> {
        self.ended
            .insert(handle.clone(), (node.to_string(), stamp, Instant::now()));
        self.users
            .remove_if(handle, |_, u| u.node == node && u.stamp == stamp)
            .map(|(_, u)| u)
    }

    /// Forgets ended logins older than [`ENDED_MEMORY`].
    pub fn forget_ended(&self) {
        let now = Instant::now();
        self.ended
            .retain(|_, (_, _, when)| now.duration_since(*when) < ENDED_MEMORY);
    }

    /// Removes everyone on `node`, returning them.
    pub fn remove_node(&self, node: &str) -> Vec<(UserHandle, RemoteUser)> {
        let handles: Vec<UserHandle> = self
            .users
            .iter()
            .filter(|u| u.node == node)
            .map(|u| u.key().clone())
            .collect();
        handles
            .into_iter()
            .filter_map(|h| self.users.remove_if(&h, |_, u| u.node == node))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }
}

/// Another node, as last heard.
#[derive(Debug, Clone)]
struct Member {
    instance: u64,
    address: String,
    load: usize,
    last_heard: Instant,
}

/// What a heartbeat told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A node not known until now.
    Joined,
    /// A known node under a new instance: it restarted, and what it had is gone.
    Restarted,
    Known,
}

/// The other nodes alive.
#[derive(Default)]
pub struct Members {
    nodes: Mutex<HashMap<String, Member>>,
}

impl Members {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Member>> {
        // A panic elsewhere while holding it leaves a map that is still consistent.
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn heard(&self, node: &str, instance: u64, address: &str, load: usize) -> Heard {
        let now = Instant::now();
        let member = Member {
            instance,
            address: address.to_string(),
            load,
            last_heard: now,
        };
        match self.lock().insert(node.to_string(), member) {
            None => Heard::Joined,
            Some(old) if old.instance != instance => Heard::Restarted,
            Some(_) => Heard::Known,
        }
    }

    /// Whether `node` is alive as `instance`.
    pub fn is(&self, node: &str, instance: u64) -> bool {
        self.lock()
            .get(node)
            .is_some_and(|m| m.instance == instance)
    }

    /// Forgets `node` if it is `instance`; whether it was.
    pub fn remove(&self, node: &str, instance: u64) -> bool {
        let mut nodes = self.lock();
        let known = nodes.get(node).is_some_and(|m| m.instance == instance);
        if known {
            nodes.remove(node);
        }
        known
    }

    /// Forgets the nodes not heard from within `silence`, returning their names.
    pub fn expire(&self, silence: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.lock().retain(|name, m| {
            let alive = now.duration_since(m.last_heard) < silence;
            if !alive {
                gone.push(name.clone());
            }
            alive
        });
        gone
    }

    /// The live nodes' names, notification addresses and loads.
    pub fn live(&self) -> Vec<(String, String, usize)> {
        self.lock()
            .iter()
            .map(|(n, m)| (n.clone(), m.address.clone(), m.load))
            .collect()
    }
}

/// Rendezvous (highest random weight) hashing: the node whose hash with the handle is highest.
/// Every node computes the same answer from the same live set; when a node leaves, only its
/// handles move, and when one joins, only the handles it now wins.
pub fn rendezvous<'a>(
    handle: &UserHandle,
    nodes: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    nodes
        .into_iter()
        .max_by_key(|node| (weight(node, handle), *node))
}

fn weight(node: &str, handle: &UserHandle) -> u64 {
    let mut hash = Md5::new();
    hash.update(node.as_bytes());
    hash.update([0]);
    hash.update(handle.as_str().as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(node: &str, stamp: u64) -> RemoteUser {
        RemoteUser {
            node: node.into(),
            status: Status::Online,
            name: FriendlyName::new("A").unwrap(),
            dialect: Dialect::Msnp2,
            stamp,
        }
    }

    fn handle(i: usize) -> UserHandle {
        format!("user{i}@example.com").parse().unwrap()
    }

    #[test]
    fn the_later_login_stays() {
        let d = Directory::default();
        assert_eq!(d.upsert(handle(1), user("b", 10)), Upsert::Added);
        assert_eq!(d.upsert(handle(1), user("a", 9)), Upsert::Refused);
        assert_eq!(d.upsert(handle(1), user("a", 11)), Upsert::Changed);
        // A change of the known login is taken; the older login's logout removes nothing.
        assert_eq!(d.upsert(handle(1), user("a", 11)), Upsert::Changed);
        assert!(d.remove_login(&handle(1), "b", 10).is_none());
        assert_eq!(d.get(&handle(1)).unwrap().node, "a");
        assert!(d.remove_login(&handle(1), "a", 11).is_some());
        assert!(d.get(&handle(1)).is_none());
        // A snapshot read after the logout does not bring the login back; a new login does.
        assert_eq!(d.upsert(handle(1), user("a", 11)), Upsert::Refused);
        assert_eq!(d.upsert(handle(1), user("a", 12)), Upsert::Added);
        d.forget_ended();
        assert!(d.ended.contains_key(&handle(1)));
    }

    #[test]
    fn a_dropped_node_takes_only_its_users() {
        let d = Directory::default();
        d.upsert(handle(1), user("a", 1));
        d.upsert(handle(2), user("b", 1));
        d.upsert(handle(3), user("a", 1));
        let mut gone: Vec<_> = d.remove_node("a").into_iter().map(|(h, _)| h).collect();
        gone.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        assert_eq!(gone, vec![handle(1), handle(3)]);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn members_join_restart_and_expire() {
        let m = Members::default();
        assert_eq!(m.heard("a", 1, "h:1", 0), Heard::Joined);
        assert_eq!(m.heard("a", 1, "h:1", 3), Heard::Known);
        assert_eq!(m.heard("a", 2, "h:1", 0), Heard::Restarted);
        assert!(m.is("a", 2) && !m.is("a", 1));
        assert!(m.expire(Duration::from_secs(60)).is_empty());
        assert_eq!(m.expire(Duration::ZERO), vec!["a".to_string()]);
        assert!(m.live().is_empty());
    }

    #[test]
    fn rendezvous_is_stable_and_moves_only_a_leavers_handles() {
        let all = ["ns-1", "ns-2", "ns-3"];
        let before: Vec<&str> = (0..300)
            .map(|i| rendezvous(&handle(i), all).unwrap())
            .collect();
        for node in all {
            let share = before.iter().filter(|n| **n == node).count();
            assert!(share > 60, "{node} got {share} of 300");
        }
        let left = ["ns-1", "ns-3"];
        for (i, was) in before.iter().enumerate() {
            let now = rendezvous(&handle(i), left).unwrap();
            if *was != "ns-2" {
                assert_eq!(now, *was, "handle {i} moved though its node stayed");
            }
        }
        assert_eq!(rendezvous(&handle(1), []), None);
    }
}
