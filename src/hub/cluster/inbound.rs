//! What a node does with what it hears from the others: heartbeats (members joining,
//! restarting, leaving, going silent), directory entries (and `OUT OTH` when a login here is
//! older than one elsewhere), snapshots, deliveries for its users, and telling its own users'
//! watchers when users of other nodes vanish or come back.

use std::time::Duration;

use tracing::{info, warn};

use super::directory::{later, Heard, RemoteUser, Upsert};
use super::wire::{Broadcast, Direct, Incoming, UserEntry};
use super::{Cluster, SILENCE, SNAPSHOT_PART};
use crate::hub::Delivery;
use crate::protocol::{OutReason, ServerCommand, SharedLine, UserHandle};

impl Cluster {
    /// A login of `handle` on another node: the older of it and a local one gets `OUT OTH`.
    pub(super) fn take_over(&self, handle: &UserHandle, remote: &RemoteUser) {
        let Some((peer_id, stamp)) = self.stamps.get(handle).map(|s| *s) else {
            return;
        };
        if !later((remote.stamp, &remote.node), (stamp, &self.node)) {
            return;
        }
        // Once: the newer login's next change must not send a second OUT. The older login's
        // logout then announces nothing (the other nodes already know the newer one), and its
        // connection's cleanup ends its backend session as usual.
        if self
            .stamps
            .remove_if(handle, |_, (id, _)| *id == peer_id)
            .is_none()
        {
            return;
        }
        if let Some(peer) = self.local.peer(handle).filter(|p| p.id() == peer_id) {
            info!(%handle, node = %remote.node, "logged in on another node; closing the older login here");
            peer.send_and_close(&ServerCommand::Out {
                reason: Some(OutReason::OtherLogin),
            });
        }
    }

    /// Takes a user's entry from `node`; returns the user when it was not known before.
    pub(super) fn take_entry(
        &self,
        node: &str,
        entry: &UserEntry,
    ) -> Option<(UserHandle, RemoteUser)> {
        let Some((handle, user)) = RemoteUser::from_entry(node, entry) else {
            warn!(%node, handle = %entry.handle, "ignoring a malformed directory entry");
            return None;
        };
        match self.directory.upsert(handle.clone(), user.clone()) {
            Upsert::Refused => None,
            Upsert::Changed => {
                self.take_over(&handle, &user);
                None
            }
            Upsert::Added => {
                self.take_over(&handle, &user);
                Some((handle, user))
            }
        }
    }

    /// Handles what every node hears. Returns the users of a node that is gone, whose
    /// watchers here must be told.
    pub(super) fn on_broadcast(&self, message: Broadcast) -> Vec<(UserHandle, RemoteUser)> {
        match message {
            Broadcast::Heartbeat {
                node,
                instance,
                address,
                load,
            } => {
                if node == self.node {
                    if instance != self.instance {
                        if let Some(unlogged) = self.same_name.should_log() {
                            warn!(%node, unlogged, "another node uses this node's name; [cluster] node must be unique");
                        }
                    }
                    return Vec::new();
                }
                match self.members.heard(&node, instance, &address, load) {
                    Heard::Known => Vec::new(),
                    heard => {
                        let gone = match heard {
                            Heard::Restarted => {
                                warn!(%node, "node restarted; dropping its users");
                                self.directory.remove_node(&node)
                            }
                            _ => Vec::new(),
                        };
                        info!(%node, %address, "node joined the cluster");
                        self.direct(
                            &node,
                            &Direct::Sync {
                                from: self.node.clone(),
                            },
                        );
                        gone
                    }
                }
            }
            Broadcast::Online {
                node,
                instance,
                user,
            } => {
                // A login or change: its own node tells the watchers.
                if node != self.node && self.members.is(&node, instance) {
                    self.take_entry(&node, &user);
                }
                Vec::new()
            }
            Broadcast::Offline {
                node,
                instance,
                handle,
                stamp,
            } => {
                if node != self.node && self.members.is(&node, instance) {
                    if let Ok(handle) = handle.parse() {
                        self.directory.remove_login(&handle, &node, stamp);
                    }
                }
                Vec::new()
            }
            Broadcast::Bye { node, instance } => {
                if node != self.node && self.members.remove(&node, instance) {
                    info!(%node, "node left the cluster");
                    return self.directory.remove_node(&node);
                }
                Vec::new()
            }
        }
    }

