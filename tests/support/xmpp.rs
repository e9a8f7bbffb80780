//! An independent XMPP client for bridge tests: the "other side" of a conversation, built on
//! tokio-xmpp 6 (the same crate and features as the bridge, but none of its code).
//!
//! One test task owns an [`XmppClient`] (sending and reading take `&mut self`). Stanzas that
//! arrive while the test waits for something else are kept in a buffer, so `next_*` helpers can
//! be called in any order: each takes the first buffered or incoming stanza it matches and
//! leaves the rest.
//! Every wait has a timeout ([`TIMEOUT`] unless said otherwise) and panics with what did arrive.
//!
//! Things about tokio-xmpp 6 this works around, which the bridge must too:
//! - Its `Client` loses its wake-up and then stops delivering anything, stanzas and IQ answers
//!   alike, for good, when the task owning it sends while a stanza comes in. `Client` runs a
//!   background task (`ClientWorker::run`, src/client/worker.rs) that reads the stanza stream
//!   through a `StanzaReceiver`, whose `poll_next` (src/stanzastream/mod.rs) only `try_lock`s
//!   the mutex it shares with the `StanzaSender` that `send_stanza`/`send_iq` lock: when the
//!   lock is taken it returns `Pending` without registering the task's waker anywhere, so
//!   nothing wakes the worker again. Receiving a stanza and answering at once (an `Online`
//!   event, then presence) hits that window easily on a multi-threaded runtime. (Checked: with
//!   `cx.waker().wake_by_ref()` before that `return Poll::Pending`, `Client` no longer stalls;
//!   see `tokio_xmpp_client_receives_while_it_answers` in tests/prosody_harness.rs.) This client
//!   therefore owns a `StanzaStream` itself, unsplit (no mutex, no worker), as the bridge does,
//!   and matches IQ answers to requests itself.
//! - Its c2s stream retries a refused login forever (1 s, 2 s, ... 30 s) and reports nothing:
//!   connect checks the credentials itself first, with the same calls the stream makes.
//! - Its stream never reports a lost connection as an end: it reconnects by itself and
//!   emits `StreamEvent::Resumed` when XEP-0198 resumed the session, otherwise
//!   `StreamEvent::Reset`, a new session that is unavailable until it sends presence again
//!   (which this client does).
//! - Bodies are keyed by `xml:lang` (Prosody sends `en`): read them with `get_best_body_cloned`.
//! - Over TLS 1.3 it authenticates with `SCRAM-*-PLUS` and `tls-exporter` channel binding
//!   whenever the server offers `-PLUS`; ejabberd 23.01 offers it but knows only `tls-unique`,
//!   and refuses the login. This client never uses channel binding ([`Connector`]): it
//!   is not what the tests are about. (The bridge uses it when the server announces the type.)
//! - After a lost connection it tries to resume the session (XEP-0198). ejabberd 23.01 refuses
//!   a resumption it can't honour (after its restart) with a `<failed/>` that xmpp-parsers
//!   0.23 can't parse (no `h`), and tokio-xmpp then retries the resumption on every new
//!   connection, forever: [`wait_reconnected`](XmppClient::wait_reconnected) works with
//!   Prosody only; against ejabberd, connect a new client after a restart. (The bridge copes:
//!   see `OnlineFlag` in bridges/xmpp/src/connect.rs.)
//!
//! `XMPP_TEST_TRACE=1` prints every stanza and stream event each client receives.

