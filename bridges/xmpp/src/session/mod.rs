//! One logged-in user's XMPP session: a task that owns the stanza stream, keeps the roster,
//! blocklist and contacts' presence, turns stanzas into backend events and commands into
//! stanzas.
//!
//! This file holds the task's state, its loop and the stream's events; the rest is split by
//! concern: `contacts` (roster, blocklist, the user's list changes), `presence`, `chat`
//! (messages, group chats, outgoing messages) and `commands` (the user's commands, logout).

mod chat;
mod commands;
mod contacts;
mod presence;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures_util::StreamExt;
use msngate_bridge_api::{
    BackendError, BackendEvent, ChatId, ConnectionState, EventSender, List, PresenceState,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::blocking::BlocklistRequest;
use tokio_xmpp::parsers::bookmarks;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::muc::user::MucUser;
use tokio_xmpp::parsers::private;
use tokio_xmpp::parsers::roster::{Roster, Subscription};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::stanzastream::{Event, StanzaStream, StreamEvent};
use tokio_xmpp::Stanza;

use crate::connect::OnlineFlag;
use crate::handles::handle_for;

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
    /// Puts a roster item in exactly these groups.
    SetGroups {
        jid: BareJid,
        groups: Vec<String>,
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
    /// The item's roster groups, in the order the server gave them.
    groups: Vec<String>,
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
    /// Contacts the user added whose subscription request the server has not shown yet, with
    /// the name the user gave (the server may answer the roster set before it pushes the item).
    adding: HashMap<BareJid, String>,
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
            adding: HashMap::new(),
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
                | Command::SetGroups { reply, .. }
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
