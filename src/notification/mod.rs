//! The notification server: login, lists and settings, presence, and referral to switchboards.
//!
//! Each connection runs [`NotificationSession`] as its [`Role`]. All state checks happen in one
//! place, [`NotificationSession::handle`], a `match` over (state, command); each arm calls a
//! handler that returns `Result<(), ErrorCode>` and [`error_code`] maps domain errors to MSN
//! codes.

mod challenge;
mod groups;
mod lists;
mod phones;
mod profile;

use crate::backend;
use crate::backend::errors::store_error_code as error_code;
use crate::bridge;
use crate::hub::OnlineUser;

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{info, info_span, Span};

use crate::connection::{Flow, Peer, Replies, Role};
use crate::hub::CookieGrant;
use crate::protocol::{
    AuthStage, ClientCommand, Dialect, ErrorCode, FriendlyName, ListKind, OutReason, ServerCommand,
    Status, TrId, UserHandle,
};
use crate::services::Services;
use crate::services::{GroupCommand, ListCommand};
use crate::store::{password, Credentials};

/// Failed logins allowed on one connection before it is closed.
const MAX_AUTH_FAILURES: u32 = 5;

/// Where a notification connection is in its life.
enum State {
    AwaitingVersion,
    AwaitingAuth {
        dialect: Dialect,
        /// The handle of `USR I` and, for an account, what its login needs (boxed: this state
        /// is part of every connection's task, and lasts only until `USR S`).
        challenge: Option<(UserHandle, Option<Box<Credentials>>)>,
        failures: u32,
    },
    Online(Online),
}

/// A logged-in user's connection.
struct Online {
    dialect: Dialect,
    handle: UserHandle,
    /// Whether the first CHG (which sends the ILN burst) has happened.
    initial_state_sent: bool,
    /// The `CHL` challenge waiting for its `QRY` (MSNP6 on, when challenges are on).
    challenge: Option<String>,
}

/// One notification server connection.
pub struct NotificationSession {
    services: Arc<Services>,
    peer: Peer,
    /// The client's address: its IP for login throttling, all of it for the logs.
    address: SocketAddr,
    state: State,
}

impl NotificationSession {
    pub fn new(services: Arc<Services>, peer: Peer, address: SocketAddr) -> NotificationSession {
        NotificationSession {
            services,
            peer,
            address,
            state: State::AwaitingVersion,
        }
    }
}

impl Role for NotificationSession {
    fn logged_in(&self) -> bool {
        matches!(self.state, State::Online(_))
    }

    fn span(&self) -> Span {
        match &self.state {
            State::Online(online) => {
                info_span!("ns", peer = %self.address, handle = %online.handle)
            }
            _ => info_span!("ns", peer = %self.address),
        }
    }

    async fn handle(&mut self, command: ClientCommand, out: &mut Replies) -> Flow {
        let trid = command.trid().unwrap_or_default();
        if command.since() > self.peer.dialect() {
            // A command of a later dialect is unknown in this one, as it was to its servers.
            out.error(ErrorCode::SyntaxError, trid);
            return Flow::Continue;
        }
        let result = match (&mut self.state, command) {
            (_, ClientCommand::Out) => {
                out.push(ServerCommand::Out { reason: None });
                return Flow::Close;
            }
            (_, ClientCommand::Ver { trid, dialects }) => {
                return self.version(trid, &dialects, out);
            }
            (_, ClientCommand::Cvr { trid, query, .. }) => {
                out.push(cvr_reply(&self.services.config.client, trid, query));
                Ok(())
            }
            (_, ClientCommand::Inf { trid }) => {
                out.push(ServerCommand::Inf { trid });
                Ok(())
            }
            (_, ClientCommand::Png) => {
                out.push(ServerCommand::Qng);
                Ok(())
            }
            (State::Online(_), ClientCommand::UsrAuth { .. } | ClientCommand::UsrCookie { .. }) => {
                Err(ErrorCode::AlreadyLoggedIn)
            }
            (
                State::AwaitingVersion | State::AwaitingAuth { .. },
                ClientCommand::UsrAuth {
                    trid,
                    package,
                    stage,
                },
            ) => {
                return self.authenticate(trid, &package, stage, out).await;
            }
            (_, ClientCommand::UsrCookie { .. }) => Err(ErrorCode::AuthenticationFailed),
            (
                _,
                ClientCommand::Msg { .. } | ClientCommand::Cal { .. } | ClientCommand::Ans { .. },
            ) => Err(ErrorCode::NotExpected),
            (State::AwaitingVersion | State::AwaitingAuth { .. }, _) => Err(ErrorCode::NotLoggedIn),
            (
                State::Online(online),
                ClientCommand::Qry {
                    trid,
                    client_id,
                    payload,
                },
            ) => {
                let answered = online
                    .challenge
                    .take()
                    .is_some_and(|challenge| challenge::verify(&challenge, &client_id, &payload));
                if !answered {
                    out.error(ErrorCode::ChallengeFailed, trid);
                    return Flow::Close;
                }
                out.push(ServerCommand::Qry { trid });
                Ok(())
            }
            (State::Online(online), command) => {
                let me = online.handle.clone();
                self.online_command(me, command, out).await
            }
        };
        if let Err(code) = result {
            out.error(code, trid);
        }
        Flow::Continue
    }

