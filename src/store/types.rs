//! What the store keeps and answers with, whatever implements it.

use std::collections::BTreeMap;

use super::password::PasswordHash;
use crate::protocol::{BlpSetting, FriendlyName, GtcSetting, ListKind, PhoneKey, UserHandle};

/// The most entries one list may hold; ADD past it gets error 210.
pub const MAX_LIST_ENTRIES: usize = 1000;

/// An account's settings as SYN sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub handle: UserHandle,
    pub name: FriendlyName,
    pub gtc: GtcSetting,
    pub blp: BlpSetting,
    pub serial: u32,
}

/// One entry of a list: a handle and the friendly name stored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub handle: UserHandle,
    pub name: FriendlyName,
}

/// Everything SYN sends: the settings and the four lists in SYN order, and what MSNP5-7
/// clients get besides (phone numbers, groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub account: Account,
    pub lists: Vec<(ListKind, Vec<Entry>)>,
    /// The account's groups, group 0 first.
    pub groups: Vec<Group>,
    /// The groups of each FL contact in any; a contact missing here is in group 0 only.
    pub memberships: BTreeMap<UserHandle, Vec<u32>>,
    /// The account's own phone properties (set ones only).
    pub phones: Vec<(PhoneKey, FriendlyName)>,
    /// The phone properties of FL contacts who let the account see them (set ones only).
    pub contact_phones: BTreeMap<UserHandle, Vec<(PhoneKey, FriendlyName)>>,
}

/// A contact group (MSNP7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: u32,
    pub name: FriendlyName,
}

/// A change of one of an account's phone properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneChange {
    /// The account's new serial.
    pub serial: u32,
    /// The watchers who see the account's phone properties, each with its new serial.
    pub watchers: Vec<(UserHandle, u32)>,
}

/// What logging in needs to know about a handle, read at once.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub password: PasswordHash,
    pub name: FriendlyName,
    /// The account's backend mapping; `None` for a local account.
    pub link: Option<BackendLink>,
}

/// A list change and its consequences for the other account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListChange {
    /// The owner's new serial.
    pub serial: u32,
    /// For FL changes: the contact's new serial after its RL changed.
    pub reverse_serial: Option<u32>,
    /// For AL/BL changes concerning someone on the owner's RL: how the owner's settings
    /// treated that contact before the change and after it.
    pub privacy: Option<(Permission, Permission)>,
}

/// How one account's privacy settings treat another: what presence and CAL checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub blp: BlpSetting,
    pub in_allow_list: bool,
    pub in_block_list: bool,
}

impl Permission {
    /// Whether the other account may see this one's state and call it (draft section 7.6).
    pub fn allows(self) -> bool {
        !self.in_block_list && (self.blp == BlpSetting::AllowAll || self.in_allow_list)
    }

    /// The same entries judged under another BLP setting.
    pub fn with_blp(self, blp: BlpSetting) -> Permission {
        Permission { blp, ..self }
    }
}

/// An account's mapping to a backend account, as stored. The secret is sealed (see
/// [`crate::secrets`]); options are non-secret `key=value` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendLink {
    /// "xmpp" or "matrix".
    pub backend: String,
    /// The backend account: a JID, a Matrix user id.
    pub account: String,
    pub sealed_secret: Vec<u8>,
    pub options: Vec<(String, String)>,
}

impl std::fmt::Debug for BackendLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendLink")
            .field("backend", &self.backend)
            .field("account", &self.account)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// One addition to or removal from a bridged account's stored lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorChange {
    pub added: bool,
    pub list: ListKind,
    pub handle: UserHandle,
    pub name: FriendlyName,
    pub serial: u32,
}

/// One change to a bridged account's groups, made to match its backend ([`crate::store::Store::mirror_groups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    /// A group the backend named that the account did not have (`ADG 0`).
    Created {
        serial: u32,
        id: u32,
        name: FriendlyName,
    },
    /// An FL contact joined a group (`ADD 0 FL ... id`).
    Joined {
        serial: u32,
        contact: UserHandle,
        name: FriendlyName,
        id: u32,
    },
    /// An FL contact left a group (`REM 0 FL ... id`).
    Left {
        serial: u32,
        contact: UserHandle,
        id: u32,
    },
    /// A group the account could not make (it has `MAX_GROUPS`): the contact is not shown in
    /// it. Moves no serial.
    Dropped {
        contact: UserHandle,
        name: FriendlyName,
    },
}

/// A change of privacy mode (BLP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlpChange {
    /// The account's new serial.
    pub serial: u32,
    /// Everyone with the account on their FL, each with how the account's settings treated
    /// them before the change.
    pub watchers: Vec<(UserHandle, Permission)>,
}

/// A contact as a bridged account's mirror has it, read in one transaction
/// ([`super::Store::mirror_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorState {
    /// The lists the contact is on.
    pub lists: Vec<ListKind>,
    /// The owner's serial.
    pub serial: u32,
    /// The contact's name on the FL, if it is there.
    pub name: Option<FriendlyName>,
    /// The contact's groups (MSNP7) by id; empty for group 0 only.
    pub groups: Vec<u32>,
}

/// What [`super::Store::mirror_edit`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorEdit {
    pub changes: Vec<MirrorChange>,
    /// The owner's serial after the change.
    pub serial: u32,
}
