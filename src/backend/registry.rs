//! Object-safe versions of the bridges/api traits, so the rest of the core holds any backend
//! without naming it.
//!
//! `Backend` and `BackendSession` return `impl Future`, which keeps each backend free of boxing
//! but makes the traits unusable as `dyn`. The blanket impls here box each call's future once,
//! which costs an allocation per action: nothing next to a network round trip.

use std::future::Future;
use std::pin::Pin;

use msngate_bridge_api::{
    Backend, BackendError, BackendSession, Capabilities, ChatId, Credentials, EventSender, List,
    OutgoingMessage, PresenceState,
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
