//! MSNP7's contact groups: `ADG`, `REG`, `RMG`, and `ADD`/`REM` of an FL contact with a group.
//! Every change moves the serial on; group 0 always exists and cannot be removed. Each goes
//! through the account's `ContactLists`: the store for a local account, the backend first
//! for a linked one.

use crate::connection::Replies;
use crate::protocol::{ErrorCode, FriendlyName, ListKind, TrId, UserHandle};
use crate::services::{GroupCommand, ListCommand, Services};

/// `ADG`, `REG` and `RMG`, through the account's lists.
pub async fn change(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    command: GroupCommand,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let account = services.hub.backend(me).ok_or(ErrorCode::NotExpected)?;
    let lists = services.backends.lists(account.backend)?;
    lists.group(services, &account, trid, command, out).await
}

/// `ADD TrID FL handle name group`: a contact already on the FL joins the group; a new one
/// is added through the account's lists (as any ADD) and put in that group.
pub async fn add(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    contact: UserHandle,
    name: FriendlyName,
    group: u32,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let store = &services.store;
    if !store.groups(me).await?.iter().any(|g| g.id == group) {
        return Err(ErrorCode::InvalidGroup);
    }
    if store.is_on_list(me, ListKind::Forward, &contact).await? {
        let join = GroupCommand::Join {
            contact,
            name,
            id: group,
        };
        return change(services, me, trid, join, out).await;
    }
    let account = services.hub.backend(me).ok_or(ErrorCode::NotExpected)?;
    let command = ListCommand {
        trid,
        list: ListKind::Forward,
        contact,
        group: Some(group),
    };
    let lists = services.backends.lists(account.backend)?;
    lists.add(services, &account, command, name, out).await
}

/// `REM TrID FL handle group`: the contact leaves that group only; it stays on the FL, and
/// nobody's RL changes.
pub async fn remove(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    contact: UserHandle,
    group: u32,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let leave = GroupCommand::Leave { contact, id: group };
    change(services, me, trid, leave, out).await
}