    fn shutdown_command(&self) -> Option<ServerCommand> {
        Some(ServerCommand::Out {
            reason: Some(OutReason::ServerShutdown),
        })
    }

    async fn closed(self) {
        if let State::Online(online) = self.state {
            if let Some(user) = self.services.hub.log_out(&online.handle, self.peer.id()) {
                info!(handle = %online.handle, "logged out");
                end_login(user).await;
            }
        }
    }
}

impl NotificationSession {
    fn version(&mut self, trid: TrId, offered: &[String], out: &mut Replies) -> Flow {
        let (dialect, answer) = ServerCommand::version_answer(trid, offered);
        if let Some(d) = dialect {
            // Everything from here on, this reply included, is written in it.
            self.peer.set_dialect(d);
        }
        out.push(answer);
        match (dialect, &mut self.state) {
            (None, _) => Flow::Close,
            (Some(d), State::AwaitingVersion) => {
                self.state = State::AwaitingAuth {
                    dialect: d,
                    challenge: None,
                    failures: 0,
                };
                Flow::Continue
            }
            (Some(d), State::AwaitingAuth { dialect, .. }) => {
                *dialect = d;
                Flow::Continue
            }
            (Some(_), State::Online(_)) => Flow::Continue,
        }
    }

    async fn authenticate(
        &mut self,
        trid: TrId,
        package: &str,
        stage: AuthStage,
        out: &mut Replies,
    ) -> Flow {
        if matches!(self.state, State::AwaitingVersion) {
            // A client that skips VER gets the only dialect there is.
            self.state = State::AwaitingAuth {
                dialect: Dialect::Msnp2,
                challenge: None,
                failures: 0,
            };
        }
        let State::AwaitingAuth {
            dialect,
            challenge,
            failures,
        } = &mut self.state
        else {
            return Flow::Continue;
        };
        let dialect = *dialect;
        if package != "MD5" {
            out.error(ErrorCode::AuthenticationFailed, trid);
            return Flow::Continue;
        }
        match stage {
            AuthStage::Initial(handle) => {
                let stored = match self.services.store.credentials(&handle).await {
                    Ok(c) => c.map(Box::new),
                    Err(e) => {
                        out.error(error_code(&e), trid);
                        return Flow::Continue;
                    }
                };
                let text = match &stored {
                    Some(credentials) => credentials.password.salt.clone(),
                    None => password::fake_challenge(&self.services.challenge_key, handle.as_str()),
                };
                *challenge = Some((handle, stored));
                out.push(ServerCommand::UsrChallenge {
                    trid,
                    challenge: text,
                });
                Flow::Continue
            }
            AuthStage::Subsequent(response) => {
                let throttle = &self.services.node.throttle;
                let verified = match challenge.take() {
                    // A throttled handle is refused without looking at the password.
                    Some((handle, _)) if throttle.blocked(self.address.ip(), &handle).is_some() => {
                        throttle.failed(self.address.ip(), &handle);
                        None
                    }
                    Some((handle, Some(credentials)))
                        if password::verify_response(&credentials.password, &response) =>
                    {
                        Some((handle, credentials))
                    }
                    Some((handle, _)) => {
                        throttle.failed(self.address.ip(), &handle);
                        None
                    }
                    None => None,
                };
                let Some((handle, credentials)) = verified else {
                    self.services.metrics.failed_logons.inc();
                    *failures += 1;
                    out.error(ErrorCode::AuthenticationFailed, trid);
                    return if *failures >= MAX_AUTH_FAILURES {
                        Flow::Close
                    } else {
                        Flow::Continue
                    };
                };
                throttle.succeeded(self.address.ip(), &handle);
                self.log_in(trid, dialect, handle, *credentials, out).await
            }
        }
    }

