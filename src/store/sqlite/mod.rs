//! The SQLite implementation of [`Store`]: one writing connection on a dedicated thread, and
//! reading connections used by the thread that reads.
//!
//! Every change, and every read that could take long (a scan of all accounts), is a job for
//! the store thread: async callers send it over a bounded channel and await the answer, so
//! no write (with its `fsync`) runs on a tokio worker thread. Each job is one method of
//! [`Database`], one transaction committed with `synchronous=FULL` (WAL journal) before the
//! answer goes back. The reads of one account's rows run where they are asked, on a reading
//! connection of a database file ([`readers`]), in one read transaction each; in memory
//! (tests, fuzzing) there is one connection and they go to the thread too.

mod accounts;
mod groups;
mod lists;
mod maintenance;
mod readers;
mod rows;
mod schema;

pub use maintenance::DatabaseCheck;

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use readers::Readers;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{
    Account, BackendLink, BlpChange, Credentials, Entry, Group, GroupChange, ListChange,
    MirrorChange, MirrorEdit, MirrorState, Permission, PhoneChange, Snapshot, Store, StoreError,
    StoreFuture,
};
use crate::protocol::{BlpSetting, FriendlyName, GtcSetting, ListKind, PhoneKey, UserHandle};

/// A connection to the database of one msngate instance: the store thread's, or a reading
/// one ([`readers`]).
struct Database {
    conn: Connection,
}

type Job = Box<dyn FnOnce(&mut Database) + Send>;

/// How many database requests may wait at once before callers wait to enqueue.
const QUEUE_DEPTH: usize = 1024;

/// The SQLite store: a handle to its thread. Dropping it lets the thread finish the jobs
/// already queued, close the database and end, and waits for that.
pub struct SqliteStore {
    path: Option<PathBuf>,
    /// Where each call's duration is recorded, when the server measures it.
    latency: Option<Histogram>,
    /// The reading connections of a database file; `None` in memory.
    readers: Option<Readers>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl SqliteStore {
    /// Opens (and if needed creates) the database file and starts its thread.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::start(Database::open(path)?, Some(path.to_owned()))
    }

