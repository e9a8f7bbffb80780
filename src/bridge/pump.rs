//! The event pump: one task per login whose backend sends events, applying them to the store
//! (the mirrored lists), the user's client (`ADD 0`/`REM 0`, NLN/FLN, rings) and the user's
//! switchboard sessions, until the login ends.
//!
//! Everything it holds is bounded: messages waiting for the client's first CHG (count and
//! bytes), list changes held as consequences of the client's own commands ([`crate::backend::implied`]),
//! and the backend's queue of events (its sender waits when full).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use msngate_bridge_api::{BackendEvent, ChatId, ConnectionState};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{contact_entry, handle_and_name, Connected};
use crate::backend::{from_presence, mime, Account};
use crate::connection::Peer;
use crate::hub::switchboard::{Member, Participant, Remote, SessionHandle};
use crate::hub::CookieGrant;
use crate::protocol::{FriendlyName, ListKind, ServerCommand, Status, TrId, UserHandle};
use crate::services::Services;
use crate::store::{MirrorChange, StoreError};

/// Messages kept for a client that has not sent its first CHG yet: at most this many...
const WAITING_MESSAGES: usize = 100;
/// ... and this many bytes of text.
const WAITING_BYTES: usize = 256 * 1024;
/// How often the pump looks at what it holds (messages waiting, held list changes).
const TICK: Duration = Duration::from_millis(200);

/// Starts applying a login's backend events to the user's client, if its backend sends any.
pub fn start_events(services: &Arc<Services>, peer: Peer, connected: Connected) {
    let Connected {
        account,
        events,
        early,
    } = connected;
    if let Some(events) = events {
        let pump = Pump {
            services: services.clone(),
            account,
            peer,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            down_until: None,
        };
        services.tracker.spawn(pump.run(events, early));
    }
}

struct Pump {
    services: Arc<Services>,
    account: Arc<Account>,
    peer: Peer,
    /// Messages that arrived before the client's first CHG: until then the client is offline
    /// and only synchronizing, so it is rung once it is online.
    waiting: VecDeque<BackendEvent>,
    waiting_bytes: usize,
    /// While the backend is disconnected: when its contacts are to be shown offline if it is
    /// not back by then.
    down_until: Option<Instant>,
}

