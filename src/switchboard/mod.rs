//! The switchboard server: chat sessions between two or more users (draft section 8).
//!
//! A connection authenticates with a cookie, either starting a new session (`USR`, cookie from
//! `XFR SB`) or joining one it was rung into (`ANS`, cookie from `RNG`). In a session it can
//! `CAL` others in and send `MSG`s, which the session's task relays to everyone else.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{info, info_span, warn, Span};

use crate::chat;
use crate::connection::{Flow, Peer, Replies, Role};
use crate::hub::switchboard::{Member, Participant, SessionHandle};
use crate::hub::{CookieGrant, Verdict};
use crate::local;
use crate::protocol::{
    AckMode, ClientCommand, ErrorCode, FriendlyName, ServerCommand, SharedLine, TrId, UserHandle,
};
use crate::services::{Caller, Services};

enum State {
    AwaitingAuth,
    InSession {
        me: UserHandle,
        name: FriendlyName,
        session: SessionHandle,
    },
}

/// One switchboard connection.
pub struct SwitchboardConnection {
    services: Arc<Services>,
    peer: Peer,
    /// The client's address: its IP for rate-limited logging of bad cookies and the limits,
    /// all of it for the logs.
    address: SocketAddr,
    state: State,
    /// Made once: a switchboard connection is short-lived and busy relaying, and cloning a
    /// span for each message costs far less than making one.
    span: Span,
}

impl SwitchboardConnection {
    pub fn new(services: Arc<Services>, peer: Peer, address: SocketAddr) -> SwitchboardConnection {
        SwitchboardConnection {
            services,
            peer,
            address,
            state: State::AwaitingAuth,
            span: info_span!("sb", peer = %address, handle = tracing::field::Empty),
        }
    }

    /// Logs a refused cookie, once per address and minute (a sweep of guesses must not fill
    /// the disk), with how many were not logged before it.
    fn bad_cookie(&self, handle: &UserHandle, what: &str) {
        if let Some(unlogged) = self.services.node.bad_cookies.should_log(self.address.ip()) {
            warn!(address = %self.address.ip(), %handle, unlogged, "switchboard {what} with an invalid cookie");
        }
    }

    /// Keeps a user's messages within `[limits] messages_per_second`: a burst passes, a flood
    /// is slowed and then refused (`713`), logged once per address and minute. Loopback is
    /// exempt unless `limit_loopback` (local load tests and msncd's scripts).
    async fn pace(&self, me: &UserHandle) -> Result<(), ErrorCode> {
        if !self.services.config.limits.apply_to(self.address.ip()) {
            return Ok(());
        }
        match self.services.node.messages.take(me) {
            Verdict::Go => Ok(()),
            Verdict::Wait(wait) => {
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Verdict::Refuse => {
                if let Some(unlogged) = self.services.node.floods.should_log(self.address.ip()) {
                    warn!(address = %self.address.ip(), handle = %me, unlogged, "messages refused: the user sends faster than [limits] messages_per_second");
                }
                Err(ErrorCode::UserTooActive)
            }
        }
    }

    /// The friendly name to show for a user: their live one, else the stored one. A user who
    /// is logged in also lends this connection the dialect of their notification connection.
    async fn name_of(&self, handle: &UserHandle) -> Option<FriendlyName> {
        if let Some(dialect) = self.services.hub.dialect(handle) {
            self.peer.set_dialect(dialect);
        }
        if let Some((_, name)) = self.services.hub.presence(handle) {
            return Some(name);
        }
        self.services
            .store
            .account(handle)
            .await
            .ok()
            .map(|a| a.name)
    }
}

impl Role for SwitchboardConnection {
    fn logged_in(&self) -> bool {
        matches!(self.state, State::InSession { .. })
    }

    fn span(&self) -> Span {
        self.span.clone()
    }

    async fn handle(&mut self, command: ClientCommand, out: &mut Replies) -> Flow {
        let trid = command.trid().unwrap_or_default();
        let result = match (&self.state, command) {
            (_, ClientCommand::Out) => return Flow::Close,
            (
                State::AwaitingAuth,
                ClientCommand::UsrCookie {
                    trid,
                    handle,
                    cookie,
                },
            ) => {
                return self.start_session(trid, handle, &cookie, out).await;
            }
            (
                State::AwaitingAuth,
                ClientCommand::Ans {
                    trid,
                    handle,
                    cookie,
                    session_id,
                },
            ) => {
                return self.answer(trid, handle, &cookie, session_id, out).await;
            }
            (State::AwaitingAuth, ClientCommand::UsrAuth { .. }) => {
                out.error(ErrorCode::AuthenticationFailed, trid);
                return Flow::Close;
            }
            (State::AwaitingAuth, _) => Err(ErrorCode::NotLoggedIn),
            (
                State::InSession { .. },
                ClientCommand::UsrCookie { .. }
                | ClientCommand::UsrAuth { .. }
                | ClientCommand::Ans { .. },
            ) => Err(ErrorCode::AlreadyLoggedIn),
            (State::InSession { me, name, session }, ClientCommand::Cal { trid, handle }) => {
                let (me, name, session) = (me.clone(), name.clone(), session.clone());
                self.call(&me, &name, &session, trid, handle, out).await
            }
            (
                State::InSession { me, name, session },
                ClientCommand::Msg {
                    trid,
                    mode,
                    payload,
                },
            ) => {
                if let Err(code) = self.pace(me).await {
                    out.error(code, trid);
                    return Flow::Continue;
                }
                let line = SharedLine::new(ServerCommand::Msg {
                    sender: me.to_string(),
                    sender_name: name.to_string(),
                    payload: payload.clone(),
                });
                let wait = mode != AckMode::Unacknowledged;
                let delivered = session.relay(self.peer.id(), line, payload, wait).await;
                match (mode, delivered) {
                    (AckMode::Acknowledged, true) => out.push(ServerCommand::Ack { trid }),
                    (AckMode::Acknowledged | AckMode::NegativeOnly, false) => {
                        out.push(ServerCommand::Nak { trid })
                    }
                    _ => {}
                }
                Ok(())
            }
            (State::InSession { .. }, _) => Err(ErrorCode::NotExpected),
        };
        if let Err(code) = result {
            out.error(code, trid);
        }
        Flow::Continue
    }

