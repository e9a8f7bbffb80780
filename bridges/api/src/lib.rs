//! The interface between msngate's MSN core and the backends that hold an account's contacts:
//! the local backend (accounts on this server), XMPP and Matrix.
//!
//! Two levels, after mautrix bridgev2's NetworkConnector/NetworkAPI and BitlBee's prpl:
//! a [`Backend`] per process, which logs users in, and a [`BackendSession`] per logged-in
//! user, whose methods are the user's outgoing actions. Each action is an async method
//! returning a `Result`, because every MSN command needs an answer with its TrID. Everything
//! that happens on the backend's side arrives as a [`BackendEvent`] on the channel given at
//! login.
//!
//! Contacts are named by MSN handles: each backend owns a reversible mapping between its own
//! ids (JIDs, Matrix ids, rooms) and handles, and documents it. This crate knows nothing of
//! the MSN wire protocol and does no I/O.
//!
//! A backend of another network also implements [`Linker`]: how an MSN account is linked to an
//! account there, and the backend's settings.

mod link;

use std::fmt;
use std::future::Future;

pub use link::{LinkArg, LinkArgKind, LinkError, LinkRequest, Linked, Linker, Setting, StoredLink};

/// A contact's or the user's own state, in MSN's terms. Backends map their presence model to
/// these and back (XMPP show + status, Matrix presence + status_msg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceState {
    Online,
    Busy,
    Idle,
    BeRightBack,
    Away,
    OnThePhone,
    OutToLunch,
    /// The user's own invisible state: contacts see them offline, they still see contacts.
    Hidden,
    Offline,
}

impl PresenceState {
    /// The states in which contacts see someone (all but Hidden and Offline).
    pub const VISIBLE: [PresenceState; 7] = [
        PresenceState::Online,
        PresenceState::Busy,
        PresenceState::Idle,
        PresenceState::BeRightBack,
        PresenceState::Away,
        PresenceState::OnThePhone,
        PresenceState::OutToLunch,
    ];
}

/// One of a user's four MSN lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum List {
    /// Contacts whose state the user watches.
    Forward,
    /// Contacts explicitly allowed to see the user.
    Allow,
    /// Contacts explicitly blocked.
    Block,
    /// Contacts who watch the user (or asked to): only the backend changes it.
    Reverse,
}

/// Whether a contact is a person or a group conversation presented as a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContactKind {
    Person,
    Group,
}

/// A contact as the backend knows it, and the lists it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The MSN handle the backend maps this contact to.
    pub handle: String,
    /// The display name (decoded text, not URL-encoded).
    pub name: String,
    pub kind: ContactKind,
    pub lists: Vec<List>,
    /// The groups the contact is in, by name as the network has them (XMPP roster groups;
    /// Matrix "People" or "Rooms"); empty for none. MSN shows each as a group (MSNP7).
    pub groups: Vec<String>,
}

/// A conversation: a 1:1 chat or a group, named by the backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChatId(pub String);

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message from the user to a chat, already taken out of its MSN MIME envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub text: String,
}

/// The backend's connection, after mautrix bridgev2's bridge states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    Connected,
    /// Lost for now; the backend is reconnecting with backoff by itself.
    TransientDisconnect {
        reason: String,
    },
    /// The backend refused the account's credentials; it will not retry.
    BadCredentials,
}

/// Something that happened on the backend's side, for the MSN core to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEvent {
    Connection(ConnectionState),
    /// The whole contact list, at login and after a reconnection.
    ContactList(Vec<Contact>),
    /// A contact was added or changed (name, lists).
    ContactChanged(Contact),
    ContactRemoved {
        handle: String,
    },
    /// Someone asked to watch the user: MSN shows it as an addition to the RL.
    AddedBy {
        handle: String,
        name: String,
    },
    Presence {
        handle: String,
        state: PresenceState,
        name: Option<String>,
    },
    /// A message in a chat. `id` lets the core drop a redelivery.
    Message {
        chat: ChatId,
        from: String,
        name: String,
        text: String,
        id: Option<String>,
    },
    Typing {
        chat: ChatId,
        from: String,
    },
    /// Someone (a group occupant, or the peer of a 1:1 chat) joined a chat.
    Joined {
        chat: ChatId,
        handle: String,
        name: String,
    },
    Left {
        chat: ChatId,
        handle: String,
    },
}

