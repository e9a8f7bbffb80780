//! A linked account's MSNP7 groups. The other network's groups are mirrored into the store:
//! each group name a contact has there (an XMPP roster group, Matrix's "People" and "Rooms")
//! is an MSN group, created as needed, and an MSNP7 client is shown the changes as `ADG 0`,
//! `ADD 0 FL ... id` and `REM 0 FL ... id`. The client's own group commands go to the backend
//! first, then the mirror, then the answer, as `ADD`/`REM` do. Group 0 stands for "in no
//! group there"; creating a group, and group 0 itself, are MSN's alone. See
//! docs/protocol/msnp7.md and docs/bridges/.

use msngate_bridge_api::Contact;
use tracing::warn;

use crate::backend::{backend_change, Account};
use crate::connection::{Peer, Replies};
use crate::protocol::{
    Dialect, ErrorCode, FriendlyName, ListKind, ServerCommand, TrId, UserHandle,
    MAX_GROUP_NAME_BYTES,
};
use crate::services::{group_in_store, GroupCommand, Services};
use crate::store::{Group, GroupChange};

/// A group name from another network as MSN can carry it (control characters out, cut to
/// MSN's length); `None` for a blank one.
fn group_name(name: &str) -> Option<FriendlyName> {
    let mut text = FriendlyName::shortened(name)?.as_str().to_owned();
    loop {
        let name = FriendlyName::shortened(&text)?;
        if name.to_string().len() <= MAX_GROUP_NAME_BYTES {
            return Some(name);
        }
        text.pop();
    }
}

/// A contact's handle and its groups' names, as MSN can carry them.
fn contact_groups(contact: &Contact) -> Option<(UserHandle, Vec<FriendlyName>)> {
    let handle = contact.handle.parse().ok()?;
    let names = contact
        .groups
        .iter()
        .filter_map(|g| group_name(g))
        .collect();
    Some((handle, names))
}

/// Makes the store's groups of `contacts` those the backend reports; returns the changes to
/// show. A group the account has no room for is left out, with a log line.
pub(super) async fn mirror(
    services: &Services,
    account: &Account,
    contacts: &[Contact],
) -> Vec<GroupChange> {
    let entries: Vec<_> = contacts.iter().filter_map(contact_groups).collect();
    let owner = &account.handle;
    match services.store.mirror_groups(owner, &entries).await {
        Ok(changes) => changes
            .into_iter()
            .filter(|c| match c {
                GroupChange::Dropped { contact, name } => {
                    warn!(handle = %owner, %contact, group = %name.as_str(), "the account has as many groups as MSN allows; the contact is not shown in this one");
                    false
                }
                _ => true,
            })
            .collect(),
        Err(e) => {
            warn!(handle = %owner, error = %e, "cannot store the backend's groups");
            Vec::new()
        }
    }
}

/// Shows group changes to an MSNP7 client (earlier dialects have no groups: their serial
/// moves, and their next SYN shows the FL as before). Changes of a contact whose groups the
/// client is changing are held for that command's answer.
pub(super) fn notify(account: &Account, peer: &Peer, changes: Vec<GroupChange>) {
    let shown: Vec<GroupChange> = {
        let mut edits = account.mirror().group_edits();
        changes
            .into_iter()
            .filter_map(
                |c| match changed_contact(&c).and_then(|h| edits.get_mut(h)) {
                    Some(held) => {
                        held.push(c);
                        None
                    }
                    None => Some(c),
                },
            )
            .collect()
    };
    if peer.dialect() < Dialect::Msnp7 {
        return;
    }
    for change in shown {
        if let Some(line) = line(TrId(0), change) {
            peer.send_command(&line);
        }
    }
}

fn changed_contact(change: &GroupChange) -> Option<&UserHandle> {
    match change {
        GroupChange::Joined { contact, .. } | GroupChange::Left { contact, .. } => Some(contact),
        GroupChange::Created { .. } | GroupChange::Dropped { .. } => None,
    }
}

