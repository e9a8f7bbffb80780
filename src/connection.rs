//! One client connection: framing, the read/write loop, and the bounded outbound queue.
//!
//! Each connection is one task. Its loop waits on the socket and its outbound queue (lines
//! other tasks send it: presence, rings, chat messages), which also carries its kick and the
//! server's shutdown ([`Live`]).
//! A role (notification, switchboard, dispatch) decides what each command means; this module
//! only moves bytes. Replies to the connection's own commands are written directly after each
//! batch of commands; lines from other tasks go through the queue, which is bounded: a client
//! that stops reading fills it and is disconnected instead of holding anyone else up.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use futures_util::task::AtomicWaker;
use tokio::net::TcpStream;
use tracing::{debug, info, warn, Instrument, Span};

use crate::protocol::{self, ClientCommand, Dialect, FrameError, ServerCommand, SharedLine};

mod writing;
use writing::Writing;

/// How many lines from other tasks may wait for one client before it counts as stalled.
pub const OUTBOUND_QUEUE: usize = 1024;
/// How many bytes may wait for one client before it counts as stalled: with the largest
/// payloads, the line bound alone would let one stalled client hold 8 MiB.
pub const OUTBOUND_BYTES: usize = 256 * 1024;
/// Replies are flushed once this many bytes have piled up, so pipelined requests for long
/// lists can't grow the write buffer without bound.
const FLUSH_AT: usize = 16 * 1024;

static NEXT_PEER_ID: AtomicU64 = AtomicU64::new(1);

/// A connection's bounded outbound queue. Unlike a channel it holds no memory while empty,
/// which is most of an idle client's life.
#[derive(Debug, Default)]
struct Outbox {
    state: Mutex<OutboxState>,
    /// Set when lines were queued (or the connection should look at its queue again); taken
    /// by the connection's wait.
    ready: AtomicBool,
    /// The connection's task, woken when `ready` is set and at a kick. The queue has one
    /// reader, so one waker slot in the outbox does what a `Notify` did, without the waiter
    /// a `Notified` future kept in every idle connection's task (docs/PERFORMANCE.md).
    waker: AtomicWaker,
    /// Set when the queue overflowed and the client is disconnected for not reading
    /// ([`Outbox::kick`]). A flag and a wake-up in the outbox rather than a cancellation token
    /// of its own, which was one more allocation for every session (docs/PERFORMANCE.md).
    kicked: AtomicBool,
    /// Set when the server shuts down ([`Live::shut_down`]): the connection sends its last
    /// line and closes. Told through the outbox, as the kick is, so an idle task keeps no
    /// cancellation future of its own (docs/PERFORMANCE.md).
    stopping: AtomicBool,
    /// The connection's dialect ([`Dialect::index`]): what it is sent is written in it.
    dialect: AtomicU8,
}

#[derive(Debug, Default)]
struct OutboxState {
    lines: VecDeque<Bytes>,
    /// The bytes in `lines`.
    bytes: usize,
    /// Close once everything queued has been written.
    closing: bool,
    /// The connection is gone: nothing is accepted any more.
    closed: bool,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes queued lines, up to about `limit` bytes, appending them to `batch`. Returns
    /// whether the connection should close after writing them.
    fn drain_into(&self, batch: &mut BytesMut, limit: usize) -> bool {
        let mut state = self.lock();
        while batch.len() < limit {
            match state.lines.pop_front() {
                Some(line) => {
                    state.bytes -= line.len();
                    batch.extend_from_slice(&line);
                }
                None => break,
            }
        }
        if state.lines.is_empty() {
            // Released, not kept for the next line: most connections are idle most of the
            // time, and an empty queue then holds no memory.
            state.lines = VecDeque::new();
        } else {
            // More than one batch was waiting: come back for the rest (the connection's own
            // task is here, so it needs no waking).
            self.ready.store(true, Ordering::SeqCst);
        }
        state.closing && state.lines.is_empty()
    }

