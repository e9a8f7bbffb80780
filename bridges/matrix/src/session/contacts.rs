//! The contact list: direct chats (m.direct) and rooms as contacts, invites, ignored users,
//! reporting the list and its changes, and the user's list changes (accepting, inviting,
//! ignoring).

use std::collections::{BTreeMap, HashSet};

use matrix_sdk::ruma::events::direct::DirectEventContent;
use matrix_sdk::ruma::events::ignored_user_list::IgnoredUserListEventContent;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use matrix_sdk::{Room, RoomState};
use msngate_bridge_api::{BackendError, BackendEvent, Contact, ContactKind, List};

use crate::handles::{handle_for_room, handle_for_user, room_for_handle, user_for_handle};

use super::{lock, other, Shared};

/// The group MSN shows direct chats (people) in. Matrix has no groups of its own; these two
/// are fixed, and the user cannot move a contact out of them (see docs/bridges/matrix.md).
pub const PEOPLE: &str = "People";
/// The group MSN shows rooms in.
pub const ROOMS: &str = "Rooms";

impl Shared {
    /// The people a room is a direct chat with: its `m.direct` targets as the store has
    /// them, or, until the store has that, the inviter of a direct chat invite the user
    /// accepted. Empty for a group room.
    pub(super) fn direct_users(&self, room: &Room) -> Vec<OwnedUserId> {
        let targets: Vec<OwnedUserId> = room
            .direct_targets()
            .into_iter()
            .filter_map(|t| t.as_user_id().map(|u| u.to_owned()))
            .filter(|u| *u != self.own)
            .collect();
        if !targets.is_empty() {
            return targets;
        }
        lock(&self.state)
            .accepted_direct
            .get(room.room_id())
            .cloned()
            .into_iter()
            .collect()
    }

    /// The joined direct chats with `user`, accepted invites not yet in `m.direct` included.
    pub(super) fn joined_direct_chats(&self, user: &UserId) -> Vec<Room> {
        let mut rooms: Vec<Room> = self
            .client
            .get_dm_rooms(user)
            .filter(|r| r.state() == RoomState::Joined)
            .collect();
        let accepted: Vec<OwnedRoomId> = lock(&self.state)
            .accepted_direct
            .iter()
            .filter(|(_, inviter)| *inviter == user)
            .map(|(room, _)| room.clone())
            .collect();
        for room_id in accepted {
            if rooms.iter().any(|r| r.room_id() == room_id) {
                continue;
            }
            if let Some(room) = self
                .client
                .get_room(&room_id)
                .filter(|r| r.state() == RoomState::Joined)
            {
                rooms.push(room);
            }
        }
        rooms
    }

    /// Forgets accepted direct chat invites the store now knows as direct chats (or that
    /// are no longer joined or being joined).
    pub(super) fn forget_settled_direct_invites(&self) {
        let rooms: Vec<OwnedRoomId> = lock(&self.state).accepted_direct.keys().cloned().collect();
        let settled: Vec<OwnedRoomId> = rooms
            .into_iter()
            .filter(|room_id| {
                self.client.get_room(room_id).is_none_or(|r| {
                    !matches!(r.state(), RoomState::Invited | RoomState::Joined)
                        || r.direct_targets()
                            .iter()
                            .any(|t| t.as_user_id() != Some(&self.own))
                })
            })
            .collect();
        let mut state = lock(&self.state);
        for room_id in settled {
            state.accepted_direct.remove(&room_id);
        }
    }

    /// The contact list as the store knows it now.
    pub(super) async fn current_contacts(&self) -> BTreeMap<String, Contact> {
        self.forget_settled_direct_invites();
        let mut contacts = BTreeMap::new();
        for room in self.client.joined_rooms() {
            let targets = self.direct_users(&room);
            if !targets.is_empty() {
                for user in targets {
                    let Some(handle) = handle_for_user(user.as_str()) else {
                        continue;
                    };
                    let name = self.member_name(&room, &user).await;
                    contacts.insert(
                        handle.clone(),
                        Contact {
                            handle,
                            name,
                            kind: ContactKind::Person,
                            lists: vec![List::Forward, List::Allow, List::Reverse],
                            groups: vec![PEOPLE.to_owned()],
                        },
                    );
                }
            } else if let Some(handle) = handle_for_room(room.room_id().as_str()) {
                let name = match room.display_name().await {
                    Ok(n) => n.to_string(),
                    Err(_) => room.room_id().to_string(),
                };
                contacts.insert(
                    handle.clone(),
                    Contact {
                        handle,
                        name,
                        kind: ContactKind::Group,
                        lists: vec![List::Forward],
                        groups: vec![ROOMS.to_owned()],
                    },
                );
            }
        }
        // Ignored users are on the BL (and not the AL), like XMPP's blocklist.
        for user in self.ignored_users().await {
            let Some(handle) = handle_for_user(user.as_str()) else {
                continue;
            };
            let contact = contacts.entry(handle.clone()).or_insert(Contact {
                handle,
                name: user.localpart().to_owned(),
                kind: ContactKind::Person,
                lists: Vec::new(),
                groups: Vec::new(),
            });
            contact.lists.retain(|l| *l != List::Allow);
            contact.lists.push(List::Block);
        }
        // Inviters not otherwise on the list are on the RL only.
        let invites: Vec<(String, String)> = {
            let state = lock(&self.state);
            state
                .invites
                .keys()
                .map(|h| (h.clone(), h.clone()))
                .collect()
        };
        for (handle, name) in invites {
            contacts.entry(handle.clone()).or_insert(Contact {
                handle,
                name,
                kind: ContactKind::Person,
                lists: vec![List::Reverse],
                groups: Vec::new(),
            });
        }
        contacts
    }