/// What a backend can do beyond the basics; the core refuses the rest with an MSN error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub group_chats: bool,
    pub typing: bool,
    pub blocking: bool,
    pub presence: bool,
    pub offline_messages: bool,
}

/// Why a backend action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("the backend rejected the credentials")]
    BadCredentials,
    #[error("the backend is unreachable: {0}")]
    Unreachable(String),
    #[error("this backend does not support that")]
    Unsupported,
    #[error("no such contact")]
    NoSuchContact,
    #[error("not a valid contact for this backend")]
    InvalidContact,
    #[error("already on that list")]
    AlreadyThere,
    #[error("not on that list")]
    NotThere,
    #[error("allow and block are exclusive")]
    Conflict,
    #[error("the list is full")]
    ListFull,
    #[error("the contact can't be reached")]
    NotReachable,
    #[error("the backend refused: {0}")]
    Rejected(String),
    #[error("the connection to the backend is down")]
    Disconnected,
    #[error("backend failure: {0}")]
    Internal(String),
}

/// Credentials for logging a user in. What they mean is the backend's business.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The MSN handle the user logged in with.
    pub msn_handle: String,
    /// The backend account (a JID, a Matrix user id); empty for the local backend.
    pub account: String,
    /// The backend secret (password, token). Never printed.
    pub secret: String,
    /// Backend-specific settings (server address, device id...).
    pub options: Vec<(String, String)>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("msn_handle", &self.msn_handle)
            .field("account", &self.account)
            .field("secret", &"[redacted]")
            .field(
                "options",
                &self.options.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The delay before reconnection attempt `attempt` (0-based), for every backend: doubling from
/// 0.5 s up to 60 s, each multiplied by a random factor between 0.5 and 1.5 so that many
/// sessions cut off by one outage don't all come back in the same instant.
pub fn reconnect_backoff(attempt: u32) -> std::time::Duration {
    use std::time::Duration;
    let base = Duration::from_millis(500u64 << attempt.min(7)).min(Duration::from_secs(60));
    base.mul_f64(0.5 + rand::random::<f64>())
}

/// How long [`Backend::login`] may take. A backend that has not heard from its server by then
/// (the server is down, silent or frozen) returns a session that keeps connecting in the
/// background and reports what happens as [`ConnectionState`] events; a refusal it learns of
/// later is [`ConnectionState::BadCredentials`], and it does not retry after one.
pub const LOGIN_BOUND: std::time::Duration = std::time::Duration::from_secs(3);

/// How long the future of [`BackendSession::send_message`] may take to resolve. By then it is
/// `Ok` (the other network has the message) or `Err` (the message was not sent and never will
/// be): a message the user was told failed must not turn up later.
pub const SEND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// How long the other actions (list changes, opening a chat) may take before the core gives
/// up waiting and answers the client with an error. The backend may still finish the action;
/// it then reports the change as an event like any other.
pub const ACTION_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a session's events go. Bounded: a backend that can't deliver waits.
pub type EventSender = tokio::sync::mpsc::Sender<BackendEvent>;

/// A kind of account backend, one per process.
pub trait Backend: Send + Sync + 'static {
    type Session: BackendSession;

    /// A short name for logs and `user list` ("local", "xmpp", "matrix").
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Logs a user in, within [`LOGIN_BOUND`]. `Err(BadCredentials)` means the account is
    /// refused for good; a backend that is merely unreachable, or has no answer yet, returns a
    /// session that keeps connecting (reporting [`ConnectionState`] events) instead of an error.
    fn login(
        &self,
        credentials: Credentials,
        events: EventSender,
    ) -> impl Future<Output = Result<Self::Session, BackendError>> + Send;
}

