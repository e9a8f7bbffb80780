//! The user's commands to the session, and logging out.

use std::time::Duration;

use msngate_bridge_api::{BackendError, ChatId, List};
use tokio::time::Instant;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::chatstates::ChatState;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};

use super::{Command, OutgoingChat, Pending, SessionTask, TYPING_INTERVAL};

impl SessionTask {
    pub(super) async fn command(&mut self, command: Command) {
        match command {
            Command::Open { jid, reply } => {
                if let Some(room) = self.rooms.get_mut(&jid) {
                    room.wanted = true;
                    self.join_room(&jid).await;
                }
                let _ = reply.send(Ok(ChatId(jid.to_string())));
            }
            Command::Leave { jid } => {
                if let Some(room) = self.rooms.get_mut(&jid) {
                    room.wanted = false;
                }
                let connected = self.connected;
                if let Some(room) = self.rooms.get_mut(&jid).filter(|r| r.joined) {
                    room.joined = false;
                    let nick = jid.with_resource_str(&room.nick);
                    if let (Ok(me), true) = (nick, connected) {
                        self.send(Presence::new(PresenceType::Unavailable).with_to(me))
                            .await;
                    }
                }
            }
            Command::SetPresence { state } => {
                // Sent now if the stream is up, else when it is back (before any message).
                self.own = state;
                let _ = self.send_own_presence().await;
            }
            // A list change needs the server: while the stream is down it fails at once rather
            // than waiting for a reconnection nobody can promise.
            Command::Add { list, reply, .. } | Command::Remove { list, reply, .. }
                if !self.connected && list != List::Reverse =>
            {
                let _ = reply.send(Err(BackendError::Disconnected));
            }
            Command::Add {
                list,
                jid,
                name,
                reply,
            } => self.add(list, jid, name, reply).await,
            Command::Remove { list, jid, reply } => self.remove(list, jid, reply).await,
            Command::SetGroups { reply, .. } if !self.connected => {
                let _ = reply.send(Err(BackendError::Disconnected));
            }
            Command::SetGroups { jid, groups, reply } => self.set_groups(jid, groups, reply).await,
            Command::Send {
                to,
                text,
                deadline,
                reply,
            } => {
                // Sent now if connected, else kept until the stream is up and the user's
                // presence has gone out again (the caller bounds how long it waits for the
                // answer). Never before that presence: the contact's reply to a user with no
                // available presence would go to offline storage, and ejabberd 23.01 may keep
                // it there until the next logon if it is stored as that presence comes in.
                let id = self.new_id();
                let kind = if self.rooms.contains_key(&to) {
                    MessageType::Groupchat
                } else {
                    MessageType::Chat
                };
                let message = Message::new_with_type(kind, Some(Jid::from(to)))
                    .with_body(Lang(String::new()), text)
                    .with_payload(ChatState::Active);
                let mut message = message;
                message.id = Some(tokio_xmpp::parsers::message::Id(id));
                let chat = OutgoingChat {
                    message,
                    reply,
                    attempt: 0,
                    deadline,
                };
                if self.connected {
                    self.send_tracked(chat).await;
                } else {
                    self.resend.push(chat);
                }
            }
            Command::Typing { .. } if !self.connected => {} // Stale by the time it could go.
            Command::Typing { to } => {
                let now = Instant::now();
                if self
                    .last_typing
                    .get(&to)
                    .is_some_and(|t| now.duration_since(*t) < TYPING_INTERVAL)
                {
                    return;
                }
                self.last_typing.insert(to.clone(), now);
                let message = Message::chat(Some(Jid::from(to))).with_payload(ChatState::Composing);
                self.send(message).await;
            }
            Command::Logout { done } => {
                let _ = done.send(());
            }
        }
    }

    /// Goes offline and closes the stream; the task ends with it.
    pub(super) async fn logout(mut self) {
        if self.connected {
            self.send(Presence::new(PresenceType::Unavailable)).await;
        }
        for (_, pending) in self.pending.drain() {
            if let Pending::Reply(reply) = pending {
                let _ = reply.send(Err(BackendError::Disconnected));
            }
        }
        // Close the stream politely, but don't wait on a dead server.
        let _ = tokio::time::timeout(Duration::from_secs(3), self.stream.close()).await;
    }
}