    /// The account's `m.ignored_user_list`, as the store has it.
    pub(super) async fn ignored_users(&self) -> Vec<OwnedUserId> {
        let Ok(Some(raw)) = self
            .client
            .account()
            .account_data::<IgnoredUserListEventContent>()
            .await
        else {
            return Vec::new();
        };
        raw.deserialize()
            .map(|content| content.ignored_users.into_keys().collect())
            .unwrap_or_default()
    }

    pub(super) async fn member_name(&self, room: &Room, user: &UserId) -> String {
        match room.get_member_no_sync(user).await {
            Ok(Some(member)) => member.name().to_owned(),
            _ => user.localpart().to_owned(),
        }
    }

    /// Looks at invited rooms and reports new invites as `AddedBy`.
    pub(super) async fn check_invites(&self) {
        let mut current = HashSet::new();
        for room in self.client.invited_rooms() {
            let room_id = room.room_id().to_owned();
            current.insert(room_id.clone());
            if lock(&self.state).invited_rooms.contains(&room_id) {
                continue;
            }
            let Ok(details) = room.invite_details().await else {
                continue;
            };
            let inviter = details.inviter_id.clone();
            let Some(handle) = handle_for_user(inviter.as_str()) else {
                continue;
            };
            let name = details
                .inviter
                .as_ref()
                .map(|m| m.name().to_owned())
                .unwrap_or_else(|| inviter.localpart().to_owned());
            {
                let mut state = lock(&self.state);
                state.invited_rooms.insert(room_id.clone());
                state
                    .invites
                    .entry(handle.clone())
                    .or_default()
                    .insert(room_id);
            }
            self.emit(BackendEvent::AddedBy { handle, name }).await;
        }
        // Invites that went away (accepted, declined, withdrawn).
        let mut state = lock(&self.state);
        state.invited_rooms.retain(|r| current.contains(r));
        for rooms in state.invites.values_mut() {
            rooms.retain(|r| current.contains(r));
        }
        state.invites.retain(|_, rooms| !rooms.is_empty());
    }

    /// Reports the whole contact list and every contact's presence.
    pub(super) async fn report_contact_list(&self) {
        let _reporting = self.reporting.lock().await;
        self.check_invites().await;
        let contacts = self.current_contacts().await;
        lock(&self.state).contacts = contacts.clone();
        self.emit(BackendEvent::ContactList(
            contacts.values().cloned().collect(),
        ))
        .await;
        lock(&self.state).presence.clear();
        for contact in contacts.values() {
            self.report_initial_presence(contact).await;
        }
    }

    /// Reports what changed in the contact list since it was last reported.
    pub(super) async fn report_contact_changes(&self) {
        let _reporting = self.reporting.lock().await;
        self.check_invites().await;
        let contacts = self.current_contacts().await;
        let old = std::mem::replace(&mut lock(&self.state).contacts, contacts.clone());
        for (handle, contact) in &contacts {
            if old.get(handle) != Some(contact) {
                self.emit(BackendEvent::ContactChanged(contact.clone()))
                    .await;
                // Also an inviter (on the RL only) who becomes a contact.
                let was_forward = old
                    .get(handle)
                    .is_some_and(|c| c.lists.contains(&List::Forward));
                if !was_forward {
                    self.report_initial_presence(contact).await;
                }
            }
        }
        for handle in old.keys() {
            if !contacts.contains_key(handle) {
                lock(&self.state).presence.remove(handle);
                self.emit(BackendEvent::ContactRemoved {
                    handle: handle.clone(),
                })
                .await;
            }
        }
    }

    pub(super) fn user_of(handle: &str) -> Result<OwnedUserId, BackendError> {
        user_for_handle(handle)
            .and_then(|u| OwnedUserId::try_from(u).ok())
            .ok_or(BackendError::InvalidContact)
    }