/// List commands waiting in [`crate::backend::backend_change`] for the events queued when they asked.
#[derive(Default)]
struct CatchUp {
    /// Events the pump has taken from the queue and applied (or held) so far.
    taken: u64,
    /// Each waiting command, with the count of `taken` at which it is told. In the order they
    /// asked, which is also the order of those counts: `taken` plus the events queued is the
    /// count of events the backend has sent, which only grows.
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl CatchUp {
    /// Commands that asked just now, while `queued` events wait: every event the backend sent
    /// before it answered them is applied already or one of those.
    fn asked(&mut self, queued: usize, commands: Vec<oneshot::Sender<()>>) {
        let at = self.taken + queued as u64;
        self.waiting
            .extend(commands.into_iter().map(|told| (at, told)));
        self.release();
    }

    /// One more event applied (or held).
    fn took(&mut self) {
        self.taken += 1;
        self.release();
    }

    /// Tells the commands whose events are all applied.
    fn release(&mut self) {
        while self
            .waiting
            .front()
            .is_some_and(|(at, _)| *at <= self.taken)
        {
            if let Some((_, told)) = self.waiting.pop_front() {
                let _ = told.send(());
            }
        }
    }
}

fn text_len(event: &BackendEvent) -> usize {
    match event {
        BackendEvent::Message { text, .. } => text.len(),
        _ => 0,
    }
}

impl Pump {
    /// Runs until the login ends (or the backend session does): applies its events.
    async fn run(mut self, mut events: mpsc::Receiver<BackendEvent>, early: Vec<BackendEvent>) {
        let mut queue: VecDeque<BackendEvent> = early.into();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let account = self.account.clone();
        let mut catch_up = CatchUp::default();
        loop {
            let busy = !self.waiting.is_empty() || !account.mirror().implied.is_empty();
            let far = Instant::now() + Duration::from_secs(86_400);
            let event = match queue.pop_front() {
                Some(e) => Some(e),
                None => tokio::select! {
                    biased;
                    _ = account.ended().cancelled() => break,
                    _ = account.mirror().catch_up_asked() => {
                        catch_up.asked(events.len(), account.mirror().take_catch_up());
                        None
                    }
                    e = events.recv() => match e {
                        Some(e) => Some(e),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(self.down_until.unwrap_or(far)), if self.down_until.is_some() => {
                        self.down_until = None;
                        self.all_offline().await;
                        None
                    }
                    _ = tick.tick(), if busy => None,
                },
            };
            let status = self
                .services
                .hub
                .peer_status(&account.handle, self.peer.id());
            let online = status.is_some_and(|s| s != Status::Offline);
            if online {
                while let Some(held) = self.waiting.pop_front() {
                    self.apply(held).await;
                }
                self.waiting_bytes = 0;
            }
            let due = account.mirror().implied.expired();
            if !due.is_empty() {
                notify_changes(&self.services, &account, &self.peer, due, false);
            }
            if let Some(event) = event {
                match event {
                    e @ BackendEvent::Message { .. } if !online && status.is_some() => self.hold(e),
                    e => self.apply(e).await,
                }
                catch_up.took();
            }
            if status.is_none() {
                break;
            }
        }
        // Commands still waiting go on (their answers are dropped with the login).
        drop(account.mirror().take_catch_up());
        if !self.waiting.is_empty() {
            warn!(handle = %account.handle, count = self.waiting.len(), "logged out before coming online; messages from contacts not shown");
        }
    }

    /// Keeps a message for the client's first CHG, within the bounds (dropping the oldest,
    /// with a log line, past them).
    fn hold(&mut self, event: BackendEvent) {
        self.waiting_bytes += text_len(&event);
        self.waiting.push_back(event);
        let mut dropped = 0;
        while self.waiting.len() > WAITING_MESSAGES
            || (self.waiting_bytes > WAITING_BYTES && self.waiting.len() > 1)
        {
            if let Some(old) = self.waiting.pop_front() {
                self.waiting_bytes -= text_len(&old);
                dropped += 1;
            }
        }
        if dropped > 0 {
            warn!(handle = %self.account.handle, dropped, "too many messages waiting for the client to come online; the oldest were not shown");
        }
    }

    /// The backend has been down longer than the debounce: every contact shown online goes
    /// offline, once. They come back as the backend reports them after reconnecting.
    async fn all_offline(&self) {
        let gone: Vec<UserHandle> = {
            let mut presence = self.account.mirror().presence();
            presence.drain().map(|(h, _)| h).collect()
        };
        info!(handle = %self.account.handle, contacts = gone.len(), "backend still disconnected; contacts shown offline");
        if gone.is_empty() || !client_ready(&self.services, &self.account, &self.peer) {
            return;
        }
        let owner = self.account.handle.clone();
        let forward = match self.services.store.list(&owner, ListKind::Forward).await {
            Ok((_, entries)) => entries,
            Err(e) => {
                warn!(error = %e, "cannot read the contact list");
                return;
            }
        };
        for handle in gone {
            if forward.iter().any(|e| e.handle == handle) {
                self.peer.send_command(&ServerCommand::Fln { handle });
            }
        }
    }

    async fn connection(&mut self, state: ConnectionState) {
        let owner = &self.account.handle;
        self.account.set_connection_state(&state);
        match state {
            ConnectionState::TransientDisconnect { reason } => {
                if self.down_until.is_none() {
                    let debounce =
                        Duration::from_secs(self.services.config.bridges.presence_debounce_secs);
                    self.down_until = Some(Instant::now() + debounce);
                }
                self.services
                    .metrics
                    .backend_reconnect(self.account.backend);
                info!(handle = %owner, %reason, "backend disconnected; reconnecting");
            }
            ConnectionState::Connected => {
                self.down_until = None;
                info!(handle = %owner, "backend connected");
            }
            ConnectionState::Connecting => info!(handle = %owner, "backend connecting"),
            ConnectionState::BadCredentials => {
                warn!(handle = %owner, backend = self.account.backend, "the backend now refuses the linked account's credentials; not retrying until the next logon");
                super::note_refused(&self.services, owner, true).await;
                // Nothing will come back on this session: show it at once.
                self.down_until = Some(Instant::now());
            }
        }
    }

    async fn apply(&mut self, event: BackendEvent) {
        let (services, account, peer) = (&self.services, &self.account, &self.peer);
        let owner = account.handle.clone();
        match event {
            BackendEvent::Connection(state) => self.connection(state).await,
            BackendEvent::ContactList(contacts) => {
                contacts.iter().for_each(|c| account.note_kind(c));
                let entries: Vec<_> = contacts.iter().filter_map(contact_entry).collect();
                mirror(
                    services,
                    account,
                    peer,
                    "the backend's contact list",
                    services.store.mirror_all(&owner, &entries),
                )
                .await;
                let changes = super::groups::mirror(services, account, &contacts).await;
                super::groups::notify(account, peer, changes);
            }
            BackendEvent::ContactChanged(contact) => {
                account.note_kind(&contact);
                let Some((handle, name, lists)) = contact_entry(&contact) else {
                    warn!(handle = %owner, "a contact the backend reported has no valid MSN handle; not shown");
                    return;
                };
                let change = services
                    .store
                    .mirror_contact(&owner, &handle, &name, &lists);
                mirror(services, account, peer, "a contact change", change).await;
                let changes = super::groups::mirror(services, account, &[contact]).await;
                super::groups::notify(account, peer, changes);
            }
            BackendEvent::ContactRemoved { handle } => {
                let Ok(handle) = handle.parse::<UserHandle>() else {
                    return;
                };
                let name = FriendlyName::from_handle(&handle);
                let change = services.store.mirror_contact(&owner, &handle, &name, &[]);
                mirror(services, account, peer, "a contact removal", change).await;
            }
            BackendEvent::AddedBy { handle, name } => {
                let Some((handle, name)) = handle_and_name(&handle, &name) else {
                    return;
                };
                let reverse = [ListKind::Reverse];
                let change = async {
                    let edit = services
                        .store
                        .mirror_edit(&owner, &handle, &name, &reverse, &[]);
                    Ok::<_, StoreError>(edit.await?.changes)
                };
                mirror(services, account, peer, "a subscription request", change).await;
            }
            BackendEvent::Presence {
                handle,
                state,
                name,
            } => {
                let Ok(contact) = handle.parse::<UserHandle>() else {
                    return;
                };
                presence(services, account, peer, contact, from_presence(state), name).await;
            }
            BackendEvent::Message {
                chat,
                from,
                name,
                text,
                ..
            } => {
                services
                    .metrics
                    .message_relayed(account.backend, crate::metrics::Direction::In);
                for payload in mime::texts(&text) {
                    deliver(services, account, peer, chat.clone(), &from, &name, payload).await;
                }
            }
            BackendEvent::Typing { chat, from } => {
                // Typing alone never opens a conversation window.
                if let (Some(session), Some((handle, name))) = (
                    chat_session(services, account, &chat),
                    handle_and_name(&from, &from),
                ) {
                    let name = account
                        .contact_state(&handle)
                        .map(|(_, n)| n)
                        .unwrap_or(name);
                    session
                        .remote_message(handle.clone(), name, mime::typing(handle.as_str()))
                        .await;
                }
            }
            BackendEvent::Joined { chat, handle, name } => {
                let (Some(session), Some((handle, name))) = (
                    chat_session(services, account, &chat),
                    handle_and_name(&handle, &name),
                ) else {
                    return;
                };
                let member = Member::Remote(Remote {
                    chat,
                    bridge: account.clone(),
                });
                // Someone already shown (a repeated presence) is no error worth reporting.
                let _ = session
                    .add_remote(Participant {
                        handle,
                        name,
                        member,
                    })
                    .await;
            }
            BackendEvent::Left { chat, handle } => {
                if let (Some(session), Ok(handle)) = (
                    chat_session(services, account, &chat),
                    handle.parse::<UserHandle>(),
                ) {
                    session.remote_left(handle).await;
                }
            }
        }
    }
}

/// Whether the user's client is past its first CHG (and so is shown contacts' states).
fn client_ready(services: &Services, account: &Account, peer: &Peer) -> bool {
    services
        .hub
        .peer_status(&account.handle, peer.id())
        .is_some_and(|s| s != Status::Offline)
}

/// A contact's state as the backend reports it: kept in the account, and shown to a client
/// past its first CHG when it changed and the contact is on the FL.
async fn presence(
    services: &Services,
    account: &Account,
    peer: &Peer,
    contact: UserHandle,
    status: Status,
    name: Option<String>,
) {
    let lookup = (account.handle.clone(), contact.clone());
    let stored_name = services
        .store
        .entry(&lookup.0, ListKind::Forward, &lookup.1)
        .await
        .ok()
        .flatten()
        .map(|e| e.name);
    let display = name
        .and_then(|n| FriendlyName::shortened(&n))
        .or(stored_name.clone())
        .unwrap_or_else(|| FriendlyName::from_handle(&contact));
    let changed = {
        let mut presence = account.mirror().presence();
        let before = presence.get(&contact).map(|(s, _)| *s);
        if status.is_visible() {
            presence.insert(contact.clone(), (status, display.clone()));
        } else {
            presence.remove(&contact);
        }
        before != Some(status).filter(|s| s.is_visible())
    };
    if changed && client_ready(services, account, peer) && stored_name.is_some() {
        let line = if status.is_visible() {
            ServerCommand::Nln {
                status,
                handle: contact,
                name: display,
            }
        } else {
            ServerCommand::Fln { handle: contact }
        };
        peer.send_command(&line);
    }
}

/// Sends the store's changes to the client as `ADD 0`/`REM 0`, except those held as
/// consequences of the client's own command (`hold`). A contact that comes onto the FL in a
/// state already known is shown in it at once (as `ILN` follows the user's own `ADD FL`): the
/// backend reported that state while the contact was not on the FL, or before it was removed
/// and added again, and does not report it again.
fn notify_changes(
    services: &Services,
    account: &Account,
    peer: &Peer,
    changes: Vec<MirrorChange>,
    hold: bool,
) {
    let ready = client_ready(services, account, peer);
    for c in changes {
        if hold && account.mirror().implied.hold(&c) {
            continue;
        }
        if !c.added {
            peer.send_command(&ServerCommand::Rem {
                trid: TrId(0),
                list: c.list,
                serial: c.serial,
                handle: c.handle,
                group: None,
            });
            continue;
        }
        let shown = c.list == ListKind::Forward && ready;
        let state = shown.then(|| account.contact_state(&c.handle)).flatten();
        peer.send_command(&ServerCommand::Add {
            trid: TrId(0),
            list: c.list,
            serial: c.serial,
            handle: c.handle.clone(),
            name: c.name,
            group: None,
        });
        if let Some((status, name)) = state {
            peer.send_command(&ServerCommand::Nln {
                status,
                handle: c.handle,
                name,
            });
        }
    }
}

/// Applies a change to the user's mirror in the store and shows the client what it changed.
async fn mirror(
    services: &Services,
    account: &Account,
    peer: &Peer,
    what: &str,
    change: impl Future<Output = Result<Vec<MirrorChange>, StoreError>>,
) {
    let _turn = account.mirror().implied.turn().await;
    match change.await {
        Ok(changes) => notify_changes(services, account, peer, changes, true),
        Err(e) => warn!(error = %e, "cannot store {what}"),
    }
}

/// Delivers a backend message to the user: into the open switchboard session for that chat,
/// or a new session rung to the user like a call from the contact, holding the message until
/// the client answers.
async fn deliver(
    services: &Arc<Services>,
    account: &Arc<Account>,
    peer: &Peer,
    chat: ChatId,
    from: &str,
    name: &str,
    payload: bytes::Bytes,
) {
    let Ok(handle) = from.parse::<UserHandle>() else {
        warn!(handle = %account.handle, "a message from a sender with no valid MSN handle; not shown");
        return;
    };
    let name = FriendlyName::shortened(name).unwrap_or_else(|| FriendlyName::from_handle(&handle));
    if let Some(session) = chat_session(services, account, &chat) {
        if session
            .remote_message(handle.clone(), name.clone(), payload.clone())
            .await
        {
            return;
        }
    }
    let remote = Participant {
        handle: handle.clone(),
        name: name.clone(),
        member: Member::Remote(Remote {
            chat,
            bridge: account.clone(),
        }),
    };
    let session = crate::chat::start_incoming(services, remote, payload);
    let grant = CookieGrant::Invite {
        handle: account.handle.clone(),
        session_id: session.id(),
    };
    // Counted against the remote contact who started the chat.
    let Some(cookie) = services.node.cookies.issue(grant, &handle) else {
        warn!(handle = %account.handle, "too many outstanding cookies; a message waits in its session unrung");
        return;
    };
    peer.send_command(&ServerCommand::Rng {
        session_id: session.id(),
        address: services.switchboard_address.clone(),
        cookie,
        caller: handle,
        caller_name: name,
    });
}

/// The switchboard session a backend chat is open in, if it still runs.
fn chat_session(services: &Services, account: &Account, chat: &ChatId) -> Option<SessionHandle> {
    account
        .chat_session(chat)
        .and_then(|id| services.hub.switchboard(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_told_once_the_events_queued_when_it_asked_are_applied() {
        let mut catch_up = CatchUp::default();
        let (told, mut first) = oneshot::channel();
        catch_up.asked(2, vec![told]);
        catch_up.took();
        assert!(
            first.try_recv().is_err(),
            "told with one event still queued"
        );
        // Another command asks now, with the second event and a newer one queued.
        let (told, mut second) = oneshot::channel();
        catch_up.asked(2, vec![told]);
        catch_up.took();
        assert!(first.try_recv().is_ok());
        assert!(second.try_recv().is_err(), "told before the newer event");
        catch_up.took();
        assert!(second.try_recv().is_ok());
        // Nothing queued: told at once.
        let (told, mut third) = oneshot::channel();
        catch_up.asked(0, vec![told]);
        assert!(third.try_recv().is_ok());
    }
}
