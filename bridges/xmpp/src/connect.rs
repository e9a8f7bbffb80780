//! Connecting and authenticating one XMPP stream, and the reconnector that keeps a session's
//! stream alive.
//!
//! tokio-xmpp's own reconnector retries authentication failures forever and without jitter;
//! this one treats a refused password as final (reported as `BadCredentials`, never retried)
//! and spreads reconnection attempts with exponential backoff and random jitter.
//!
//! SCRAM channel binding (the `-PLUS` mechanisms) is used only when the server lists the
//! binding type in its stream features (XEP-0440): see [`usable_binding`]. A connection after
//! one that never came online does not try to resume the old session: see [`OnlineFlag`].

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msngate_bridge_api::{BackendEvent, ConnectionState, EventSender};
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_xmpp::connect::starttls::starttls;
use tokio_xmpp::connect::tls_common::TlsStream;
use tokio_xmpp::connect::{DnsConfig, ServerConnector};
use tokio_xmpp::error::ProtocolError;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::sasl_cb::Type as ChannelBindingType;
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::stanzastream::Connection;
use tokio_xmpp::xmlstream::{initiate_stream, PendingFeaturesRecv, StreamHeader, Timeouts};

/// Where and how to connect an account.
#[derive(Clone)]
pub struct Target {
    pub jid: BareJid,
    pub password: String,
    /// `host:port` instead of a DNS SRV lookup.
    pub server: Option<String>,
    /// Plain TCP, only when the account's link opted in explicitly.
    pub plaintext: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("jid", &self.jid)
            .field("server", &self.server)
            .field("plaintext", &self.plaintext)
            .finish_non_exhaustive()
    }
}

/// Why one connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The server refused the credentials.
    Auth,
    /// Anything else: unreachable, TLS, timeout... worth retrying.
    Other(String),
}

/// How long one whole connection attempt (DNS, TCP, TLS, SASL, features) may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// One connection attempt, authenticated and ready for resource binding.
pub async fn connect_once(target: &Target) -> Result<Connection, ConnectError> {
    install_crypto_provider();
    let dns = match &target.server {
        Some(address) => DnsConfig::addr(address),
        None => DnsConfig::srv_default_client(target.jid.domain().as_str()),
    };
    let attempt = async {
        if target.plaintext {
            login_with(PlainTcp(dns), target).await
        } else {
            login_with(StartTls(dns), target).await
        }
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Other("connection attempt timed out".into())),
    }
}

/// tokio-xmpp's two connectors (STARTTLS, and plain TCP where a link opted in), with Nagle's
/// algorithm off. A chat stanza is one small write; with Nagle on, a write made while the
/// server has not yet acknowledged the previous one waits for the server's delayed ACK, up to
/// 40 ms on Linux: measured, that doubled a message's round trip through a quick server
/// (docs/SCALING.md, "The price of the bridge").
#[derive(Debug, Clone)]
struct StartTls(DnsConfig);

#[derive(Debug, Clone)]
struct PlainTcp(DnsConfig);

async fn tcp_without_nagle(dns: &DnsConfig) -> Result<BufStream<TcpStream>, tokio_xmpp::Error> {
    let stream = dns.resolve().await?;
    stream.set_nodelay(true)?;
    Ok(BufStream::new(stream))
}

async fn open_stream<S: tokio_xmpp::connect::AsyncReadAndWrite>(
    io: S,
    jid: &Jid,
    ns: &'static str,
    timeouts: Timeouts,
) -> Result<PendingFeaturesRecv<S>, tokio_xmpp::Error> {
    let header = StreamHeader {
        to: Some(Cow::Borrowed(jid.domain().as_str())),
        from: None,
        id: None,
    };
    Ok(initiate_stream(io, ns, header, timeouts).await?)
}

impl ServerConnector for PlainTcp {
    type Stream = BufStream<TcpStream>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let io = tcp_without_nagle(&self.0).await?;
        Ok((
            open_stream(io, jid, ns, timeouts).await?,
            ChannelBinding::None,
        ))
    }
}

impl ServerConnector for StartTls {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let (plain, _) = PlainTcp(self.0.clone()).connect(jid, ns, timeouts).await?;
        let (features, plain) = plain.recv_features().await?;
        if !features.can_starttls() {
            return Err(tokio_xmpp::Error::Protocol(ProtocolError::NoTls));
        }
        let (tls, binding) = starttls(plain, jid.domain().as_str()).await?;
        Ok((
            open_stream(BufStream::new(tls), jid, ns, timeouts).await?,
            binding,
        ))
    }
}

/// Makes ring rustls' process-wide crypto provider, once. tokio-xmpp builds its TLS config
/// with rustls' process default, which rustls picks by itself only when exactly one provider
/// is compiled in; matrix-sdk's reqwest compiles in aws-lc-rs next to our ring, and then
/// every TLS connection would panic. (reqwest names its provider explicitly: unaffected.)
pub fn install_crypto_provider() {
    let _ = tokio_xmpp::rustls::crypto::ring::default_provider().install_default();
}

