//! MSNP7's contact groups: `ADG`, `REG`, `RMG`, and `ADD`/`REM` of an FL contact with a group.
//! Every change moves the serial on; group 0 always exists and cannot be removed.

use crate::connection::Replies;
use crate::protocol::{ErrorCode, FriendlyName, ListKind, ServerCommand, TrId, UserHandle};
use crate::services::{ListCommand, Services};

/// `ADG TrID name 0`.
pub async fn create(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    name: FriendlyName,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let (serial, id) = services.store.add_group(me, &name).await?;
    out.push(ServerCommand::Adg {
        trid,
        serial,
        name,
        id,
    });
    Ok(())
}

/// `REG TrID id name 0`.
pub async fn rename(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    id: u32,
    name: FriendlyName,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let serial = services.store.rename_group(me, id, &name).await?;
    out.push(ServerCommand::Reg {
        trid,
        serial,
        id,
        name,
    });
    Ok(())
}

/// `RMG TrID id`.
pub async fn delete(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    id: u32,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let serial = services.store.remove_group(me, id).await?;
    out.push(ServerCommand::Rmg { trid, serial, id });
    Ok(())
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
        let serial = store.add_to_group(me, &contact, group, false).await?;
        out.push(ServerCommand::Add {
            trid,
            list: ListKind::Forward,
            serial,
            handle: contact,
            name,
            group: Some(group),
        });
        return Ok(());
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
    let serial = services
        .store
        .remove_from_group(me, &contact, group)
        .await?;
    out.push(ServerCommand::Rem {
        trid,
        list: ListKind::Forward,
        serial,
        handle: contact,
        group: Some(group),
    });
    Ok(())
}
