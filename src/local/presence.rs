//! Presence between local accounts: who sees whose state, and the NLN/FLN/ILN lines that
//! tell them.
//!
//! A user Y is visible to a watcher X when Y's state is neither FLN nor HDN and Y's privacy
//! settings allow X ([`Permission::allows`]: X not on Y's BL, and with BLP=BL, X on Y's AL).
//! Watchers are the users on Y's RL, i.e. those who have Y on their FL.
//!
//! Ordering: a state is stored in the hub before the lines announcing it are queued, and a
//! client's ILN burst is written before anything queued for it, so the last line a client
//! receives about a contact always carries the contact's current state.

use crate::connection::Replies;
use crate::protocol::{ErrorCode, ServerCommand, SharedLine, Status, TrId, UserHandle};
use crate::services::Services;
use crate::store::Permission;

/// The line a watcher gets about `handle`, given whether it can see `handle` now.
fn line_for(services: &Services, handle: &UserHandle, visible: bool) -> ServerCommand {
    match services.hub.visible_status(handle).filter(|_| visible) {
        Some((status, name)) => ServerCommand::Nln {
            status,
            handle: handle.clone(),
            name,
        },
        None => ServerCommand::Fln {
            handle: handle.clone(),
        },
    }
}

/// Tells everyone allowed to watch `handle` that its state went from `old` to `new` (or, with
/// `old == new`, that its name changed).
pub async fn announce(services: &Services, handle: &UserHandle, old: Status, new: Status) {
    if !old.is_visible() && !new.is_visible() {
        return;
    }
    let watchers = match services.store.watchers(handle).await {
        Ok(w) => w,
        Err(error) => {
            tracing::warn!(%error, %handle, "could not load watchers; presence not sent");
            return;
        }
    };
    // One line for every watcher, written once per dialect among them.
    let line = SharedLine::new(line_for(services, handle, new.is_visible()));
    let mut allowed = watchers
        .iter()
        .filter(|(_, permission)| permission.allows())
        .map(|(watcher, _)| watcher);
    services.hub.send_presence_to(&mut allowed, &line);
}

/// After a change to `owner`'s privacy settings, tells each affected watcher what it can see
/// now, if that changed.
pub fn privacy_changed(
    services: &Services,
    owner: &UserHandle,
    changes: &[(UserHandle, Permission, Permission)],
) {
    let Some((status, _)) = services.hub.presence(owner) else {
        return;
    };
    if !status.is_visible() {
        return;
    }
    for (watcher, before, after) in changes {
        if before.allows() != after.allows() {
            services
                .hub
                .send(watcher, &line_for(services, owner, after.allows()));
        }
    }
}

/// The ILN burst after the first CHG: one line per FL contact the user can see.
pub async fn initial_states(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let contacts = services.store.forward_contacts(me).await?;
    for (contact, allowed) in contacts {
        if let Some((status, name)) = services.hub.visible_status(&contact).filter(|_| allowed) {
            out.push(ServerCommand::Iln {
                trid,
                status,
                handle: contact,
                name,
            });
        }
    }
    Ok(())
}
