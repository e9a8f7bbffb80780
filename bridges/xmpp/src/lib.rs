//! msngate's XMPP backend: an MSN account whose contact list is an XMPP account's roster.
//!
//! One client-to-server connection per online user, made with tokio-xmpp 6 over STARTTLS
//! (plain TCP only when the account's link opts in). The MSN logon connects the account: a
//! refused password fails the logon; an unreachable server does not, and the session keeps
//! connecting in the background. Stream management (XEP-0198) resumes short outages without
//! loss; longer ones reconnect with backoff and jitter. See docs/bridges/xmpp.md for how
//! rosters, presence, subscriptions and chats map to MSN.

mod connect;
pub mod handles;
pub mod presence;
mod session;

use std::future::Future;

use msngate_bridge_api::{
    Backend, BackendError, BackendEvent, BackendSession, Capabilities, ChatId, ConnectionState,
    Credentials, EventSender, List, OutgoingMessage, PresenceState,
};
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::stanzastream::StanzaStream;

pub use connect::ATTEMPT_TIMEOUT;
pub use handles::{handle_for, jid_for};
pub use session::OFFLINE_DEBOUNCE;

use connect::{ConnectError, Target};
use session::{Command, SessionTask};

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
            msn_contacts: false,
        }
    }

    async fn login(
        &self,
        credentials: Credentials,
        events: EventSender,
    ) -> Result<XmppSession, BackendError> {
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
        // The first attempt decides between a refused account and a merely unreachable one.
        let first = match connect::connect_once(&target).await {
            Ok(connection) => Some(connection),
            Err(ConnectError::Auth) => return Err(BackendError::BadCredentials),
            Err(ConnectError::Other(reason)) => {
                tracing::warn!(%jid, %reason, "XMPP server unreachable at logon; will keep trying");
                let state = ConnectionState::TransientDisconnect { reason };
                let _ = events.send(BackendEvent::Connection(state)).await;
                None
            }
        };
        let online = connect::OnlineFlag::new();
        let reconnector = connect::reconnector(target, first, events.clone(), online.clone());
        let stream = StanzaStream::new(reconnector, 16);
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        tokio::spawn(SessionTask::new(jid, stream, inbox, events, online).run());
        Ok(XmppSession { commands })
    }
}

impl XmppSession {
    /// Queues a command now, in call order, and returns a future for its answer.
    fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), BackendError>>) -> Command,
    ) -> impl Future<Output = Result<(), BackendError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.try_send(make(reply));
        async move {
            match queued {
                Ok(()) => answer.await.unwrap_or(Err(BackendError::Disconnected)),
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
    fn set_presence(
        &self,
        state: PresenceState,
        _name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let (done, taken) = oneshot::channel();
        let queued = self.commands.try_send(Command::SetPresence { state, done });
        async move {
            queued.map_err(|_| BackendError::Disconnected)?;
            // Answered once the server has the presence, so that what the MSN client does
            // next (and what contacts do on seeing the user online) comes after it: ejabberd
            // stores a message that arrives while the user has no available presence as an
            // offline message, and may not deliver one that it stores as the presence comes
            // in until the next logon. Bounded: the state is kept and sent on reconnection.
            let _ = tokio::time::timeout(session::PRESENCE_WAIT, taken).await;
            Ok(())
        }
    }

    fn add_contact(
        &self,
        list: List,
        handle: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let name = name.to_owned();
        let request = jid_of(handle).map(move |jid| {
            self.request(move |reply| Command::Add {
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
        let request = jid_of(handle)
            .map(move |jid| self.request(move |reply| Command::Remove { list, jid, reply }));
        async move { request?.await }
    }

    /// A person's chat is their bare JID; a group's is the room, which this joins (its
    /// occupants then arrive as `Joined` events).
    fn open_chat(&self, handle: &str) -> impl Future<Output = Result<ChatId, BackendError>> + Send {
        let queued = jid_of(handle).map(|jid| {
            let (reply, answer) = oneshot::channel();
            (self.commands.try_send(Command::Open { jid, reply }), answer)
        });
        async move {
            match queued? {
                (Ok(()), answer) => answer.await.unwrap_or(Err(BackendError::Disconnected)),
                (Err(_), _) => Err(BackendError::Disconnected),
            }
        }
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

    /// Queued at once, in call order; resolves when the server has the message (acknowledged
    /// under stream management, else written to the connection).
    fn send_message(
        &self,
        chat: &ChatId,
        message: &OutgoingMessage,
    ) -> impl Future<Output = Result<(), BackendError>> + Send + 'static {
        let text = message.text.clone();
        let request = BareJid::new(&chat.0)
            .map_err(|_| BackendError::InvalidContact)
            .map(|to| self.request(|reply| Command::Send { to, text, reply }));
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