    /// Disconnects the client: the connection sees it at its next wake-up, which this causes,
    /// or in the write it is blocked in.
    fn kick(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Tells the connection that its queue has something for it.
    fn notify(&self) {
        self.ready.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Tells the connection that the server is shutting down.
    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Whether the queue had something since the last call. The caller registered its waker
    /// first, so a line queued in between wakes it.
    fn take_ready(&self) -> bool {
        self.ready.swap(false, Ordering::SeqCst)
    }

    fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::SeqCst)
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn dialect(&self) -> Dialect {
        Dialect::from_index(self.dialect.load(Ordering::Relaxed).into()).unwrap_or(Dialect::Msnp2)
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.lines = VecDeque::new();
        state.bytes = 0;
    }
}

/// The server's open connections, so that a shutdown reaches each through its outbox: the
/// waker its task waits on anyway. A cancellation token's future in every task's wait was 72
/// bytes of each idle session (docs/PERFORMANCE.md); an entry here is some 20 to 30. A
/// connection enters in [`serve`] and leaves with [`Live::leave`] when whatever holds its
/// [`Entered`] is dropped (the server's `Held`, with its place under the connection limits),
/// however its task ended.
#[derive(Default)]
pub struct Live {
    stopping: AtomicBool,
    /// By the outbox's address, which its allocation holds while the entry's `Weak` lives.
    outboxes: DashMap<usize, Weak<Outbox>>,
}

/// A connection's entry in [`Live`], to give back with [`Live::leave`].
#[derive(Debug)]
#[must_use = "an entered connection must leave"]
pub struct Entered(usize);

impl Live {
    /// Enters a new connection; one that comes in while the server is stopping is told at once.
    fn enter(&self, outbox: &Arc<Outbox>) -> Entered {
        let key = Arc::as_ptr(outbox) as usize;
        self.outboxes.insert(key, Arc::downgrade(outbox));
        // After the insert: a shutdown either finds the entry or was stored before it (its
        // flag is set before it goes through the map's locks, which the insert took too).
        if self.stopping.load(Ordering::SeqCst) {
            outbox.stop();
        }
        Entered(key)
    }

    pub fn leave(&self, entered: &Entered) {
        self.outboxes.remove(&entered.0);
    }

    /// Tells every connection the server is shutting down: each sends its role's last line
    /// (`OUT SSD`) and closes. Those that open after this are told as they open.
    pub fn shut_down(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for entry in self.outboxes.iter() {
            if let Some(outbox) = entry.value().upgrade() {
                outbox.stop();
            }
        }
    }
}

/// How other tasks reach a connection: its outbound queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Peer {
    id: u64,
    outbox: Arc<Outbox>,
}

impl Peer {
    /// A unique id, to tell two connections of the same user apart.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The dialect the client negotiated (MSNP2 until it has).
    pub fn dialect(&self) -> Dialect {
        self.outbox.dialect()
    }

    /// Sets the dialect everything sent to this connection is written in from now on.
    pub fn set_dialect(&self, dialect: Dialect) {
        self.outbox
            .dialect
            .store(dialect.index() as u8, Ordering::Relaxed);
    }

    /// Queues a line for the client, in the client's dialect, without waiting. When the queue
    /// is full the client is not reading: it is disconnected and `false` returned. `false`
    /// also means it is gone.
    pub fn send(&self, line: &SharedLine) -> bool {
        debug!(peer = self.id, "<< {}", loggable(line.command()));
        self.push(line.encoded(self.dialect()))
    }

    /// Like [`Peer::send`], for a line only this connection gets.
    pub fn send_command(&self, command: &ServerCommand) -> bool {
        debug!(peer = self.id, "<< {}", loggable(command));
        self.push(command.to_bytes(self.dialect()))
    }

    fn push(&self, bytes: Bytes) -> bool {
        let mut state = self.outbox.lock();
        if state.closed {
            return false;
        }
        if bytes.is_empty() {
            // A line this connection's dialect does not have (see `ServerCommand::since`).
            return true;
        }
        if state.lines.len() >= OUTBOUND_QUEUE || state.bytes + bytes.len() > OUTBOUND_BYTES {
            drop(state);
            warn!(peer = self.id, "client is not reading; disconnecting it");
            self.outbox.kick();
            return false;
        }
        state.bytes += bytes.len();
        state.lines.push_back(bytes);
        drop(state);
        self.outbox.notify();
        true
    }

    /// Queues a last command, then closes the connection once the queue has been written.
    pub fn send_and_close(&self, command: &ServerCommand) {
        self.send_command(command);
        self.outbox.lock().closing = true;
        self.outbox.notify();
    }
}

