//! SYN, LST and BLP: the stored lists and settings. (ADD and REM go through the account's
//! backend: `crate::bridge::add`/`remove`.)
//!
//! What `SYN` sends grows with the dialect: MSNP2-4 get GTC, BLP and the four lists; MSNP5-6
//! also the user's phone properties (`PRP`) and a `BPR` block after each FL entry; MSNP7 also
//! the groups (`LSG`) before the lists and each FL entry's groups.

use std::collections::BTreeMap;

use crate::connection::Replies;
use crate::protocol::{
    BlpSetting, Dialect, ErrorCode, FriendlyName, ListItem, ListKind, PhoneKey, ServerCommand,
    TrId, UserHandle,
};
use crate::services::Services;
use crate::store::{BlpChange, Entry, Snapshot};

/// The phone keys `BPR` shows for a contact (MBE is the user's own).
const CONTACT_PHONE_KEYS: [PhoneKey; 4] = [
    PhoneKey::Home,
    PhoneKey::Work,
    PhoneKey::Mobile,
    PhoneKey::MobileAllowed,
];

/// `SYN`: nothing but the serial when the client's copy is current, else everything.
pub async fn synchronize(
    services: &Services,
    me: &UserHandle,
    dialect: Dialect,
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
    if dialect >= Dialect::Msnp5 {
        for key in PhoneKey::ALL {
            out.push(ServerCommand::Prp {
                trid,
                serial,
                key,
                value: phone_value(&snapshot.phones, key),
            });
        }
    }
    if dialect >= Dialect::Msnp7 {
        let total = snapshot.groups.len();
        for (i, group) in snapshot.groups.iter().enumerate() {
            out.push(ServerCommand::Lsg {
                trid,
                serial,
                index: i + 1,
                total,
                id: group.id,
                name: group.name.clone(),
            });
        }
    }
    let Snapshot {
        lists,
        memberships,
        contact_phones,
        ..
    } = snapshot;
    let extras = Extras {
        dialect,
        memberships: &memberships,
        phones: Some(&contact_phones),
    };
    for (list, entries) in lists {
        push_list(out, trid, list, serial, entries, &extras);
    }
    Ok(())
}

/// What an FL entry carries besides its handle and name, in later dialects.
struct Extras<'a> {
    dialect: Dialect,
    memberships: &'a BTreeMap<UserHandle, Vec<u32>>,
    /// Contacts' phones, for the BPR blocks of `SYN` (`None`: no BPR, as for `LST`).
    phones: Option<&'a BTreeMap<UserHandle, Vec<(PhoneKey, FriendlyName)>>>,
}

fn phone_value(set: &[(PhoneKey, FriendlyName)], key: PhoneKey) -> Option<FriendlyName> {
    set.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.clone())
        .or_else(|| key.default_value().and_then(|d| FriendlyName::new(d).ok()))
}

/// `LST`: one list on demand.
pub async fn send_list(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    list: ListKind,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let dialect = out.dialect();
    if dialect >= Dialect::Msnp7 && list == ListKind::Forward {
        // The groups come with the entries, from one snapshot so they match its serial.
        let snapshot = services.store.snapshot(me).await?;
        let extras = Extras {
            dialect,
            memberships: &snapshot.memberships,
            phones: None,
        };
        let entries = snapshot
            .lists
            .into_iter()
            .find(|(kind, _)| *kind == list)
            .map(|(_, e)| e)
            .unwrap_or_default();
        push_list(out, trid, list, snapshot.account.serial, entries, &extras);
        return Ok(());
    }
    let (serial, entries) = services.store.list(me, list).await?;
    let extras = Extras {
        dialect,
        memberships: &BTreeMap::new(),
        phones: None,
    };
    push_list(out, trid, list, serial, entries, &extras);
    Ok(())
}

fn push_list(
    out: &mut Replies,
    trid: TrId,
    list: ListKind,
    serial: u32,
    entries: Vec<Entry>,
    extras: &Extras<'_>,
) {
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
        let forward = list == ListKind::Forward;
        let groups = match forward {
            true => extras
                .memberships
                .get(&entry.handle)
                .cloned()
                .unwrap_or_default(),
            false => Vec::new(),
        };
        let handle = entry.handle;
        out.push(ServerCommand::Lst {
            trid,
            list,
            serial,
            item: Some(ListItem {
                index: i + 1,
                total,
                handle: handle.clone(),
                name: entry.name,
                groups,
            }),
        });
        if let (true, true, Some(phones)) =
            (forward, extras.dialect >= Dialect::Msnp5, extras.phones)
        {
            let set = phones.get(&handle).map(Vec::as_slice).unwrap_or_default();
            for key in CONTACT_PHONE_KEYS {
                out.push(ServerCommand::Bpr {
                    serial,
                    handle: handle.clone(),
                    key,
                    value: phone_value(set, key),
                });
            }
        }
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