// Each test binary uses some of these helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use sasl::common::ChannelBinding;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_xmpp::connect::starttls::starttls;
use tokio_xmpp::connect::tls_common::TlsStream;
use tokio_xmpp::connect::{DnsConfig, ServerConnector};
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::blocking::{Block, Unblock};
use tokio_xmpp::parsers::bookmarks;
use tokio_xmpp::parsers::chatstates::ChatState;
use tokio_xmpp::parsers::delay::Delay;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{self, Message, MessageType};
use tokio_xmpp::parsers::muc::muc::History;
use tokio_xmpp::parsers::muc::user::{Invite, MucUser, Status as MucStatus};
use tokio_xmpp::parsers::muc::Muc;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Show, Type as PresenceType};
use tokio_xmpp::parsers::private;
use tokio_xmpp::parsers::roster::{Item as RosterItem, Roster, Subscription};
use tokio_xmpp::parsers::stanza_error::StanzaError;
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::stanzastream::{Event, StanzaStage, StanzaState, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::{initiate_stream, PendingFeaturesRecv, StreamHeader, Timeouts};
use tokio_xmpp::{IqRequest, Stanza};

/// Default limit for connecting and for each wait.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why [`XmppClient::connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The server refused the credentials (SASL failure).
    Auth(String),
    /// No session within the timeout.
    TimedOut,
    /// TCP, TLS, stream or JID trouble.
    Other(String),
}

/// A 1:1 chat message received.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub from: BareJid,
    pub body: String,
    /// XEP-0085 state sent along with the body, if any.
    pub state: Option<ChatState>,
}

/// A group chat message received (history replayed on join is skipped).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupChat {
    pub room: BareJid,
    pub nick: String,
    pub body: String,
}

/// A connected, available XMPP account.
pub struct XmppClient {
    /// Owned unsplit: see the module notes on tokio-xmpp's `Client`.
    stream: StanzaStream,
    jid: FullJid,
    /// The features of the current stream.
    features: StreamFeatures,
    /// Received stanzas no helper has taken yet.
    buffer: VecDeque<Stanza>,
    /// The presence last broadcast, sent again after a reconnect that lost the session.
    presence: Presence,
    /// Sessions established (`Reset`) or resumed: 1 after connect, +1 per reconnection.
    online_events: usize,
    /// Whether the last reconnection resumed the session (XEP-0198) instead of starting anew.
    last_resumed: bool,
}

impl XmppClient {
    /// Logs in as `jid` with STARTTLS to 127.0.0.1:`port` (trusting the test certificate),
    /// fetches the roster (so roster pushes arrive) and sends available presence (so messages
    /// to the bare JID arrive here, and offline messages are delivered).
    pub async fn connect(jid: &str, password: &str, port: u16) -> Result<Self, ConnectError> {
        Self::connect_within(jid, password, port, TIMEOUT).await
    }