/// What a role wants after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

/// Replies to the connection's own commands, written after the current batch in the
/// connection's dialect.
pub struct Replies {
    buf: BytesMut,
    outbox: Arc<Outbox>,
}

impl Replies {
    pub fn push(&mut self, command: ServerCommand) {
        debug!("<< {}", loggable(&command));
        command.write_to(self.outbox.dialect(), &mut self.buf);
    }

    /// The connection's dialect.
    pub fn dialect(&self) -> Dialect {
        self.outbox.dialect()
    }

    /// Sets the connection's dialect, for these replies and everything after (see
    /// [`Peer::set_dialect`]).
    pub fn set_dialect(&mut self, dialect: Dialect) {
        self.outbox
            .dialect
            .store(dialect.index() as u8, Ordering::Relaxed);
    }

    pub fn error(&mut self, code: protocol::ErrorCode, trid: protocol::TrId) {
        self.push(ServerCommand::Error { code, trid });
    }
}

fn loggable(command: &ServerCommand) -> String {
    // Lines that carry cookies or challenges are cut off after their TrID.
    protocol::loggable_line(command.to_string().as_bytes())
}

/// What a server role does with a connection's commands.
pub trait Role: Send {
    /// Whether login has completed; until then the login timeout applies.
    fn logged_in(&self) -> bool;

    /// Handles one command. (Lines that don't parse are answered by the connection.)
    fn handle(
        &mut self,
        command: ClientCommand,
        replies: &mut Replies,
    ) -> impl Future<Output = Flow> + Send;

    /// The span the connection's log lines go in: its address and, once known, its user.
    /// Asked for at each command and at the connection's end, so a role need not keep one: a
    /// notification connection, idle most of its life, makes it each time (a span kept by
    /// each idle session was a sixth of the session's memory), while a switchboard
    /// connection, busy relaying, keeps one and clones it (docs/PERFORMANCE.md).
    fn span(&self) -> Span;

    /// The last line to send when the server shuts down.
    fn shutdown_command(&self) -> Option<ServerCommand> {
        None
    }

    /// Cleans up after the connection ended, however it ended.
    fn closed(self) -> impl Future<Output = ()> + Send;
}

/// Timeouts for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub login: Duration,
    pub write: Duration,
    /// Commands per second and burst for this connection; `None`: not paced.
    pub pace: Option<(u32, u32)>,
    /// Silence before TCP keepalive probes the client; probes go a quarter of that apart.
    pub keepalive: Duration,
}

/// A connection's command pace: a token bucket of commands. A client pipelining faster than
/// the pace is not refused; its commands wait, and so does reading more of them, so TCP's own
/// flow control holds the flood in the client's socket rather than in the server.
///
/// In `f32`: part of every connection's task, where 8 bytes decide its size class
/// (docs/PERFORMANCE.md); a bucket of at most a few thousand commands needs no more.
#[derive(Debug)]
struct Pace {
    per_second: f32,
    burst: f32,
    tokens: f32,
    at: tokio::time::Instant,
}

impl Pace {
    fn new((per_second, burst): (u32, u32)) -> Option<Pace> {
        (per_second > 0).then(|| Pace {
            per_second: per_second as f32,
            burst: burst.max(1) as f32,
            tokens: burst.max(1) as f32,
            at: tokio::time::Instant::now(),
        })
    }

