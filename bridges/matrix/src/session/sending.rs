//! The user's chats: opening one, typing, inviting, and the sender task that sends each
//! message in order until its deadline, never twice.

use std::sync::Arc;

use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedRoomId, OwnedTransactionId, TransactionId};
use matrix_sdk::{Room, RoomState};
use msngate_bridge_api::{BackendError, ChatId};
use tokio::sync::{mpsc, watch};

use crate::handles::room_for_handle;

use super::{is_transient, lock, other, Outgoing, Shared, ABANDONED_MAX};

impl Shared {
    pub(super) fn room(&self, room: &str) -> Result<Room, BackendError> {
        let room_id = OwnedRoomId::try_from(room).map_err(|_| BackendError::InvalidContact)?;
        self.client
            .get_room(&room_id)
            .filter(|r| r.state() == RoomState::Joined)
            .ok_or(BackendError::NoSuchContact)
    }

    pub async fn open_chat(&self, handle: &str) -> Result<crate::ChatId, BackendError> {
        if crate::handles::is_room_handle(handle) {
            let room_id = room_for_handle(handle).ok_or(BackendError::InvalidContact)?;
            if let Ok(room) = self.room(&room_id) {
                return Ok(ChatId(room.room_id().to_string()));
            }
            let room_id =
                OwnedRoomId::try_from(room_id).map_err(|_| BackendError::InvalidContact)?;
            let room = self.client.join_room_by_id(&room_id).await.map_err(other)?;
            return Ok(ChatId(room.room_id().to_string()));
        }
        let user = Self::user_of(handle)?;
        // A pending invite from them is the chat they want: accept it rather than make one.
        self.accept_invites(handle).await?;
        let joined = self.joined_direct_chats(&user).into_iter().next();
        let room = match joined {
            Some(room) => room,
            None => {
                let room = self.client.create_dm(&user).await.map_err(other)?;
                self.report_contact_changes().await;
                room
            }
        };
        Ok(ChatId(room.room_id().to_string()))
    }

    pub async fn send_typing(&self, room: &str) -> Result<(), BackendError> {
        self.room(room)?.typing_notice(true).await.map_err(other)
    }

    pub async fn invite(&self, room: &str, handle: &str) -> Result<(), BackendError> {
        let user = Self::user_of(handle)?;
        self.room(room)?
            .invite_user_by_id(&user)
            .await
            .map_err(other)
    }

    /// Remembers the transaction id of a message given up at its deadline.
    pub(super) fn abandon(&self, txn_id: OwnedTransactionId) {
        let mut state = lock(&self.state);
        if state.abandoned.len() >= ABANDONED_MAX {
            state.abandoned.pop_front();
        }
        state.abandoned.push_back(txn_id);
    }

    /// Redacts one of the user's own messages that the homeserver took after all although
    /// it was given up at its deadline (a request it received before freezing, carried out
    /// when it resumed): the user was told it failed.
    pub(super) async fn take_back_if_abandoned(
        &self,
        room: &Room,
        message: &matrix_sdk::ruma::events::room::message::OriginalSyncRoomMessageEvent,
    ) {
        let Some(txn_id) = message.unsigned.transaction_id.as_ref() else {
            return;
        };
        let abandoned = {
            let mut state = lock(&self.state);
            let found = state.abandoned.iter().position(|t| t == txn_id);
            found.and_then(|i| state.abandoned.remove(i)).is_some()
        };
        if abandoned {
            tracing::warn!(room = %room.room_id(), "a Matrix message given up at its deadline was sent after all; redacting it");
            if let Err(e) = room
                .redact(&message.event_id, Some("not delivered in time"), None)
                .await
            {
                tracing::warn!(room = %room.room_id(), error = %e, "redacting a late Matrix message failed");
            }
        }
    }

    /// Sends one message, retrying failures that may pass (no answer, 429, 5xx) with backoff
    /// and the same transaction id `txn_id`, so that it is never sent twice. The caller
    /// bounds it.
    pub(super) async fn send_one(
        &self,
        room: &str,
        text: &str,
        txn_id: &TransactionId,
    ) -> Result<(), BackendError> {
        let mut connections = self.connections.subscribe();
        let _ = connections.wait_for(|n| *n > 0).await;
        let room = self.room(room)?;
        let mut attempt = 0;
        loop {
            let content = RoomMessageEventContent::text_plain(text);
            match room
                .send(content)
                .with_transaction_id(txn_id.to_owned())
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_transient(&e) => {
                    tracing::info!(error = %e, "sending to Matrix failed; retrying");
                    tokio::time::sleep(msngate_bridge_api::reconnect_backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(other(e)),
            }
        }
    }
}

/// Sends queued messages one after another, in order, once the session has a client. A
/// message is given up at its deadline (`Err`; it is never sent after that).
pub async fn send_loop(
    mut ready: watch::Receiver<Option<Arc<Shared>>>,
    mut queue: mpsc::Receiver<Outgoing>,
) {
    while let Some(outgoing) = queue.recv().await {
        let Outgoing {
            room,
            text,
            reply,
            deadline,
        } = outgoing;
        let txn_id = TransactionId::new();
        let shared = ready.borrow().clone();
        let sending = async {
            let shared = match shared {
                Some(shared) => Some(shared),
                None => match ready.wait_for(Option::is_some).await {
                    Ok(shared) => shared.clone(),
                    Err(_) => None,
                },
            };
            match shared {
                Some(shared) => shared.send_one(&room, &text, &txn_id).await,
                None => Err(BackendError::Disconnected),
            }
        };
        // Whether or not anyone still waits for the answer (the core drops the futures of
        // messages sent without acknowledgement): the message was queued at the call.
        let result = match tokio::time::timeout_at(deadline, sending).await {
            Ok(result) => result,
            // Given up at the deadline: never retried. A request may be with the homeserver,
            // though: if the message turns up, it is taken back.
            Err(_) => {
                tracing::info!("a Matrix message was not sent by its deadline; dropped");
                if let Some(shared) = ready.borrow().clone() {
                    shared.abandon(txn_id);
                }
                Err(BackendError::Disconnected)
            }
        };
        let _ = reply.send(result);
    }
}
