//! Object-safe versions of the bridges/api traits, so the rest of the core holds any backend
//! without naming it, and [`networks`]: the backends of other networks compiled into this
//! build (Cargo features `xmpp` and `matrix`), the one place that names them. (The local
//! backend is named where the server registers every backend, `crate::server`.)
//!
//! `Backend` and `BackendSession` return `impl Future`, which keeps each backend free of boxing
//! but makes the traits unusable as `dyn`. The blanket impls here box each call's future once,
//! which costs an allocation per action: nothing next to a network round trip.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use msngate_bridge_api::{
    Backend, BackendError, BackendSession, Capabilities, ChatId, Credentials, EventSender, LinkArg,
    LinkError, LinkRequest, Linked, Linker, List, OutgoingMessage, PresenceState, Setting,
    StoredLink,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`BackendSession`], object-safe.
pub trait Session: Send + Sync + 'static {
    fn set_presence<'a>(
        &'a self,
        state: PresenceState,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    fn add_contact<'a>(
        &'a self,
        list: List,
        handle: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    fn remove_contact<'a>(
        &'a self,
        list: List,
        handle: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    fn set_contact_groups<'a>(
        &'a self,
        handle: &'a str,
        groups: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    fn open_chat<'a>(&'a self, handle: &'a str) -> BoxFuture<'a, Result<ChatId, BackendError>>;
    /// Queued at the call, like [`BackendSession::send_message`].
    fn send_message(
        &self,
        chat: &ChatId,
        message: &OutgoingMessage,
    ) -> BoxFuture<'static, Result<(), BackendError>>;
    fn send_typing<'a>(&'a self, chat: &'a ChatId) -> BoxFuture<'a, Result<(), BackendError>>;
    fn invite<'a>(
        &'a self,
        chat: &'a ChatId,
        handle: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    fn leave_chat<'a>(&'a self, chat: &'a ChatId) -> BoxFuture<'a, Result<(), BackendError>>;
    fn logout(&self) -> BoxFuture<'_, ()>;
}

impl<S: BackendSession> Session for S {
    fn set_presence<'a>(
        &'a self,
        state: PresenceState,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(BackendSession::set_presence(self, state, name))
    }
    fn add_contact<'a>(
        &'a self,
        list: List,
        handle: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(BackendSession::add_contact(self, list, handle, name))
    }
    fn remove_contact<'a>(
        &'a self,
        list: List,
        handle: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(BackendSession::remove_contact(self, list, handle))
    }
    fn set_contact_groups<'a>(
        &'a self,
        handle: &'a str,
        groups: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(BackendSession::set_contact_groups(self, handle, groups))
    }
    fn open_chat<'a>(&'a self, handle: &'a str) -> BoxFuture<'a, Result<ChatId, BackendError>> {
        Box::pin(BackendSession::open_chat(self, handle))
    }
    fn send_message(
        &self,
        chat: &ChatId,
        message: &OutgoingMessage,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        Box::pin(BackendSession::send_message(self, chat, message))
    }
    fn send_typing<'a>(&'a self, chat: &'a ChatId) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(BackendSession::send_typing(self, chat))
    }
    fn invite<'a>(
        &'a self,
        chat: &'a ChatId,
        handle: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(BackendSession::invite(self, chat, handle))
    }
    fn leave_chat<'a>(&'a self, chat: &'a ChatId) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(BackendSession::leave_chat(self, chat))
    }
    fn logout(&self) -> BoxFuture<'_, ()> {
        Box::pin(BackendSession::logout(self))
    }
}

/// [`Backend`], object-safe.
pub trait AnyBackend: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    fn login(
        &self,
        credentials: Credentials,
        events: EventSender,
    ) -> BoxFuture<'_, Result<Box<dyn Session>, BackendError>>;
}

impl<B: Backend> AnyBackend for B {
    fn name(&self) -> &'static str {
        Backend::name(self)
    }
    fn capabilities(&self) -> Capabilities {
        Backend::capabilities(self)
    }
    fn login(
        &self,
        credentials: Credentials,
        events: EventSender,
    ) -> BoxFuture<'_, Result<Box<dyn Session>, BackendError>> {
        Box::pin(async move {
            let session = Backend::login(self, credentials, events).await?;
            Ok(Box::new(session) as Box<dyn Session>)
        })
    }
}

/// [`Linker`], object-safe, with the [`Backend`] it belongs to.
pub trait AnyLinker: AnyBackend {
    fn link_help(&self) -> &'static str;
    fn link_args(&self) -> &'static [LinkArg];
    fn link(&self, request: LinkRequest) -> BoxFuture<'_, Result<Linked, LinkError>>;
    fn check<'a>(&'a self, linked: &'a Linked) -> BoxFuture<'a, Result<(), LinkError>>;
    fn unlink(&self, link: StoredLink) -> BoxFuture<'_, Result<Option<String>, LinkError>>;
    fn settings(&self) -> &'static [Setting];
    fn check_setting(&self, key: &str, value: &str) -> Result<(), String>;
    /// The same backend, for logging in.
    fn backend(self: Arc<Self>) -> Arc<dyn AnyBackend>;
}

impl<L: Linker> AnyLinker for L {
    fn link_help(&self) -> &'static str {
        Linker::link_help(self)
    }
    fn link_args(&self) -> &'static [LinkArg] {
        Linker::link_args(self)
    }
    fn link(&self, request: LinkRequest) -> BoxFuture<'_, Result<Linked, LinkError>> {
        Box::pin(Linker::link(self, request))
    }
    fn check<'a>(&'a self, linked: &'a Linked) -> BoxFuture<'a, Result<(), LinkError>> {
        Box::pin(Linker::check(self, linked))
    }
    fn unlink(&self, link: StoredLink) -> BoxFuture<'_, Result<Option<String>, LinkError>> {
        Box::pin(Linker::unlink(self, link))
    }
    fn settings(&self) -> &'static [Setting] {
        Linker::settings(self)
    }
    fn check_setting(&self, key: &str, value: &str) -> Result<(), String> {
        Linker::check_setting(self, key, value)
    }
    fn backend(self: Arc<Self>) -> Arc<dyn AnyBackend> {
        self
    }
}

/// The backends of other networks compiled into this build, in the order `msngate user link`
/// lists them: the one place that names them.
// Pushed one by one, each line depending on a feature.
#[allow(unused_mut, clippy::vec_init_then_push)]
pub fn networks() -> Vec<Arc<dyn AnyLinker>> {
    let mut networks: Vec<Arc<dyn AnyLinker>> = Vec::new();
    #[cfg(feature = "xmpp")]
    networks.push(Arc::new(msngate_bridge_xmpp::XmppBackend));
    #[cfg(feature = "matrix")]
    networks.push(Arc::new(msngate_bridge_matrix::MatrixBackend));
    networks
}

/// Every network msngate has a backend for, whether this build has it or not: links, commands
/// and configuration tables for one left out get a clear answer rather than a puzzling one.
pub const KNOWN_NETWORKS: &[&str] = &["xmpp", "matrix"];

/// The backend of another network named `name`, if this build has it.
pub fn network(name: &str) -> Option<Arc<dyn AnyLinker>> {
    networks().into_iter().find(|n| n.name() == name)
}