    async fn log_in(
        &mut self,
        trid: TrId,
        dialect: Dialect,
        handle: UserHandle,
        credentials: Credentials,
        out: &mut Replies,
    ) -> Flow {
        // What the store said at `USR I`: the name and the backend mapping came with the
        // password, so the login needs no further reads.
        let Credentials { name, link, .. } = credentials;
        // The account's backend logs in first: a linked account whose password the other
        // network refuses fails the MSN logon too.
        let connected = match bridge::connect(&self.services, &handle, link).await {
            Ok(c) => c,
            Err(code) => {
                self.services.metrics.failed_logons.inc();
                out.error(code, trid);
                return Flow::Continue;
            }
        };
        self.services.metrics.logons.inc();
        let hub = &self.services.hub;
        let previous = hub.log_in(
            handle.clone(),
            self.peer.clone(),
            name.clone(),
            connected.account.clone(),
        );
        if let Some(previous) = previous {
            info!(%handle, "logged in elsewhere; closing the older connection");
            previous.peer.send_and_close(&ServerCommand::Out {
                reason: Some(OutReason::OtherLogin),
            });
            end_login(previous).await;
        }
        bridge::start_events(&self.services, self.peer.clone(), connected);
        info!(%handle, "logged in");
        out.push(ServerCommand::UsrOk {
            trid,
            handle: handle.clone(),
            name,
            verified: Some(true),
        });
        out.push(profile::message(dialect, &handle));
        self.state = State::Online(Online {
            dialect,
            handle,
            initial_state_sent: false,
            challenge: None,
        });
        Flow::Continue
    }