    /// Joins the rooms `handle` invited the user to; false if there were none.
    pub(super) async fn accept_invites(&self, handle: &str) -> Result<bool, BackendError> {
        let rooms: Vec<OwnedRoomId> = lock(&self.state)
            .invites
            .get(handle)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        let inviter = user_for_handle(handle).and_then(|u| OwnedUserId::try_from(u).ok());
        for room_id in &rooms {
            let Some(room) = self.client.get_room(room_id) else {
                continue;
            };
            // A direct chat invite is a direct chat with the inviter from the moment it is
            // joined, but the store learns that from `m.direct` only at a later sync: until
            // then the contact list would show the room as a group and drop the inviter.
            let direct = match &inviter {
                Some(user)
                    if room.state() == RoomState::Invited
                        && room.is_direct().await.unwrap_or(false) =>
                {
                    Some(user.clone())
                }
                _ => None,
            };
            if let Some(user) = &direct {
                lock(&self.state)
                    .accepted_direct
                    .insert(room_id.clone(), user.clone());
            }
            if let Err(e) = room.join().await {
                lock(&self.state).accepted_direct.remove(room_id);
                return Err(other(e));
            }
            if let Some(user) = &direct {
                self.ensure_direct(room_id, user).await;
            }
        }
        if !rooms.is_empty() {
            lock(&self.state).invites.remove(handle);
            self.report_contact_changes().await;
        }
        Ok(!rooms.is_empty())
    }

    /// Makes sure the account's `m.direct` lists `room` as a direct chat with `user`.
    /// matrix-sdk adds it when it joins a direct chat invite, but not when a sync showed the
    /// room joined before the join request returned.
    pub(super) async fn ensure_direct(&self, room: &RoomId, user: &OwnedUserId) {
        let account = self.client.account();
        let listed = match account
            .fetch_account_data_static::<DirectEventContent>()
            .await
        {
            Ok(Some(raw)) => raw.deserialize().is_ok_and(|content| {
                content.iter().any(|(target, rooms)| {
                    target.as_user_id() == Some(user) && rooms.iter().any(|r| r == room)
                })
            }),
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(error = %e, "reading m.direct failed");
                return;
            }
        };
        if !listed {
            if let Err(e) = account.mark_as_dm(room, std::slice::from_ref(user)).await {
                tracing::info!(%room, error = %e, "marking a joined direct chat in m.direct failed");
            }
        }
    }

    pub async fn add_contact(&self, list: List, handle: &str) -> Result<(), BackendError> {
        match list {
            List::Reverse => Err(BackendError::Unsupported),
            List::Allow => {
                self.accept_invites(handle).await?;
                Ok(())
            }
            List::Block => {
                let user = Self::user_of(handle)?;
                let rooms: Vec<OwnedRoomId> = lock(&self.state)
                    .invites
                    .remove(handle)
                    .map(|r| r.into_iter().collect())
                    .unwrap_or_default();
                for room_id in rooms {
                    if let Some(room) = self.client.get_room(&room_id) {
                        let _ = room.leave().await;
                    }
                }
                self.client
                    .account()
                    .ignore_user(&user)
                    .await
                    .map_err(other)
            }
            List::Forward if crate::handles::is_room_handle(handle) => {
                let room_id = room_for_handle(handle)
                    .and_then(|r| OwnedRoomId::try_from(r).ok())
                    .ok_or(BackendError::InvalidContact)?;
                self.client.join_room_by_id(&room_id).await.map_err(other)?;
                self.report_contact_changes().await;
                Ok(())
            }
            List::Forward => {
                let user = Self::user_of(handle)?;
                if self.accept_invites(handle).await? {
                    return Ok(());
                }
                let joined = !self.joined_direct_chats(&user).is_empty();
                if !joined {
                    self.client.create_dm(&user).await.map_err(other)?;
                }
                self.report_contact_changes().await;
                Ok(())
            }
        }
    }

    pub async fn remove_contact(&self, list: List, handle: &str) -> Result<(), BackendError> {
        match list {
            List::Reverse | List::Allow => Ok(()),
            List::Block => {
                let user = Self::user_of(handle)?;
                self.client
                    .account()
                    .unignore_user(&user)
                    .await
                    .map_err(other)
            }
            List::Forward if crate::handles::is_room_handle(handle) => {
                let room_id = room_for_handle(handle).ok_or(BackendError::InvalidContact)?;
                let room = self.room(&room_id)?;
                room.leave().await.map_err(other)?;
                self.report_contact_changes().await;
                Ok(())
            }
            List::Forward => {
                let user = Self::user_of(handle)?;
                let rooms = self.joined_direct_chats(&user);
                if rooms.is_empty() {
                    return Err(BackendError::NotThere);
                }
                for room in rooms {
                    room.leave().await.map_err(other)?;
                }
                self.report_contact_changes().await;
                Ok(())
            }
        }
    }
}
