//! The roster and blocklist: contacts as the backend reports them, roster pushes and IQ
//! answers, and the user's list changes (roster sets, subscriptions, blocking).

use std::collections::BTreeSet;

use msngate_bridge_api::{BackendError, BackendEvent, Contact, ContactKind, List, PresenceState};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::blocking::{Block, BlocklistResult, Unblock};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::private;
use tokio_xmpp::parsers::roster::{Ask, Group, Item, Roster, Subscription};

use crate::handles::handle_for;

use super::{rejected, service_unavailable, Pending, Room, RosterEntry, SessionTask, SETTLE};

impl SessionTask {
    pub(super) fn contact(&self, jid: &BareJid) -> Option<Contact> {
        let handle = handle_for(jid)?;
        if let Some(room) = self.rooms.get(jid) {
            let name = room.name.clone();
            return Some(Contact {
                handle,
                name,
                kind: ContactKind::Group,
                lists: vec![List::Forward],
                groups: Vec::new(),
            });
        }
        let entry = self.roster.get(jid);
        let mut lists = Vec::new();
        let subscription = entry.map(|e| &e.subscription);
        let asking = entry.is_some_and(|e| e.asking);
        if matches!(subscription, Some(Subscription::To | Subscription::Both))
            || asking
            || self.adding.contains_key(jid)
        {
            lists.push(List::Forward);
        }
        if matches!(subscription, Some(Subscription::From | Subscription::Both)) {
            lists.push(List::Allow);
            lists.push(List::Reverse);
        }
        if self.approving.contains(jid) {
            for list in [List::Allow, List::Reverse] {
                if !lists.contains(&list) {
                    lists.push(list);
                }
            }
        }
        if self.revoking.contains(jid) {
            lists.retain(|l| !matches!(l, List::Allow | List::Reverse));
        }
        let requested = self.requests.contains(jid) && !self.revoking.contains(jid);
        if requested && !lists.contains(&List::Reverse) {
            lists.push(List::Reverse);
        }
        if self.blocked.contains(jid) {
            lists.retain(|l| *l != List::Allow);
            lists.push(List::Block);
        }
        if entry.is_none() && lists.is_empty() {
            return None;
        }
        let name = entry
            .and_then(|e| e.name.clone())
            .or_else(|| self.adding.get(jid).cloned())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| handle.clone());
        Some(Contact {
            handle,
            name,
            kind: ContactKind::Person,
            lists,
            groups: entry.map(|e| e.groups.clone()).unwrap_or_default(),
        })
    }

    pub(super) fn contacts(&self) -> Vec<Contact> {
        let jids: BTreeSet<&BareJid> = self
            .roster
            .keys()
            .chain(&self.requests)
            .chain(&self.blocked)
            .chain(self.rooms.keys())
            .collect();
        jids.into_iter()
            .filter_map(|j| {
                let contact = self.contact(j);
                if contact.is_none() && handle_for(j).is_none() {
                    tracing::info!(jid = %j, "leaving out a contact that has no MSN handle");
                }
                contact
            })
            .collect()
    }

    pub(super) async fn contact_changed(&self, jid: &BareJid) {
        match (self.contact(jid), handle_for(jid)) {
            (Some(contact), _) => self.emit(BackendEvent::ContactChanged(contact)).await,
            (None, Some(handle)) => self.emit(BackendEvent::ContactRemoved { handle }).await,
            (None, None) => tracing::info!(%jid, "ignoring a contact that has no MSN handle"),
        }
    }

    /// After a list command changed what this session knows of `jid` by itself (approving,
    /// revoking, blocking), tells the pump before the command's reply: an event the session
    /// sent before the command, still on its way to the pump, must not be the last word on
    /// the contact. A contact the session cannot show (a pre-approval of someone not on the
    /// roster) is left to the command's own record.
    async fn changed_by_command(&self, jid: &BareJid) {
        if let Some(contact) = self.contact(jid) {
            self.emit(BackendEvent::ContactChanged(contact)).await;
        }
    }

    /// Whether `jid` is on the roster, or about to be: Prosody answers a roster set before it
    /// pushes the item, so a command that follows an `ADD FL` at once can arrive first.
    fn on_roster(&self, jid: &BareJid) -> bool {
        self.roster.contains_key(jid) || self.adding.contains_key(jid)
    }

    pub(super) fn apply_roster_item(&mut self, item: Item) {
        if item.subscription == Subscription::Remove {
            self.roster.remove(&item.jid);
            self.adding.remove(&item.jid);
            return;
        }
        let entry = RosterEntry {
            name: item.name,
            subscription: item.subscription,
            asking: item.ask == Ask::Subscribe,
            groups: item.groups.into_iter().map(|g| g.0).collect(),
        };
        if matches!(entry.subscription, Subscription::To | Subscription::Both) || entry.asking {
            self.adding.remove(&item.jid);
        }
        if matches!(entry.subscription, Subscription::From | Subscription::Both) {
            self.requests.remove(&item.jid);
            self.approving.remove(&item.jid);
        } else {
            self.revoking.remove(&item.jid);
        }
        self.roster.insert(item.jid, entry);
    }

    pub(super) async fn iq(&mut self, iq: Iq) {
        match iq {
            Iq::Result { id, payload, .. } => match self.pending.remove(&id) {
                Some(Pending::RosterGet) => {
                    if let Some(roster) = payload.and_then(|p| Roster::try_from(p).ok()) {
                        self.roster.clear();
                        for item in roster.items {
                            self.apply_roster_item(item);
                        }
                    }
                    self.first_roster_by = None;
                    let contacts = self.contacts();
                    self.emit(BackendEvent::ContactList(contacts)).await;
                    // Contacts' presence follows our own, which went out with this request.
                    if self.settle_at.is_some() {
                        self.settle_at = Some(Instant::now() + SETTLE);
                    }
                    // A room is always there to be called.
                    let rooms: Vec<BareJid> = self.rooms.keys().cloned().collect();
                    for room in rooms {
                        self.emit_presence(&room, PresenceState::Online).await;
                    }
                }
                Some(Pending::BlocklistGet) => {
                    if let Some(list) = payload.and_then(|p| BlocklistResult::try_from(p).ok()) {
                        self.blocked = list.items.into_iter().map(|j| j.to_bare()).collect();
                    }
                }
                Some(Pending::BookmarksGet) => {
                    if let Some(query) = payload.and_then(|p| private::Query::try_from(p).ok()) {
                        for conference in query.storage.conferences {
                            let nick = conference
                                .nick
                                .map(|n| n.to_string())
                                .unwrap_or_else(|| self.default_nick());
                            let name = conference
                                .name
                                .filter(|n| !n.trim().is_empty())
                                .unwrap_or_else(|| {
                                    conference
                                        .jid
                                        .node()
                                        .map(|n| n.to_string())
                                        .unwrap_or_default()
                                });
                            let old = self.rooms.get(&conference.jid);
                            let joined = old.is_some_and(|r| r.joined);
                            let wanted = old.is_some_and(|r| r.wanted);
                            let room = Room {
                                name,
                                nick,
                                joined,
                                wanted,
                            };
                            self.rooms.insert(conference.jid, room);
                        }
                    }
                }
                Some(Pending::Reply(reply)) => {
                    let _ = reply.send(Ok(()));
                }
                None => {}
            },
            Iq::Error { id, error, .. } => match self.pending.remove(&id) {
                Some(Pending::Reply(reply)) => {
                    let _ = reply.send(Err(rejected(&error)));
                }
                Some(Pending::BlocklistGet) => {
                    tracing::info!(jid = %self.me, "the XMPP server has no blocking (XEP-0191)");
                    self.blocking_supported = false;
                }
                Some(Pending::RosterGet) => {
                    tracing::warn!(jid = %self.me, ?error, "roster request failed")
                }
                Some(Pending::BookmarksGet) => {
                    tracing::info!(jid = %self.me, ?error, "no bookmarks");
                }
                None => {}
            },
            Iq::Set {
                from, id, payload, ..
            } => {
                let from_server = from.as_ref().is_none_or(|f| f.to_bare() == self.me);
                let answer = if from_server {
                    self.push(payload).await
                } else {
                    false
                };
                let reply = if answer {
                    Iq::empty_result(Jid::from(self.me.clone()), id)
                } else {
                    service_unavailable(id, from)
                };
                self.send(reply).await;
            }
            Iq::Get { from, id, .. } => {
                let reply = service_unavailable(id, from);
                self.send(reply).await;
            }
        }
    }

    /// A roster or blocklist push from the server; `true` when understood.
    pub(super) async fn push(&mut self, payload: Element) -> bool {
        if payload.is("query", tokio_xmpp::parsers::ns::ROSTER) {
            let Ok(roster) = Roster::try_from(payload) else {
                return false;
            };
            for item in roster.items {
                let jid = item.jid.clone();
                self.apply_roster_item(item);
                self.contact_changed(&jid).await;
            }
            return true;
        }
        if let Ok(block) = Block::try_from(payload.clone()) {
            for jid in block.items.into_iter().map(|j| j.to_bare()) {
                self.blocked.insert(jid.clone());
                self.contact_changed(&jid).await;
            }
            return true;
        }
        if let Ok(unblock) = Unblock::try_from(payload) {
            let jids: Vec<BareJid> = if unblock.items.is_empty() {
                std::mem::take(&mut self.blocked).into_iter().collect()
            } else {
                unblock.items.into_iter().map(|j| j.to_bare()).collect()
            };
            for jid in jids {
                self.blocked.remove(&jid);
                self.contact_changed(&jid).await;
            }
            return true;
        }
        false
    }

    /// Sets (or with `Subscription::Remove`, removes) one roster item, answering `reply` when
    /// the server has done it.
    pub(super) async fn roster_set(
        &mut self,
        jid: BareJid,
        name: Option<String>,
        subscription: Subscription,
        groups: Vec<String>,
        reply: oneshot::Sender<Result<(), BackendError>>,
    ) {
        let item = Item {
            jid,
            name,
            subscription,
            ask: Ask::None,
            groups: groups.into_iter().map(Group).collect(),
            approved: None,
        };
        let id = self.new_id();
        let roster = Roster {
            ver: None,
            items: vec![item],
        };
        self.send_iq(Iq::from_set(id, roster), Pending::Reply(reply))
            .await;
    }

    /// Puts a roster item in exactly `groups`, keeping its name (a roster set carries the
    /// whole item; the server keeps the subscription, which a client does not set).
    pub(super) async fn set_groups(
        &mut self,
        jid: BareJid,
        groups: Vec<String>,
        reply: oneshot::Sender<Result<(), BackendError>>,
    ) {
        let Some(entry) = self.roster.get(&jid) else {
            let _ = reply.send(Err(BackendError::NoSuchContact));
            return;
        };
        let name = entry.name.clone();
        self.roster_set(jid, name, Subscription::None, groups, reply)
            .await;
    }

    pub(super) async fn add(
        &mut self,
        list: List,
        jid: BareJid,
        name: String,
        reply: oneshot::Sender<Result<(), BackendError>>,
    ) {
        match list {
            List::Forward => {
                self.adding.insert(jid.clone(), name.clone());
                self.roster_set(jid.clone(), Some(name), Subscription::None, vec![], reply)
                    .await;
                self.send(Presence::new(PresenceType::Subscribe).with_to(jid))
                    .await;
            }
            List::Allow => {
                // Approves a pending request, or pre-approves a future one. The server
                // shows an approved request as a roster item; until then the approval counts.
                let requested = self.requests.remove(&jid);
                self.revoking.remove(&jid);
                if requested || self.on_roster(&jid) {
                    self.approving.insert(jid.clone());
                }
                self.send(Presence::new(PresenceType::Subscribed).with_to(jid.clone()))
                    .await;
                self.changed_by_command(&jid).await;
                let _ = reply.send(Ok(()));
            }
            List::Block => {
                self.requests.remove(&jid);
                self.approving.remove(&jid);
                self.revoking.insert(jid.clone());
                self.blocked.insert(jid.clone());
                self.send(Presence::new(PresenceType::Unsubscribed).with_to(jid.clone()))
                    .await;
                self.changed_by_command(&jid).await;
                if self.blocking_supported {
                    let id = self.new_id();
                    let block = Block {
                        items: vec![Jid::from(jid)],
                    };
                    self.send_iq(Iq::from_set(id, block), Pending::Reply(reply))
                        .await;
                } else {
                    self.blocked.insert(jid);
                    let _ = reply.send(Ok(()));
                }
            }
            List::Reverse => {
                let _ = reply.send(Err(BackendError::Unsupported));
            }
        }
    }

    pub(super) async fn remove(
        &mut self,
        list: List,
        jid: BareJid,
        reply: oneshot::Sender<Result<(), BackendError>>,
    ) {
        match list {
            List::Forward => {
                self.roster_set(jid, None, Subscription::Remove, vec![], reply)
                    .await;
            }
            List::Allow => {
                self.approving.remove(&jid);
                if self.on_roster(&jid) {
                    self.revoking.insert(jid.clone());
                }
                self.send(Presence::new(PresenceType::Unsubscribed).with_to(jid.clone()))
                    .await;
                self.changed_by_command(&jid).await;
                let _ = reply.send(Ok(()));
            }
            List::Block => {
                self.blocked.remove(&jid);
                self.changed_by_command(&jid).await;
                if self.blocking_supported {
                    let id = self.new_id();
                    let unblock = Unblock {
                        items: vec![Jid::from(jid)],
                    };
                    self.send_iq(Iq::from_set(id, unblock), Pending::Reply(reply))
                        .await;
                } else {
                    self.blocked.remove(&jid);
                    let _ = reply.send(Ok(()));
                }
            }
            List::Reverse => {
                let _ = reply.send(Err(BackendError::Unsupported));
            }
        }
    }
}
