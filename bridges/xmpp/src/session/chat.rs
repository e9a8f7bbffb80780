//! Chats: incoming messages and typing, group chats (invitations, occupants, room messages,
//! joining), and outgoing messages tracked until the server has them.

use msngate_bridge_api::{BackendError, BackendEvent, ChatId, PresenceState};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::muc::muc::History;
use tokio_xmpp::parsers::muc::user::{MucUser, Status as MucStatus};
use tokio_xmpp::parsers::muc::Muc;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::stanzastream::{StanzaStage, StanzaState};

use crate::handles::{handle_for, occupant_handle};

use super::{fail, invitation, OutgoingChat, Room, SessionTask, RESENDS, SEEN_IDS};

impl SessionTask {
    pub(super) async fn message(&mut self, message: Message) {
        let Some(from) = message.from.clone() else {
            return;
        };
        let bare = from.to_bare();
        if bare == self.me {
            return;
        }
        if let Some(room) = invitation(&message) {
            return self.invited(room).await;
        }
        if message.type_ == MessageType::Groupchat {
            return self.room_message(&bare, &from, &message).await;
        }
        if !matches!(message.type_, MessageType::Chat | MessageType::Normal) {
            if message.type_ == MessageType::Error {
                tracing::info!(from = %bare, "an XMPP message bounced");
            }
            return;
        }
        let Some(handle) = handle_for(&bare) else {
            tracing::info!(from = %bare, "dropping a message from a JID with no MSN handle");
            return;
        };
        let chat = ChatId(bare.to_string());
        if let Some((_, text)) = message.get_best_body_cloned(vec![]) {
            if let Some(id) = &message.id {
                let key = format!("{bare}/{}", id.0);
                if !self.seen_set.insert(key.clone()) {
                    return;
                }
                self.seen.push_back(key);
                if self.seen.len() > SEEN_IDS {
                    if let Some(old) = self.seen.pop_front() {
                        self.seen_set.remove(&old);
                    }
                }
            }
            let name = self
                .contact(&bare)
                .map(|c| c.name)
                .unwrap_or_else(|| handle.clone());
            let id = message.id.as_ref().map(|i| i.0.clone());
            self.emit(BackendEvent::Message {
                chat,
                from: handle,
                name,
                text,
                id,
            })
            .await;
        } else if message
            .payloads
            .iter()
            .any(|p| p.is("composing", tokio_xmpp::parsers::ns::CHATSTATES))
        {
            self.emit(BackendEvent::Typing { chat, from: handle }).await;
        }
    }

    /// The nick used in rooms without one in their bookmark: the account's local part.
    pub(super) fn default_nick(&self) -> String {
        self.me
            .node()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "msn".into())
    }

    pub(super) async fn invited(&mut self, room: BareJid) {
        if self.rooms.contains_key(&room) {
            return;
        }
        let name = room.node().map(|n| n.to_string()).unwrap_or_default();
        let nick = self.default_nick();
        self.rooms.insert(
            room.clone(),
            Room {
                name,
                nick,
                joined: false,
                wanted: false,
            },
        );
        self.contact_changed(&room).await;
        self.emit_presence(&room, PresenceState::Online).await;
    }

    pub(super) async fn room_presence(&mut self, room: &BareJid, from: &Jid, presence: &Presence) {
        let Some(nick) = from.resource().map(|r| r.as_str().to_owned()) else {
            return;
        };
        let own = presence
            .payloads
            .iter()
            .filter_map(|p| MucUser::try_from(p.clone()).ok())
            .any(|u| u.status.contains(&MucStatus::SelfPresence));
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if own || nick == entry.nick {
            entry.joined = presence.type_ != PresenceType::Unavailable;
            return;
        }
        let (Some(handle), chat) = (occupant_handle(room, &nick), ChatId(room.to_string())) else {
            tracing::info!(%room, "ignoring an occupant whose nick makes no MSN handle");
            return;
        };
        let event = match presence.type_ {
            PresenceType::None => BackendEvent::Joined {
                chat,
                handle,
                name: nick,
            },
            PresenceType::Unavailable => BackendEvent::Left { chat, handle },
            _ => return,
        };
        self.emit(event).await;
    }

    pub(super) async fn room_message(&mut self, room: &BareJid, from: &Jid, message: &Message) {
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        let Some(nick) = from.resource().map(|r| r.as_str().to_owned()) else {
            return;
        };
        // Our own messages come back from the room, and history is not news.
        let delayed = message
            .payloads
            .iter()
            .any(|p| p.is("delay", tokio_xmpp::parsers::ns::DELAY));
        if nick == entry.nick || delayed {
            return;
        }
        let Some((_, text)) = message.get_best_body_cloned(vec![]) else {
            return;
        };
        let Some(handle) = occupant_handle(room, &nick) else {
            tracing::info!(%room, "dropping a message from an occupant whose nick makes no MSN handle");
            return;
        };
        let id = message.id.as_ref().map(|i| i.0.clone());
        let chat = ChatId(room.to_string());
        self.emit(BackendEvent::Message {
            chat,
            from: handle,
            name: nick,
            text,
            id,
        })
        .await;
    }

    /// Joins a room, if the stream is up (a new stream joins the rooms the user has open).
    pub(super) async fn join_room(&mut self, room: &BareJid) {
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        if entry.joined || !self.connected {
            return;
        }
        let Ok(me) = room.with_resource_str(&entry.nick) else {
            return;
        };
        let muc = Muc::new().with_history(History::new().with_maxstanzas(0));
        let presence = Presence::available().with_to(me).with_payload(muc);
        self.send(presence).await;
    }

    /// Sends a chat message and answers its sender once the server has it (acknowledged under
    /// stream management, else written). A message whose stream is lost first comes back to
    /// this task to be sent again on the next stream, up to [`RESENDS`] times, before its
    /// deadline. One still unacknowledged at its deadline fails, and the session it was sent
    /// on is not resumed (resumption would send it again): it is never sent after that.
    pub(super) async fn send_tracked(&mut self, chat: OutgoingChat) {
        let wait_for = if self.stream_management {
            StanzaStage::Acked
        } else {
            StanzaStage::Sent
        };
        let mut token = self.send(chat.message.clone()).await;
        let lost = self.lost_tx.clone();
        let online = self.online.clone();
        tokio::spawn(async move {
            let state = tokio::time::timeout_at(chat.deadline, token.wait_for(wait_for)).await;
            match state {
                Ok(Some(StanzaState::Sent { .. } | StanzaState::Acked { .. })) => {
                    let _ = chat.reply.send(Ok(()));
                }
                Err(_) => {
                    online.forget_session();
                    tracing::info!("an XMPP message was not acknowledged in time; reported failed");
                    let _ = chat.reply.send(Err(BackendError::Disconnected));
                }
                Ok(_) if chat.attempt < RESENDS && Instant::now() < chat.deadline => {
                    let again = OutgoingChat {
                        attempt: chat.attempt + 1,
                        ..chat
                    };
                    if let Err(mpsc::error::SendError(again)) = lost.send(again).await {
                        let _ = again.reply.send(Err(BackendError::Disconnected));
                    }
                }
                Ok(_) => fail(chat),
            }
        });
    }
}