/// The line that shows a change.
fn line(trid: TrId, change: GroupChange) -> Option<ServerCommand> {
    Some(match change {
        GroupChange::Created { serial, id, name } => ServerCommand::Adg {
            trid,
            serial,
            name,
            id,
        },
        GroupChange::Joined {
            serial,
            contact,
            name,
            id,
        } => ServerCommand::Add {
            trid,
            list: ListKind::Forward,
            serial,
            handle: contact,
            name,
            group: Some(id),
        },
        GroupChange::Left {
            serial,
            contact,
            id,
        } => ServerCommand::Rem {
            trid,
            list: ListKind::Forward,
            serial,
            handle: contact,
            group: Some(id),
        },
        GroupChange::Dropped { .. } => return None,
    })
}

/// The names of the groups `ids` (group 0, which is no group on the other network, left out).
fn names(groups: &[Group], ids: &[u32]) -> Vec<String> {
    ids.iter()
        .filter(|id| **id != 0)
        .filter_map(|id| groups.iter().find(|g| g.id == *id))
        .map(|g| g.name.as_str().to_owned())
        .collect()
}

/// A group command of a linked account.
pub(super) async fn group(
    services: &Services,
    account: &Account,
    trid: TrId,
    command: GroupCommand,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let owner = &account.handle;
    let store = &services.store;
    let groups = store.groups(owner).await?;
    let exists = |id: u32| groups.iter().any(|g| g.id == id);
    match command {
        GroupCommand::Create { .. }
        | GroupCommand::Rename { id: 0, .. }
        | GroupCommand::Join { id: 0, .. }
        | GroupCommand::Leave { id: 0, .. } => {
            group_in_store(services, owner, trid, command, out).await
        }
        GroupCommand::Remove { id: 0 } => Err(ErrorCode::CannotRemoveGroupZero),
        GroupCommand::Join { contact, id, .. } | GroupCommand::Leave { contact, id }
            if !exists(id) =>
        {
            let _ = contact;
            Err(ErrorCode::InvalidGroup)
        }
        GroupCommand::Join { contact, id, .. } => {
            let current = store.mirror_state(owner, &contact).await?.groups;
            if current.contains(&id) {
                return Err(ErrorCode::AlreadyThere);
            }
            let mut wanted = current;
            wanted.push(id);
            let change = edit(services, account, &contact, names(&groups, &wanted)).await?;
            answer(services, account, trid, &contact, change, true, id, out).await
        }
        GroupCommand::Leave { contact, id } => {
            let current = store.mirror_state(owner, &contact).await?.groups;
            if !current.contains(&id) {
                return Err(ErrorCode::NotInGroup);
            }
            let wanted: Vec<u32> = current.into_iter().filter(|g| *g != id).collect();
            let change = edit(services, account, &contact, names(&groups, &wanted)).await?;
            answer(services, account, trid, &contact, change, false, id, out).await
        }
        GroupCommand::Rename { id, name } => {
            // The store first, so that the backend's reports of the new name find the group.
            let old = groups.iter().find(|g| g.id == id).map(|g| g.name.clone());
            let serial = store.rename_group(owner, id, &name).await?;
            if let Err(e) = for_members(services, account, id, &groups, |n| {
                if n == old.as_ref().map_or("", |o| o.as_str()) {
                    name.as_str().to_owned()
                } else {
                    n.to_owned()
                }
            })
            .await
            {
                if let Some(old) = old {
                    let _ = store.rename_group(owner, id, &old).await;
                }
                return Err(e);
            }
            out.push(ServerCommand::Reg {
                trid,
                serial,
                id,
                name,
            });
            Ok(())
        }
        GroupCommand::Remove { id } => {
            if !exists(id) {
                return Err(ErrorCode::InvalidGroup);
            }
            let gone = groups
                .iter()
                .find(|g| g.id == id)
                .map(|g| g.name.as_str().to_owned())
                .unwrap_or_default();
            for_members(services, account, id, &groups, |n| {
                if n == gone {
                    String::new()
                } else {
                    n.to_owned()
                }
            })
            .await?;
            let serial = store.remove_group(owner, id).await?;
            out.push(ServerCommand::Rmg { trid, serial, id });
            Ok(())
        }
    }
}

