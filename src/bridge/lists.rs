//! Lists that mirror another network (XMPP, Matrix): the backend decides every change, and the
//! store keeps a copy so that SYN always shows the live contact list (or the last one seen,
//! while the backend is unreachable). See [`ContactLists`].

use std::collections::HashSet;
use std::sync::Arc;

use msngate_bridge_api::{BackendEvent, ConnectionState};
use tokio::sync::mpsc;
use tracing::info;

use super::{contact_entry, EVENT_QUEUE, LOGON_BUDGET};
use crate::backend::registry::BoxFuture;
use crate::backend::{backend_action, backend_change, to_list, Account};
use crate::connection::Replies;
use crate::hub::switchboard::{Member, Participant, Remote, SessionHandle};
use crate::protocol::{ErrorCode, FriendlyName, ListKind, ServerCommand, TrId, UserHandle};
use crate::services::{
    answer_add, Caller, ContactLists, Delivered, GroupCommand, ListCommand, Services,
};
use crate::store::Permission;

/// The most message text a logon keeps from its backend while it waits for the contact list.
const EARLY_BYTES: usize = 256 * 1024;

/// The lists of an account linked to another network.
pub struct MirroredLists;

impl ContactLists for MirroredLists {
    fn logged_in<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        events: mpsc::Receiver<BackendEvent>,
        started: tokio::time::Instant,
    ) -> BoxFuture<'a, Result<Delivered, ErrorCode>> {
        Box::pin(take_contact_list(services, account, events, started))
    }

    fn add<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        command: ListCommand,
        name: FriendlyName,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(add(services, account, command, name, out))
    }

    fn remove<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        command: ListCommand,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(remove(services, account, command, out))
    }

    fn initial_states<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        trid: TrId,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(initial_states(services, account, trid, out))
    }

    fn group<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        trid: TrId,
        command: GroupCommand,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(super::groups::group(services, account, trid, command, out))
    }

    /// Another network has its own privacy rules; MSN's BLP is kept in the store for the
    /// client's sake only.
    fn privacy_mode_changed(
        &self,
        _services: &Services,
        _account: &Account,
        _changes: &[(UserHandle, Permission, Permission)],
    ) {
    }

    fn call<'a>(
        &'a self,
        _services: &'a Services,
        caller: Caller<'a>,
        session: &'a SessionHandle,
        callee: UserHandle,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(call(caller, session, callee, out))
    }
}

/// Gives the backend what is left of the logon's budget to deliver the contact list, so the
/// first SYN shows it.
async fn take_contact_list(
    services: &Services,
    account: &Account,
    mut events: mpsc::Receiver<BackendEvent>,
    started: tokio::time::Instant,
) -> Result<Delivered, ErrorCode> {
    let handle = &account.handle;
    let mut early = Vec::new();
    let mut early_bytes = 0;
    let waited = tokio::time::timeout_at(started + LOGON_BUDGET, async {
        // Bounded like the pump's own queue: past it the rest waits in the channel.
        while early.len() < EVENT_QUEUE && early_bytes < EARLY_BYTES {
            let Some(event) = events.recv().await else {
                break;
            };
            if let BackendEvent::Message { text, .. } = &event {
                early_bytes += text.len();
            }
            match event {
                BackendEvent::ContactList(list) => return Some(list),
                BackendEvent::Connection(ConnectionState::TransientDisconnect { .. }) => {
                    early.push(event);
                    return None;
                }
                other => early.push(other),
            }
        }
        None
    })
    .await;
    if waited.is_err() {
        info!(%handle, backend = account.backend, "no contact list from the backend yet; SYN shows the last one stored");
    }
    if let Ok(Some(contacts)) = waited {
        contacts.iter().for_each(|c| account.note_kind(c));
        let entries: Vec<_> = contacts.iter().filter_map(contact_entry).collect();
        services.store.mirror_all(handle, &entries).await?;
        // Before the first SYN: the client is shown the groups there.
        super::groups::mirror(services, account, &contacts).await;
    }
    Ok(Delivered {
        events: Some(events),
        early,
    })
}

/// `ADD`: the backend first, then the mirror, then the reply.
async fn add(
    services: &Services,
    account: &Account,
    command: ListCommand,
    name: FriendlyName,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let ListCommand {
        list,
        ref contact,
        group,
        ..
    } = command;
    let contact = contact.clone();
    let forward = list == ListKind::Forward;
    let implied_changes = &account.mirror().implied;
    implied_changes.asked(&contact);
    let turn = implied_changes.turn().await;
    let (current, serial, _) = mirrored_lists(services, account, &contact).await?;
    // The backend made this change by itself, doing what the client asked just before (see
    // `implied`): the client's own ADD is that change.
    let implied = current.contains(&list) && implied_changes.take(&contact, list, true);
    drop(turn);
    let serial = if current.contains(&list) {
        if !implied {
            return Err(ErrorCode::AlreadyThere);
        }
        serial
    } else {
        if list.opposite().is_some_and(|o| current.contains(&o)) {
            return Err(ErrorCode::AlreadyInOppositeList);
        }
        let action = account
            .session
            .add_contact(to_list(list), contact.as_str(), name.as_str());
        backend_change(account, action).await?;
        let serial = mirror_after(services, account, &contact, name.clone(), list, true).await?;
        implied_changes.settled(&contact, list);
        serial
    };
    // An MSNP7 client's FL addition goes in the group it named (checked to exist before).
    let serial = match group {
        Some(g @ 1..) if forward => {
            super::groups::added_in_group(services, account, &contact, g, serial).await?
        }
        _ => serial,
    };
    // With an FL addition, the contact's state as an ILN, if it is online.
    let state = account.contact_state(&contact).filter(|_| forward);
    answer_add(out, &command, serial, name, state);
    Ok(())
}