    /// When the next command may be handled: `None` for now.
    fn wait(&mut self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let refill = now.saturating_duration_since(self.at).as_secs_f32() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        (self.tokens < 1.0)
            .then(|| now + Duration::from_secs_f32((1.0 - self.tokens) / self.per_second))
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

/// How a connection ended, as far as the server's metrics care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Closed by either side, timed out at login, or at shutdown.
    Normally,
    /// The client was not reading: its outbound queue filled up.
    QueueFull,
    /// The client was not reading: a write blocked past the write timeout.
    SlowWrite,
}

/// Unanswered keepalive probes before the connection is given up.
const KEEPALIVE_PROBES: u32 = 4;

/// Writes the reply buffer (`Writing::write`) and releases it: an idle connection should hold
/// no buffer. A macro rather than an `async fn` around the write, whose future would be one
/// more level kept in the connection's task.
macro_rules! flush {
    ($writing:expr, $writer:expr, $replies:expr) => {{
        let written = match $replies.buf.is_empty() {
            true => Ok(()),
            false => $writing.write(&mut $writer, &$replies.buf).await,
        };
        $replies.buf = BytesMut::new();
        written
    }};
}

/// Runs one connection to its end. `make_role` receives the connection's own [`Peer`]. The
/// connection is entered in `live` at once; the caller keeps the [`Entered`] for as long as
/// the future lives, and leaves with it.
///
/// The setup is done here and the future returned is an `async` block using what it made in
/// place: an `async fn` would keep its arguments in the task twice for the connection's
/// whole life, beside the locals made from them (docs/PERFORMANCE.md).
pub fn serve<R, F>(
    stream: TcpStream,
    timeouts: Timeouts,
    live: &Live,
    make_role: F,
) -> (Entered, impl Future<Output = Ended> + use<R, F>)
where
    R: Role,
    F: FnOnce(Peer) -> R,
{
    let _ = stream.set_nodelay(true);
    // A client that vanished without a FIN (a dropped modem line, a sleeping laptop) is found
    // by TCP keepalive within twice `keepalive` (4 minutes by default), even when the server
    // has nothing to send it.
    {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(timeouts.keepalive)
            .with_interval((timeouts.keepalive / 4).max(Duration::from_secs(1)))
            .with_retries(KEEPALIVE_PROBES);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    }
    let outbox = Arc::new(Outbox::default());
    let entered = live.enter(&outbox);
    let peer = Peer {
        id: NEXT_PEER_ID.fetch_add(1, Ordering::Relaxed),
        outbox: outbox.clone(),
    };
    let mut role = make_role(peer);
    // The stream stays whole in the task, read through `&` and written through `&mut` at
    // different times: split into owned halves it would be one more allocation, an `Arc`
    // shared by the two (docs/PERFORMANCE.md).
    let mut stream = stream;
    let mut input = BytesMut::new();
    let mut replies = Replies {
        buf: BytesMut::new(),
        outbox: outbox.clone(),
    };
    let login_deadline = tokio::time::Instant::now() + timeouts.login;
    let writing = Writing {
        timeout: timeouts.write,
        outbox,
        timed_out: Default::default(),
    };
    let mut pace = timeouts.pace.and_then(Pace::new);
    let serving = async move {
        let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // Which of reading and writing goes first when both are ready, alternately.
        let mut read_first = false;
        // Set while the pace holds commands back: until then nothing more is handled or read.
        let mut paused: Option<tokio::time::Instant> = None;

        let end: End = 'conn: loop {
            // Set when the input can't be framed: what was answered is written, then the
            // connection ends.
            let mut unframeable = None;
            // Handle every complete frame already read, answering them in one write.
            loop {
                if let Some(until) = pace
                    .as_mut()
                    .and_then(|p| p.wait(tokio::time::Instant::now()))
                {
                    paused = Some(until);
                    break;
                }
                // The frame and the command are made and used up in this block, which has no
                // `.await`: a local that lived across one would take its room in the task for
                // good, even once moved out (docs/PERFORMANCE.md).
                let handling = {
                    let frame = match protocol::decode(&mut input) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(e) => {
                            if let FrameError::BadPayloadLength { trid: Some(trid) } = e {
                                // The payload's end is unknown, so the stream can't continue;
                                // the client is at least told which command was refused.
                                replies
                                    .error(protocol::ErrorCode::SyntaxError, protocol::TrId(trid));
                            }
                            unframeable = Some(role.span().in_scope(|| End::framing(&e)));
                            break;
                        }
                    };
                    if let Some(p) = pace.as_mut() {
                        p.take();
                    }
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        role.span()
                            .in_scope(|| debug!(">> {}", protocol::loggable_line(&frame.line)));
                    }
                    match ClientCommand::parse(frame) {
                        // Boxed: the handler's future is large and lives only while a command
                        // is handled. The span is moved into it at once, so the task keeps no
                        // room for it across the other awaits.
                        Ok(command) => {
                            let span = role.span();
                            Some(Box::pin(
                                role.handle(command, &mut replies).instrument(span),
                            ))
                        }
                        Err(e) => {
                            replies.error(e.code, e.trid.unwrap_or_default());
                            None
                        }
                    }
                };
                // Moved whole into the match (`{ handling }`): a `None` left in the binding
                // would be dropped only at the end of the loop's body, holding its borrows.
                #[allow(clippy::blocks_in_conditions)]
                let flow = match { handling } {
                    Some(handling) => handling.await,
                    None => Flow::Continue,
                };
                if flow == Flow::Close {
                    let _ = writing.write(&mut stream, &replies.buf).await;
                    break 'conn End::ClosedByServer;
                }
                if replies.buf.len() >= FLUSH_AT && flush!(writing, stream, replies).is_err() {
                    break 'conn End::WriteFailed;
                }
            }
            if let Some(reason) = unframeable {
                let _ = writing.write(&mut stream, &replies.buf).await;
                break 'conn reason;
            }
            if flush!(writing, stream, replies).is_err() {
                break 'conn End::WriteFailed;
            }
            // Everything read was handled: the buffer goes, so an idle connection holds none
            // (with the frames split off it, it is a shared buffer and its header, a few hundred
            // bytes of every idle session). A busy connection allocates one per read instead,
            // which costs far less than the read itself.
            if input.is_empty() {
                input = BytesMut::new();
            }
            // One timer, boxed and only while needed: the login deadline until the login, and the
            // pace's pause. A logged-in idle connection holds none.
            let login = (!role.logged_in()).then_some(login_deadline);
            let wake_at = [paused, login].into_iter().flatten().min();
            match (wake_at, timer.as_mut()) {
                (None, _) => timer = None,
                (Some(at), Some(t)) => t.as_mut().reset(at),
                (Some(at), None) => timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            read_first = !read_first;
            match wait(Waiting {
                reader: &stream,
                reading: paused.is_none(),
                read_first,
                outbox: &writing.outbox,
                timer: timer.as_mut(),
            })
            .await
            {
                Wake::ReadFailed => break 'conn End::ReadFailed,
                Wake::Readable => match read_available(&stream, &mut input) {
                    Ok(0) => break 'conn End::ClientClosed,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break 'conn End::ReadFailed,
                },
                Wake::Outbox => {
                    // Write whatever is queued in one go, through the reply buffer (empty
                    // here) rather than a buffer of its own in the task.
                    let closing = writing.outbox.drain_into(&mut replies.buf, FLUSH_AT);
                    if flush!(writing, stream, replies).is_err() {
                        break 'conn End::WriteFailed;
                    }
                    if closing {
                        break 'conn End::FinalLine;
                    }
                }
                Wake::Kicked => break 'conn End::Kicked,
                Wake::Timer => {
                    if !role.logged_in() && tokio::time::Instant::now() >= login_deadline {
                        break 'conn End::LoginTimedOut;
                    }
                    paused = None;
                }
                Wake::Shutdown => {
                    // Encoded before the write, so the command is not kept in the task meanwhile.
                    if let Some(command) = role.shutdown_command() {
                        replies.push(command);
                    }
                    let _ = writing.write(&mut stream, &replies.buf).await;
                    break 'conn End::Shutdown;
                }
            }
        };
        // The only kick there is: the queue overflowed.
        let ended = if writing.outbox.is_kicked() {
            Ended::QueueFull
        } else if writing.timed_out.load(Ordering::Relaxed) {
            Ended::SlowWrite
        } else {
            Ended::Normally
        };
        writing.outbox.close();
        let closing = {
            let span = role.span();
            span.in_scope(|| {
                if ended == Ended::SlowWrite {
                    warn!("client stalled on a write; disconnected it");
                }
                info!(reason = end.reason(), "connection ended");
            });
            Box::pin(role.closed().instrument(span))
        };
        closing.await;
        // What tokio's `shutdown()` does, without its future in the task: a TCP shutdown
        // doesn't block.
        let _ = socket2::SockRef::from(&stream).shutdown(std::net::Shutdown::Write);
        ended
    };
    (entered, serving)
}

