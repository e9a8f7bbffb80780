//! One logged-in user's XMPP session: a task that owns the stanza stream, keeps the roster,
//! blocklist and contacts' presence, turns stanzas into backend events and commands into
//! stanzas.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures_util::StreamExt;
use msngate_bridge_api::{
    BackendError, BackendEvent, ChatId, ConnectionState, Contact, ContactKind, EventSender, List,
    PresenceState,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::blocking::{Block, BlocklistRequest, BlocklistResult, Unblock};
use tokio_xmpp::parsers::bookmarks;
use tokio_xmpp::parsers::chatstates::ChatState;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::muc::muc::History;
use tokio_xmpp::parsers::muc::user::{MucUser, Status as MucStatus};
use tokio_xmpp::parsers::muc::Muc;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::private;
use tokio_xmpp::parsers::roster::{Ask, Item, Roster, Subscription};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::stanzastream::{Event, StanzaStage, StanzaState, StanzaStream, StreamEvent};
use tokio_xmpp::Stanza;

use crate::connect::OnlineFlag;
use crate::handles::{handle_for, occupant_handle};
use crate::presence::{availability, from_xmpp, to_xmpp};

/// After a reconnection without resumption, contacts reported available before it that have
/// not announced themselves again this long after the roster arrived are reported offline:
/// the server sends contacts' presence right after our first presence, in one burst.
const SETTLE: Duration = Duration::from_secs(2);
/// The same, counted from the reconnection, when the roster does not come.
const SETTLE_AT_MOST: Duration = Duration::from_secs(10);
/// A contact going offline is shown this much later: when a server shuts down it first
/// sends everyone's unavailable presence, then drops the stream, and those must not flash
/// contacts offline for what turns out to be a short outage.
pub const OFFLINE_GRACE: Duration = Duration::from_secs(3);
/// How many recent message ids are remembered to drop redeliveries.
const SEEN_IDS: usize = 1024;
/// A typing notification to the same contact is sent at most this often.
const TYPING_INTERVAL: Duration = Duration::from_secs(5);

/// What the user asks the session to do.
pub enum Command {
    /// The user's own state: sent now if the stream is up, else once it is.
    SetPresence {
        state: PresenceState,
    },
    Add {
        list: List,
        jid: BareJid,
        name: String,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    Remove {
        list: List,
        jid: BareJid,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    Send {
        to: BareJid,
        text: String,
        /// When the sender is told it failed if the server does not have it by then; it is
        /// never sent after that.
        deadline: Instant,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    Typing {
        to: BareJid,
    },
    /// Opens a chat: for a group, joins the room (occupants then arrive as events).
    Open {
        jid: BareJid,
        reply: oneshot::Sender<Result<ChatId, BackendError>>,
    },
    /// Leaves a chat: for a group, leaves the room.
    Leave {
        jid: BareJid,
    },
    Logout {
        done: oneshot::Sender<()>,
    },
}

/// A group chat the user has bookmarked or was invited to.
struct Room {
    name: String,
    nick: String,
    joined: bool,
    /// The user has the room open (joined again after a reconnection).
    wanted: bool,
}

/// A chat message on its way, kept until the server has it.
pub struct OutgoingChat {
    message: Message,
    reply: oneshot::Sender<Result<(), BackendError>>,
    attempt: u32,
    deadline: Instant,
}

/// How many times a message lost with a connection is sent again on the next one.
const RESENDS: u32 = 2;

/// What to do with the answer to an IQ we sent.
enum Pending {
    BookmarksGet,
    RosterGet,
    BlocklistGet,
    Reply(oneshot::Sender<Result<(), BackendError>>),
}

struct RosterEntry {
    name: Option<String>,
    subscription: Subscription,
    asking: bool,
}

pub struct SessionTask {
    me: BareJid,
    stream: StanzaStream,
    commands: mpsc::Receiver<Command>,
    events: EventSender,
    /// Told when a connection comes online (see connect.rs).
    online: OnlineFlag,
    roster: BTreeMap<BareJid, RosterEntry>,
    requests: BTreeSet<BareJid>,
    blocked: BTreeSet<BareJid>,
    blocking_supported: bool,
    /// Approvals and revocations sent but not yet reflected by a roster push: the user's
    /// intent counts meanwhile, so lists don't flap while the server catches up.
    approving: HashSet<BareJid>,
    revoking: HashSet<BareJid>,
    /// Contacts the user added whose subscription request the server has not shown yet.
    adding: HashSet<BareJid>,
    rooms: BTreeMap<BareJid, Room>,
    resources: HashMap<BareJid, BTreeMap<String, (i8, PresenceState)>>,
    /// The state last reported to the core for each contact it was told is available (it
    /// keeps showing those through an outage of ours).
    reported: HashMap<BareJid, PresenceState>,
    /// Contacts whose presence was heard on the current stream (after a reconnection without
    /// resumption, the others in `reported` are reported offline once the burst settled).
    fresh: HashSet<BareJid>,
    own: PresenceState,
    own_sent: Option<PresenceState>,
    pending: HashMap<String, Pending>,
    next_id: u64,
    seen: VecDeque<String>,
    seen_set: HashSet<String>,
    stream_management: bool,
    connected: bool,
    settle_at: Option<Instant>,
    /// Until the first roster: when the logon stops waiting for it (see [`Self::logon_by`]).
    first_roster_by: Option<Instant>,
    /// Contacts whose going offline is not reported yet (see [`OFFLINE_GRACE`]).
    going_offline: HashMap<BareJid, Instant>,
    /// Messages to send once the stream is up again, after the user's presence: those whose
    /// stream was lost before the server acknowledged them (sent again with the same id, so
    /// receivers that drop repeats by id see them once), and those asked for meanwhile.
    resend: Vec<OutgoingChat>,
    lost_tx: mpsc::Sender<OutgoingChat>,
    lost_rx: mpsc::Receiver<OutgoingChat>,
    last_typing: HashMap<BareJid, Instant>,
}

fn rejected(error: &StanzaError) -> BackendError {
    BackendError::Rejected(format!("{:?}", error.defined_condition))
}

impl SessionTask {
    pub fn new(
        me: BareJid,
        stream: StanzaStream,
        commands: mpsc::Receiver<Command>,
        events: EventSender,
        online: OnlineFlag,
    ) -> Self {
        let (lost_tx, lost_rx) = mpsc::channel(256);
        SessionTask {
            me,
            stream,
            commands,
            events,
            online,
            roster: BTreeMap::new(),
            requests: BTreeSet::new(),
            blocked: BTreeSet::new(),
            blocking_supported: true,
            approving: HashSet::new(),
            revoking: HashSet::new(),
            adding: HashSet::new(),
            rooms: BTreeMap::new(),
            resources: HashMap::new(),
            reported: HashMap::new(),
            fresh: HashSet::new(),
            // Offline until the MSN client sets its first state: contacts don't see the user
            // before the MSN client is online.
            own: PresenceState::Offline,
            own_sent: None,
            pending: HashMap::new(),
            next_id: 1,
            seen: VecDeque::new(),
            seen_set: HashSet::new(),
            stream_management: false,
            connected: false,
            settle_at: None,
            first_roster_by: None,
            going_offline: HashMap::new(),
            resend: Vec::new(),
            lost_tx,
            lost_rx,
            last_typing: HashMap::new(),
        }
    }

    /// The logon waits for the first contact list until `deadline`: a server that took the
    /// password but then says nothing (frozen before the roster) is reported as a transient
    /// disconnection then, which lets the logon go on with the last known contact list.
    pub fn logon_by(mut self, deadline: Instant) -> Self {
        self.first_roster_by = Some(deadline);
        self
    }

    pub async fn run(mut self) {
        loop {
            let deadline = [
                self.settle_at,
                self.first_roster_by,
                self.going_offline.values().min().copied(),
                self.resend.iter().map(|c| c.deadline).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Logout { done }) => {
                        self.logout().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.command(command).await,
                    None => return self.logout().await,
                },
                event = self.stream.next() => match event {
                    Some(event) => self.stream_event(event).await,
                    None => {
                        // The stream ended for good (refused credentials): contacts go offline.
                        self.all_offline().await;
                        self.drain_commands().await;
                        return;
                    }
                },
                _ = timer => self.timers().await,
                Some(lost) = self.lost_rx.recv() => {
                    if Instant::now() >= lost.deadline {
                        fail(lost);
                    } else if self.connected {
                        self.send_tracked(lost).await;
                    } else {
                        self.resend.push(lost);
                    }
                }
            }
        }
    }

    /// After the stream is gone, answer whatever is still asked so nobody waits forever.
    async fn drain_commands(&mut self) {
        self.commands.close();
        while let Some(command) = self.commands.recv().await {
            match command {
                Command::Add { reply, .. }
                | Command::Remove { reply, .. }
                | Command::Send { reply, .. } => {
                    let _ = reply.send(Err(BackendError::Disconnected));
                }
                Command::Open { reply, .. } => {
                    let _ = reply.send(Err(BackendError::Disconnected));
                }
                Command::Leave { .. } => {}
                Command::Logout { done } => {
                    let _ = done.send(());
                }
                Command::SetPresence { .. } | Command::Typing { .. } => {}
            }
        }
    }

    async fn emit(&self, event: BackendEvent) {
        let _ = self.events.send(event).await;
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("msngate-{}", self.next_id)
    }

    async fn send(&mut self, stanza: impl Into<Stanza>) -> tokio_xmpp::stanzastream::StanzaToken {
        self.stream.send(Box::new(stanza.into())).await
    }

    async fn send_iq(&mut self, iq: Iq, pending: Pending) {
        self.pending.insert(iq.id().to_string(), pending);
        self.send(iq).await;
    }

    // ---- stream events ----

    async fn stream_event(&mut self, event: Event) {
        match event {
            Event::Stream(StreamEvent::Reset {
                bound_jid,
                features,
            }) => {
                tracing::info!(jid = %bound_jid, "XMPP session online");
                self.online.came_online();
                self.connected = true;
                self.stream_management = features.stream_management.is_some();
                // IQs sent on the lost stream will never be answered.
                for (_, pending) in self.pending.drain() {
                    if let Pending::Reply(reply) = pending {
                        let _ = reply.send(Err(BackendError::Disconnected));
                    }
                }
                // Contacts' presence starts again on a new session: every contact's state is
                // reported anew as it comes (the core shows only changes), and those reported
                // available before that don't come back are reported offline once settled.
                self.resources.clear();
                self.fresh.clear();
                self.going_offline.clear();
                if !self.reported.is_empty() {
                    self.settle_at = Some(Instant::now() + SETTLE_AT_MOST);
                }
                self.emit(BackendEvent::Connection(ConnectionState::Connected))
                    .await;
                let id = self.new_id();
                self.send_iq(Iq::from_get(id, BlocklistRequest), Pending::BlocklistGet)
                    .await;
                // Bookmarks before the roster, so the contact list sent with the roster has
                // the rooms too. Rooms we were in must be joined again on a new stream.
                for room in self.rooms.values_mut() {
                    room.joined = false;
                }
                let wanted: Vec<BareJid> = self
                    .rooms
                    .iter()
                    .filter(|(_, r)| r.wanted)
                    .map(|(j, _)| j.clone())
                    .collect();
                for room in wanted {
                    self.join_room(&room).await;
                }
                let id = self.new_id();
                let query = private::Query {
                    storage: bookmarks::Storage::new(),
                };
                self.send_iq(Iq::from_get(id, query), Pending::BookmarksGet)
                    .await;
                let id = self.new_id();
                self.send_iq(
                    Iq::from_get(
                        id,
                        Roster {
                            ver: None,
                            items: vec![],
                        },
                    ),
                    Pending::RosterGet,
                )
                .await;
                self.own_sent = None;
                let _ = self.send_own_presence().await;
                self.send_waiting().await;
            }
            Event::Stream(StreamEvent::Suspended) => {
                tracing::info!(jid = %self.me, "XMPP connection lost; resuming");
                self.connected = false;
                // Contacts are not reported offline for an outage of ours: the core keeps
                // showing their last state for a while. Those that "went offline" just before
                // our stream dropped most likely went with the server: the reconnection says.
                self.going_offline.clear();
                let state = ConnectionState::TransientDisconnect {
                    reason: "connection lost".into(),
                };
                self.emit(BackendEvent::Connection(state)).await;
            }
            Event::Stream(StreamEvent::Resumed) => {
                tracing::info!(jid = %self.me, "XMPP session resumed");
                self.online.came_online();
                self.connected = true;
                self.emit(BackendEvent::Connection(ConnectionState::Connected))
                    .await;
                // Nothing was lost: contacts' states are still current. Report them again
                // (unchanged states show nothing) so the core knows they are.
                let reported: Vec<(BareJid, PresenceState)> =
                    self.reported.iter().map(|(j, s)| (j.clone(), *s)).collect();
                for (jid, state) in reported {
                    self.emit_presence(&jid, state).await;
                }
                let _ = self.send_own_presence().await;
                self.send_waiting().await;
            }
            Event::Stanza(Stanza::Iq(iq)) => self.iq(iq).await,
            Event::Stanza(Stanza::Presence(presence)) => self.presence(presence).await,
            Event::Stanza(Stanza::Message(message)) => self.message(message).await,
        }
    }

    async fn timers(&mut self) {
        let now = Instant::now();
        if self.first_roster_by.is_some_and(|t| t <= now) {
            self.first_roster_by = None;
            tracing::warn!(jid = %self.me, "no roster from the XMPP server within the logon bound; still waiting");
            let reason = "no answer from the server yet".to_owned();
            let state = ConnectionState::TransientDisconnect { reason };
            self.emit(BackendEvent::Connection(state)).await;
        }
        let due: Vec<BareJid> = self
            .going_offline
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(j, _)| j.clone())
            .collect();
        for jid in due {
            self.going_offline.remove(&jid);
            if self.reported.remove(&jid).is_some() {
                self.emit_presence(&jid, PresenceState::Offline).await;
            }
        }
        if self.settle_at.is_some_and(|t| t <= now) {
            self.settle_at = None;
            let stale: Vec<BareJid> = self
                .reported
                .keys()
                .filter(|j| !self.fresh.contains(*j))
                .cloned()
                .collect();
            for jid in stale {
                self.reported.remove(&jid);
                self.emit_presence(&jid, PresenceState::Offline).await;
            }
        }
        // Messages still waiting for the stream when their deadline came: failed, never sent.
        if self.resend.iter().any(|c| c.deadline <= now) {
            let (late, waiting) = std::mem::take(&mut self.resend)
                .into_iter()
                .partition(|c| c.deadline <= now);
            self.resend = waiting;
            for chat in late {
                fail(chat);
            }
        }
    }

    /// Sends the messages that waited for the stream, in order, once the user's presence is
    /// out again; those past their deadline fail instead.
    async fn send_waiting(&mut self) {
        let now = Instant::now();
        for chat in std::mem::take(&mut self.resend) {
            if chat.deadline <= now {
                fail(chat);
            } else {
                self.send_tracked(chat).await;
            }
        }
    }

    /// The stream ended for good: contacts reported available are reported offline.
    async fn all_offline(&mut self) {
        self.resources.clear();
        self.going_offline.clear();
        let reported: Vec<BareJid> = self.reported.drain().map(|(j, _)| j).collect();
        for jid in reported {
            self.emit_presence(&jid, PresenceState::Offline).await;
        }
    }

    async fn emit_presence(&self, jid: &BareJid, state: PresenceState) {
        if let Some(handle) = handle_for(jid) {
            self.emit(BackendEvent::Presence {
                handle,
                state,
                name: None,
            })
            .await;
        }
    }

    // ---- roster and contacts ----

    fn contact(&self, jid: &BareJid) -> Option<Contact> {
        let handle = handle_for(jid)?;
        if let Some(room) = self.rooms.get(jid) {
            let name = room.name.clone();
            return Some(Contact {
                handle,
                name,
                kind: ContactKind::Group,
                lists: vec![List::Forward],
            });
        }
        let entry = self.roster.get(jid);
        let mut lists = Vec::new();
        if let Some(e) = entry {
            if matches!(e.subscription, Subscription::To | Subscription::Both)
                || e.asking
                || self.adding.contains(jid)
            {
                lists.push(List::Forward);
            }
            if matches!(e.subscription, Subscription::From | Subscription::Both) {
                lists.push(List::Allow);
                lists.push(List::Reverse);
            }
        }
        if self.approving.contains(jid) {
            for list in [List::Allow, List::Reverse] {
                if !lists.contains(&list) {
                    lists.push(list);
                }
            }
        }
        if self.revoking.contains(jid) {
            lists.retain(|l| !matches!(l, List::Allow | List::Reverse));
        }
        let requested = self.requests.contains(jid) && !self.revoking.contains(jid);
        if requested && !lists.contains(&List::Reverse) {
            lists.push(List::Reverse);
        }
        if self.blocked.contains(jid) {
            lists.retain(|l| *l != List::Allow);
            lists.push(List::Block);
        }
        if entry.is_none() && lists.is_empty() {
            return None;
        }
        let name = entry
            .and_then(|e| e.name.clone())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| handle.clone());
        Some(Contact {
            handle,
            name,
            kind: ContactKind::Person,
            lists,
        })
    }

    fn contacts(&self) -> Vec<Contact> {
        let jids: BTreeSet<&BareJid> = self
            .roster
            .keys()
            .chain(&self.requests)
            .chain(&self.blocked)
            .chain(self.rooms.keys())
            .collect();
        jids.into_iter()
            .filter_map(|j| {
                let contact = self.contact(j);
                if contact.is_none() && handle_for(j).is_none() {
                    tracing::info!(jid = %j, "leaving out a contact that has no MSN handle");
                }
                contact
            })
            .collect()
    }

    async fn contact_changed(&self, jid: &BareJid) {
        match (self.contact(jid), handle_for(jid)) {
            (Some(contact), _) => self.emit(BackendEvent::ContactChanged(contact)).await,
            (None, Some(handle)) => self.emit(BackendEvent::ContactRemoved { handle }).await,
            (None, None) => tracing::info!(%jid, "ignoring a contact that has no MSN handle"),
        }
    }

    fn apply_roster_item(&mut self, item: Item) {
        if item.subscription == Subscription::Remove {
            self.roster.remove(&item.jid);
            self.adding.remove(&item.jid);
            return;
        }
        let entry = RosterEntry {
            name: item.name,
            subscription: item.subscription,
            asking: item.ask == Ask::Subscribe,
        };
        if matches!(entry.subscription, Subscription::To | Subscription::Both) || entry.asking {
            self.adding.remove(&item.jid);
        }
        if matches!(entry.subscription, Subscription::From | Subscription::Both) {
            self.requests.remove(&item.jid);
            self.approving.remove(&item.jid);
        } else {
            self.revoking.remove(&item.jid);
        }
        self.roster.insert(item.jid, entry);
    }

    async fn iq(&mut self, iq: Iq) {
        match iq {
            Iq::Result { id, payload, .. } => match self.pending.remove(&id) {
                Some(Pending::RosterGet) => {
                    if let Some(roster) = payload.and_then(|p| Roster::try_from(p).ok()) {
                        self.roster.clear();
                        for item in roster.items {
                            self.apply_roster_item(item);
                        }
                    }
                    self.first_roster_by = None;
                    let contacts = self.contacts();
                    self.emit(BackendEvent::ContactList(contacts)).await;
                    // Contacts' presence follows our own, which went out with this request.
                    if self.settle_at.is_some() {
                        self.settle_at = Some(Instant::now() + SETTLE);
                    }
                    // A room is always there to be called.
                    let rooms: Vec<BareJid> = self.rooms.keys().cloned().collect();
                    for room in rooms {
                        self.emit_presence(&room, PresenceState::Online).await;
                    }
                }
                Some(Pending::BlocklistGet) => {
                    if let Some(list) = payload.and_then(|p| BlocklistResult::try_from(p).ok()) {
                        self.blocked = list.items.into_iter().map(|j| j.to_bare()).collect();
                    }
                }
                Some(Pending::BookmarksGet) => {
                    if let Some(query) = payload.and_then(|p| private::Query::try_from(p).ok()) {
                        for conference in query.storage.conferences {
                            let nick = conference
                                .nick
                                .map(|n| n.to_string())
                                .unwrap_or_else(|| self.default_nick());
                            let name = conference
                                .name
                                .filter(|n| !n.trim().is_empty())
                                .unwrap_or_else(|| {
                                    conference
                                        .jid
                                        .node()
                                        .map(|n| n.to_string())
                                        .unwrap_or_default()
                                });
                            let old = self.rooms.get(&conference.jid);
                            let joined = old.is_some_and(|r| r.joined);
                            let wanted = old.is_some_and(|r| r.wanted);
                            let room = Room {
                                name,
                                nick,
                                joined,
                                wanted,
                            };
                            self.rooms.insert(conference.jid, room);
                        }
                    }
                }
                Some(Pending::Reply(reply)) => {
                    let _ = reply.send(Ok(()));
                }
                None => {}
            },
            Iq::Error { id, error, .. } => match self.pending.remove(&id) {
                Some(Pending::Reply(reply)) => {
                    let _ = reply.send(Err(rejected(&error)));
                }
                Some(Pending::BlocklistGet) => {
                    tracing::info!(jid = %self.me, "the XMPP server has no blocking (XEP-0191)");
                    self.blocking_supported = false;
                }
                Some(Pending::RosterGet) => {
                    tracing::warn!(jid = %self.me, ?error, "roster request failed")
                }
                Some(Pending::BookmarksGet) => {
                    tracing::info!(jid = %self.me, ?error, "no bookmarks");
                }
                None => {}
            },
            Iq::Set {
                from, id, payload, ..
            } => {
                let from_server = from.as_ref().is_none_or(|f| f.to_bare() == self.me);
                let answer = if from_server {
                    self.push(payload).await
                } else {
                    false
                };
                let reply = if answer {
                    Iq::empty_result(Jid::from(self.me.clone()), id)
                } else {
                    service_unavailable(id, from)
                };
                self.send(reply).await;
            }
            Iq::Get { from, id, .. } => {
                let reply = service_unavailable(id, from);
                self.send(reply).await;
            }
        }
    }

    /// A roster or blocklist push from the server; `true` when understood.
    async fn push(&mut self, payload: Element) -> bool {
        if payload.is("query", tokio_xmpp::parsers::ns::ROSTER) {
            let Ok(roster) = Roster::try_from(payload) else {
                return false;
            };
            for item in roster.items {
                let jid = item.jid.clone();
                self.apply_roster_item(item);
                self.contact_changed(&jid).await;
            }
            return true;
        }
        if let Ok(block) = Block::try_from(payload.clone()) {
            for jid in block.items.into_iter().map(|j| j.to_bare()) {
                self.blocked.insert(jid.clone());
                self.contact_changed(&jid).await;
            }
            return true;
        }
        if let Ok(unblock) = Unblock::try_from(payload) {
            let jids: Vec<BareJid> = if unblock.items.is_empty() {
                std::mem::take(&mut self.blocked).into_iter().collect()
            } else {
                unblock.items.into_iter().map(|j| j.to_bare()).collect()
            };
            for jid in jids {
                self.blocked.remove(&jid);
                self.contact_changed(&jid).await;
            }
            return true;
        }
        false
    }

    // ---- presence ----

    async fn presence(&mut self, presence: Presence) {
        let Some(from) = presence.from.clone() else {
            return;
        };
        let bare = from.to_bare();
        if bare == self.me {
            return; // Our own other resources.
        }
        if self.rooms.contains_key(&bare) {
            return self.room_presence(&bare, &from, &presence).await;
        }
        match presence.type_ {
            PresenceType::None => {
                let status = presence.statuses.values().next().map(String::as_str);
                let state = from_xmpp(presence.show.as_ref(), status);
                let resource = from
                    .resource()
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default();
                self.resources
                    .entry(bare.clone())
                    .or_default()
                    .insert(resource, (presence.priority.0, state));
                self.update_shown(&bare).await;
            }
            PresenceType::Unavailable => {
                let resource = from
                    .resource()
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default();
                if let Some(r) = self.resources.get_mut(&bare) {
                    if resource.is_empty() {
                        r.clear();
                    } else {
                        r.remove(&resource);
                    }
                }
                self.update_shown(&bare).await;
            }
            PresenceType::Subscribe => {
                let approved = self.roster.get(&bare).is_some_and(|e| {
                    matches!(e.subscription, Subscription::From | Subscription::Both)
                });
                if approved || self.blocked.contains(&bare) {
                    return;
                }
                if self.requests.insert(bare.clone()) {
                    if let Some(contact) = self.contact(&bare) {
                        self.emit(BackendEvent::AddedBy {
                            handle: contact.handle,
                            name: contact.name,
                        })
                        .await;
                    }
                }
            }
            // Subscription changes arrive as roster pushes as well; those are what count.
            _ => {}
        }
    }

    /// Reports a contact's combined state if it changed, or if it is the first word of the
    /// contact on a new stream (after a reconnection the core is told every state again).
    async fn update_shown(&mut self, jid: &BareJid) {
        let first_on_stream = self.fresh.insert(jid.clone());
        let best = self
            .resources
            .get(jid)
            .and_then(|r| {
                r.values()
                    .max_by_key(|(priority, state)| (*priority, availability(*state)))
            })
            .map(|(_, state)| *state)
            .unwrap_or(PresenceState::Offline);
        if best == PresenceState::Offline {
            if self.reported.contains_key(jid) {
                self.going_offline
                    .entry(jid.clone())
                    .or_insert(Instant::now() + OFFLINE_GRACE);
            }
            return;
        }
        self.going_offline.remove(jid);
        let before = self.reported.insert(jid.clone(), best);
        if before != Some(best) || first_on_stream {
            self.emit_presence(jid, best).await;
        }
    }

    /// Sends the user's state if it changed; the token of the presence stanza, if one was sent.
    async fn send_own_presence(&mut self) -> Option<tokio_xmpp::stanzastream::StanzaToken> {
        if !self.connected || self.own_sent == Some(self.own) {
            return None;
        }
        let unavailable = matches!(self.own, PresenceState::Offline | PresenceState::Hidden);
        if unavailable && self.own_sent.is_none() {
            return None; // Never announced on this stream: there is nothing to withdraw.
        }
        let presence = match to_xmpp(self.own) {
            Some((show, status)) => {
                let mut p = Presence::available();
                p.show = show;
                if let Some(status) = status {
                    p.set_status("", status);
                }
                p
            }
            // XMPP has no standard invisibility: hidden means unavailable to contacts.
            None => Presence::new(PresenceType::Unavailable),
        };
        self.own_sent = Some(self.own);
        Some(self.send(presence).await)
    }

    // ---- messages ----

    async fn message(&mut self, message: Message) {
        let Some(from) = message.from.clone() else {
            return;
        };
        let bare = from.to_bare();
        if bare == self.me {
            return;
        }
        if let Some(room) = invitation(&message) {
            return self.invited(room).await;
        }
        if message.type_ == MessageType::Groupchat {
            return self.room_message(&bare, &from, &message).await;
        }
        if !matches!(message.type_, MessageType::Chat | MessageType::Normal) {
            if message.type_ == MessageType::Error {
                tracing::info!(from = %bare, "an XMPP message bounced");
            }
            return;
        }
        let Some(handle) = handle_for(&bare) else {
            tracing::info!(from = %bare, "dropping a message from a JID with no MSN handle");
            return;
        };
        let chat = ChatId(bare.to_string());
        if let Some((_, text)) = message.get_best_body_cloned(vec![]) {
            if let Some(id) = &message.id {
                let key = format!("{bare}/{}", id.0);
                if !self.seen_set.insert(key.clone()) {
                    return;
                }
                self.seen.push_back(key);
                if self.seen.len() > SEEN_IDS {
                    if let Some(old) = self.seen.pop_front() {
                        self.seen_set.remove(&old);
                    }
                }
            }
            let name = self
                .contact(&bare)
                .map(|c| c.name)
                .unwrap_or_else(|| handle.clone());
            let id = message.id.as_ref().map(|i| i.0.clone());
            self.emit(BackendEvent::Message {
                chat,
                from: handle,
                name,
                text,
                id,
            })
            .await;
        } else if message
            .payloads
            .iter()
            .any(|p| p.is("composing", tokio_xmpp::parsers::ns::CHATSTATES))
        {
            self.emit(BackendEvent::Typing { chat, from: handle }).await;
        }
    }

    // ---- group chats ----

    /// The nick used in rooms without one in their bookmark: the account's local part.
    fn default_nick(&self) -> String {
        self.me
            .node()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "msn".into())
    }

    async fn invited(&mut self, room: BareJid) {
        if self.rooms.contains_key(&room) {
            return;
        }
        let name = room.node().map(|n| n.to_string()).unwrap_or_default();
        let nick = self.default_nick();
        self.rooms.insert(
            room.clone(),
            Room {
                name,
                nick,
                joined: false,
                wanted: false,
            },
        );
        self.contact_changed(&room).await;
        self.emit_presence(&room, PresenceState::Online).await;
    }

    async fn room_presence(&mut self, room: &BareJid, from: &Jid, presence: &Presence) {
        let Some(nick) = from.resource().map(|r| r.as_str().to_owned()) else {
            return;
        };
        let own = presence
            .payloads
            .iter()
            .filter_map(|p| MucUser::try_from(p.clone()).ok())
            .any(|u| u.status.contains(&MucStatus::SelfPresence));
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if own || nick == entry.nick {
            entry.joined = presence.type_ != PresenceType::Unavailable;
            return;
        }
        let (Some(handle), chat) = (occupant_handle(room, &nick), ChatId(room.to_string())) else {
            tracing::info!(%room, "ignoring an occupant whose nick makes no MSN handle");
            return;
        };
        let event = match presence.type_ {
            PresenceType::None => BackendEvent::Joined {
                chat,
                handle,
                name: nick,
            },
            PresenceType::Unavailable => BackendEvent::Left { chat, handle },
            _ => return,
        };
        self.emit(event).await;
    }

    async fn room_message(&mut self, room: &BareJid, from: &Jid, message: &Message) {
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        let Some(nick) = from.resource().map(|r| r.as_str().to_owned()) else {
            return;
        };
        // Our own messages come back from the room, and history is not news.
        let delayed = message
            .payloads
            .iter()
            .any(|p| p.is("delay", tokio_xmpp::parsers::ns::DELAY));
        if nick == entry.nick || delayed {
            return;
        }
        let Some((_, text)) = message.get_best_body_cloned(vec![]) else {
            return;
        };
        let Some(handle) = occupant_handle(room, &nick) else {
            tracing::info!(%room, "dropping a message from an occupant whose nick makes no MSN handle");
            return;
        };
        let id = message.id.as_ref().map(|i| i.0.clone());
        let chat = ChatId(room.to_string());
        self.emit(BackendEvent::Message {
            chat,
            from: handle,
            name: nick,
            text,
            id,
        })
        .await;
    }

    /// Joins a room, if the stream is up (a new stream joins the rooms the user has open).
    async fn join_room(&mut self, room: &BareJid) {
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        if entry.joined || !self.connected {
            return;
        }
        let Ok(me) = room.with_resource_str(&entry.nick) else {
            return;
        };
        let muc = Muc::new().with_history(History::new().with_maxstanzas(0));
        let presence = Presence::available().with_to(me).with_payload(muc);
        self.send(presence).await;
    }

    // ---- commands ----

    async fn command(&mut self, command: Command) {
        match command {
            Command::Open { jid, reply } => {
                if let Some(room) = self.rooms.get_mut(&jid) {
                    room.wanted = true;
                    self.join_room(&jid).await;
                }
                let _ = reply.send(Ok(ChatId(jid.to_string())));
            }
            Command::Leave { jid } => {
                if let Some(room) = self.rooms.get_mut(&jid) {
                    room.wanted = false;
                }
                let connected = self.connected;
                if let Some(room) = self.rooms.get_mut(&jid).filter(|r| r.joined) {
                    room.joined = false;
                    let nick = jid.with_resource_str(&room.nick);
                    if let (Ok(me), true) = (nick, connected) {
                        self.send(Presence::new(PresenceType::Unavailable).with_to(me))
                            .await;
                    }
                }
            }
            Command::SetPresence { state } => {
                // Sent now if the stream is up, else when it is back (before any message).
                self.own = state;
                let _ = self.send_own_presence().await;
            }
            // A list change needs the server: while the stream is down it fails at once rather
            // than waiting for a reconnection nobody can promise.
            Command::Add { list, reply, .. } | Command::Remove { list, reply, .. }
                if !self.connected && list != List::Reverse =>
            {
                let _ = reply.send(Err(BackendError::Disconnected));
            }
            Command::Add {
                list,
                jid,
                name,
                reply,
            } => self.add(list, jid, name, reply).await,
            Command::Remove { list, jid, reply } => self.remove(list, jid, reply).await,
            Command::Send {
                to,
                text,
                deadline,
                reply,
            } => {
                // Sent now if connected, else kept until the stream is up and the user's
                // presence has gone out again (the caller bounds how long it waits for the
                // answer). Never before that presence: the contact's reply to a user with no
                // available presence would go to offline storage, and ejabberd 23.01 may keep
                // it there until the next logon if it is stored as that presence comes in.
                let id = self.new_id();
                let kind = if self.rooms.contains_key(&to) {
                    MessageType::Groupchat
                } else {
                    MessageType::Chat
                };
                let message = Message::new_with_type(kind, Some(Jid::from(to)))
                    .with_body(Lang(String::new()), text)
                    .with_payload(ChatState::Active);
                let mut message = message;
                message.id = Some(tokio_xmpp::parsers::message::Id(id));
                let chat = OutgoingChat {
                    message,
                    reply,
                    attempt: 0,
                    deadline,
                };
                if self.connected {
                    self.send_tracked(chat).await;
                } else {
                    self.resend.push(chat);
                }
            }
            Command::Typing { .. } if !self.connected => {} // Stale by the time it could go.
            Command::Typing { to } => {
                let now = Instant::now();
                if self
                    .last_typing
                    .get(&to)
                    .is_some_and(|t| now.duration_since(*t) < TYPING_INTERVAL)
                {
                    return;
                }
                self.last_typing.insert(to.clone(), now);
                let message = Message::chat(Some(Jid::from(to))).with_payload(ChatState::Composing);
                self.send(message).await;
            }
            Command::Logout { done } => {
                let _ = done.send(());
            }
        }
    }

    /// Sends a chat message and answers its sender once the server has it (acknowledged under
    /// stream management, else written). A message whose stream is lost first comes back to
    /// this task to be sent again on the next stream, up to [`RESENDS`] times, before its
    /// deadline. One still unacknowledged at its deadline fails, and the session it was sent
    /// on is not resumed (resumption would send it again): it is never sent after that.
    async fn send_tracked(&mut self, chat: OutgoingChat) {
        let wait_for = if self.stream_management {
            StanzaStage::Acked
        } else {
            StanzaStage::Sent
        };
        let mut token = self.send(chat.message.clone()).await;
        let lost = self.lost_tx.clone();
        let online = self.online.clone();
        tokio::spawn(async move {
            let state = tokio::time::timeout_at(chat.deadline, token.wait_for(wait_for)).await;
            match state {
                Ok(Some(StanzaState::Sent { .. } | StanzaState::Acked { .. })) => {
                    let _ = chat.reply.send(Ok(()));
                }
                Err(_) => {
                    online.forget_session();
                    tracing::info!("an XMPP message was not acknowledged in time; reported failed");
                    let _ = chat.reply.send(Err(BackendError::Disconnected));
                }
                Ok(_) if chat.attempt < RESENDS && Instant::now() < chat.deadline => {
                    let again = OutgoingChat {
                        attempt: chat.attempt + 1,
                        ..chat
                    };
                    if let Err(mpsc::error::SendError(again)) = lost.send(again).await {
                        let _ = again.reply.send(Err(BackendError::Disconnected));
                    }
                }
                Ok(_) => fail(chat),
            }
        });
    }

    /// Sets (or with `Subscription::Remove`, removes) one roster item, answering `reply` when
    /// the server has done it.
    async fn roster_set(
        &mut self,
        jid: BareJid,
        name: Option<String>,
        subscription: Subscription,
        reply: oneshot::Sender<Result<(), BackendError>>,
    ) {
        let item = Item {
            jid,
            name,
            subscription,
            ask: Ask::None,
            groups: vec![],
            approved: None,
        };
        let id = self.new_id();
        let roster = Roster {
            ver: None,
            items: vec![item],
        };
        self.send_iq(Iq::from_set(id, roster), Pending::Reply(reply))
            .await;
    }

    async fn add(
        &mut self,
        list: List,
        jid: BareJid,
        name: String,
        reply: oneshot::Sender<Result<(), BackendError>>,
    ) {
        match list {
            List::Forward => {
                self.adding.insert(jid.clone());
                self.roster_set(jid.clone(), Some(name), Subscription::None, reply)
                    .await;
                self.send(Presence::new(PresenceType::Subscribe).with_to(jid))
                    .await;
            }
            List::Allow => {
                // Approves a pending request, or pre-approves a future one.
                self.requests.remove(&jid);
                self.revoking.remove(&jid);
                if self.roster.contains_key(&jid) {
                    self.approving.insert(jid.clone());
                }
                self.send(Presence::new(PresenceType::Subscribed).with_to(jid.clone()))
                    .await;
                let _ = reply.send(Ok(()));
            }
            List::Block => {
                self.requests.remove(&jid);
                self.approving.remove(&jid);
                self.revoking.insert(jid.clone());
                self.blocked.insert(jid.clone());
                self.send(Presence::new(PresenceType::Unsubscribed).with_to(jid.clone()))
                    .await;
                if self.blocking_supported {
                    let id = self.new_id();
                    let block = Block {
                        items: vec![Jid::from(jid)],
                    };
                    self.send_iq(Iq::from_set(id, block), Pending::Reply(reply))
                        .await;
                } else {
                    self.blocked.insert(jid);
                    let _ = reply.send(Ok(()));
                }
            }
            List::Reverse => {
                let _ = reply.send(Err(BackendError::Unsupported));
            }
        }
    }

    async fn remove(
        &mut self,
        list: List,
        jid: BareJid,
        reply: oneshot::Sender<Result<(), BackendError>>,
    ) {
        match list {
            List::Forward => {
                self.roster_set(jid, None, Subscription::Remove, reply)
                    .await;
            }
            List::Allow => {
                self.approving.remove(&jid);
                if self.roster.contains_key(&jid) {
                    self.revoking.insert(jid.clone());
                }
                self.send(Presence::new(PresenceType::Unsubscribed).with_to(jid))
                    .await;
                let _ = reply.send(Ok(()));
            }
            List::Block => {
                self.blocked.remove(&jid);
                if self.blocking_supported {
                    let id = self.new_id();
                    let unblock = Unblock {
                        items: vec![Jid::from(jid)],
                    };
                    self.send_iq(Iq::from_set(id, unblock), Pending::Reply(reply))
                        .await;
                } else {
                    self.blocked.remove(&jid);
                    let _ = reply.send(Ok(()));
                }
            }
            List::Reverse => {
                let _ = reply.send(Err(BackendError::Unsupported));
            }
        }
    }

    /// Goes offline and closes the stream; the task ends with it.
    async fn logout(mut self) {
        if self.connected {
            self.send(Presence::new(PresenceType::Unavailable)).await;
        }
        for (_, pending) in self.pending.drain() {
            if let Pending::Reply(reply) = pending {
                let _ = reply.send(Err(BackendError::Disconnected));
            }
        }
        // Close the stream politely, but don't wait on a dead server.
        let _ = tokio::time::timeout(Duration::from_secs(3), self.stream.close()).await;
    }
}

/// Tells a message's sender it was not sent (and drops it: it never will be).
fn fail(chat: OutgoingChat) {
    tracing::info!("an XMPP message could not be sent in time; reported failed");
    let _ = chat.reply.send(Err(BackendError::Disconnected));
}

fn service_unavailable(id: String, to: Option<Jid>) -> Iq {
    let error = StanzaError::new(
        ErrorType::Cancel,
        DefinedCondition::ServiceUnavailable,
        "en",
        "",
    );
    let mut iq = Iq::from_error(id, error);
    if let Iq::Error { to: t, .. } = &mut iq {
        *t = to;
    }
    iq
}

/// The room a message invites us to: a mediated invitation (XEP-0045) or a direct one
/// (XEP-0249).
fn invitation(message: &Message) -> Option<BareJid> {
    for payload in &message.payloads {
        if let Ok(user) = MucUser::try_from(payload.clone()) {
            if user.invite.is_some() {
                return message.from.as_ref().map(Jid::to_bare);
            }
        }
        if payload.is("x", "jabber:x:conference") {
            return payload.attr("jid").and_then(|j| BareJid::new(j).ok());
        }
    }
    None
}