    async fn online_command(
        &mut self,
        me: UserHandle,
        command: ClientCommand,
        out: &mut Replies,
    ) -> Result<(), ErrorCode> {
        let services = &self.services;
        let dialect = self.peer.dialect();
        match command {
            ClientCommand::Syn { trid, serial } => {
                lists::synchronize(services, &me, dialect, trid, serial, out).await
            }
            ClientCommand::Lst { trid, list } => {
                lists::send_list(services, &me, trid, list, out).await
            }
            ClientCommand::Gtc { trid, setting } => {
                let serial = services.store.set_gtc(&me, setting).await?;
                out.push(ServerCommand::Gtc {
                    trid,
                    serial,
                    setting,
                });
                Ok(())
            }
            ClientCommand::Blp { trid, setting } => {
                lists::set_privacy_mode(services, &me, trid, setting, out).await
            }
            // Only the server changes the RL, whatever the account's backend.
            ClientCommand::Add {
                list: ListKind::Reverse,
                ..
            }
            | ClientCommand::Rem {
                list: ListKind::Reverse,
                ..
            } => Err(ErrorCode::InvalidParameter),
            ClientCommand::Add {
                list: ListKind::Forward,
                group: Some(group),
                trid,
                handle,
                name,
            } => groups::add(services, &me, trid, handle, name, group, out).await,
            ClientCommand::Rem {
                list: ListKind::Forward,
                group: Some(group),
                trid,
                handle,
            } => groups::remove(services, &me, trid, handle, group, out).await,
            ClientCommand::Add {
                trid,
                list,
                handle,
                name,
                group: _,
            } => {
                let account = services.hub.backend(&me).ok_or(ErrorCode::NotExpected)?;
                let command = ListCommand {
                    trid,
                    list,
                    contact: handle,
                    group: None,
                };
                let lists = services.backends.lists(account.backend)?;
                lists.add(services, &account, command, name, out).await
            }
            ClientCommand::Rem {
                trid, list, handle, ..
            } => {
                let account = services.hub.backend(&me).ok_or(ErrorCode::NotExpected)?;
                let command = ListCommand {
                    trid,
                    list,
                    contact: handle,
                    group: None,
                };
                let lists = services.backends.lists(account.backend)?;
                lists.remove(services, &account, command, out).await
            }
            ClientCommand::Chg { trid, status } => self.change_status(me, trid, status, out).await,
            ClientCommand::Rea { trid, handle, name } => {
                rename(services, &me, trid, handle, name, out).await
            }
            ClientCommand::Xfr { trid, kind } => {
                if kind != "SB" {
                    return Err(ErrorCode::InvalidParameter);
                }
                let visible = services
                    .hub
                    .presence(&me)
                    .is_some_and(|(s, _)| s.is_visible());
                if !visible {
                    return Err(ErrorCode::NotAllowedWhenOffline);
                }
                let cookie = services
                    .node
                    .cookies
                    .issue(CookieGrant::NewSession { handle: me.clone() }, &me)
                    .ok_or(ErrorCode::ServerBusy)?;
                out.push(ServerCommand::XfrSb {
                    trid,
                    address: services.switchboard_address.clone(),
                    cookie,
                });
                Ok(())
            }
            ClientCommand::Url { trid, args } => {
                // The page is chosen by the service name (INBOX, COMPOSE, PASSWORD...) relative
                // to the configured site, which plays the role of Passport's login URL.
                let service = args.first().ok_or(ErrorCode::InvalidParameter)?;
                if service.is_empty() || !service.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(ErrorCode::InvalidParameter);
                }
                out.push(ServerCommand::Url {
                    trid,
                    redirect: format!("/{}", service.to_ascii_lowercase()),
                    login_url: services.config.client.web_url.clone(),
                    // The Passport site id of MSN Messenger's own pages, as in the protocol
                    // pages' examples; clients pass it back to the login page.
                    site_id: 2,
                });
                Ok(())
            }
            ClientCommand::Fnd { trid, args } => find(services, trid, &args, out).await,
            ClientCommand::Snd { trid, args } => {
                // Inviting a friend by e-mail: there is no mailer, so the address is only checked.
                match args.as_slice() {
                    [address, ..] if address.parse::<UserHandle>().is_ok() => {
                        out.push(ServerCommand::Snd { trid });
                        Ok(())
                    }
                    _ => Err(ErrorCode::InvalidParameter),
                }
            }
            ClientCommand::Ims { trid, on } => {
                // Instant messages are always on here; the switch is acknowledged.
                out.push(ServerCommand::Ims { trid, on });
                Ok(())
            }
            ClientCommand::Sdc { trid, args, .. } => {
                // Like SND: no mailer, so the invitation is checked and acknowledged.
                match args.first() {
                    Some(address) if address.parse::<UserHandle>().is_ok() => {
                        out.push(ServerCommand::Sdc { trid });
                        Ok(())
                    }
                    _ => Err(ErrorCode::InvalidParameter),
                }
            }
            // A page to a pager: there is no pager network, and the protocol has no positive
            // answer to a page, so it is taken and dropped.
            ClientCommand::Pag { .. } => Ok(()),
            ClientCommand::Prp { trid, key, value } => {
                phones::set(services, &me, trid, key, value, out).await
            }
            ClientCommand::Adg { trid, name } => {
                let command = GroupCommand::Create { name };
                groups::change(services, &me, trid, command, out).await
            }
            ClientCommand::Reg { trid, id, name } => {
                let command = GroupCommand::Rename { id, name };
                groups::change(services, &me, trid, command, out).await
            }
            ClientCommand::Rmg { trid, id } => {
                let command = GroupCommand::Remove { id };
                groups::change(services, &me, trid, command, out).await
            }
            // Everything else was dealt with before a login was needed.
            _ => Err(ErrorCode::NotExpected),
        }
    }

    async fn change_status(
        &mut self,
        me: UserHandle,
        trid: TrId,
        status: Status,
        out: &mut Replies,
    ) -> Result<(), ErrorCode> {
        if status == Status::Offline {
            return Err(ErrorCode::InvalidParameter);
        }
        let services = &self.services;
        let previous = services
            .hub
            .set_status(&me, status)
            .unwrap_or(Status::Offline);
        out.push(ServerCommand::Chg { trid, status });
        let State::Online(online) = &mut self.state else {
            return Ok(());
        };
        let first = !online.initial_state_sent;
        online.initial_state_sent = true;
        let challenge_now =
            first && services.config.client.challenges && online.dialect >= Dialect::Msnp6;
        if challenge_now {
            let challenge = challenge::new_challenge();
            online.challenge = Some(challenge.clone());
            out.push(ServerCommand::Chl { challenge });
        }
        let Some(account) = services.hub.backend(&me) else {
            return Ok(());
        };
        if first {
            let lists = services.backends.lists(account.backend)?;
            lists.initial_states(services, &account, trid, out).await?;
        }
        if previous != status {
            let name = services
                .hub
                .presence(&me)
                .map(|(_, n)| n.to_string())
                .unwrap_or_default();
            backend::set_presence(&account, status, &name).await;
        }
        Ok(())
    }
}

