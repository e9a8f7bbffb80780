//! msncd: the line protocol that lets a shell script or bot be a messenger user
//! (docs/msncd.md), served on a Unix socket or a loopback TCP port.
//!
//! Each connection that logs in drives an MSN client inside the server ([`client`]) that
//! talks MSNP2 to msngate's own notification server and switchboard, so a script reaches the
//! same accounts and backends as any MSN client.

pub mod client;
pub mod events;

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, warn, Instrument};

use crate::config::MsncdConfig;
use crate::protocol::{FriendlyName, ListKind, UserHandle, MAX_PAYLOAD_BYTES};
use client::{lock, Addresses, ClientError, MsnClient};
use events::{status_from_word, status_word};

/// The longest line a script may send, without its newline.
pub const MAX_LINE_BYTES: usize = 2048;
/// The most lines one SENDMSG may announce.
pub const MAX_MESSAGE_LINES: usize = 256;
/// How long a write to a script may block before the script is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why msncd could not start listening.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("msncd.listen = {0}: must be a loopback address")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {address}: {source}")]
    Tcp {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("cannot create the socket {path}: {source}")]
    Unix { path: PathBuf, source: io::Error },
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("{0} is in use by a running process")]
    InUse(PathBuf),
}

/// The msncd listeners that were started.
#[derive(Debug, Default)]
pub struct Listening {
    /// The TCP address actually bound, if any.
    pub tcp: Option<SocketAddr>,
    /// The Unix socket, if any.
    pub unix_socket: Option<PathBuf>,
}