/// One logged-in user's backend session: the user's outgoing actions.
pub trait BackendSession: Send + Sync + 'static {
    /// Sets the user's own state and display name, as contacts see them. Returns once the
    /// change is queued; it never waits on the network (the MSN client's CHG is answered at
    /// once), and a later call's state wins over an earlier one still waiting.
    fn set_presence(
        &self,
        state: PresenceState,
        name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Adds a contact to the FL, AL or BL.
    fn add_contact(
        &self,
        list: List,
        handle: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Removes a contact from the FL, AL or BL.
    fn remove_contact(
        &self,
        list: List,
        handle: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Puts a contact in exactly these groups (names; empty for none), keeping everything
    /// else about it. A network whose groups the user cannot change answers `Unsupported`.
    fn set_contact_groups(
        &self,
        handle: &str,
        groups: &[String],
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let _ = (handle, groups);
        async { Err(BackendError::Unsupported) }
    }

    /// Opens (or finds) the chat with a contact, person or group.
    fn open_chat(&self, handle: &str) -> impl Future<Output = Result<ChatId, BackendError>> + Send;

    /// Sends a message. The message is queued when this method is called, so messages go
    /// out in call order; the returned future (which holds no borrow) resolves once the
    /// backend's server has the message, and within [`SEND_DEADLINE`] in any case (see there).
    fn send_message(
        &self,
        chat: &ChatId,
        message: &OutgoingMessage,
    ) -> impl Future<Output = Result<(), BackendError>> + Send + 'static;

    /// Tells the chat the user is typing.
    fn send_typing(&self, chat: &ChatId) -> impl Future<Output = Result<(), BackendError>> + Send {
        let _ = chat;
        async { Err(BackendError::Unsupported) }
    }

    /// Brings another contact into a chat (a group, or turning a 1:1 chat into one).
    fn invite(
        &self,
        chat: &ChatId,
        handle: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let _ = (chat, handle);
        async { Err(BackendError::Unsupported) }
    }

    /// The user left the chat (closed the conversation window).
    fn leave_chat(&self, chat: &ChatId) -> impl Future<Output = Result<(), BackendError>> + Send {
        let _ = chat;
        async { Ok(()) }
    }

    /// Ends the session: contacts see the user go offline.
    fn logout(&self) -> impl Future<Output = ()> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_their_secret() {
        let c = Credentials {
            msn_handle: "a@b.c".into(),
            account: "a@xmpp.example".into(),
            secret: "hunter2".into(),
            options: vec![("server".into(), "127.0.0.1:5222".into())],
        };
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("127.0.0.1"), "{printed}");
        assert!(printed.contains("a@xmpp.example"));
    }

    #[test]
    fn reconnect_backoff_grows_with_jitter_and_a_ceiling() {
        for attempt in 0..20 {
            let base = ((500u64 << attempt.min(7)) as f64 / 1000.0).min(60.0);
            let d = reconnect_backoff(attempt).as_secs_f64();
            assert!(d >= base * 0.5 && d <= base * 1.5, "attempt {attempt}: {d}");
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| reconnect_backoff(3)).collect();
        assert!(samples.len() > 1, "no jitter");
    }

    struct Minimal;

    impl BackendSession for Minimal {
        async fn set_presence(&self, _: PresenceState, _: &str) -> Result<(), BackendError> {
            Ok(())
        }
        async fn add_contact(&self, _: List, _: &str, _: &str) -> Result<(), BackendError> {
            Ok(())
        }
        async fn remove_contact(&self, _: List, _: &str) -> Result<(), BackendError> {
            Ok(())
        }
        async fn open_chat(&self, handle: &str) -> Result<ChatId, BackendError> {
            Ok(ChatId(handle.into()))
        }
        fn send_message(
            &self,
            _: &ChatId,
            _: &OutgoingMessage,
        ) -> impl Future<Output = Result<(), BackendError>> + Send + 'static {
            std::future::ready(Ok(()))
        }
        async fn logout(&self) {}
    }

    #[tokio::test]
    async fn optional_abilities_default_to_unsupported() {
        let s = Minimal;
        let chat = s.open_chat("x@y.z").await.unwrap();
        assert_eq!(s.send_typing(&chat).await, Err(BackendError::Unsupported));
        assert_eq!(
            s.invite(&chat, "q@y.z").await,
            Err(BackendError::Unsupported)
        );
        assert_eq!(s.leave_chat(&chat).await, Ok(()));
        assert_eq!(
            s.set_contact_groups("q@y.z", &["Friends".into()]).await,
            Err(BackendError::Unsupported)
        );
    }
}
