//! Persistence behind one interface, [`Store`]: accounts, their four lists, GTC, BLP, the list
//! serial and backend links. [`SqliteStore`] (a file, the default) and [`PostgresStore`] (a
//! `postgres://` URL) implement it; [`open`] opens whichever `[storage] database` names.
//!
//! Every method is one operation, done in one transaction and durable before its future
//! completes: a change the server acknowledges is on disk first. The methods are async and
//! the trait is dyn-compatible, so the server holds an `Arc<dyn Store>` and an implementation
//! may be a thread of its own (SQLite) or an async client with a pool (PostgreSQL).

mod location;
pub mod password;
mod postgres;
mod sqlite;
#[doc(hidden)]
pub mod suite;
mod types;
mod values;

use std::future::Future;
use std::pin::Pin;

use crate::protocol::{BlpSetting, FriendlyName, GtcSetting, ListKind, PhoneKey, UserHandle};

pub use location::{open, DatabaseLocation, PoolOptions, PostgresUrl};
pub use password::PasswordHash;
pub use postgres::PostgresStore;
pub use sqlite::{DatabaseCheck, SqliteStore};
pub use types::{
    Account, BackendLink, BlpChange, Credentials, Entry, Group, GroupChange, ListChange,
    MirrorChange, MirrorEdit, MirrorState, Permission, PhoneChange, Snapshot, MAX_LIST_ENTRIES,
};

/// Why a store operation failed. The domain variants map to MSN error codes in one place, in
/// the notification server.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such account")]
    NoSuchAccount,
    #[error("an account with that handle already exists")]
    AccountExists,
    #[error("already on that list")]
    AlreadyThere,
    #[error("not on that list")]
    NotOnList,
    #[error("already on the opposite list (AL and BL are exclusive)")]
    InOppositeList,
    #[error("the list is full ({MAX_LIST_ENTRIES} entries)")]
    ListFull,
    #[error("the account is not linked to a backend")]
    NotLinked,
    #[error("the setting already has that value")]
    AlreadyInMode,
    #[error("only the server changes the reverse list")]
    ReverseListIsServerOnly,
    #[error("no such group")]
    NoSuchGroup,
    #[error("a group with that name exists")]
    GroupExists,
    #[error("the account has as many groups as it may")]
    TooManyGroups,
    #[error("the contact is not in that group")]
    NotInGroup,
    #[error("group 0 cannot be removed")]
    GroupZero,
    #[error("the database was written by a newer msngate (schema {0})")]
    NewerSchema(i64),
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL error, with its causes. Its text is the server's or the client's, never
    /// the URL.
    #[error("database error: {}", postgres::describe(.0))]
    Postgres(tokio_postgres::Error),
    /// No connection to the database within the pool's bounds (PostgreSQL), or none at all.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("the store thread has stopped")]
    Closed,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres(e)
    }
}

impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// What every [`Store`] method returns: boxed, so the trait stays dyn-compatible.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The store: one method per operation, each one transaction, committed before it returns.
///
/// A handle names an account; methods that need one fail with `NoSuchAccount` when it has
/// none, unless they say otherwise. `tests/store.rs` runs [`suite`] against each
/// implementation.
pub trait Store: Send + Sync + 'static {
    /// A random secret kept in the store, created on first use. Fake login challenges for
    /// unknown handles derive from it so they stay the same across restarts.
    fn server_secret(&self) -> StoreFuture<'_, Vec<u8>>;

    /// Creates an account with an empty list set; `AccountExists` if the handle is taken.
    fn create_account<'a>(
        &'a self,
        handle: &'a UserHandle,
        name: &'a FriendlyName,
        password: &'a str,
    ) -> StoreFuture<'a, ()>;

    fn set_password<'a>(&'a self, handle: &'a UserHandle, password: &'a str)
        -> StoreFuture<'a, ()>;

    /// Deletes an account and takes it off every other account's lists (moving their serials).
    fn remove_account<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, ()>;

    /// Maps an account to a backend account, replacing any earlier mapping. It takes effect
    /// at the account's next login.
    fn link<'a>(&'a self, handle: &'a UserHandle, link: &'a BackendLink) -> StoreFuture<'a, ()>;

    /// Removes an account's backend mapping, returning what it was; `NotLinked` if none.
    fn unlink<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, BackendLink>;

    /// The account's backend mapping; `None` for a local account (or no account).
    fn backend_link<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Option<BackendLink>>;

    /// Records that the account's backend refused its linked credentials (at the time given,
    /// Unix seconds), or clears that after a login the backend accepted. Without a link
    /// there is nothing to record, and that is no error.
    fn set_link_refused<'a>(
        &'a self,
        handle: &'a UserHandle,
        refused_at: Option<i64>,
    ) -> StoreFuture<'a, ()>;

    /// The accounts whose backend refused their linked credentials, with when, by handle.
    fn refused_links(&self) -> StoreFuture<'_, Vec<(UserHandle, i64)>>;

    /// Every account with its name and backend mapping, sorted by handle.
    fn accounts_with_links(
        &self,
    ) -> StoreFuture<'_, Vec<(UserHandle, FriendlyName, Option<BackendLink>)>>;

    /// What logging in needs (password, name, backend mapping), in one call; `None` for an
    /// unknown handle.
    fn credentials<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Option<Credentials>>;

    fn account<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Account>;

    /// The settings and all four lists (SYN order), read together so they match the serial.
    fn snapshot<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Snapshot>;

    /// One list, in the order entries were added, and the serial it belongs to.
    fn list<'a>(
        &'a self,
        handle: &'a UserHandle,
        kind: ListKind,
    ) -> StoreFuture<'a, (u32, Vec<Entry>)>;

    /// Sets GTC, returning the new serial; the same value again is `AlreadyInMode`.
    fn set_gtc<'a>(&'a self, handle: &'a UserHandle, gtc: GtcSetting) -> StoreFuture<'a, u32>;

    /// Sets BLP, returning the new serial and the watchers as the old setting treated them;
    /// the same value again is `AlreadyInMode`.
    fn set_blp<'a>(&'a self, handle: &'a UserHandle, blp: BlpSetting)
        -> StoreFuture<'a, BlpChange>;

    /// Sets the account's own friendly name, returning the new serial.
    fn rename<'a>(&'a self, handle: &'a UserHandle, name: &'a FriendlyName)
        -> StoreFuture<'a, u32>;

    /// Renames a contact on the owner's FL, returning the new serial; `NotOnList` if absent.
    fn rename_contact<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, u32>;

    /// Adds a local account to one of the owner's FL, AL or BL. Adding to the FL also puts
    /// the owner on the contact's RL under the owner's current name. Fails with
    /// `ReverseListIsServerOnly`, `NoSuchAccount` (also for a bridged contact),
    /// `AlreadyThere`, `InOppositeList` (AL and BL) or `ListFull`.
    fn add_entry<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, ListChange>;

    /// Removes a contact from one of the owner's FL, AL or BL (and the owner from the
    /// contact's RL when it was the FL); `NotOnList` if absent.
    fn remove_entry<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, ListChange>;

    /// One entry of one of the owner's lists.
    fn entry<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, Option<Entry>>;

    /// The lists of the owner's that `contact` is on, in SYN order.
    fn lists_of<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<ListKind>>;

    fn is_on_list<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, bool>;

    /// Makes a bridged account's lists show what its backend says about one contact: on
    /// exactly `lists`, under `name`. Each addition or removal moves the serial on and is
    /// returned (for `ADD 0`/`REM 0`); a rename alone moves the serial and returns nothing.
    fn mirror_contact<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
        lists: &'a [ListKind],
    ) -> StoreFuture<'a, Vec<MirrorChange>>;

    /// Makes a bridged account's lists match its backend's whole contact list.
    fn mirror_all<'a>(
        &'a self,
        owner: &'a UserHandle,
        contacts: &'a [(UserHandle, FriendlyName, Vec<ListKind>)],
    ) -> StoreFuture<'a, Vec<MirrorChange>>;

    /// The lists a contact is on, the owner's serial and the contact's FL name, as one
    /// snapshot: what a list command of a bridged account decides on.
    fn mirror_state<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, MirrorState>;

    /// Puts a contact of a bridged account on the lists in `add` and off those in `remove`,
    /// keeping its other lists as stored at that moment (one transaction).
    fn mirror_edit<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
        add: &'a [ListKind],
        remove: &'a [ListKind],
    ) -> StoreFuture<'a, MirrorEdit>;

    /// How the owner's privacy settings treat `other`.
    fn permission<'a>(
        &'a self,
        owner: &'a UserHandle,
        other: &'a UserHandle,
    ) -> StoreFuture<'a, Permission>;

    /// The contacts on the account's FL (in the order added), each with whether that
    /// contact lets the account see it.
    fn forward_contacts<'a>(
        &'a self,
        handle: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<(UserHandle, bool)>>;

    /// Everyone with the account on their FL (its RL), each with how the account's settings
    /// treat them.
    fn watchers<'a>(
        &'a self,
        handle: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<(UserHandle, Permission)>>;

    /// The account's contact groups (MSNP7), group 0 first. Group 0 always exists; its name
    /// is `~` until renamed.
    fn groups<'a>(&'a self, owner: &'a UserHandle) -> StoreFuture<'a, Vec<Group>>;

    /// Creates a group under the lowest free id, returning the new serial and the id; fails
    /// with `GroupExists` (same name, case-insensitive) or `TooManyGroups`.
    fn add_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, (u32, u32)>;

    /// Renames a group, returning the new serial; `NoSuchGroup`, `GroupExists`.
    fn rename_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        id: u32,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, u32>;

    /// Removes a group (its contacts stay on the FL), returning the new serial; `GroupZero`
    /// for group 0, `NoSuchGroup`.
    fn remove_group<'a>(&'a self, owner: &'a UserHandle, id: u32) -> StoreFuture<'a, u32>;

    /// Puts an FL contact in a group, returning the new serial. A contact in no group yet is
    /// in group 0; with `only` it leaves group 0 for this one (an ADD with a group), else it
    /// stays in both. `NoSuchGroup`, `NotOnList`, `AlreadyThere`.
    fn add_to_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        id: u32,
        only: bool,
    ) -> StoreFuture<'a, u32>;

    /// Makes a bridged account's groups show what its backend says: each listed contact that
    /// is on the FL ends up in exactly the groups named (compared without case; none: group
    /// 0), groups missing are created (past `MAX_GROUPS`, `Dropped`), and an explicit group 0
    /// membership made from MSN is kept. Groups left empty stay. One transaction; each
    /// change moves the serial on, in the order returned (per contact: the groups it made,
    /// those it joined, then those it left, so a contact is never shown in no group).
    fn mirror_groups<'a>(
        &'a self,
        owner: &'a UserHandle,
        contacts: &'a [(UserHandle, Vec<FriendlyName>)],
    ) -> StoreFuture<'a, Vec<GroupChange>>;

    /// Takes an FL contact out of one group (not off the FL, not off anyone's RL), returning
    /// the new serial. `NoSuchGroup`, `NotOnList`, `NotInGroup`.
    fn remove_from_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        id: u32,
    ) -> StoreFuture<'a, u32>;

    /// Sets or clears (`None`) one of the account's phone properties (MSNP5), moving its
    /// serial and those of the watchers it lets see them on.
    fn set_phone<'a>(
        &'a self,
        owner: &'a UserHandle,
        key: PhoneKey,
        value: Option<&'a FriendlyName>,
    ) -> StoreFuture<'a, PhoneChange>;

    /// The account's own phone properties, set ones only.
    fn phones<'a>(
        &'a self,
        owner: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<(PhoneKey, FriendlyName)>>;

    /// Accounts whose handle or friendly name contains `text` (case-insensitive), by handle,
    /// at most `limit` of them.
    fn find<'a>(
        &'a self,
        text: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(UserHandle, FriendlyName)>>;
}
