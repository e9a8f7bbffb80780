//! How stored values are read back and written, whatever the database: handles, names and
//! settings parsed with a `Corrupt` error, backend options as text, and group-name equality.

use crate::protocol::{BlpSetting, FriendlyName, UserHandle};
use crate::store::{Group, StoreError};

/// The name of group 0 until it is renamed. The official servers sent `~` for the default
/// group, which gaim, Kopete and MSN 4.x show as "Other Contacts".
pub const DEFAULT_GROUP_NAME: &str = "~";

pub(super) fn parse_handle(s: &str) -> Result<UserHandle, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("handle {s:?}")))
}

pub(super) fn parse_name(s: &str) -> Result<FriendlyName, StoreError> {
    FriendlyName::new(s).map_err(|_| StoreError::Corrupt("friendly name".into()))
}

pub(super) fn parse_blp(s: &str) -> Result<BlpSetting, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("blp {s:?}")))
}

/// A backend link's options, one `key=value` a line.
pub(super) fn encode_options(options: &[(String, String)]) -> String {
    options.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

pub(super) fn decode_options(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Group names compare without regard to case, as MSN's did.
pub(super) fn same_name(a: &FriendlyName, b: &FriendlyName) -> bool {
    a.as_str().to_lowercase() == b.as_str().to_lowercase()
}

/// The id a new group gets: the lowest one no group has (group 0 always exists).
pub(super) fn lowest_free_id(existing: &[Group]) -> u32 {
    (1..)
        .find(|id| existing.iter().all(|g| g.id != *id))
        .unwrap_or(u32::MAX)
}
