//! Presence: contacts' states (from sync, fetched, or the fallback when the homeserver tells
//! none) and the user's own, published by the presence task.

use std::sync::Arc;
use std::time::Duration;

use matrix_sdk::ruma::api::client::presence::{get_presence, set_presence};
use matrix_sdk::ruma::events::presence::PresenceEvent;
use matrix_sdk::ruma::presence::PresenceState as RumaPresence;
use matrix_sdk::ruma::OwnedUserId;
use msngate_bridge_api::{BackendEvent, Contact, ContactKind, List, PresenceState};

use crate::handles::{handle_for_user, user_for_handle};
use crate::presence::{from_matrix, to_matrix};

use super::{
    is_network, is_server_answer, lock, matrix_presence, ruma_presence, Shared, Wanted, MAX_TRACKED,
};

impl Shared {
    /// Whether the sync in flight asked for another presence than the one wanted now: the
    /// homeserver may apply it after a newer state was published, which must then be
    /// published again.
    fn sync_is_stale(&self) -> bool {
        let syncing = self
            .syncing_with
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        syncing.is_some() && syncing != self.sync_presence()
    }

    pub(super) fn sync_presence(&self) -> Option<RumaPresence> {
        let own = self.wanted.borrow().as_ref().map(|w| w.state);
        own.map(|s| ruma_presence(to_matrix(s).0))
    }

    /// A new contact's presence: rooms are always online; people as the homeserver says,
    /// or the fallback state when it has no presence. Reported even when it is the state
    /// remembered from before they were a contact: it was not shown then.
    pub(super) async fn report_initial_presence(&self, contact: &Contact) {
        let state = match contact.kind {
            ContactKind::Group => PresenceState::Online,
            ContactKind::Person if !contact.lists.contains(&List::Forward) => return,
            ContactKind::Person => {
                let known = lock(&self.state).presence.get(&contact.handle).copied();
                match known {
                    Some(s) => s,
                    None => self.fetch_presence(&contact.handle).await,
                }
            }
        };
        lock(&self.state)
            .presence
            .insert(contact.handle.clone(), state);
        self.emit(BackendEvent::Presence {
            handle: contact.handle.clone(),
            state,
            name: None,
        })
        .await;
    }

    pub(super) async fn fetch_presence(&self, handle: &str) -> PresenceState {
        let Some(user) = user_for_handle(handle).and_then(|u| OwnedUserId::try_from(u).ok()) else {
            return self.fallback;
        };
        match self.client.send(get_presence::v3::Request::new(user)).await {
            // Synapse with presence disabled answers a bare "offline".
            Ok(r)
                if r.presence == RumaPresence::Offline
                    && r.last_active_ago.is_none()
                    && !lock(&self.state).presence_seen =>
            {
                self.fallback
            }
            Ok(r) => from_matrix(matrix_presence(&r.presence), r.status_msg.as_deref()),
            Err(_) => self.fallback,
        }
    }

    /// Emits a presence event if the state differs from the one shown.
    pub(super) async fn show_presence(
        &self,
        handle: &str,
        state: PresenceState,
        name: Option<String>,
    ) {
        let changed = lock(&self.state).presence.insert(handle.to_owned(), state) != Some(state);
        if changed {
            self.emit(BackendEvent::Presence {
                handle: handle.to_owned(),
                state,
                name,
            })
            .await;
        }
    }

    pub(super) async fn handle_presence(&self, raw: &matrix_sdk::ruma::serde::Raw<PresenceEvent>) {
        let Ok(event) = raw.deserialize() else {
            return;
        };
        if event.sender == self.own {
            return;
        }
        let Some(handle) = handle_for_user(event.sender.as_str()) else {
            return;
        };
        let state = from_matrix(
            matrix_presence(&event.content.presence),
            event.content.status_msg.as_deref(),
        );
        let is_contact = {
            let mut s = lock(&self.state);
            s.presence_seen = true;
            s.contacts
                .get(&handle)
                .is_some_and(|c| c.lists.contains(&List::Forward))
        };
        if is_contact {
            self.show_presence(&handle, state, event.content.displayname)
                .await;
        } else {
            // Not shown, but remembered for when they become a contact.
            let mut s = lock(&self.state);
            if s.presence.len() < MAX_TRACKED {
                s.presence.insert(handle, state);
            }
        }
    }

