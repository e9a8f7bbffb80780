//! SYN, LST and BLP: the stored lists and settings. (ADD and REM go through the account's
//! backend: `crate::bridge::add`/`remove`.)

use crate::connection::Replies;
use crate::protocol::{BlpSetting, ErrorCode, ListItem, ListKind, ServerCommand, TrId, UserHandle};
use crate::services::Services;
use crate::store::{BlpChange, Entry};

/// `SYN`: nothing but the serial when the client's copy is current, else everything.
pub async fn synchronize(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    client_serial: u32,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let snapshot = services.store.snapshot(me).await?;
    let serial = snapshot.account.serial;
    out.push(ServerCommand::Syn { trid, serial });
    if client_serial == serial {
        return Ok(());
    }
    out.push(ServerCommand::Gtc {
        trid,
        serial,
        setting: snapshot.account.gtc,
    });
    out.push(ServerCommand::Blp {
        trid,
        serial,
        setting: snapshot.account.blp,
    });
    for (list, entries) in snapshot.lists {
        push_list(out, trid, list, serial, entries);
    }
    Ok(())
}

/// `LST`: one list on demand.
pub async fn send_list(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    list: ListKind,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let (serial, entries) = services.store.list(me, list).await?;
    push_list(out, trid, list, serial, entries);
    Ok(())
}

fn push_list(out: &mut Replies, trid: TrId, list: ListKind, serial: u32, entries: Vec<Entry>) {
    if entries.is_empty() {
        out.push(ServerCommand::Lst {
            trid,
            list,
            serial,
            item: None,
        });
    }
    let total = entries.len();
    for (i, entry) in entries.into_iter().enumerate() {
        let item = ListItem {
            index: i + 1,
            total,
            handle: entry.handle,
            name: entry.name,
        };
        out.push(ServerCommand::Lst {
            trid,
            list,
            serial,
            item: Some(item),
        });
    }
}

/// `BLP`: changes who may see the user; watchers whose view changes are told at once.
pub async fn set_privacy_mode(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    setting: BlpSetting,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let BlpChange { serial, watchers } = services.store.set_blp(me, setting).await?;
    out.push(ServerCommand::Blp {
        trid,
        serial,
        setting,
    });
    if let Some(account) = services.hub.backend(me) {
        let changes: Vec<_> = watchers
            .into_iter()
            .map(|(w, p)| (w, p, p.with_blp(setting)))
            .collect();
        let lists = services.backends.lists(account.backend)?;
        lists.privacy_mode_changed(services, &account, &changes);
    }
    Ok(())
}