    /// A store in memory, gone when dropped: for tests and fuzzing.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        SqliteStore::start(Database::open_in_memory()?, None)
    }

    fn start(mut db: Database, path: Option<PathBuf>) -> Result<SqliteStore, StoreError> {
        let (jobs, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("msngate-store".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job(&mut db);
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the store thread: {e}")))?;
        Ok(SqliteStore {
            readers: path.clone().map(Readers::new),
            path,
            latency: None,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Records each call's duration (queueing included) in `histogram`, in seconds.
    pub fn with_latency(mut self, histogram: Histogram) -> SqliteStore {
        self.latency = Some(histogram);
        self
    }

    /// The database file; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `f` on the store thread and returns its result.
    fn call<R, F>(&self, f: F) -> StoreFuture<'_, R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Database) -> Result<R, StoreError> + Send + 'static,
    {
        Box::pin(async move {
            let jobs = self.jobs.as_ref().ok_or(StoreError::Closed)?;
            let (tx, rx) = oneshot::channel();
            let job: Job = Box::new(move |db| {
                let _ = tx.send(f(db));
            });
            let started = self.latency.as_ref().map(|_| Instant::now());
            jobs.send(job).await.map_err(|_| StoreError::Closed)?;
            let result = rx.await.map_err(|_| StoreError::Closed)?;
            self.observe(started);
            result
        })
    }

    /// Runs the read `f` in one read transaction when the future is first polled: there, on a
    /// reading connection when one is free, else on the store thread.
    fn read<R, F>(&self, f: F) -> StoreFuture<'_, R>
    where
        R: Send + 'static,
        F: Fn(&mut Database) -> Result<R, StoreError> + Send + 'static,
    {
        Box::pin(async move {
            if let Some(readers) = &self.readers {
                let started = self.latency.as_ref().map(|_| Instant::now());
                if let Some(result) = readers.read(&f) {
                    self.observe(started);
                    return result;
                }
            }
            self.call(move |db| db.read(f)).await
        })
    }

    fn observe(&self, started: Option<Instant>) {
        if let (Some(histogram), Some(started)) = (&self.latency, started) {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The reading connections close first, so that the store thread's, the last, folds
        // the WAL back into the database file.
        self.readers = None;
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// Each method hands the thread owned copies of its arguments: the job outlives the borrow
// only in type, as the future waits for it.
impl Store for SqliteStore {
    fn server_secret(&self) -> StoreFuture<'_, Vec<u8>> {
        self.call(|db| db.server_secret())
    }

    fn create_account<'a>(
        &'a self,
        handle: &'a UserHandle,
        name: &'a FriendlyName,
        password: &'a str,
    ) -> StoreFuture<'a, ()> {
        let (handle, name, password) = (handle.clone(), name.clone(), password.to_owned());
        self.call(move |db| db.create_account(&handle, &name, &password))
    }

    fn set_password<'a>(
        &'a self,
        handle: &'a UserHandle,
        password: &'a str,
    ) -> StoreFuture<'a, ()> {
        let (handle, password) = (handle.clone(), password.to_owned());
        self.call(move |db| db.set_password(&handle, &password))
    }

    fn remove_account<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, ()> {
        let handle = handle.clone();
        self.call(move |db| db.remove_account(&handle))
    }

    fn link<'a>(&'a self, handle: &'a UserHandle, link: &'a BackendLink) -> StoreFuture<'a, ()> {
        let (handle, link) = (handle.clone(), link.clone());
        self.call(move |db| db.link(&handle, &link))
    }

    fn unlink<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, BackendLink> {
        let handle = handle.clone();
        self.call(move |db| db.unlink(&handle))
    }

    fn backend_link<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Option<BackendLink>> {
        let handle = handle.clone();
        self.read(move |db| db.backend_link(&handle))
    }

    fn set_link_refused<'a>(
        &'a self,
        handle: &'a UserHandle,
        refused_at: Option<i64>,
    ) -> StoreFuture<'a, ()> {
        let handle = handle.clone();
        self.call(move |db| db.set_link_refused(&handle, refused_at))
    }

    fn refused_links(&self) -> StoreFuture<'_, Vec<(UserHandle, i64)>> {
        self.call(|db| db.refused_links())
    }

    fn accounts_with_links(
        &self,
    ) -> StoreFuture<'_, Vec<(UserHandle, FriendlyName, Option<BackendLink>)>> {
        self.call(|db| db.accounts_with_links())
    }

    fn credentials<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Option<Credentials>> {
        let handle = handle.clone();
        self.read(move |db| db.credentials(&handle))
    }

    fn account<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Account> {
        let handle = handle.clone();
        self.read(move |db| db.account(&handle))
    }

    fn groups<'a>(&'a self, owner: &'a UserHandle) -> StoreFuture<'a, Vec<Group>> {
        let owner = owner.clone();
        self.read(move |db| db.groups(&owner))
    }

    fn add_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, (u32, u32)> {
        let (owner, name) = (owner.clone(), name.clone());
        self.call(move |db| db.add_group(&owner, &name))
    }

    fn mirror_groups<'a>(
        &'a self,
        owner: &'a UserHandle,
        contacts: &'a [(UserHandle, Vec<FriendlyName>)],
    ) -> StoreFuture<'a, Vec<GroupChange>> {
        let (owner, contacts) = (owner.clone(), contacts.to_vec());
        self.call(move |db| db.mirror_groups(&owner, &contacts))
    }

    fn rename_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        id: u32,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, u32> {
        let (owner, name) = (owner.clone(), name.clone());
        self.call(move |db| db.rename_group(&owner, id, &name))
    }

    fn remove_group<'a>(&'a self, owner: &'a UserHandle, id: u32) -> StoreFuture<'a, u32> {
        let owner = owner.clone();
        self.call(move |db| db.remove_group(&owner, id))
    }

    fn add_to_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        id: u32,
        only: bool,
    ) -> StoreFuture<'a, u32> {
        let (owner, contact) = (owner.clone(), contact.clone());
        self.call(move |db| db.add_to_group(&owner, &contact, id, only))
    }

    fn remove_from_group<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        id: u32,
    ) -> StoreFuture<'a, u32> {
        let (owner, contact) = (owner.clone(), contact.clone());
        self.call(move |db| db.remove_from_group(&owner, &contact, id))
    }

    fn set_phone<'a>(
        &'a self,
        owner: &'a UserHandle,
        key: PhoneKey,
        value: Option<&'a FriendlyName>,
    ) -> StoreFuture<'a, PhoneChange> {
        let (owner, value) = (owner.clone(), value.cloned());
        self.call(move |db| db.set_phone(&owner, key, value.as_ref()))
    }

    fn phones<'a>(
        &'a self,
        owner: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<(PhoneKey, FriendlyName)>> {
        let owner = owner.clone();
        self.read(move |db| db.phones(&owner))
    }

    fn snapshot<'a>(&'a self, handle: &'a UserHandle) -> StoreFuture<'a, Snapshot> {
        let handle = handle.clone();
        self.read(move |db| db.snapshot(&handle))
    }

    fn list<'a>(
        &'a self,
        handle: &'a UserHandle,
        kind: ListKind,
    ) -> StoreFuture<'a, (u32, Vec<Entry>)> {
        let handle = handle.clone();
        self.read(move |db| db.list(&handle, kind))
    }

    fn set_gtc<'a>(&'a self, handle: &'a UserHandle, gtc: GtcSetting) -> StoreFuture<'a, u32> {
        let handle = handle.clone();
        self.call(move |db| db.set_gtc(&handle, gtc))
    }

    fn set_blp<'a>(
        &'a self,
        handle: &'a UserHandle,
        blp: BlpSetting,
    ) -> StoreFuture<'a, BlpChange> {
        let handle = handle.clone();
        self.call(move |db| db.set_blp(&handle, blp))
    }

    fn rename<'a>(
        &'a self,
        handle: &'a UserHandle,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, u32> {
        let (handle, name) = (handle.clone(), name.clone());
        self.call(move |db| db.rename(&handle, &name))
    }

    fn rename_contact<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, u32> {
        let (owner, contact, name) = (owner.clone(), contact.clone(), name.clone());
        self.call(move |db| db.rename_contact(&owner, &contact, &name))
    }

    fn add_entry<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
    ) -> StoreFuture<'a, ListChange> {
        let (owner, contact, name) = (owner.clone(), contact.clone(), name.clone());
        self.call(move |db| db.add_entry(&owner, kind, &contact, &name))
    }

    fn remove_entry<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, ListChange> {
        let (owner, contact) = (owner.clone(), contact.clone());
        self.call(move |db| db.remove_entry(&owner, kind, &contact))
    }

    fn entry<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, Option<Entry>> {
        let (owner, contact) = (owner.clone(), contact.clone());
        self.read(move |db| db.entry(&owner, kind, &contact))
    }

    fn lists_of<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<ListKind>> {
        let (owner, contact) = (owner.clone(), contact.clone());
        self.read(move |db| db.lists_of(&owner, &contact))
    }

    fn is_on_list<'a>(
        &'a self,
        owner: &'a UserHandle,
        kind: ListKind,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, bool> {
        let (owner, contact) = (owner.clone(), contact.clone());
        self.read(move |db| db.is_on_list(&owner, kind, &contact))
    }

    fn mirror_contact<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
        lists: &'a [ListKind],
    ) -> StoreFuture<'a, Vec<MirrorChange>> {
        let (owner, contact, name, lists) =
            (owner.clone(), contact.clone(), name.clone(), lists.to_vec());
        self.call(move |db| db.mirror_contact(&owner, &contact, &name, &lists))
    }

    fn mirror_all<'a>(
        &'a self,
        owner: &'a UserHandle,
        contacts: &'a [(UserHandle, FriendlyName, Vec<ListKind>)],
    ) -> StoreFuture<'a, Vec<MirrorChange>> {
        let (owner, contacts) = (owner.clone(), contacts.to_vec());
        self.call(move |db| db.mirror_all(&owner, &contacts))
    }

    fn mirror_state<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
    ) -> StoreFuture<'a, MirrorState> {
        let (owner, contact) = (owner.clone(), contact.clone());
        // One read transaction: no change comes between these reads.
        self.read(move |db| {
            Ok(MirrorState {
                lists: db.lists_of(&owner, &contact)?,
                serial: db.account(&owner)?.serial,
                name: db
                    .entry(&owner, ListKind::Forward, &contact)?
                    .map(|e| e.name),
                groups: db.groups_of(&owner, &contact)?,
            })
        })
    }

    fn mirror_edit<'a>(
        &'a self,
        owner: &'a UserHandle,
        contact: &'a UserHandle,
        name: &'a FriendlyName,
        add: &'a [ListKind],
        remove: &'a [ListKind],
    ) -> StoreFuture<'a, MirrorEdit> {
        let (owner, contact, name) = (owner.clone(), contact.clone(), name.clone());
        let (add, remove) = (add.to_vec(), remove.to_vec());
        self.call(move |db| db.mirror_edit(&owner, &contact, &name, &add, &remove))
    }

    fn permission<'a>(
        &'a self,
        owner: &'a UserHandle,
        other: &'a UserHandle,
    ) -> StoreFuture<'a, Permission> {
        let (owner, other) = (owner.clone(), other.clone());
        self.read(move |db| db.permission(&owner, &other))
    }

    fn forward_contacts<'a>(
        &'a self,
        handle: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<(UserHandle, bool)>> {
        let handle = handle.clone();
        self.read(move |db| db.forward_contacts(&handle))
    }

    fn watchers<'a>(
        &'a self,
        handle: &'a UserHandle,
    ) -> StoreFuture<'a, Vec<(UserHandle, Permission)>> {
        let handle = handle.clone();
        self.read(move |db| db.watchers(&handle))
    }

    fn find<'a>(
        &'a self,
        text: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(UserHandle, FriendlyName)>> {
        let text = text.to_owned();
        self.call(move |db| db.find(&text, limit))
    }
}
