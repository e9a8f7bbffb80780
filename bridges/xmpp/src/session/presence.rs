//! Presence stanzas: contacts' availability (shown after a grace when they go offline) and
//! the user's own presence.

use msngate_bridge_api::{BackendEvent, PresenceState};
use tokio::time::Instant;
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::roster::Subscription;

use crate::presence::{availability, from_xmpp, to_xmpp};

use super::{SessionTask, OFFLINE_GRACE};

impl SessionTask {
    pub(super) async fn presence(&mut self, presence: Presence) {
        let Some(from) = presence.from.clone() else {
            return;
        };
        let bare = from.to_bare();
        if bare == self.me {
            return; // Our own other resources.
        }
        if self.rooms.contains_key(&bare) {
            return self.room_presence(&bare, &from, &presence).await;
        }
        match presence.type_ {
            PresenceType::None => {
                let status = presence.statuses.values().next().map(String::as_str);
                let state = from_xmpp(presence.show.as_ref(), status);
                let resource = from
                    .resource()
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default();
                self.resources
                    .entry(bare.clone())
                    .or_default()
                    .insert(resource, (presence.priority.0, state));
                self.update_shown(&bare).await;
            }
            PresenceType::Unavailable => {
                let resource = from
                    .resource()
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default();
                if let Some(r) = self.resources.get_mut(&bare) {
                    if resource.is_empty() {
                        r.clear();
                    } else {
                        r.remove(&resource);
                    }
                }
                self.update_shown(&bare).await;
            }
            PresenceType::Subscribe => {
                let approved = self.roster.get(&bare).is_some_and(|e| {
                    matches!(e.subscription, Subscription::From | Subscription::Both)
                });
                if approved || self.blocked.contains(&bare) {
                    return;
                }
                if self.requests.insert(bare.clone()) {
                    if let Some(contact) = self.contact(&bare) {
                        self.emit(BackendEvent::AddedBy {
                            handle: contact.handle,
                            name: contact.name,
                        })
                        .await;
                    }
                }
            }
            // Subscription changes arrive as roster pushes as well; those are what count.
            _ => {}
        }
    }

    /// Reports a contact's combined state if it changed, or if it is the first word of the
    /// contact on a new stream (after a reconnection the core is told every state again).
    pub(super) async fn update_shown(&mut self, jid: &BareJid) {
        let first_on_stream = self.fresh.insert(jid.clone());
        let best = self
            .resources
            .get(jid)
            .and_then(|r| {
                r.values()
                    .max_by_key(|(priority, state)| (*priority, availability(*state)))
            })
            .map(|(_, state)| *state)
            .unwrap_or(PresenceState::Offline);
        if best == PresenceState::Offline {
            if self.reported.contains_key(jid) {
                self.going_offline
                    .entry(jid.clone())
                    .or_insert(Instant::now() + OFFLINE_GRACE);
            }
            return;
        }
        self.going_offline.remove(jid);
        let before = self.reported.insert(jid.clone(), best);
        if before != Some(best) || first_on_stream {
            self.emit_presence(jid, best).await;
        }
    }

    /// Sends the user's state if it changed; the token of the presence stanza, if one was sent.
    pub(super) async fn send_own_presence(
        &mut self,
    ) -> Option<tokio_xmpp::stanzastream::StanzaToken> {
        if !self.connected || self.own_sent == Some(self.own) {
            return None;
        }
        let unavailable = matches!(self.own, PresenceState::Offline | PresenceState::Hidden);
        if unavailable && self.own_sent.is_none() {
            return None; // Never announced on this stream: there is nothing to withdraw.
        }
        let presence = match to_xmpp(self.own) {
            Some((show, status)) => {
                let mut p = Presence::available();
                p.show = show;
                if let Some(status) = status {
                    p.set_status("", status);
                }
                p
            }
            // XMPP has no standard invisibility: hidden means unavailable to contacts.
            None => Presence::new(PresenceType::Unavailable),
        };
        self.own_sent = Some(self.own);
        Some(self.send(presence).await)
    }
}