/// What ends with a login: its backend session logs out, so contacts see the user go offline.
async fn end_login(user: OnlineUser) {
    user.backend.ended().cancel();
    user.backend.session.logout().await;
}

/// `REA`: renames the user, or a contact on their FL.
async fn rename(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    handle: UserHandle,
    name: FriendlyName,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let (owner, new_name) = (me.clone(), name.clone());
    if &handle == me {
        let serial = services.store.rename(&owner, &new_name).await?;
        services.hub.set_name(me, name.clone());
        out.push(ServerCommand::Rea {
            trid,
            serial,
            handle,
            name,
        });
        if let (Some((status, new_name)), Some(account)) =
            (services.hub.visible_status(me), services.hub.backend(me))
        {
            backend::set_presence(&account, status, new_name.as_str()).await;
        }
    } else {
        let serial = services
            .store
            .rename_contact(&owner, &handle, &new_name)
            .await?;
        out.push(ServerCommand::Rea {
            trid,
            serial,
            handle,
            name,
        });
    }
    Ok(())
}

/// The most results one FND returns.
const MAX_FIND_RESULTS: usize = 10;

/// `FND TrID fname=X lname=Y city=* state=* country=*`: searches this server's accounts by
/// friendly name. A result shows the name split into first and last name, as the directory
/// of the time did; handles are not disclosed.
async fn find(
    services: &Services,
    trid: TrId,
    args: &[String],
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    let field = |key: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse::<FriendlyName>().ok())
    };
    let (Some(first), Some(last)) = (field("fname"), field("lname")) else {
        return Err(ErrorCode::InvalidParameter);
    };
    let wanted: Vec<String> = [first.as_str(), last.as_str()]
        .into_iter()
        .filter(|w| *w != "*")
        .map(str::to_lowercase)
        .collect();
    let query = wanted.first().cloned().unwrap_or_default();
    if query.is_empty() {
        return Err(ErrorCode::InvalidParameter);
    }
    let found = services.store.find(&query, MAX_FIND_RESULTS * 10).await?;
    let matches: Vec<FriendlyName> = found
        .into_iter()
        .map(|(_, name)| name)
        .filter(|name| {
            let lower = name.as_str().to_lowercase();
            wanted.iter().all(|w| lower.contains(w.as_str()))
        })
        .take(MAX_FIND_RESULTS)
        .collect();
    if matches.is_empty() {
        out.push(ServerCommand::Fnd {
            trid,
            index: 0,
            total: 0,
            fields: vec![],
        });
    }
    let total = matches.len();
    for (i, name) in matches.into_iter().enumerate() {
        let text = name.as_str();
        let (f, l) = text.split_once(' ').unwrap_or((text, "*"));
        let enc = |s: &str| {
            FriendlyName::new(s)
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "*".into())
        };
        out.push(ServerCommand::Fnd {
            trid,
            index: i + 1,
            total,
            fields: vec![
                format!("fname={}", enc(f)),
                format!("lname={}", enc(l)),
                "city=*".into(),
                "state=*".into(),
                "country=*".into(),
            ],
        });
    }
    Ok(())
}

/// The answer to `CVR`: the client versions and download pages from `[client]`.
pub fn cvr_reply(c: &crate::config::ClientConfig, trid: TrId, query: bool) -> ServerCommand {
    ServerCommand::Cvr {
        trid,
        query,
        recommended: c.recommended_version.clone(),
        minimum: c.minimum_version.clone(),
        download_url: c.download_url.clone(),
        info_url: c.info_url.clone(),
    }
}