    /// [`connect`](Self::connect) with another time limit.
    pub async fn connect_within(
        jid: &str,
        password: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        super::prosody::trust_test_certificate();
        let jid = BareJid::new(jid).map_err(|e| ConnectError::Other(format!("JID {jid}: {e}")))?;
        let dns = DnsConfig::addr(&format!("127.0.0.1:{port}"));
        let attempt = async {
            check_credentials(&jid, password, &dns).await?;
            let connector = Connector(dns.clone());
            let mut stream = StanzaStream::new_c2s(
                connector,
                jid.clone().into(),
                password.to_owned(),
                Timeouts::tight(),
                16,
            );
            let (bound, features) = loop {
                match stream.next().await {
                    Some(Event::Stream(StreamEvent::Reset {
                        bound_jid,
                        features,
                    })) => break (bound_jid, features),
                    Some(_) => {}
                    None => return Err(ConnectError::Other("client stream ended".into())),
                }
            };
            let jid = bound
                .try_into_full()
                .map_err(|j| ConnectError::Other(format!("bound JID {j} has no resource")))?;
            trace(&jid, "online");
            Ok(XmppClient {
                stream,
                jid,
                features,
                buffer: VecDeque::new(),
                presence: Presence::available(),
                online_events: 1,
                last_resumed: false,
            })
        };
        let mut this = tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| ConnectError::TimedOut)??;
        // An interested resource (RFC 6121 2.1.6): only those get roster pushes and
        // subscription approvals.
        this.roster().await;
        this.send(Presence::available()).await;
        // The server echoes our presence to us once it has taken it. Until then a message to
        // our bare JID may still go to offline storage instead of here, so wait for the echo.
        let own = this.jid.clone();
        let echoed = this
            .wait_for_within(TIMEOUT, |st| match st {
                Stanza::Presence(p) if p.from.as_ref() == Some(&Jid::from(own.clone())) => Some(()),
                _ => None,
            })
            .await;
        if echoed.is_none() {
            eprintln!("{}: the server did not echo our presence", this.jid);
        }
        Ok(this)
    }

    /// The account's bare JID.
    pub fn jid(&self) -> BareJid {
        self.jid.to_bare()
    }

    /// The full JID the server bound (changes after a reconnect without resumption).
    pub fn full_jid(&self) -> &FullJid {
        &self.jid
    }

    /// Whether the server offered XEP-0198 stream management on the current stream.
    pub fn stream_management_offered(&self) -> bool {
        self.features.stream_management.is_some()
    }

    /// How many times the client has come online (1 after connect, +1 per reconnection).
    pub fn online_events(&self) -> usize {
        self.online_events
    }

    /// Whether the last reconnection resumed the old session with XEP-0198 (no presence or
    /// messages lost) rather than starting a new one.
    pub fn last_reconnect_resumed(&self) -> bool {
        self.last_resumed
    }

    /// Sends any stanza (an id is added if it has none); returns once it was written. While
    /// the connection is down this waits for tokio-xmpp to reconnect, up to [`TIMEOUT`].
    /// (Meanwhile the stream's worker keeps reading into its queue, which `wait_for` drains.)
    pub async fn send(&mut self, stanza: impl Into<Stanza>) {
        let mut stanza = stanza.into();
        match &mut stanza {
            Stanza::Iq(_) => {}
            Stanza::Message(m) => {
                m.id.get_or_insert_with(|| message::Id(new_id()));
            }
            Stanza::Presence(p) => {
                p.id.get_or_insert_with(new_id);
            }
        }
        let written = async {
            let mut token = self.stream.send(Box::new(stanza)).await;
            token.wait_for(StanzaStage::Sent).await
        };
        match tokio::time::timeout(TIMEOUT, written).await {
            Ok(Some(StanzaState::Sent { .. } | StanzaState::Acked { .. })) => {}
            Ok(Some(StanzaState::Failed { error })) => {
                panic!("{}: sending failed: {}", self.jid, error.into_io_error())
            }
            Ok(other) => panic!("{}: stanza dropped unsent: {other:?}", self.jid),
            Err(_) => panic!("{}: stanza not sent within {TIMEOUT:?}", self.jid),
        }
    }

    // ---- 1:1 chat ----

    /// Sends `<message type='chat'>` with `body` and, if given, a XEP-0085 chat state.
    pub async fn send_chat(&mut self, to: &str, body: &str, state: Option<ChatState>) {
        let mut msg =
            Message::chat(Some(parse_jid(to))).with_body(Default::default(), body.to_owned());
        if let Some(state) = state {
            msg = msg.with_payload(state);
        }
        self.send(msg).await;
    }

    /// Sends a chat state alone (typing notification: `Composing`, `Paused`, ...).
    pub async fn send_chat_state(&mut self, to: &str, state: ChatState) {
        self.send(Message::chat(Some(parse_jid(to))).with_payload(state))
            .await;
    }

    /// The next chat message with a body (messages carrying only a chat state are left).
    pub async fn next_chat(&mut self) -> Chat {
        self.wait_for("a chat message", |st| {
            let Stanza::Message(m) = st else { return None };
            if m.type_ != MessageType::Chat {
                return None;
            }
            let (_, body) = m.get_best_body_cloned(vec![])?;
            Some(Chat {
                from: m.from.as_ref()?.to_bare(),
                body,
                state: chat_state(m),
            })
        })
        .await
    }

    /// The next message carrying a XEP-0085 chat state, with or without a body.
    pub async fn next_chat_state(&mut self) -> (BareJid, ChatState) {
        self.wait_for("a chat state", |st| {
            let Stanza::Message(m) = st else { return None };
            Some((m.from.as_ref()?.to_bare(), chat_state(m)?))
        })
        .await
    }

    // ---- presence ----

    /// Broadcasts available presence with an optional `<show/>` and status text.
    pub async fn send_presence(&mut self, show: Option<Show>, status: Option<&str>) {
        let mut p = Presence::available();
        p.show = show;
        if let Some(status) = status {
            p.set_status("", status);
        }
        self.presence = p.clone();
        self.send(p).await;
    }

    /// Broadcasts unavailable presence (stays connected).
    pub async fn send_unavailable(&mut self) {
        self.presence = Presence::unavailable();
        self.send(Presence::unavailable()).await;
    }

    /// The next available or unavailable presence from any resource of `jid` (a bare JID).
    /// Subscription presences are left for [`next_subscription`](Self::next_subscription).
    pub async fn next_presence_from(&mut self, jid: &str) -> Presence {
        let want = parse_bare(jid);
        self.wait_for(&format!("presence from {want}"), |st| match st {
            Stanza::Presence(p)
                if matches!(p.type_, PresenceType::None | PresenceType::Unavailable)
                    && p.from.as_ref().map(Jid::to_bare).as_ref() == Some(&want) =>
            {
                Some(p.clone())
            }
            _ => None,
        })
        .await
    }

    // ---- roster and subscriptions ----

    /// The roster as the server has it.
    pub async fn roster(&mut self) -> Vec<RosterItem> {
        let query = Roster {
            ver: None,
            items: vec![],
        };
        let result = self
            .iq(None, IqRequest::Get(query.into()))
            .await
            .expect("roster get");
        let element = result.expect("roster result has a query");
        Roster::try_from(element).expect("roster").items
    }

    /// Adds (or renames) a roster item; no subscription is requested.
    pub async fn roster_add(&mut self, jid: &str, name: Option<&str>) {
        self.roster_set(parse_bare(jid), name, Subscription::None)
            .await;
    }

    /// Puts a roster item in exactly `groups`, keeping its name.
    pub async fn roster_groups(&mut self, jid: &str, name: Option<&str>, groups: &[&str]) {
        let item = RosterItem {
            jid: parse_bare(jid),
            name: name.map(str::to_owned),
            subscription: Subscription::None,
            ask: Default::default(),
            groups: groups
                .iter()
                .map(|g| tokio_xmpp::parsers::roster::Group(g.to_string()))
                .collect(),
            approved: None,
        };
        let query = Roster {
            ver: None,
            items: vec![item],
        };
        self.iq(None, IqRequest::Set(query.into()))
            .await
            .expect("roster set");
    }

    /// Removes a roster item (which also cancels subscriptions both ways).
    pub async fn roster_remove(&mut self, jid: &str) {
        self.roster_set(parse_bare(jid), None, Subscription::Remove)
            .await;
    }

    /// Asks to see `jid`'s presence (`<presence type='subscribe'/>`).
    pub async fn subscribe(&mut self, jid: &str) {
        self.send(Presence::subscribe().with_to(parse_bare(jid)))
            .await;
    }

    /// Allows `jid` to see our presence: approves its request, or pre-approves.
    pub async fn approve(&mut self, jid: &str) {
        self.send(Presence::subscribed().with_to(parse_bare(jid)))
            .await;
    }

    /// Refuses (or revokes) `jid`'s subscription to our presence.
    pub async fn deny(&mut self, jid: &str) {
        self.send(Presence::new(PresenceType::Unsubscribed).with_to(parse_bare(jid)))
            .await;
    }

    /// The next subscription-related presence (`subscribe`, `subscribed`, `unsubscribe`,
    /// `unsubscribed`): who sent it and its type.
    pub async fn next_subscription(&mut self) -> (BareJid, PresenceType) {
        self.wait_for("a subscription presence", |st| match st {
            Stanza::Presence(p)
                if matches!(
                    p.type_,
                    PresenceType::Subscribe
                        | PresenceType::Subscribed
                        | PresenceType::Unsubscribe
                        | PresenceType::Unsubscribed
                ) =>
            {
                Some((p.from.as_ref()?.to_bare(), p.type_.clone()))
            }
            _ => None,
        })
        .await
    }

    /// Waits for a subscription presence of type `kind` from `jid`, leaving other ones.
    pub async fn expect_subscription(&mut self, jid: &str, kind: PresenceType) {
        let want = parse_bare(jid);
        self.wait_for(&format!("{kind:?} from {want}"), |st| match st {
            Stanza::Presence(p)
                if p.type_ == kind && p.from.as_ref().map(Jid::to_bare).as_ref() == Some(&want) =>
            {
                Some(())
            }
            _ => None,
        })
        .await
    }

    /// Whether a subscription presence of `kind` from `jid` arrives within `limit`.
    pub async fn has_subscription_within(
        &mut self,
        jid: &str,
        kind: PresenceType,
        limit: Duration,
    ) -> bool {
        let want = parse_bare(jid);
        self.wait_for_within(limit, |st| match st {
            Stanza::Presence(p)
                if p.type_ == kind && p.from.as_ref().map(Jid::to_bare).as_ref() == Some(&want) =>
            {
                Some(())
            }
            _ => None,
        })
        .await
        .is_some()
    }

    /// Makes `self` and `other` mutual contacts; `false` if an answer did not come in time.
    /// The subscription handshake creates the roster items by itself (RFC 6121 3.1).
    pub async fn try_befriend(&mut self, other: &mut XmppClient) -> bool {
        subscribe_and_approve(self, other).await && subscribe_and_approve(other, self).await
    }

    /// Makes `self` and `other` mutual contacts (subscription both), with both clients online.
    pub async fn befriend(&mut self, other: &mut XmppClient) {
        let done = self.try_befriend(other).await;
        assert!(
            done,
            "{} and {} could not become contacts",
            self.jid, other.jid
        );
    }

    // ---- group chat (XEP-0045) ----

    /// Joins `room` (a bare room JID such as `lounge@conference.localhost`) as `nick`, asking
    /// for no history. Returns the nicks of the occupants already there.
    pub async fn join_room(&mut self, room: &str, nick: &str) -> Vec<String> {
        let room = parse_bare(room);
        let me = room.with_resource_str(nick).expect("nick");
        let join = Presence::available()
            .with_to(me.clone())
            .with_payload(Muc::new().with_history(History::new().with_maxstanzas(0)));
        self.send(join).await;
        let mut others = Vec::new();
        loop {
            let (nick, is_self) = self
                .wait_for(&format!("occupant presence from {room}"), |st| match st {
                    Stanza::Presence(p)
                        if p.from.as_ref().map(Jid::to_bare) == Some(room.clone()) =>
                    {
                        if p.type_ == PresenceType::Error {
                            panic!("joining {room} failed: {p:?}");
                        }
                        let nick = p.from.as_ref()?.resource()?.to_string();
                        let is_self = p
                            .payloads
                            .iter()
                            .filter_map(|e| MucUser::try_from(e.clone()).ok())
                            .any(|u| u.status.contains(&MucStatus::SelfPresence));
                        Some((nick, is_self))
                    }
                    _ => None,
                })
                .await;
            if is_self {
                return others;
            }
            others.push(nick);
        }
    }

    /// Leaves `room`.
    pub async fn leave_room(&mut self, room: &str, nick: &str) {
        let me = parse_bare(room).with_resource_str(nick).expect("nick");
        self.send(Presence::unavailable().with_to(me)).await;
    }

    /// Sends a `<message type='groupchat'>` to `room`.
    pub async fn send_groupchat(&mut self, room: &str, body: &str) {
        let msg = Message::groupchat(Some(parse_jid(room)))
            .with_body(Default::default(), body.to_owned());
        self.send(msg).await;
    }

    /// The next live group chat message with a body from any room, including the echo of our
    /// own (MUC reflects every message to its sender too); history and subjects are skipped.
    pub async fn next_groupchat(&mut self) -> GroupChat {
        self.wait_for("a groupchat message", |st| {
            let Stanza::Message(m) = st else { return None };
            let delayed = m
                .payloads
                .iter()
                .any(|e| Delay::try_from(e.clone()).is_ok());
            if m.type_ != MessageType::Groupchat || delayed {
                return None;
            }
            let from = m.from.as_ref()?;
            Some(GroupChat {
                room: from.to_bare(),
                nick: from.resource()?.to_string(),
                body: m.get_best_body_cloned(vec![])?.1,
            })
        })
        .await
    }

    /// Invites `jid` to `room` through the room (XEP-0045 mediated invitation).
    pub async fn invite(&mut self, room: &str, jid: &str, reason: Option<&str>) {
        let x = MucUser {
            invite: Some(Invite {
                from: None,
                to: Some(parse_jid(jid)),
                reason: reason.map(str::to_owned),
            }),
            ..MucUser::new()
        };
        self.send(Message::normal(Some(parse_jid(room))).with_payload(x))
            .await;
    }

    // ---- blocking (XEP-0191) and bookmarks ----

    /// Blocks `jid`.
    pub async fn block(&mut self, jid: &str) {
        let block = Block {
            items: vec![parse_jid(jid)],
        };
        self.iq(None, IqRequest::Set(block.into()))
            .await
            .expect("block");
    }

    /// Unblocks `jid`.
    pub async fn unblock(&mut self, jid: &str) {
        let unblock = Unblock {
            items: vec![parse_jid(jid)],
        };
        self.iq(None, IqRequest::Set(unblock.into()))
            .await
            .expect("unblock");
    }

    /// Replaces the account's room bookmarks: `(room JID, name, autojoin)` each. Stored as
    /// XEP-0048 private XML (XEP-0049); Prosody 0.12's mod_bookmarks also publishes them as
    /// XEP-0402 (`urn:xmpp:bookmarks:1` PEP items), so a bridge can read either.
    pub async fn set_bookmarks(&mut self, rooms: &[(&str, &str, bool)]) {
        let mut storage = bookmarks::Storage::new();
        for (room, name, autojoin) in rooms {
            storage.conferences.push(bookmarks::Conference {
                autojoin: *autojoin,
                jid: parse_bare(room),
                name: Some((*name).to_owned()),
                nick: None,
                password: None,
            });
        }
        let query = private::Query { storage };
        self.iq(None, IqRequest::Set(query.into()))
            .await
            .expect("store bookmarks");
    }

    /// The rooms in the account's XEP-0402 bookmarks (`urn:xmpp:bookmarks:1` items' ids).
    pub async fn bookmarked_rooms(&mut self) -> Vec<BareJid> {
        let query: Element = format!(
            "<pubsub xmlns='{}'><items node='{}'/></pubsub>",
            ns::PUBSUB,
            ns::BOOKMARKS2
        )
        .parse()
        .expect("pubsub query");
        let result = match self
            .iq(Some(self.jid().into()), IqRequest::Get(query))
            .await
        {
            Ok(Some(result)) => result,
            Ok(None) => return vec![],
            Err(e)
                if e.defined_condition
                    == tokio_xmpp::parsers::stanza_error::DefinedCondition::ItemNotFound =>
            {
                return vec![]
            }
            Err(e) => panic!("bookmarks query failed: {e:?}"),
        };
        result
            .children()
            .filter(|c| c.name() == "items")
            .flat_map(|items| items.children())
            .filter_map(|item| BareJid::new(item.attr("id")?).ok())
            .collect()
    }

    // ---- waiting ----

    /// Waits up to [`TIMEOUT`] for a stanza `pick` accepts; panics with what arrived if none.
    pub async fn wait_for<T>(&mut self, what: &str, pick: impl FnMut(&Stanza) -> Option<T>) -> T {
        match self.wait_for_within(TIMEOUT, pick).await {
            Some(found) => found,
            None => panic!(
                "{}: no {what} within {TIMEOUT:?}; unclaimed stanzas: {:#?}",
                self.jid, self.buffer
            ),
        }
    }

    /// Waits up to `timeout` for a stanza `pick` accepts, taking it out of the buffer.
    /// `None` on timeout: use a short one to check that something does *not* arrive.
    pub async fn wait_for_within<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&Stanza) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut checked = 0;
        loop {
            while checked < self.buffer.len() {
                if let Some(found) = pick(&self.buffer[checked]) {
                    self.buffer.remove(checked);
                    return Some(found);
                }
                checked += 1;
            }
            // `StanzaStream::next` only polls an mpsc receiver: cancelling it loses nothing.
            tokio::select! {
                event = self.stream.next() => self.handle_event(event).await,
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Waits (up to 60 s: tokio-xmpp's reconnect backoff grows to 30 s) until the client has
    /// come online again after a lost connection, e.g. a server restart.
    pub async fn wait_reconnected(&mut self) {
        let before = self.online_events;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.online_events == before {
            tokio::select! {
                event = self.stream.next() => self.handle_event(event).await,
                _ = tokio::time::sleep_until(deadline) => panic!("{}: no reconnection within 60 s", self.jid),
            }
        }
    }

    /// Drops everything buffered so far.
    pub fn clear(&mut self) {
        self.buffer.clear();
    }

    /// Closes the stream cleanly (the server then sends unavailable presence for us).
    pub async fn disconnect(self) {
        let _ = tokio::time::timeout(TIMEOUT, self.stream.close()).await;
    }

    /// Sends an IQ request with a fresh id; its answer arrives like any stanza.
    async fn send_iq(&mut self, to: Option<Jid>, request: IqRequest) -> String {
        let id = new_id();
        let iq = match request {
            IqRequest::Get(payload) => Iq::Get {
                from: None,
                to,
                id: id.clone(),
                payload,
            },
            IqRequest::Set(payload) => Iq::Set {
                from: None,
                to,
                id: id.clone(),
                payload,
            },
        };
        self.send(iq).await;
        id
    }

    /// Sends an IQ and waits for its answer (the result's payload or the error), buffering
    /// whatever else arrives meanwhile.
    async fn iq(
        &mut self,
        to: Option<Jid>,
        request: IqRequest,
    ) -> Result<Option<Element>, StanzaError> {
        let id = self.send_iq(to, request).await;
        self.wait_for(&format!("answer to IQ {id}"), |st| match st {
            Stanza::Iq(Iq::Result {
                id: answered,
                payload,
                ..
            }) if *answered == id => Some(Ok(payload.clone())),
            Stanza::Iq(Iq::Error {
                id: answered,
                error,
                ..
            }) if *answered == id => Some(Err(error.clone())),
            _ => None,
        })
        .await
    }

    async fn roster_set(&mut self, jid: BareJid, name: Option<&str>, subscription: Subscription) {
        let item = RosterItem {
            jid,
            name: name.map(str::to_owned),
            subscription,
            ask: Default::default(),
            groups: vec![],
            approved: None,
        };
        let query = Roster {
            ver: None,
            items: vec![item],
        };
        self.iq(None, IqRequest::Set(query.into()))
            .await
            .expect("roster set");
    }

    async fn handle_event(&mut self, event: Option<Event>) {
        match event {
            Some(Event::Stanza(stanza)) => {
                trace(&self.jid, &format!("{stanza:?}"));
                // Keep the buffer bounded if a test ignores a flood.
                if self.buffer.len() >= 10_000 {
                    self.buffer.pop_front();
                }
                self.buffer.push_back(stanza);
            }
            Some(Event::Stream(StreamEvent::Resumed)) => {
                trace(&self.jid, "resumed");
                self.online_events += 1;
                self.last_resumed = true;
            }
            Some(Event::Stream(StreamEvent::Reset {
                bound_jid,
                features,
            })) => {
                trace(&self.jid, &format!("new session as {bound_jid}"));
                self.online_events += 1;
                self.last_resumed = false;
                self.features = features;
                // A new session: the server forgot our presence.
                if let Ok(full) = bound_jid.try_into_full() {
                    self.jid = full;
                }
                // Ask for the roster again so roster pushes reach this session; the answer
                // goes into the buffer like any stanza.
                let roster = Roster {
                    ver: None,
                    items: vec![],
                };
                self.send_iq(None, IqRequest::Get(roster.into())).await;
                let presence = self.presence.clone();
                self.send(presence).await;
            }
            Some(Event::Stream(StreamEvent::Suspended)) => {
                trace(&self.jid, "connection lost; reconnecting");
            }
            None => panic!("{}: the XMPP client stream ended", self.jid),
        }
    }
}

/// Logs in once and disconnects, so that a refused password is reported now (tokio-xmpp's
/// `Client` would retry it forever).
async fn check_credentials(
    jid: &BareJid,
    password: &str,
    dns: &DnsConfig,
) -> Result<(), ConnectError> {
    let other = |e: tokio_xmpp::Error| ConnectError::Other(e.to_string());
    let connector = Connector(dns.clone());
    let (stream, binding) = connector
        .connect(&jid.clone().into(), ns::JABBER_CLIENT, Timeouts::tight())
        .await
        .map_err(other)?;
    let (features, stream) = stream
        .recv_features()
        .await
        .map_err(|e| ConnectError::Other(e.to_string()))?;
    let credentials = sasl::common::Credentials::default()
        .with_username(jid.node().map(|n| n.as_str()).unwrap_or_default())
        .with_password(password)
        .with_channel_binding(binding);
    match tokio_xmpp::client_login(stream, features.sasl_mechanisms, credentials).await {
        Ok(_) => Ok(()),
        Err(tokio_xmpp::Error::Auth(e)) => Err(ConnectError::Auth(e.to_string())),
        Err(e) => Err(other(e)),
    }
}

/// STARTTLS over TCP without Nagle's algorithm (an echo written right after an
/// acknowledgement must not wait for the server's delayed ACK), and no channel binding told
/// to the SASL layer, so that SCRAM runs without `-PLUS` on every server (see the module
/// notes).
#[derive(Clone, Debug)]
struct Connector(DnsConfig);

impl ServerConnector for Connector {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let tcp = self.0.resolve().await?;
        tcp.set_nodelay(true)?;
        let header = || StreamHeader {
            to: Some(jid.domain().as_str().into()),
            from: None,
            id: None,
        };
        let plain = initiate_stream(BufStream::new(tcp), ns, header(), timeouts).await?;
        let (_features, plain) = plain.recv_features().await?;
        let (tls, _binding) = starttls(plain, jid.domain().as_str()).await?;
        let stream = initiate_stream(BufStream::new(tls), ns, header(), timeouts).await?;
        Ok((stream, ChannelBinding::None))
    }
}

/// A stanza id unique in this process.
fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("test-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// With `XMPP_TEST_TRACE` set, prints what a client received.
fn trace(jid: &FullJid, what: &str) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("XMPP_TEST_TRACE").is_some()) {
        eprintln!("[xmpp {jid}] {what}");
    }
}

/// `from` asks `to` for a subscription and `to` approves it.
/// One direction of `befriend`; `false` when an answer did not come in time.
async fn subscribe_and_approve(from: &mut XmppClient, to: &mut XmppClient) -> bool {
    let (from_jid, to_jid) = (from.jid().to_string(), to.jid().to_string());
    let wait = Duration::from_secs(5);
    from.subscribe(&to_jid).await;
    if !to
        .has_subscription_within(&from_jid, PresenceType::Subscribe, wait)
        .await
    {
        return false;
    }
    to.approve(&from_jid).await;
    from.has_subscription_within(&to_jid, PresenceType::Subscribed, wait)
        .await
}

fn chat_state(m: &Message) -> Option<ChatState> {
    m.payloads
        .iter()
        .find_map(|e| ChatState::try_from(e.clone()).ok())
}

fn parse_jid(jid: &str) -> Jid {
    Jid::new(jid).unwrap_or_else(|e| panic!("bad JID {jid:?}: {e}"))
}

fn parse_bare(jid: &str) -> BareJid {
    BareJid::new(jid).unwrap_or_else(|e| panic!("bad bare JID {jid:?}: {e}"))
}