    /// Handles what came on this node's own subject. Returns the users a snapshot brought
    /// that were not known (a node joining again after an outage), whose watchers here must
    /// be told.
    pub(super) fn on_direct(&self, message: Incoming) -> Vec<(UserHandle, RemoteUser)> {
        match message {
            Incoming::Delivery(d) if d.presence => {
                let line = SharedLine::new(d.command);
                for watcher in &d.to {
                    self.local.send_presence(watcher, &line);
                }
                Vec::new()
            }
            Incoming::Delivery(d) => {
                for user in &d.to {
                    self.local.send(user, &d.command);
                }
                Vec::new()
            }
            Incoming::Direct(Direct::Sync { from }) => {
                let users: Vec<UserEntry> = self
                    .local
                    .snapshot()
                    .iter()
                    .filter_map(|(handle, user)| self.entry(handle, user))
                    .collect();
                for part in users.chunks(SNAPSHOT_PART) {
                    self.direct(
                        &from,
                        &Direct::Snapshot {
                            node: self.node.clone(),
                            instance: self.instance,
                            users: part.to_vec(),
                        },
                    );
                }
                Vec::new()
            }
            Incoming::Direct(Direct::Snapshot {
                node,
                instance,
                users,
            }) => {
                if !self.members.is(&node, instance) {
                    return Vec::new();
                }
                users
                    .iter()
                    .filter_map(|user| self.take_entry(&node, user))
                    .collect()
            }
        }
    }

    /// The heartbeat's content, and the nodes silent too long dropped with their users.
    pub(super) fn beat(&self) -> Vec<(UserHandle, RemoteUser)> {
        self.broadcast(&Broadcast::Heartbeat {
            node: self.node.clone(),
            instance: self.instance,
            address: self.notification_address.clone(),
            load: self.local.online_count(),
        });
        self.directory.forget_ended();
        let mut gone = Vec::new();
        for node in self.members.expire(SILENCE) {
            warn!(%node, silent_for = ?SILENCE, "node not heard from; dropping it and its users");
            gone.extend(self.directory.remove_node(&node));
        }
        gone
    }

    /// Tells the watchers on this node that users of another node went offline (`online`
    /// false: their node was dropped) or are online (their node came back).
    pub(super) async fn tell_watchers(&self, users: Vec<(UserHandle, RemoteUser)>, online: bool) {
        for (handle, user) in users {
            if !user.status.is_visible() {
                continue;
            }
            let line = match self.visible_status(&handle) {
                Some((status, name)) if online => ServerCommand::Nln {
                    status,
                    handle: handle.clone(),
                    name,
                },
                None if !online => ServerCommand::Fln {
                    handle: handle.clone(),
                },
                // Gone again, or back already.
                _ => continue,
            };
            self.to_watchers(&handle, line, false).await;
        }
    }

    /// A login here replaced a visible one on another node. That node does not announce its
    /// login's end (see `send_presence`), so that its FLN cannot overtake this login's first
    /// NLN on the way to a watcher: this node says it, before anything else about the user
    /// (the store answers in order, and the first CHG's watchers come after these).
    pub(super) async fn replaced_elsewhere(&self, handle: UserHandle) {
        let line = ServerCommand::Fln {
            handle: handle.clone(),
        };
        self.to_watchers(&handle, line, true).await;
    }

    /// Sends `line` about `handle` to its watchers allowed to see it: those logged in here, or
    /// (`everywhere`) on every node.
    pub(super) async fn to_watchers(
        &self,
        handle: &UserHandle,
        line: ServerCommand,
        everywhere: bool,
    ) {
        let watchers = self.store.watchers(handle);
        let watchers = match tokio::time::timeout(Duration::from_secs(5), watchers).await {
            Ok(Ok(w)) => w,
            Ok(Err(error)) => {
                warn!(%error, %handle, "could not load watchers; presence not sent");
                return;
            }
            Err(_) => {
                warn!(%handle, "loading watchers took too long; presence not sent");
                return;
            }
        };
        let line = SharedLine::new(line);
        let mut allowed = watchers
            .iter()
            .filter(|(_, permission)| permission.allows())
            .map(|(watcher, _)| watcher);
        if everywhere {
            self.send_presence_to(&mut allowed, &line);
        } else {
            for watcher in allowed {
                self.local.send_presence(watcher, &line);
            }
        }
    }

    /// Whether a presence line is about a user whose presence is another node's to announce:
    /// its login there is the current one and none is here (this node's was taken over).
    pub(super) fn announced_elsewhere_line(&self, line: &SharedLine) -> bool {
        let about = match line.command() {
            ServerCommand::Nln { handle, .. } | ServerCommand::Fln { handle } => handle,
            _ => return false,
        };
        self.local.peer(about).is_none() && self.directory.get(about).is_some()
    }
}
