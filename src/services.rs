//! What every part of the running server shares ([`Services`]), and the seams through which
//! the core reaches the parts that differ: the backends by name ([`Backends`]) and, for each,
//! how its contact lists work ([`ContactLists`]).
//!
//! This module sits below every role and backend: it names no concrete backend and no role.
//! `crate::server` (at the top) builds the [`Services`] with the backends this build has.

use std::collections::BTreeMap;
use std::sync::Arc;

use msngate_bridge_api::BackendEvent;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::backend::registry::{AnyBackend, BoxFuture};
use crate::backend::Account;
use crate::config::Config;
use crate::connection::Replies;
use crate::hub::switchboard::SessionHandle;
use crate::hub::{Delivery, Node};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, FriendlyName, ListKind, ServerCommand, Status, TrId, UserHandle};
use crate::secrets::SecretKey;
use crate::store::{Permission, Store};

/// Everything the connections share. One per server, passed as `Arc<Services>`.
pub struct Services {
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// Other users and switchboard sessions, wherever they run.
    pub hub: Arc<dyn Delivery>,
    /// What this node keeps for itself: cookies, the login throttle, connection counts.
    pub node: Node,
    /// Keys the stable fake challenges for unknown handles.
    pub challenge_key: Vec<u8>,
    /// `public_host:port` of the notification server, for XFR NS.
    pub notification_address: String,
    /// `public_host:port` of the switchboard, for XFR SB and RNG.
    pub switchboard_address: String,
    /// `public_host:port` of the dispatch server (empty without one), for MSNP7's XFR NS.
    pub dispatch_address: String,
    pub tracker: TaskTracker,
    /// The key that opens backend secrets; `None` until one exists (see [`SecretKey`]).
    pub secret_key: Option<SecretKey>,
    /// The backends accounts can be mapped to, with their kind of contact list.
    pub backends: Backends,
    /// The server's Prometheus metrics.
    pub metrics: Arc<Metrics>,
}

/// A backend of this server and how its accounts' contact lists work.
#[derive(Clone)]
pub struct Registered {
    pub backend: Arc<dyn AnyBackend>,
    pub lists: Arc<dyn ContactLists>,
}

/// The backends of this server, by the name stored in each account's link.
#[derive(Clone, Default)]
pub struct Backends {
    by_name: BTreeMap<&'static str, Registered>,
}

impl Backends {
    pub fn insert(&mut self, backend: impl AnyBackend, lists: Arc<dyn ContactLists>) {
        self.insert_shared(Arc::new(backend), lists);
    }

    pub fn insert_shared(&mut self, backend: Arc<dyn AnyBackend>, lists: Arc<dyn ContactLists>) {
        self.by_name
            .insert(backend.name(), Registered { backend, lists });
    }

    pub fn get(&self, name: &str) -> Option<&Registered> {
        self.by_name.get(name)
    }

    /// How the lists of an account logged into the backend `name` work. (Only a backend of
    /// this server can have logged an account in, so a miss is a bug, answered `500`.)
    pub fn lists(&self, name: &str) -> Result<Arc<dyn ContactLists>, ErrorCode> {
        self.by_name
            .get(name)
            .map(|r| r.lists.clone())
            .ok_or(ErrorCode::InternalServer)
    }
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

/// What a login's backend delivered before its first SYN.
pub struct Delivered {
    /// The backend's events still to come; `None` for a backend that sends none.
    pub events: Option<mpsc::Receiver<BackendEvent>>,
    /// Events that came while waiting for the contact list, in order.
    pub early: Vec<BackendEvent>,
}

/// How an account's contact list works. Two kinds exist: lists that are the truth (the local
/// backend: the store decides, and contacts, who are MSN users of this server, are told
/// directly) and lists that mirror another network (XMPP, Matrix: the backend decides, the
/// store keeps a copy for SYN). Everything the notification server and switchboard do with
/// lists goes through here, so neither asks which kind an account has.
pub trait ContactLists: Send + Sync + 'static {
    /// Right after the backend logged the account in, before the client's first SYN: a mirror
    /// takes the contact list, if it comes within the logon's budget (which began at
    /// `started`).
    fn logged_in<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        events: mpsc::Receiver<BackendEvent>,
        started: tokio::time::Instant,
    ) -> BoxFuture<'a, Result<Delivered, ErrorCode>>;

    /// `ADD`: answers the client with the addition, and the contact's state for an FL one.
    fn add<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        command: ListCommand,
        name: FriendlyName,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>>;

    /// `REM`: answers the client with the removal.
    fn remove<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        command: ListCommand,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>>;

    /// The ILN burst of the first CHG: every FL contact the user may see online.
    fn initial_states<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        trid: TrId,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>>;

    /// After a change of the user's privacy mode (BLP), with each watcher's permission before
    /// and after it.
    fn privacy_mode_changed(
        &self,
        services: &Services,
        account: &Account,
        changes: &[(UserHandle, Permission, Permission)],
    );

    /// An MSNP7 group command (`ADG`, `REG`, `RMG`, and `ADD`/`REM FL` of a contact already on
    /// the FL with a group): answers the client with its line. Truth lists change the store;
    /// mirrored ones tell the backend first (see [`GroupCommand`]).
    fn group<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        trid: TrId,
        command: GroupCommand,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>>;

    /// `CAL`: brings `callee` into the caller's switchboard `session` (ringing an MSN client,
    /// or joining a contact through the backend), answering the client with `CAL`.
    fn call<'a>(
        &'a self,
        services: &'a Services,
        caller: Caller<'a>,
        session: &'a SessionHandle,
        callee: UserHandle,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>>;
}