/// Why a connection ended, for its last log line. One byte where a `&str` was 16, in a
/// task where a few bytes decide its size class (docs/PERFORMANCE.md).
#[derive(Clone, Copy)]
enum End {
    ClosedByServer,
    WriteFailed,
    ReadFailed,
    ClientClosed,
    FinalLine,
    Kicked,
    LoginTimedOut,
    Shutdown,
    LineTooLong,
    BadPayloadLength,
    PayloadTooLong,
}

impl End {
    fn framing(error: &FrameError) -> End {
        warn!(%error, "closing the connection: input can't be framed");
        match error {
            FrameError::LineTooLong => End::LineTooLong,
            FrameError::BadPayloadLength { .. } => End::BadPayloadLength,
            FrameError::PayloadTooLong(_) => End::PayloadTooLong,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            End::ClosedByServer => "closed by the server",
            End::WriteFailed => "write failed",
            End::ReadFailed => "read failed",
            End::ClientClosed => "client closed the connection",
            End::FinalLine => "closed after a final line",
            End::Kicked => "disconnected by the server",
            End::LoginTimedOut => "login timed out",
            End::Shutdown => "server shutting down",
            End::LineTooLong => "line too long",
            End::BadPayloadLength => "bad payload length",
            End::PayloadTooLong => "payload too long",
        }
    }
}