/// `REM`: the backend first, then the mirror, then the reply.
async fn remove(
    services: &Services,
    account: &Account,
    command: ListCommand,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let ListCommand {
        trid,
        list,
        contact,
        ..
    } = command;
    let implied_changes = &account.mirror().implied;
    implied_changes.asked(&contact);
    let turn = implied_changes.turn().await;
    let (current, serial, name) = mirrored_lists(services, account, &contact).await?;
    // As for ADD: a removal the backend made by itself just before.
    let implied = !current.contains(&list) && implied_changes.take(&contact, list, false);
    drop(turn);
    let serial = if !current.contains(&list) {
        if !implied {
            return Err(ErrorCode::NotOnList);
        }
        serial
    } else {
        let action = account
            .session
            .remove_contact(to_list(list), contact.as_str());
        backend_change(account, action).await?;
        let name = name.unwrap_or_else(|| FriendlyName::from_handle(&contact));
        let serial = mirror_after(services, account, &contact, name, list, false).await?;
        implied_changes.settled(&contact, list);
        serial
    };
    out.push(ServerCommand::Rem {
        trid,
        list,
        serial,
        handle: contact,
        group: None,
    });
    Ok(())
}

/// The ILN burst: the contacts the backend reports online that are on the FL.
async fn initial_states(
    services: &Services,
    account: &Account,
    trid: TrId,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let (_, forward) = services
        .store
        .list(&account.handle, ListKind::Forward)
        .await?;
    let known: HashSet<UserHandle> = forward.into_iter().map(|e| e.handle).collect();
    let presence = account.mirror().presence().clone();
    for (handle, (status, name)) in presence {
        if known.contains(&handle) {
            out.push(ServerCommand::Iln {
                trid,
                status,
                handle,
                name,
            });
        }
    }
    Ok(())
}

/// `CAL` of a contact on the other network: it joins at once (after the `CAL` reply, as
/// `JOI`). Only one backend contact per session: backends carry 1:1 chats, so inviting a
/// second one is refused rather than silently dropped.
async fn call(
    caller: Caller<'_>,
    session: &SessionHandle,
    callee: UserHandle,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let (bridge, trid) = (caller.account, caller.trid);
    let (_, name) = bridge.contact_state(&callee).ok_or(ErrorCode::NotOnline)?;
    if bridge.in_session(session.id()) {
        return Err(ErrorCode::SwitchboardFailed);
    }
    let chat = backend_action(bridge.session.open_chat(callee.as_str())).await?;
    if bridge.is_group(&callee) {
        // Calling a room joins it; its occupants come in as JOI as the room reports them.
        out.push(ServerCommand::Cal {
            trid,
            session_id: session.id(),
        });
        return session.attach_room(Arc::clone(bridge), chat).await;
    }
    let participant = Participant {
        handle: callee,
        name,
        member: Member::Remote(Remote {
            chat,
            bridge: Arc::clone(bridge),
        }),
    };
    out.push(ServerCommand::Cal {
        trid,
        session_id: session.id(),
    });
    session.add_remote(participant).await
}

/// Stores a contact's lists after the backend accepted adding it to (`added`) or removing
/// it from `list`, returning the serial to answer with. The other lists are read again
/// here, not before the backend action: the backend may have reported changes meanwhile
/// (accepting an invite with FL puts the inviter on the AL too), which must not be undone.
async fn mirror_after(
    services: &Services,
    account: &Account,
    contact: &UserHandle,
    name: FriendlyName,
    list: ListKind,
    added: bool,
) -> Result<u32, ErrorCode> {
    let (add, remove) = match (added, list) {
        (true, ListKind::Block) => (vec![list], vec![ListKind::Allow]),
        (true, _) => (vec![list], vec![]),
        (false, _) => (vec![], vec![list]),
    };
    let edit = services
        .store
        .mirror_edit(&account.handle, contact, &name, &add, &remove)
        .await?;
    match edit.changes.iter().find(|c| c.list == list) {
        Some(c) => Ok(c.serial),
        // The backend's own report of the change got there first.
        None => Ok(edit.serial),
    }
}

/// The lists a contact is on in the user's mirror, the user's serial and the contact's name
/// on the FL, as one snapshot.
async fn mirrored_lists(
    services: &Services,
    account: &Account,
    contact: &UserHandle,
) -> Result<(Vec<ListKind>, u32, Option<FriendlyName>), ErrorCode> {
    let state = services
        .store
        .mirror_state(&account.handle, contact)
        .await?;
    Ok((state.lists, state.serial, state.name))
}