struct Context {
    addresses: Addresses,
    max_events: usize,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    limit: Arc<Semaphore>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Starts the configured listeners (none by default). `addresses` are the notification
/// server and switchboard as bound; unspecified addresses (0.0.0.0) are reached on loopback.
pub async fn start(
    config: &MsncdConfig,
    addresses: Addresses,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Listening, ListenError> {
    let loopback = |mut a: SocketAddr| {
        if a.ip().is_unspecified() {
            a.set_ip(match a {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        a
    };
    let context = Arc::new(Context {
        addresses: Addresses {
            notification: loopback(addresses.notification),
            switchboard: loopback(addresses.switchboard),
        },
        max_events: config.max_events,
        tracker: tracker.clone(),
        shutdown,
        limit: Arc::new(Semaphore::new(config.max_connections)),
        metrics,
    });
    let mut listening = Listening::default();
    if let Some(address) = config.listen {
        if !address.ip().is_loopback() {
            return Err(ListenError::NotLoopback(address));
        }
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ListenError::Tcp { address, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ListenError::Tcp { address, source })?;
        info!(address = %bound, "msncd is listening");
        listening.tcp = Some(bound);
        tracker.spawn(accept_tcp(listener, context.clone()));
    }
    if let Some(path) = &config.unix_socket {
        let listener = bind_unix(path)?;
        info!(path = %path.display(), "msncd is listening");
        listening.unix_socket = Some(path.clone());
        tracker.spawn(accept_unix(listener, path.clone(), context));
    }
    Ok(listening)
}

/// Binds a Unix socket that only its owner can use. It is created in a fresh directory only
/// the owner can enter, made 0600, and then renamed into place, so nobody else can ever
/// connect to it. A stale socket file (nothing listening) is replaced; anything else is not.
fn bind_unix(path: &Path) -> Result<UnixListener, ListenError> {
    let err = |source| ListenError::Unix {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ListenError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        Ok(_) => return Err(ListenError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let private = parent.join(format!(
        ".msncd-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(err)?;
    let temporary = private.join("socket");
    let result = (|| {
        let listener = UnixListener::bind(&temporary)?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&temporary, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&temporary);
    let _ = std::fs::remove_dir(&private);
    result.map_err(err)
}

async fn accept_tcp(listener: TcpListener, context: Arc<Context>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = context.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                // An event written right after a reply must not wait for the script's ACK.
                let _ = stream.set_nodelay(true);
                spawn_connection(stream, peer.to_string(), &context)
            }
            Err(e) => {
                warn!(error = %e, "msncd accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn accept_unix(listener: UnixListener, path: PathBuf, context: Arc<Context>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = context.shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => spawn_connection(stream, "unix".into(), &context),
            Err(e) => {
                warn!(error = %e, "msncd accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

fn spawn_connection<S>(stream: S, peer: String, context: &Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Ok(permit) = context.limit.clone().try_acquire_owned() else {
        warn!(%peer, "msncd connection limit reached; closing the new connection");
        return;
    };
    let context2 = context.clone();
    context.tracker.spawn(
        async move {
            let open = context2.metrics.connections(crate::metrics::Role::Msncd);
            open.inc();
            serve(stream, &context2).await;
            open.dec();
            drop(permit);
        }
        .instrument(info_span!("msncd", %peer, handle = tracing::field::Empty)),
    );
}

/// Reads a script's lines, each at most [`MAX_LINE_BYTES`]; a longer line is skipped and
/// reported, not fatal.
struct ScriptLines<R> {
    reader: R,
    buf: BytesMut,
    skipping: bool,
}

/// One line from a script, or why it can't be used.
type ScriptLine = Result<String, &'static str>;

impl<R: AsyncRead + Unpin> ScriptLines<R> {
    /// The next line; `None` when the script closed the connection.
    async fn next(&mut self) -> Option<ScriptLine> {
        loop {
            if let Some(newline) = self.buf.iter().position(|&b| b == b'\n') {
                let raw = self.buf.split_to(newline + 1);
                let line = &raw[..newline];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                // The same bound wherever the line falls in what was read: a line that
                // arrived whole in one read is measured like one that arrived in pieces.
                if std::mem::take(&mut self.skipping) || line.len() > MAX_LINE_BYTES {
                    return Some(Err("line too long"));
                }
                return Some(String::from_utf8(line.to_vec()).map_err(|_| "line is not UTF-8"));
            }
            // No line end within a whole line's length (and its CR): too long already. Its
            // bytes are dropped as they come, so the buffer stays small.
            if self.buf.len() > MAX_LINE_BYTES + 1 {
                self.buf.advance(self.buf.len());
                self.skipping = true;
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            match self.reader.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S, context: &Context) {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = ScriptLines {
        reader: read,
        buf: BytesMut::new(),
        skipping: false,
    };
    let mut session: Option<MsnClient> = None;
    loop {
        let line = tokio::select! {
            l = lines.next() => l,
            _ = context.shutdown.cancelled() => break,
        };
        let Some(line) = line else { break };
        let mut out = String::new();
        match line {
            Ok(line) => handle(context, &mut session, &line, &mut lines, &mut out).await,
            Err(reason) => out.push_str(&format!("ERR 0 {reason}\n")),
        }
        let write = write.write_all(out.as_bytes());
        if !matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(()))) {
            break;
        }
    }
    if let Some(client) = session {
        client.logoff();
    }
}

/// Runs one command, writing its answer to `out`.
async fn handle<R: AsyncRead + Unpin>(
    context: &Context,
    session: &mut Option<MsnClient>,
    line: &str,
    lines: &mut ScriptLines<R>,
    out: &mut String,
) {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let verb = verb.to_ascii_uppercase();
    let args: Vec<&str> = rest.split_ascii_whitespace().collect();
    let result = match verb.as_str() {
        "LOGIN" => login(context, session, rest).await,
        "LOGOFF" => match session.take() {
            Some(client) => {
                client.logoff();
                Ok(())
            }
            None => not_logged_in(),
        },
        "SENDMSG" => sendmsg(session, &args, lines).await,
        "POLL" => {
            if let Some(client) = session {
                lock(client.shared()).events.drain_to(out);
            }
            out.push_str("POLLEND\n");
            return;
        }
        _ => match session.as_ref() {
            None if verb.is_empty() => Err("0 empty command".into()),
            None if is_known(&verb) => not_logged_in(),
            None => Err(format!("0 unknown command {verb}")),
            Some(client) => command(client, &verb, rest, &args, out).await,
        },
    };
    match result {
        // Commands that answer with data (INFO, GETCL) have written it instead of OK.
        Ok(()) if out.is_empty() => out.push_str("OK\n"),
        Ok(()) => {}
        Err(e) => {
            out.clear();
            let _ = writeln!(out, "ERR {e}");
        }
    }
}

fn is_known(verb: &str) -> bool {
    matches!(
        verb,
        "STATUS" | "NICK" | "ADD" | "DEL" | "PRIV" | "INFO" | "GETCL" | "GETRCL"
    )
}

fn not_logged_in() -> Result<(), String> {
    Err("302 not logged in".into())
}

fn usage(text: &str) -> Result<(), String> {
    Err(format!("0 usage: {text}"))
}

async fn login(
    context: &Context,
    session: &mut Option<MsnClient>,
    rest: &str,
) -> Result<(), String> {
    if session.as_ref().is_some_and(MsnClient::is_connected) {
        return Err("0 already logged in; LOGOFF first".into());
    }
    let Some((email, password)) = rest.trim_start().split_once(' ') else {
        return usage("LOGIN email password");
    };
    let handle: UserHandle = email
        .parse()
        .map_err(|_| ClientError::Msn { code: 208 }.to_string())?;
    if let Some(old) = session.take() {
        old.logoff();
    }
    tracing::Span::current().record("handle", handle.as_str());
    let client = MsnClient::login(
        context.addresses,
        handle,
        password,
        context.max_events,
        context.tracker.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    *session = Some(client);
    Ok(())
}

async fn sendmsg<R: AsyncRead + Unpin>(
    session: &Option<MsnClient>,
    args: &[&str],
    lines: &mut ScriptLines<R>,
) -> Result<(), String> {
    // The announced lines are read whatever else is wrong with the command (a missing or
    // extra address, say from a script whose `$to` was empty), so that message text is never
    // run as commands. Only a count that can't be read, or one over the limit, leaves them.
    let Some(Ok(count)) = args.first().map(|c| c.parse::<usize>()) else {
        return usage("SENDMSG number_of_lines email, then the lines");
    };
    if count > MAX_MESSAGE_LINES {
        // The lines are not read: they will each get an answer of their own.
        return Err(format!("0 at most {MAX_MESSAGE_LINES} lines per message"));
    }
    let to = match args {
        [_, to] => Some(*to),
        _ => None,
    };
    let mut text = Vec::with_capacity(count);
    let mut size = 0;
    let mut bad = None;
    for _ in 0..count {
        match lines.next().await {
            None => return Err("0 connection closed".into()),
            Some(Err(reason)) => bad = Some(reason),
            Some(Ok(line)) => {
                size += line.len() + 2;
                if size <= MAX_PAYLOAD_BYTES {
                    text.push(line);
                }
            }
        }
    }
    let Some(to) = to else {
        return usage("SENDMSG number_of_lines email, then the lines (message not sent)");
    };
    if let Some(reason) = bad {
        return Err(format!("0 message not sent: {reason}"));
    }
    let payload = client::text_payload(&text);
    if size > MAX_PAYLOAD_BYTES || payload.len() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "0 message too long: at most {MAX_PAYLOAD_BYTES} bytes with its headers"
        ));
    }
    let Some(client) = session else {
        return not_logged_in();
    };
    let to = resolve(client, to)?;
    client
        .send_message(&to, payload.into())
        .map_err(|e| e.to_string())
}

/// An email, or the URL-encoded nick of a contact (the spec allows either).
fn resolve(client: &MsnClient, who: &str) -> Result<UserHandle, String> {
    if let Ok(handle) = who.parse::<UserHandle>() {
        return Ok(handle);
    }
    let shared = lock(client.shared());
    let nick = FriendlyName::from_str(who).ok();
    shared
        .contacts
        .iter()
        .find(|(_, c)| Some(&c.name) == nick.as_ref())
        .map(|(h, _)| h.clone())
        .ok_or_else(|| format!("0 no contact with the e-mail or nick {who}"))
}

async fn command(
    client: &MsnClient,
    verb: &str,
    rest: &str,
    args: &[&str],
    out: &mut String,
) -> Result<(), String> {
    if !client.is_connected() {
        return Err(ClientError::Disconnected.to_string());
    }
    let e = |e: ClientError| e.to_string();
    match (verb, args) {
        ("STATUS", [word]) => match status_from_word(word) {
            Some(status) => client.set_status(status).await.map_err(e),
            None => Err(format!(
                "0 unknown status {word}: online away busy brb phone lunch idle invisible offline"
            )),
        },
        ("STATUS", _) => usage("STATUS online|away|busy|brb|phone|lunch|idle|invisible|offline"),
        ("NICK", _) => match FriendlyName::new(rest.trim()) {
            Ok(name) => client.set_name(&name).await.map_err(e),
            Err(why) => Err(format!("209 {why}")),
        },
        ("ADD", [nick, email]) => {
            let handle: UserHandle = email
                .parse()
                .map_err(|_| e(ClientError::Msn { code: 208 }))?;
            let name = FriendlyName::from_str(nick).map_err(|why| format!("209 {why}"))?;
            client.add(&handle, &name).await.map_err(e)
        }
        ("ADD", _) => usage("ADD nick email"),
        ("DEL", [who]) => {
            let handle = resolve(client, who)?;
            client.remove(&handle).await.map_err(e)
        }
        ("DEL", _) => usage("DEL email"),
        ("PRIV", [public, auth]) => {
            let flag = |s: &str| match s {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            };
            match (flag(public), flag(auth)) {
                (Some(p), Some(a)) => client.privacy(p, a).await.map_err(e),
                _ => usage("PRIV public(0|1) auth(0|1)"),
            }
        }
        ("PRIV", _) => usage("PRIV public(0|1) auth(0|1)"),
        ("INFO", [who]) => {
            let handle = resolve(client, who)?;
            let shared = lock(client.shared());
            if &handle == client.handle() {
                let _ = write!(
                    out,
                    "email = {handle}\nnick = {}\nstatus = {}\n\n",
                    shared.own_name,
                    status_word(shared.own_status)
                );
                return Ok(());
            }
            let Some(contact) = shared.contacts.get(&handle) else {
                return Err(format!("216 {handle} is on none of your lists"));
            };
            let lists: Vec<&str> = contact.lists.iter().map(|l| l.code()).collect();
            let _ = write!(
                out,
                "email = {handle}\nnick = {}\nstatus = {}\nlists = {}\n\n",
                contact.name,
                status_word(contact.status),
                lists.join(" ")
            );
            Ok(())
        }
        ("INFO", _) => usage("INFO email"),
        ("GETCL" | "GETRCL", []) => {
            let list = if verb == "GETCL" {
                ListKind::Forward
            } else {
                ListKind::Reverse
            };
            let shared = lock(client.shared());
            let entries: Vec<_> = shared
                .contacts
                .iter()
                .filter(|(_, c)| c.lists.contains(&list))
                .collect();
            let _ = writeln!(out, "CL {}", entries.len());
            for (handle, contact) in entries {
                let _ = writeln!(
                    out,
                    "{} {handle} {}",
                    status_word(contact.status),
                    contact.name
                );
            }
            Ok(())
        }
        ("GETCL" | "GETRCL", _) => usage(verb),
        _ => Err(format!("0 unknown command {verb}")),
    }
}
