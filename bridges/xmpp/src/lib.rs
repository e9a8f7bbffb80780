//! msngate's XMPP backend: an MSN account whose contact list is an XMPP account's roster.
//!
//! One client-to-server connection per online user, made with tokio-xmpp 6 over STARTTLS
//! (plain TCP only when the account's link opts in). The MSN logon connects the account
//! within `LOGIN_BOUND`: a password refused by then fails the logon; an unreachable, silent or
//! frozen server does not, and the session keeps connecting in the background. Stream
//! management (XEP-0198) resumes short outages without loss; longer ones reconnect with backoff
//! and jitter. No action waits on the server without a bound (`ACTION_BOUND`, `SEND_DEADLINE`).
//! See docs/bridges/xmpp.md for how rosters, presence, subscriptions and chats map to MSN.

mod connect;
pub mod handles;
mod linker;
pub mod presence;
mod session;

use std::future::Future;
use std::time::Duration;

use msngate_bridge_api::{
    Backend, BackendError, BackendEvent, BackendSession, Capabilities, ChatId, ConnectionState,
    Credentials, EventSender, List, OutgoingMessage, PresenceState, ACTION_BOUND, LOGIN_BOUND,
    SEND_DEADLINE,
};
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::stanzastream::StanzaStream;

pub use connect::ATTEMPT_TIMEOUT;
pub use handles::{handle_for, jid_for};
pub use session::OFFLINE_GRACE;

use connect::{ConnectError, First, Target};
use session::{Command, SessionTask};

/// How long the logon waits for the first connection attempt: within [`LOGIN_BOUND`], with
/// room for the rest of the logon.
const LOGIN_WAIT: Duration = LOGIN_BOUND.saturating_sub(Duration::from_millis(500));

/// How long a list change waits for the server's answer before it is reported failed
/// (`Disconnected`): within [`ACTION_BOUND`], with room for the core's own work.
const ACTION_WAIT: Duration = ACTION_BOUND.saturating_sub(Duration::from_secs(1));

/// How long a message may wait to go out (the stream down, or the server not acknowledging
/// it) before its sender is told it failed: within [`SEND_DEADLINE`], with room to spare.
const SEND_WAIT: Duration = SEND_DEADLINE.saturating_sub(Duration::from_secs(3));

/// How many commands may wait for a session's task.
const COMMAND_QUEUE: usize = 256;

/// The XMPP backend.
#[derive(Debug, Default, Clone)]
pub struct XmppBackend;

/// One user's XMPP session. Dropping it logs the user out.
#[derive(Debug)]
pub struct XmppSession {
    commands: mpsc::Sender<Command>,
}

fn option<'a>(credentials: &'a Credentials, key: &str) -> Option<&'a str> {
    credentials
        .options
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl Backend for XmppBackend {
    type Session = XmppSession;

    fn name(&self) -> &'static str {
        "xmpp"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            group_chats: true,
            typing: true,
            blocking: true,
            presence: true,
            offline_messages: true,
        }
    }

    async fn login(
        &self,
        credentials: Credentials,
        events: EventSender,
    ) -> Result<XmppSession, BackendError> {
        let started = tokio::time::Instant::now();
        let jid = BareJid::new(&credentials.account).map_err(|_| BackendError::InvalidContact)?;
        if jid.node().is_none() {
            return Err(BackendError::InvalidContact);
        }
        let target = Target {
            jid: jid.clone(),
            password: credentials.secret.clone(),
            server: option(&credentials, "server").map(str::to_owned),
            plaintext: option(&credentials, "plaintext") == Some("true"),
        };
        // The first attempt decides between a refused account and a merely unreachable one,
        // if it can within the logon bound; a server that has not answered by then (silent,
        // frozen) gets the session anyway, which keeps connecting in the background.
        let attempt = {
            let target = target.clone();
            tokio::spawn(async move { connect::connect_once(&target).await })
        };
        let mut attempt = attempt;
        let first = match tokio::time::timeout(LOGIN_WAIT, &mut attempt).await {
            Ok(Ok(Ok(connection))) => First::Ready(Box::new(connection)),
            Ok(Ok(Err(ConnectError::Auth))) => return Err(BackendError::BadCredentials),
            Ok(Ok(Err(ConnectError::Other(reason)))) => {
                tracing::warn!(%jid, %reason, "XMPP server unreachable at logon; will keep trying");
                let state = ConnectionState::TransientDisconnect { reason };
                let _ = events.send(BackendEvent::Connection(state)).await;
                First::Failed
            }
            Ok(Err(e)) => {
                tracing::warn!(%jid, error = %e, "XMPP connection attempt failed; will keep trying");
                let reason = "connection attempt failed".to_owned();
                let state = ConnectionState::TransientDisconnect { reason };
                let _ = events.send(BackendEvent::Connection(state)).await;
                First::Failed
            }
            Err(_) => {
                tracing::warn!(%jid, "no answer from the XMPP server within the logon bound; still connecting");
                let reason = "no answer from the server yet".to_owned();
                let state = ConnectionState::TransientDisconnect { reason };
                let _ = events.send(BackendEvent::Connection(state)).await;
                First::Pending(attempt)
            }
        };
        let ready = matches!(first, First::Ready(_));
        let online = connect::OnlineFlag::new();
        let reconnector = connect::reconnector(target, first, events.clone(), online.clone());
        let stream = StanzaStream::new(reconnector, 16);
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        let task = SessionTask::new(jid, stream, inbox, events, online);
        let task = if ready {
            task.logon_by(started + LOGIN_WAIT)
        } else {
            task
        };
        tokio::spawn(task.run());
        Ok(XmppSession { commands })
    }
}