/// A client's `ADD` or `REM`.
#[derive(Debug, Clone)]
pub struct ListCommand {
    pub trid: TrId,
    pub list: ListKind,
    pub contact: UserHandle,
    /// For an MSNP7 `ADD FL` of a new contact: the group it goes in (instead of group 0),
    /// which must exist. The lists put it there once the contact is on the FL.
    pub group: Option<u32>,
}

/// An MSNP7 group command. (`ADD FL` with a group of a contact not yet on the FL is an `ADD`,
/// [`ListCommand::group`].)
#[derive(Debug, Clone)]
pub enum GroupCommand {
    /// `ADG`.
    Create { name: FriendlyName },
    /// `REG`.
    Rename { id: u32, name: FriendlyName },
    /// `RMG`.
    Remove { id: u32 },
    /// `ADD FL handle name id` of a contact on the FL.
    Join {
        contact: UserHandle,
        name: FriendlyName,
        id: u32,
    },
    /// `REM FL handle id`.
    Leave { contact: UserHandle, id: u32 },
}

/// A group command done in the store alone, answered to the client: all of it for lists that
/// are the truth; for mirrored lists, what the other network does not see (creating a group,
/// group 0).
pub async fn group_in_store(
    services: &Services,
    owner: &UserHandle,
    trid: TrId,
    command: GroupCommand,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let store = &services.store;
    let line = match command {
        GroupCommand::Create { name } => {
            let (serial, id) = store.add_group(owner, &name).await?;
            ServerCommand::Adg {
                trid,
                serial,
                name,
                id,
            }
        }
        GroupCommand::Rename { id, name } => ServerCommand::Reg {
            trid,
            serial: store.rename_group(owner, id, &name).await?,
            id,
            name,
        },
        GroupCommand::Remove { id } => ServerCommand::Rmg {
            trid,
            serial: store.remove_group(owner, id).await?,
            id,
        },
        GroupCommand::Join { contact, name, id } => ServerCommand::Add {
            trid,
            list: ListKind::Forward,
            serial: store.add_to_group(owner, &contact, id, false).await?,
            handle: contact,
            name,
            group: Some(id),
        },
        GroupCommand::Leave { contact, id } => ServerCommand::Rem {
            trid,
            list: ListKind::Forward,
            serial: store.remove_from_group(owner, &contact, id).await?,
            handle: contact,
            group: Some(id),
        },
    };
    out.push(line);
    Ok(())
}

/// Who calls, in a `CAL`.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub trid: TrId,
    pub handle: &'a UserHandle,
    pub name: &'a FriendlyName,
    pub account: &'a Arc<Account>,
}

/// The answer to an `ADD`: the addition with its serial and, for an FL contact who is online
/// and lets the user see it, the contact's state.
pub fn answer_add(
    out: &mut Replies,
    command: &ListCommand,
    serial: u32,
    name: FriendlyName,
    state: Option<(Status, FriendlyName)>,
) {
    let (trid, contact) = (command.trid, command.contact.clone());
    out.push(ServerCommand::Add {
        trid,
        list: command.list,
        serial,
        handle: contact.clone(),
        name,
        group: command.group,
    });
    if let Some((status, contact_name)) = state {
        out.push(ServerCommand::Iln {
            trid,
            status,
            handle: contact,
            name: contact_name,
        });
    }
}