fn other(e: impl std::fmt::Display) -> ConnectError {
    ConnectError::Other(e.to_string())
}

async fn login_with<C: ServerConnector>(
    connector: C,
    target: &Target,
) -> Result<Connection, ConnectError> {
    let jid = Jid::from(target.jid.clone());
    let username = target
        .jid
        .node()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default();
    let timeouts = Timeouts::tight();
    let (stream, binding) = connector
        .connect(&jid, ns::JABBER_CLIENT, timeouts)
        .await
        .map_err(other)?;
    let (features, stream) = stream.recv_features().await.map_err(other)?;
    let credentials = Credentials::default()
        .with_username(username)
        .with_password(target.password.clone())
        .with_channel_binding(usable_binding(binding, &features));
    let stream = match tokio_xmpp::client_login(stream, features.sasl_mechanisms, credentials).await
    {
        Ok(s) => s,
        Err(tokio_xmpp::Error::Auth(_)) => return Err(ConnectError::Auth),
        Err(e) => return Err(other(e)),
    };
    let stream = stream
        .send_header(StreamHeader {
            to: Some(Cow::Borrowed(target.jid.domain().as_str())),
            from: None,
            id: None,
        })
        .await
        .map_err(other)?;
    let (features, stream): (StreamFeatures, _) = stream.recv_features().await.map_err(other)?;
    Ok(Connection {
        stream: stream.box_stream(),
        features,
        identity: jid,
    })
}

/// The channel binding to authenticate with: the TLS connection's, if the server announced
/// (XEP-0440) that it supports that type; none otherwise.
///
/// With a binding, tokio-xmpp picks `SCRAM-*-PLUS` whenever the server offers it, and over
/// TLS 1.3 its binding is `tls-exporter`. Servers that offer `-PLUS` without XEP-0440 may know
/// only `tls-unique` (which TLS 1.3 lacks): ejabberd 23.01 does, and refuses the right password
/// with `not-authorized` ("Invalid channel binding"), which would read as bad credentials.
/// Without a binding the client says so (`n`, plain `SCRAM-*`), which every server accepts.
fn usable_binding(binding: ChannelBinding, features: &StreamFeatures) -> ChannelBinding {
    let announced = |wanted: ChannelBindingType| {
        features
            .sasl_cb
            .as_ref()
            .is_some_and(|cb| cb.types.contains(&wanted))
    };
    let usable = match &binding {
        ChannelBinding::TlsExporter(_) => announced(ChannelBindingType::TlsExporter),
        ChannelBinding::TlsUnique(_) => announced(ChannelBindingType::TlsUnique),
        ChannelBinding::None | ChannelBinding::Unsupported => true,
    };
    if usable {
        binding
    } else {
        ChannelBinding::None
    }
}

/// Whether the connection last handed to the stanza stream came online (the session saw it
/// bound or resumed). Shared by the reconnector and the session task.
///
/// tokio-xmpp 6 resumes a lost session (XEP-0198) on the next connection, and when the
/// server's answer to that is one it can't parse, it drops the connection but keeps the old
/// session's state, and tries to resume it again on every new connection, forever, as fast as
/// connections succeed. ejabberd 23.01 refuses a resumption it can't honour (after a restart,
/// or once its 300 s resumption window has passed) with `<failed/>` without the optional `h`
/// attribute, which xmpp-parsers 0.23 requires. So a connection that follows one that never
/// came online offers no stream management to tokio-xmpp: the old state is dropped, a fresh
/// session is bound, and the one after that enables stream management again.
#[derive(Clone, Debug)]
pub struct OnlineFlag(Arc<AtomicBool>);

impl OnlineFlag {
    /// A flag for a session with no connection yet: the first one may resume nothing anyway.
    pub fn new() -> Self {
        OnlineFlag(Arc::new(AtomicBool::new(true)))
    }