/// What woke an idle connection.
///
/// One byte: it is matched across the writes of its arms, so it stays in the task.
#[derive(Clone, Copy)]
enum Wake {
    Readable,
    ReadFailed,
    Outbox,
    Kicked,
    Timer,
    Shutdown,
}

/// What an idle connection waits for.
struct Waiting<'a> {
    reader: &'a TcpStream,
    /// False while the pace holds commands back.
    reading: bool,
    read_first: bool,
    outbox: &'a Outbox,
    timer: Option<&'a mut Pin<Box<tokio::time::Sleep>>>,
}

impl Waiting<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        // Registered before the outbox's flags are looked at: a line queued, a kick or the
        // shutdown in between wakes the task.
        self.outbox.waker.register(cx.waker());
        if self.outbox.is_stopping() {
            return Poll::Ready(Wake::Shutdown);
        }
        if self.outbox.is_kicked() {
            return Poll::Ready(Wake::Kicked);
        }
        if let Some(t) = self.timer.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
        }
        if self.read_first {
            if let Poll::Ready(wake) = self.poll_read(cx) {
                return Poll::Ready(wake);
            }
        }
        if self.outbox.take_ready() {
            return Poll::Ready(Wake::Outbox);
        }
        self.poll_read(cx)
    }

    fn poll_read(&self, cx: &mut Context<'_>) -> Poll<Wake> {
        if !self.reading {
            return Poll::Pending;
        }
        self.reader.poll_read_ready(cx).map(|r| match r {
            Ok(()) => Wake::Readable,
            Err(_) => Wake::ReadFailed,
        })
    }
}

/// Waits for the first of the connection's events. Written out rather than with `select!`,
/// which keeps every branch's future twice in the connection's task while it waits: this
/// holds only `w`, looks at the outbox's flags (queued lines, the kick, the shutdown) and
/// polls the timer and the socket's readiness directly (docs/PERFORMANCE.md).
fn wait(mut w: Waiting<'_>) -> impl Future<Output = Wake> + '_ {
    std::future::poll_fn(move |cx| w.poll(cx))
}

/// Reads what the socket has into `input`. The read goes through a buffer on this function's
/// stack so an idle connection keeps no heap buffer at all.
fn read_available(reader: &TcpStream, input: &mut BytesMut) -> io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = reader.try_read(&mut chunk)?;
    input.extend_from_slice(&chunk[..n]);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_reaches_every_open_connection_and_those_that_open_after() {
        let live = Live::default();
        let (a, b) = (Arc::new(Outbox::default()), Arc::new(Outbox::default()));
        let _a = live.enter(&a);
        let b_entered = live.enter(&b);
        live.leave(&b_entered);
        assert_eq!(live.outboxes.len(), 1);
        assert!(!a.is_stopping());

        live.shut_down();
        assert!(a.is_stopping());
        assert!(!b.is_stopping(), "b had left");
        let late = Arc::new(Outbox::default());
        let _late = live.enter(&late);
        assert!(
            late.is_stopping(),
            "a connection accepted during the shutdown"
        );
    }
}