    /// Publishes the user's state (presence and status message) and, if it changed since
    /// `name_set`, display name. `Err` when the homeserver could not be reached: try again
    /// later. A refusal (a homeserver without presence refuses) is logged and not retried.
    pub(super) async fn publish_presence(
        &self,
        wanted: &Wanted,
        name_set: &mut Option<String>,
    ) -> Result<(), ()> {
        let (presence, status) = to_matrix(wanted.state);
        let mut request = set_presence::v3::Request::new(self.own.clone(), ruma_presence(presence));
        request.status_msg = status.map(str::to_owned);
        match self.client.send(request).await {
            Ok(_) => {}
            Err(e) if !is_server_answer(&e) => {
                tracing::info!(error = %e, "setting Matrix presence failed; will retry");
                return Err(());
            }
            Err(e) => tracing::debug!(error = %e, "the homeserver refused the Matrix presence"),
        }
        if !wanted.name.is_empty() && name_set.as_deref() != Some(wanted.name.as_str()) {
            match self
                .client
                .account()
                .set_display_name(Some(&wanted.name))
                .await
            {
                Ok(()) => *name_set = Some(wanted.name.clone()),
                Err(e) if is_network(&e) => {
                    tracing::info!(error = %e, "setting the Matrix display name failed; will retry");
                    return Err(());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the homeserver refused the display name");
                    *name_set = Some(wanted.name.clone());
                }
            }
        }
        Ok(())
    }

    pub async fn go_offline(&self) {
        let request = set_presence::v3::Request::new(self.own.clone(), RumaPresence::Offline);
        let _ = self.client.send(request).await;
    }
}

/// Publishes the user's own state whenever it changes (only the latest: states set while one
/// was being sent are skipped), and again after each reconnection, once the session is
/// connected. A failure is retried with backoff.
/// How long after publishing a state it is published again when the sync in flight asked
/// for an older one (see `Shared::sync_is_stale`).
const STALE_SYNC_WAIT: Duration = Duration::from_secs(2);

pub async fn presence_loop(shared: Arc<Shared>) {
    let mut wanted = shared.wanted.clone();
    let mut connections = shared.connections.subscribe();
    let mut published: Option<(Wanted, u64)> = None;
    // The last state published again because a sync in flight carried an older one.
    let mut reasserted: Option<(Wanted, u64)> = None;
    let mut name_set: Option<String> = None;
    let mut attempt = 0;
    loop {
        let current = wanted.borrow_and_update().clone();
        let connection = *connections.borrow_and_update();
        let mut retry = None;
        if let Some(current) = current.filter(|_| connection > 0) {
            let done = (current, connection);
            if published.as_ref() != Some(&done) {
                match shared.publish_presence(&done.0, &mut name_set).await {
                    Ok(()) if shared.sync_is_stale() && reasserted.as_ref() != Some(&done) => {
                        // The sync in flight may still set its older presence; publish once
                        // more when it has surely reached the homeserver.
                        reasserted = Some(done);
                        retry = Some(STALE_SYNC_WAIT);
                        attempt = 0;
                    }
                    Ok(()) => {
                        published = Some(done);
                        attempt = 0;
                    }
                    Err(()) => {
                        retry = Some(msngate_bridge_api::reconnect_backoff(attempt));
                        attempt += 1;
                    }
                }
            }
        }
        let retry = async move {
            match retry {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            changed = connections.changed() => if changed.is_err() { return },
            () = retry => {}
        }
    }
}