/// Sets the groups of every member of group `id` on the backend, each group's name mapped
/// by `rename` (an empty name: out of that group).
async fn for_members(
    services: &Services,
    account: &Account,
    id: u32,
    groups: &[Group],
    rename: impl Fn(&str) -> String,
) -> Result<(), ErrorCode> {
    let snapshot = services.store.snapshot(&account.handle).await?;
    for (contact, ids) in snapshot.memberships.iter().filter(|(_, g)| g.contains(&id)) {
        let wanted: Vec<String> = names(groups, ids)
            .iter()
            .map(|n| rename(n))
            .filter(|n| !n.is_empty())
            .collect();
        edit(services, account, contact, wanted).await?;
    }
    Ok(())
}

/// Puts a contact in exactly the groups `names` on the backend, then the mirror; returns the
/// mirror's changes, with those the backend reported meanwhile.
async fn edit(
    services: &Services,
    account: &Account,
    contact: &UserHandle,
    names: Vec<String>,
) -> Result<Vec<GroupChange>, ErrorCode> {
    let edits = || account.mirror().group_edits();
    edits().insert(contact.clone(), Vec::new());
    let result = async {
        let action = account.session.set_contact_groups(contact.as_str(), &names);
        backend_change(account, action).await?;
        let wanted: Vec<FriendlyName> = names.iter().filter_map(|n| group_name(n)).collect();
        let entries = [(contact.clone(), wanted)];
        Ok::<_, ErrorCode>(
            services
                .store
                .mirror_groups(&account.handle, &entries)
                .await?,
        )
    }
    .await;
    let mut held = edits().remove(contact).unwrap_or_default();
    held.extend(result?);
    Ok(held)
}

/// Answers a join (`joined`) or leave of group `id`: with the change's serial, or the current
/// one when the backend's report of it got there first; the other changes follow.
#[allow(clippy::too_many_arguments)]
async fn answer(
    services: &Services,
    account: &Account,
    trid: TrId,
    contact: &UserHandle,
    changes: Vec<GroupChange>,
    joined: bool,
    id: u32,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let is_it = |c: &GroupChange| match c {
        GroupChange::Joined { id: g, .. } => joined && *g == id,
        GroupChange::Left { id: g, .. } => !joined && *g == id,
        _ => false,
    };
    let (own, others): (Vec<_>, Vec<_>) = changes.into_iter().partition(is_it);
    let state = services
        .store
        .mirror_state(&account.handle, contact)
        .await?;
    let change = own.into_iter().next().unwrap_or_else(|| {
        let serial = state.serial;
        let contact = contact.clone();
        match joined {
            true => GroupChange::Joined {
                serial,
                contact: contact.clone(),
                name: state
                    .name
                    .clone()
                    .unwrap_or_else(|| FriendlyName::from_handle(&contact)),
                id,
            },
            false => GroupChange::Left {
                serial,
                contact,
                id,
            },
        }
    });
    let lines = std::iter::once(line(trid, change))
        .chain(others.into_iter().map(|c| line(TrId(0), c)))
        .flatten();
    lines.for_each(|l| out.push(l));
    Ok(())
}

/// After an `ADD FL` with a group of a new contact: the backend is told the contact's group.
/// Returns the serial to answer with. A backend whose groups the user cannot change keeps
/// the contact where it puts it, and MSN shows the group asked for until the next report.
pub(super) async fn added_in_group(
    services: &Services,
    account: &Account,
    contact: &UserHandle,
    id: u32,
    serial: u32,
) -> Result<u32, ErrorCode> {
    let groups = services.store.groups(&account.handle).await?;
    match edit(services, account, contact, names(&groups, &[id])).await {
        Ok(changes) => Ok(changes
            .iter()
            .filter_map(|c| match c {
                GroupChange::Joined { serial, .. } | GroupChange::Left { serial, .. } => {
                    Some(*serial)
                }
                _ => None,
            })
            .max()
            .unwrap_or(serial)
            .max(serial)),
        Err(ErrorCode::InvalidParameter) => {
            let store = &services.store;
            match store.add_to_group(&account.handle, contact, id, true).await {
                Ok(serial) => Ok(serial),
                Err(crate::store::StoreError::AlreadyThere) => Ok(serial),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e),
    }
}