impl XmppSession {
    /// Queues a command now, in call order, and returns a future for its answer, which comes
    /// within `bound` (else `Disconnected`: the server did not answer in time; if it does
    /// later, the change is reported as an event like any other).
    fn request<T: Send + 'static>(
        &self,
        bound: Duration,
        make: impl FnOnce(oneshot::Sender<Result<T, BackendError>>) -> Command,
    ) -> impl Future<Output = Result<T, BackendError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.try_send(make(reply));
        async move {
            match queued {
                Ok(()) => match tokio::time::timeout(bound, answer).await {
                    Ok(answer) => answer.unwrap_or(Err(BackendError::Disconnected)),
                    Err(_) => Err(BackendError::Disconnected),
                },
                Err(mpsc::error::TrySendError::Full(_)) => {
                    Err(BackendError::Internal("too many requests".into()))
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(BackendError::Disconnected),
            }
        }
    }
}

fn jid_of(handle: &str) -> Result<BareJid, BackendError> {
    jid_for(handle).ok_or(BackendError::InvalidContact)
}

impl BackendSession for XmppSession {
    /// Queued, in call order with the other commands (so a message sent after it goes out
    /// after the presence), and answered at once: it never waits on the network. The session
    /// sends the latest state whenever the stream is (back) up.
    fn set_presence(
        &self,
        state: PresenceState,
        _name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let queued = match self.commands.try_send(Command::SetPresence { state }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(BackendError::Internal("too many requests".into()))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(BackendError::Disconnected),
        };
        std::future::ready(queued)
    }

    fn add_contact(
        &self,
        list: List,
        handle: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let name = name.to_owned();
        let request = jid_of(handle).map(move |jid| {
            self.request(ACTION_WAIT, move |reply| Command::Add {
                list,
                jid,
                name,
                reply,
            })
        });
        async move { request?.await }
    }

    fn remove_contact(
        &self,
        list: List,
        handle: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let request = jid_of(handle).map(move |jid| {
            self.request(ACTION_WAIT, move |reply| Command::Remove {
                list,
                jid,
                reply,
            })
        });
        async move { request?.await }
    }

    /// A roster set of the item with these groups (its name kept).
    fn set_contact_groups(
        &self,
        handle: &str,
        groups: &[String],
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let groups = groups.to_vec();
        let request = jid_of(handle).map(move |jid| {
            self.request(ACTION_WAIT, move |reply| Command::SetGroups {
                jid,
                groups,
                reply,
            })
        });
        async move { request?.await }
    }

    /// A person's chat is their bare JID; a group's is the room, which this joins (its
    /// occupants then arrive as `Joined` events).
    fn open_chat(&self, handle: &str) -> impl Future<Output = Result<ChatId, BackendError>> + Send {
        let request = jid_of(handle)
            .map(|jid| self.request(ACTION_WAIT, |reply| Command::Open { jid, reply }));
        async move { request?.await }
    }

    fn leave_chat(&self, chat: &ChatId) -> impl Future<Output = Result<(), BackendError>> + Send {
        let result = BareJid::new(&chat.0)
            .map_err(|_| BackendError::InvalidContact)
            .and_then(|jid| {
                self.commands
                    .try_send(Command::Leave { jid })
                    .map_err(|_| BackendError::Disconnected)
            });
        async move { result }
    }

    /// Queued at once, in call order; resolves `Ok` when the server has the message
    /// (acknowledged under stream management, else written to the connection), or `Err`
    /// within [`SEND_DEADLINE`], after which the session never sends it.
    fn send_message(
        &self,
        chat: &ChatId,
        message: &OutgoingMessage,
    ) -> impl Future<Output = Result<(), BackendError>> + Send + 'static {
        let text = message.text.clone();
        let deadline = tokio::time::Instant::now() + SEND_WAIT;
        let request = BareJid::new(&chat.0)
            .map_err(|_| BackendError::InvalidContact)
            .map(|to| {
                // The session answers by the deadline; the bound here only covers a session
                // task that is gone or stuck.
                self.request(SEND_WAIT + Duration::from_secs(1), move |reply| {
                    Command::Send {
                        to,
                        text,
                        deadline,
                        reply,
                    }
                })
            });
        async move { request?.await }
    }

    fn send_typing(&self, chat: &ChatId) -> impl Future<Output = Result<(), BackendError>> + Send {
        let result = BareJid::new(&chat.0)
            .map_err(|_| BackendError::InvalidContact)
            .and_then(|to| {
                self.commands
                    .try_send(Command::Typing { to })
                    .map_err(|_| BackendError::Disconnected)
            });
        async move { result }
    }

    fn logout(&self) -> impl Future<Output = ()> + Send {
        let (done, finished) = oneshot::channel();
        let queued = self.commands.try_send(Command::Logout { done }).is_ok();
        async move {
            if queued {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), finished).await;
            }
        }
    }
}