    /// The session saw the current connection come online.
    pub fn came_online(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// The next connection binds a new session instead of resuming this one, so that what
    /// tokio-xmpp still holds unacknowledged for resumption is dropped, never sent: a message
    /// whose sender was told it failed must not go out later.
    pub fn forget_session(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Gives `connection` to the stanza stream (see the type's notes).
    fn hand_over(&self, mut connection: Connection, slot: oneshot::Sender<Connection>) {
        let previous_came_online = self.0.swap(false, Ordering::SeqCst);
        if !previous_came_online && connection.features.stream_management.is_some() {
            tracing::info!(
                jid = %connection.identity,
                "the last XMPP connection never came online; binding a new session instead of resuming"
            );
            connection.features.stream_management = None;
        }
        let _ = slot.send(connection);
    }
}

impl Default for OnlineFlag {
    fn default() -> Self {
        Self::new()
    }
}

/// The connection made at logon, as far as it got within [`msngate_bridge_api::LOGIN_BOUND`].
pub enum First {
    /// Connected and authenticated: the stanza stream's first connection.
    Ready(Box<Connection>),
    /// Still under way (a server that accepted TCP and has not answered yet): the stanza
    /// stream takes it if it succeeds; a refusal is final, anything else is retried.
    Pending(tokio::task::JoinHandle<Result<Connection, ConnectError>>),
    /// Failed for a reason worth retrying (already reported).
    Failed,
}

/// The delay before reconnection attempt `attempt` (0-based) after a connection was lost or
/// failed: [`msngate_bridge_api::reconnect_backoff`], so already jittered before the first
/// attempt (many sessions cut off by one outage don't all come back in the same instant).
pub fn retry_delay(attempt: u32) -> Duration {
    msngate_bridge_api::reconnect_backoff(attempt)
}

/// The reconnector given to the stanza stream: the first call hands over the connection made
/// at login (or waits for the attempt still under way); later calls reconnect in the
/// background, after a jittered delay that grows with each failure.
pub fn reconnector(
    target: Target,
    first: First,
    events: EventSender,
    online: OnlineFlag,
) -> Box<dyn FnMut(Option<String>, oneshot::Sender<Connection>) + Send + 'static> {
    let first = Arc::new(Mutex::new(Some(first)));
    Box::new(move |_location, slot| {
        let first = first.lock().ok().and_then(|mut f| f.take());
        let (target, events, online) = (target.clone(), events.clone(), online.clone());
        if let Some(First::Ready(connection)) = first {
            online.hand_over(*connection, slot);
            return;
        }
        tokio::spawn(async move {
            // The first attempt of a reconnection is itself delayed (with jitter): the loss of
            // the last connection is the first failure.
            let mut pending = None;
            let mut attempt = 0;
            match first {
                Some(First::Pending(attempt)) => pending = Some(attempt),
                Some(First::Failed) | None => {}
                Some(First::Ready(_)) => return,
            }
            loop {
                let result = match pending.take() {
                    Some(handle) => handle
                        .await
                        .unwrap_or_else(|e| Err(ConnectError::Other(e.to_string()))),
                    None => {
                        let delay = retry_delay(attempt);
                        tracing::debug!(jid = %target.jid, ?delay, "reconnecting to the XMPP server");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                        connect_once(&target).await
                    }
                };
                match result {
                    Ok(connection) => {
                        online.hand_over(connection, slot);
                        return;
                    }
                    Err(ConnectError::Auth) => {
                        tracing::warn!(jid = %target.jid, "the XMPP server refused the credentials; not retrying");
                        let _ = events
                            .send(BackendEvent::Connection(ConnectionState::BadCredentials))
                            .await;
                        // Dropping the slot ends the stanza stream for good.
                        return;
                    }
                    Err(ConnectError::Other(reason)) => {
                        tracing::info!(jid = %target.jid, %reason, "XMPP connection failed; retrying");
                        let state = ConnectionState::TransientDisconnect { reason };
                        let _ = events.send(BackendEvent::Connection(state)).await;
                    }
                }
            }
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::parsers::sasl_cb::SaslChannelBinding;

    fn features(types: Option<Vec<ChannelBindingType>>) -> StreamFeatures {
        StreamFeatures {
            sasl_cb: types.map(|types| SaslChannelBinding { types }),
            ..StreamFeatures::default()
        }
    }

    #[test]
    fn the_first_reconnection_attempt_is_already_jittered() {
        let first: std::collections::HashSet<_> = (0..20).map(|_| retry_delay(0)).collect();
        assert!(first.len() > 1, "no jitter before the first attempt");
        for d in first {
            assert!(
                d >= Duration::from_millis(250) && d <= Duration::from_millis(750),
                "{d:?}"
            );
        }
        assert!(retry_delay(5) >= Duration::from_secs(8), "no backoff");
    }

    #[test]
    fn binding_is_used_only_when_announced() {
        let exporter = ChannelBinding::TlsExporter(vec![7; 32]);
        // ejabberd 23.01: -PLUS offered, no XEP-0440, tls-unique only.
        assert_eq!(
            usable_binding(exporter.clone(), &features(None)),
            ChannelBinding::None
        );
        assert_eq!(
            usable_binding(
                exporter.clone(),
                &features(Some(vec![ChannelBindingType::TlsUnique]))
            ),
            ChannelBinding::None
        );
        let announced = features(Some(vec![
            ChannelBindingType::TlsServerEndPoint,
            ChannelBindingType::TlsExporter,
        ]));
        assert_eq!(usable_binding(exporter.clone(), &announced), exporter);
        assert_eq!(
            usable_binding(ChannelBinding::None, &announced),
            ChannelBinding::None
        );
    }
}
