//! Incoming room events: a sync response's timelines (with backfill after a gap), typing,
//! messages delivered once each, and events that could not be decrypted yet.

use std::collections::HashSet;
use std::time::Instant;

use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::events::room::message::MessageType;
use matrix_sdk::ruma::events::{
    AnySyncEphemeralRoomEvent, AnySyncMessageLikeEvent, AnySyncStateEvent, AnySyncTimelineEvent,
    SyncMessageLikeEvent, SyncStateEvent,
};
use matrix_sdk::ruma::{MxcUri, OwnedUserId, RoomId, UInt, UserId};
use matrix_sdk::Room;
use msngate_bridge_api::{BackendEvent, ChatId};

use crate::handles::handle_for_user;

use super::{
    lock, Shared, Undecrypted, BACKFILL_MAX, MAX_TRACKED, TIMELINE_LIMIT, UTD_GRACE, UTD_PENDING,
};

impl Shared {
    /// The events between the sync position `since` and a room's cut (`prev_batch`) of a
    /// limited timeline, oldest first: what the sync left out. At most [`BACKFILL_MAX`].
    pub(super) async fn backfill(
        &self,
        room: &Room,
        prev_batch: &str,
        since: &str,
    ) -> Vec<TimelineEvent> {
        let mut collected = Vec::new();
        let mut from = prev_batch.to_owned();
        while collected.len() < BACKFILL_MAX {
            let mut options = MessagesOptions::backward().from(from.as_str());
            options.to = Some(since.to_owned());
            options.limit = UInt::from(TIMELINE_LIMIT);
            let page = match room.messages(options).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::info!(room = %room.room_id(), error = %e, "Matrix backfill failed");
                    break;
                }
            };
            let got = page.chunk.len();
            collected.extend(page.chunk);
            match page.end {
                Some(end) if got > 0 && end != from => from = end,
                _ => break,
            }
        }
        collected.truncate(BACKFILL_MAX);
        collected.reverse();
        collected
    }

    pub(super) async fn handle_sync(
        &self,
        response: matrix_sdk::sync::SyncResponse,
        since: Option<String>,
    ) {
        for raw in &response.presence {
            self.handle_presence(raw).await;
        }
        let lists_may_change = !response.rooms.joined.is_empty()
            || !response.rooms.left.is_empty()
            || !response.rooms.invited.is_empty()
            || !response.account_data.is_empty();
        if lists_may_change {
            self.report_contact_changes().await;
        }
        for (room_id, update) in &response.rooms.joined {
            let Some(room) = self.client.get_room(room_id) else {
                continue;
            };
            if let (true, Some(prev_batch), Some(since)) = (
                update.timeline.limited,
                update.timeline.prev_batch.as_deref(),
                since.as_deref(),
            ) {
                for event in self.backfill(&room, prev_batch, since).await {
                    self.handle_timeline_event(&room, event).await;
                }
            }
            for event in &update.timeline.events {
                self.handle_timeline_event(&room, event.clone()).await;
            }
            for raw in &update.ephemeral {
                if let Ok(AnySyncEphemeralRoomEvent::Typing(typing)) = raw.deserialize() {
                    self.handle_typing(room_id, typing.content.user_ids).await;
                }
            }
        }
        self.retry_undecrypted().await;
    }

    pub(super) async fn handle_typing(&self, room_id: &RoomId, now: Vec<OwnedUserId>) {
        let now: HashSet<OwnedUserId> = now.into_iter().filter(|u| *u != self.own).collect();
        let before = lock(&self.state)
            .typing
            .insert(room_id.to_owned(), now.clone())
            .unwrap_or_default();
        for user in now.difference(&before) {
            if let Some(from) = handle_for_user(user.as_str()) {
                self.emit(BackendEvent::Typing {
                    chat: ChatId(room_id.to_string()),
                    from,
                })
                .await;
            }
        }
    }

    pub(super) async fn handle_timeline_event(&self, room: &Room, event: TimelineEvent) {
        if let TimelineEventKind::UnableToDecrypt { .. } = &event.kind {
            let mut state = lock(&self.state);
            if state.undecrypted.len() < UTD_PENDING {
                state.undecrypted.push(Undecrypted {
                    room: room.room_id().to_owned(),
                    event,
                    since: Instant::now(),
                });
            }
            return;
        }
        let Ok(parsed) = event.raw().deserialize() else {
            return;
        };
        self.handle_parsed(room, parsed).await;
    }

    /// Tries the waiting encrypted events again (their keys may have arrived since); shows
    /// those still undecryptable after the grace period as such.
    pub(super) async fn retry_undecrypted(&self) {
        let waiting = std::mem::take(&mut lock(&self.state).undecrypted);
        for item in waiting {
            let Some(room) = self.client.get_room(&item.room) else {
                continue;
            };
            let raw = item.event.raw().cast_ref_unchecked();
            match room.decrypt_event(raw, None).await {
                Ok(decrypted)
                    if !matches!(decrypted.kind, TimelineEventKind::UnableToDecrypt { .. }) =>
                {
                    if let Ok(parsed) = decrypted.raw().deserialize() {
                        self.handle_parsed(&room, parsed).await;
                    }
                }
                _ if item.since.elapsed() >= UTD_GRACE => {
                    if let Ok(parsed) = item.event.raw().deserialize() {
                        let id = parsed.event_id().to_string();
                        let sender = parsed.sender().to_owned();
                        self.deliver(&room, &sender, &id, "[unable to decrypt]".into())
                            .await;
                    }
                }
                _ => lock(&self.state).undecrypted.push(item),
            }
        }
    }

    pub(super) async fn handle_parsed(&self, room: &Room, event: AnySyncTimelineEvent) {
        match event {
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                SyncMessageLikeEvent::Original(message),
            )) => {
                if message.sender == self.own {
                    self.take_back_if_abandoned(room, &message).await;
                    return;
                }
                let name = self.member_name(room, &message.sender).await;
                let Some(text) = self.text_of(&message.content.msgtype, &name) else {
                    return;
                };
                self.deliver(room, &message.sender, message.event_id.as_str(), text)
                    .await;
            }
            AnySyncTimelineEvent::State(AnySyncStateEvent::RoomMember(
                SyncStateEvent::Original(member),
            )) => {
                let leaves = matches!(
                    member.content.membership,
                    MembershipState::Leave | MembershipState::Ban
                );
                let Ok(user) = OwnedUserId::try_from(member.state_key.as_str()) else {
                    return;
                };
                let key = (room.room_id().to_owned(), user.clone());
                if leaves && lock(&self.state).joined.remove(&key) {
                    if let Some(handle) = handle_for_user(user.as_str()) {
                        self.emit(BackendEvent::Left {
                            chat: ChatId(room.room_id().to_string()),
                            handle,
                        })
                        .await;
                    }
                }
            }
            _ => {}
        }
    }

    /// Emits a message once per event id, preceded in group rooms by the sender's `Joined`.
    pub(super) async fn deliver(&self, room: &Room, sender: &UserId, event_id: &str, text: String) {
        if sender == self.own || !lock(&self.state).seen.insert(event_id) {
            return;
        }
        let Some(from) = handle_for_user(sender.as_str()) else {
            return;
        };
        let name = self.member_name(room, sender).await;
        let chat = ChatId(room.room_id().to_string());
        let is_direct = !self.direct_users(room).is_empty();
        if !is_direct {
            let first = {
                let mut state = lock(&self.state);
                // Bounded: past the cap, senders are announced again (harmless for MSN).
                if state.joined.len() >= MAX_TRACKED {
                    state.joined.clear();
                }
                state
                    .joined
                    .insert((room.room_id().to_owned(), sender.to_owned()))
            };
            if first {
                self.emit(BackendEvent::Joined {
                    chat: chat.clone(),
                    handle: from.clone(),
                    name: name.clone(),
                })
                .await;
            }
        }
        self.emit(BackendEvent::Message {
            chat,
            from,
            name,
            text,
            id: Some(event_id.to_owned()),
        })
        .await;
    }

    pub(super) fn text_of(&self, message: &MessageType, name: &str) -> Option<String> {
        let media = |kind: &str,
                     body: &str,
                     source: &matrix_sdk::ruma::events::room::MediaSource| {
            let url = match source {
                matrix_sdk::ruma::events::room::MediaSource::Plain(uri) => self.download_url(uri),
                matrix_sdk::ruma::events::room::MediaSource::Encrypted(file) => {
                    format!("{} (encrypted)", self.download_url(&file.url))
                }
            };
            format!("[{kind}] {body}: {url}")
        };
        let text = match message {
            MessageType::Text(t) => t.body.clone(),
            MessageType::Notice(n) => n.body.clone(),
            MessageType::Emote(e) => format!("* {name} {}", e.body),
            MessageType::Image(i) => media("image", &i.body, &i.source),
            MessageType::File(f) => media("file", &f.body, &f.source),
            MessageType::Video(v) => media("video", &v.body, &v.source),
            MessageType::Audio(a) => media("audio", &a.body, &a.source),
            other => other.body().to_owned(),
        };
        (!text.is_empty()).then_some(text)
    }

    /// The homeserver's (authenticated) download URL of an `mxc://server/id` URI.
    pub(super) fn download_url(&self, uri: &MxcUri) -> String {
        match uri.parts() {
            Ok((server, id)) => {
                let base = self.client.homeserver();
                format!(
                    "{}/_matrix/client/v1/media/download/{server}/{id}",
                    base.as_str().trim_end_matches('/')
                )
            }
            Err(_) => uri.to_string(),
        }
    }
}
