//! [`Store`] for [`PostgresStore`]: each method one transaction of the functions in
//! accounts, lists and groups, or, for a read of one statement, that statement alone.

use super::{accounts, groups, lists, rows, statement, transaction, Mode, PostgresStore};
use crate::protocol::{BlpSetting, FriendlyName, GtcSetting, ListKind, PhoneKey, UserHandle};
use crate::store::{
    Account, BackendLink, BlpChange, Credentials, Entry, Group, GroupChange, ListChange,
    MirrorChange, MirrorEdit, MirrorState, Permission, PhoneChange, Snapshot, Store, StoreError,
    StoreFuture,
};

impl Store for PostgresStore {
    fn server_secret(&self) -> StoreFuture<'_, Vec<u8>> {
        transaction!(self, Mode::Write, |tx| accounts::server_secret(&tx))
    }

    fn create_account<'a>(
        &'a self,
        handle: &'a UserHandle,
        name: &'a FriendlyName,
        password: &'a str,
    ) -> StoreFuture<'a, ()> {
        transaction!(self, Mode::Write, |tx| accounts::create_account(
            &tx, handle, name, password
        ))
    }

    fn set_password<'a>(
        &'a self,
        handle: &'a UserHandle,
        password: &'a str,
    ) -> StoreFuture<'a, ()> {
        transaction!(self, Mode::Write, [handle], |tx| accounts::set_password(
            &tx, handle, password
        ))
    }

    fn remove_account<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, ()> {
        transaction!(self, Mode::Write, |tx| accounts::remove_account(
            &tx, handle
        ))
    }

    fn link<'a>(&'a self, handle: &'a UserHandle, link: &'a BackendLink) -> StoreFuture<'a, ()> {
        transaction!(self, Mode::Write, [handle], |tx| accounts::link(
            &tx, handle, link
        ))
    }

    fn unlink<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, BackendLink> {
        transaction!(self, Mode::Write, [handle], |tx| accounts::unlink(
            &tx, handle
        ))
    }

    fn backend_link<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Option<BackendLink>> {
        statement!(self, |client| accounts::backend_link(client, handle))
    }

    fn set_link_refused<'a>(
        &'a self,
        handle: &'a UserHandle,
        refused_at: Option<i64>,
    ) -> StoreFuture<'a, ()> {
        transaction!(
            self,
            Mode::Write,
            [handle],
            |tx| accounts::set_link_refused(&tx, handle, refused_at)
        )
    }

    fn refused_links(&self) -> StoreFuture<'_, Vec<(UserHandle, i64)>> {
        statement!(self, |client| accounts::refused_links(client))
    }

    fn accounts_with_links(
        &self,
    ) -> StoreFuture<'_, Vec<(UserHandle, FriendlyName, Option<BackendLink>)>> {
        statement!(self, |client| accounts::accounts_with_links(client))
    }

    fn credentials<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Option<Credentials>> {
        statement!(self, |client| accounts::credentials(client, handle))
    }

    fn account<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Account> {
        statement!(self, |client| rows::account(client, handle))
    }

    fn groups<'a>(&'a self, owner: &'a UserHandle) -> StoreFuture<'a, Vec<Group>> {
        transaction!(self, Mode::Read, |tx| groups::account_groups(&tx, owner))
    }

    fn add_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, (u32, u32)> {
        transaction!(self, Mode::Write, [owner], |tx| groups::add_group(
            &tx, owner, name
        ))
    }

    fn mirror_groups<'a>(
        &'a self,
        owner: &'a UserHandle,
        contacts: &'a [(UserHandle, Vec<FriendlyName>)],
    ) -> StoreFuture<'a, Vec<GroupChange>> {
        transaction!(self, Mode::Write, [owner], |tx| groups::mirror_groups(
            &tx, owner, contacts
        ))
    }

    fn rename_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        id: u32,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, u32> {
        transaction!(self, Mode::Write, [owner], |tx| groups::rename_group(
            &tx, owner, id, name
        ))
    }

    fn remove_group<'a>(&'a self, owner: &'a UserHandle, id: u32) -> StoreFuture<'a, u32> {
        transaction!(self, Mode::Write, [owner], |tx| groups::remove_group(
            &tx, owner, id
        ))
    }

    fn add_to_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        id: u32,
        only: bool,
    ) -> StoreFuture<'a, u32> {
        transaction!(self, Mode::Write, [owner], |tx| groups::add_to_group(
            &tx, owner, contact, id, only
        ))
    }

    fn remove_from_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        id: u32,
    ) -> StoreFuture<'a, u32> {
        transaction!(self, Mode::Write, [owner], |tx| groups::remove_from_group(
            &tx, owner, contact, id
        ))
    }

    fn set_phone<'a>(
        &'a self,
        owner: &'a UserHandle,
        key: PhoneKey,
        value: Option<&'a FriendlyName>,
    ) -> StoreFuture<'a, PhoneChange> {
        transaction!(self, Mode::Write, [owner], |tx| groups::set_phone(
            &tx, owner, key, value
        ))
    }

    fn phones<'a>(
        &'a self,
        owner: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<(PhoneKey, FriendlyName)>> {
        transaction!(self, Mode::Read, |tx| groups::account_phones(&tx, owner))
    }

    fn snapshot<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Snapshot> {
        transaction!(self, Mode::Read, |tx| lists::snapshot(&tx, handle))
    }

    fn list<'a>(
        &'a self,
        handle: &'a UserHandle,
        kind: ListKind,
    ) -> StoreFuture<'a, (u32, Vec<Entry>)> {
        transaction!(self, Mode::Read, |tx| lists::list(&tx, handle, kind))
    }

    fn set_gtc<'a>(&'a self, handle: &'a UserHandle, gtc: GtcSetting) -> StoreFuture<'a, u32> {
        transaction!(self, Mode::Write, [handle], |tx| accounts::set_gtc(
            &tx, handle, gtc
        ))
    }

    fn set_blp<'a>(
        &'a self,
        handle: &'a UserHandle,
        blp: BlpSetting,
    ) -> StoreFuture<'a, BlpChange> {
        transaction!(self, Mode::Write, [handle], |tx| accounts::set_blp(
            &tx, handle, blp
        ))
    }

    fn rename<'a>(
        &'a self,
        handle: &'a UserHandle,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, u32> {
        transaction!(self, Mode::Write, [handle], |tx| accounts::rename(
            &tx, handle, name
        ))
    }

    fn rename_contact<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, u32> {
        transaction!(self, Mode::Write, [owner], |tx| lists::rename_contact(
            &tx, owner, contact, name
        ))
    }

    fn add_entry<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, ListChange> {
        transaction!(self, Mode::Write, [owner, contact], |tx| lists::add_entry(
            &tx, owner, kind, contact, name
        ))
    }

    fn remove_entry<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, ListChange> {
        transaction!(self, Mode::Write, [owner, contact], |tx| {
            lists::remove_entry(&tx, owner, kind, contact)
        })
    }

    fn entry<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, Option<Entry>> {
        statement!(self, |client| lists::entry(client, owner, kind, contact))
    }

    fn lists_of<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<ListKind>> {
        transaction!(self, Mode::Read, |tx| lists::lists_of(&tx, owner, contact))
    }

    fn is_on_list<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, bool> {
        statement!(self, |client| rows::has_entry(client, owner, kind, contact))
    }

    fn mirror_contact<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
        lists: &'a [ListKind],
    ) -> StoreFuture<'a, Vec<MirrorChange>> {
        transaction!(self, Mode::Write, [owner], |tx| lists::mirror_contact(
            &tx, owner, contact, name, lists
        ))
    }

    fn mirror_all<'a>(
        &'a self,
        owner: &'a UserHandle,
        contacts: &'a [(UserHandle, FriendlyName, Vec<ListKind>)],
    ) -> StoreFuture<'a, Vec<MirrorChange>> {
        transaction!(self, Mode::Write, [owner], |tx| lists::mirror_all(
            &tx, owner, contacts
        ))
    }

    fn mirror_state<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, MirrorState> {
        transaction!(self, Mode::Read, |tx| lists::mirror_state(
            &tx, owner, contact
        ))
    }

    fn mirror_edit<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
        add: &'a [ListKind],
        remove: &'a [ListKind],
    ) -> StoreFuture<'a, MirrorEdit> {
        transaction!(self, Mode::Write, [owner], |tx| lists::mirror_edit(
            &tx, owner, contact, name, add, remove
        ))
    }

    fn permission<'a>(
        &'a self,
        owner: &'a UserHandle,
        other: &'a UserHandle,
    ) -> StoreFuture<'a, Permission> {
        transaction!(self, Mode::Read, |tx| rows::permission(&tx, owner, other))
    }

    fn forward_contacts<'a>(
        &'a self,
        handle: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<(UserHandle, bool)>> {
        statement!(self, |client| lists::forward_contacts(client, handle))
    }

    fn watchers<'a>(
        &'a self,
        handle: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<(UserHandle, Permission)>> {
        statement!(self, |client| rows::watchers(client, handle))
    }

    fn find<'a>(
        &'a self,
        text: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(UserHandle, FriendlyName)>> {
        statement!(self, |client| accounts::find(client, text, limit))
    }
}
