//! Lists that are the truth: the local backend's. The store decides every change, and
//! contacts, who are MSN users of this server, are told directly (`ADD 0 RL`, NLN/FLN, RNG).
//! See [`ContactLists`].

use msngate_bridge_api::BackendEvent;
use tokio::sync::mpsc;

use super::presence;
use crate::backend::registry::BoxFuture;
use crate::backend::{backend_action, to_list, Account};
use crate::connection::Replies;
use crate::hub::switchboard::SessionHandle;
use crate::hub::CookieGrant;
use crate::protocol::{ErrorCode, FriendlyName, ListKind, ServerCommand, TrId, UserHandle};
use crate::services::{
    answer_add, group_in_store, Caller, ContactLists, Delivered, GroupCommand, ListCommand,
    Services,
};
use crate::store::Permission;

/// The lists of a local account.
pub struct TruthLists;

impl ContactLists for TruthLists {
    /// Groups are the store's alone: nobody else sees them.
    fn group<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        trid: TrId,
        command: GroupCommand,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(group_in_store(
            services,
            &account.handle,
            trid,
            command,
            out,
        ))
    }

    /// The local backend sends no events, and its lists are already in the store.
    fn logged_in<'a>(
        &'a self,
        _services: &'a Services,
        _account: &'a Account,
        _events: mpsc::Receiver<BackendEvent>,
        _started: tokio::time::Instant,
    ) -> BoxFuture<'a, Result<Delivered, ErrorCode>> {
        Box::pin(std::future::ready(Ok(Delivered {
            events: None,
            early: Vec::new(),
        })))
    }

    fn add<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        command: ListCommand,
        name: FriendlyName,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let ListCommand {
                list,
                ref contact,
                group,
                ..
            } = command;
            let contact = contact.clone();
            // The backend checks and makes the change in the store, and tells the contact.
            let action =
                account
                    .session
                    .add_contact(to_list(list), contact.as_str(), name.as_str());
            backend_action(action).await?;
            let forward = list == ListKind::Forward;
            let asked = forward.then_some(&contact);
            if let (true, Some(g @ 1..)) = (forward, group) {
                // An MSNP7 client's new contact goes in the group it named.
                services
                    .store
                    .add_to_group(&account.handle, &contact, g, true)
                    .await?;
            }
            let (serial, allowed) = after_own_change(services, &account.handle, asked).await?;
            let state = services.hub.visible_status(&contact).filter(|_| allowed);
            answer_add(out, &command, serial, name, state);
            Ok(())
        })
    }

    fn remove<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        command: ListCommand,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let ListCommand {
                trid,
                list,
                contact,
                ..
            } = command;
            let action = account
                .session
                .remove_contact(to_list(list), contact.as_str());
            backend_action(action).await?;
            let (serial, _) = after_own_change(services, &account.handle, None).await?;
            out.push(ServerCommand::Rem {
                trid,
                list,
                serial,
                handle: contact,
                group: None,
            });
            Ok(())
        })
    }

    fn initial_states<'a>(
        &'a self,
        services: &'a Services,
        account: &'a Account,
        trid: TrId,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(presence::initial_states(
            services,
            &account.handle,
            trid,
            out,
        ))
    }

    /// Watchers who are MSN users of this server and whose view of the user changed see it
    /// at once.
    fn privacy_mode_changed(
        &self,
        services: &Services,
        account: &Account,
        changes: &[(UserHandle, Permission, Permission)],
    ) {
        presence::privacy_changed(services, &account.handle, changes);
    }

    /// Rings the callee, an MSN client of this server, into the session, once the backend
    /// agrees it can be called.
    fn call<'a>(
        &'a self,
        services: &'a Services,
        caller: Caller<'a>,
        session: &'a SessionHandle,
        callee: UserHandle,
        out: &'a mut Replies,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            backend_action(caller.account.session.open_chat(callee.as_str())).await?;
            ring(
                services,
                caller.trid,
                caller.handle,
                caller.name,
                session,
                callee,
                out,
            )
            .await
        })
    }
}

/// Rings `callee` into `session` on behalf of `caller` and answers the caller with `CAL`.
async fn ring(
    services: &Services,
    trid: TrId,
    caller: &UserHandle,
    caller_name: &FriendlyName,
    session: &SessionHandle,
    callee: UserHandle,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    if services.hub.presence(&callee).is_none() {
        return Err(ErrorCode::NotOnline);
    }
    let cookie = services
        .node
        .cookies
        .issue(
            CookieGrant::Invite {
                handle: callee.clone(),
                session_id: session.id(),
            },
            caller,
        )
        .ok_or(ErrorCode::ServerBusy)?;
    let ring = ServerCommand::Rng {
        session_id: session.id(),
        address: services.switchboard_address.clone(),
        cookie,
        caller: caller.clone(),
        caller_name: caller_name.clone(),
    };
    if !services.hub.send(&callee, &ring) {
        return Err(ErrorCode::NotOnline);
    }
    out.push(ServerCommand::Cal {
        trid,
        session_id: session.id(),
    });
    Ok(())
}

/// `CAL` from someone whose notification session, and so backend session, is on another node
/// of a cluster (they joined this node's switchboard session through a ring). A local account
/// rings the callee as its own session would, after the same check (`LocalSession::open_chat`:
/// the callee online, visible and not blocking the caller). A linked account's calls need its
/// backend session, which is on its own node: refused (`217`).
pub async fn call_from_elsewhere(
    services: &Services,
    trid: TrId,
    caller: &UserHandle,
    caller_name: &FriendlyName,
    session: &SessionHandle,
    callee: UserHandle,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    if services.hub.presence(caller).is_none()
        || services.store.backend_link(caller).await?.is_some()
    {
        return Err(ErrorCode::NotOnline);
    }
    super::reachable(services, caller, &callee).await?;
    ring(services, trid, caller, caller_name, session, callee, out).await
}

/// After a change the local backend made in the store: the user's serial and, for a
/// `contact` given, whether it lets the user see it.
async fn after_own_change(
    services: &Services,
    owner: &UserHandle,
    contact: Option<&UserHandle>,
) -> Result<(u32, bool), ErrorCode> {
    let serial = services.store.account(owner).await?.serial;
    let allowed = match contact {
        Some(contact) => services.store.permission(contact, owner).await?.allows(),
        None => false,
    };
    Ok((serial, allowed))
}