    async fn closed(self) {
        if let State::InSession { session, .. } = self.state {
            session.leave(self.peer.id()).await;
        }
    }
}

impl SwitchboardConnection {
    /// The connection is in `session` as `me`, by `USR` or `ANS`; its log lines say so.
    fn enter(&mut self, me: UserHandle, name: FriendlyName, session: SessionHandle) -> Flow {
        self.span.record("handle", me.as_str());
        self.state = State::InSession { me, name, session };
        Flow::Continue
    }

    /// `USR TrID handle cookie`: a cookie from XFR SB starts a new session.
    async fn start_session(
        &mut self,
        trid: TrId,
        handle: UserHandle,
        cookie: &str,
        out: &mut Replies,
    ) -> Flow {
        let wanted = CookieGrant::NewSession {
            handle: handle.clone(),
        };
        let granted = self.services.node.cookies.redeem(cookie, &wanted);
        let name = match granted {
            true => self.name_of(&handle).await,
            false => None,
        };
        let Some(name) = name else {
            self.bad_cookie(&handle, "login");
            out.error(ErrorCode::AuthenticationFailed, trid);
            return Flow::Close;
        };
        let participant = Participant {
            handle: handle.clone(),
            name: name.clone(),
            member: Member::Local(self.peer.clone()),
        };
        let session = chat::start(&self.services, participant);
        out.push(ServerCommand::UsrOk {
            trid,
            handle: handle.clone(),
            name: name.clone(),
            verified: None,
        });
        self.enter(handle, name, session)
    }

    /// `ANS TrID handle cookie session-id`: a cookie from RNG joins that session.
    async fn answer(
        &mut self,
        trid: TrId,
        handle: UserHandle,
        cookie: &str,
        session_id: u32,
        out: &mut Replies,
    ) -> Flow {
        let wanted = CookieGrant::Invite {
            handle: handle.clone(),
            session_id,
        };
        let session = match self.services.node.cookies.redeem(cookie, &wanted) {
            true => self.services.hub.switchboard(session_id),
            false => None,
        };
        let name = match session {
            Some(_) => self.name_of(&handle).await,
            None => None,
        };
        let (Some(session), Some(name)) = (session, name) else {
            self.bad_cookie(&handle, "answer");
            out.error(ErrorCode::AuthenticationFailed, trid);
            return Flow::Close;
        };
        let participant = Participant {
            handle: handle.clone(),
            name: name.clone(),
            member: Member::Local(self.peer.clone()),
        };
        let roster = match session.join(participant).await {
            Ok(roster) => roster,
            Err(code) => {
                out.error(code, trid);
                return Flow::Close;
            }
        };
        let total = roster.len();
        for (i, (h, n)) in roster.into_iter().enumerate() {
            out.push(ServerCommand::Iro {
                trid,
                index: i + 1,
                total,
                handle: h,
                name: n,
            });
        }
        out.push(ServerCommand::AnsOk { trid });
        info!(%handle, session = session_id, "joined a switchboard session");
        self.enter(handle, name, session)
    }

    /// `CAL TrID handle`: rings someone into the session, if they can be reached and allow it.
    async fn call(
        &self,
        me: &UserHandle,
        my_name: &FriendlyName,
        session: &SessionHandle,
        trid: TrId,
        callee: UserHandle,
        out: &mut Replies,
    ) -> Result<(), ErrorCode> {
        if &callee == me {
            return Err(ErrorCode::AlreadyThere);
        }
        session.can_call(callee.clone()).await?;
        let hub = &self.services.hub;
        // Calls go through the caller's lists: contacts on another network join through the
        // backend as remote participants; contacts who are MSN users of this server are rung.
        let Some(account) = hub.backend(me) else {
            // Logged in on another node of a cluster: no backend session here.
            return local::call_from_elsewhere(
                &self.services,
                trid,
                me,
                my_name,
                session,
                callee,
                out,
            )
            .await;
        };
        let caller = Caller {
            trid,
            handle: me,
            name: my_name,
            account: &account,
        };
        let lists = self.services.backends.lists(account.backend)?;
        lists
            .call(&self.services, caller, session, callee, out)
            .await
    }
}
