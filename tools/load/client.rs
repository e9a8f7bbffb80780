//! The load tool's MSN client: one connection, lines out, server lines in through the crate's
//! own framing and [`ServerCommand::parse`], and an MSN client's logon, directly at a
//! notification server or through a dispatch server's `XFR NS` referral.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use msngate::protocol::{
    decode, Dialect, ListItem, ListKind, ServerCommand, Status, TrId, UserHandle,
};

/// How long any single expected line may take before the run is abandoned.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// MSNP6's challenge key of MSN Messenger 3.6 (`CHL`/`QRY`, docs/protocol).
const QRY_CLIENT: (&str, &str) = ("msmsgs@msnmsgr.com", "Q1P7W2E4J9R8U3S5");

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// Where sessions log on: notification servers (sessions spread round-robin), or a dispatch
/// server that refers each logon to one.
#[derive(Clone, Debug)]
pub enum Entry {
    Ns(Vec<SocketAddr>),
    Dispatch(SocketAddr),
}

impl Entry {
    /// The way in for the `i`th session.
    pub fn route(&self, i: usize) -> Route {
        match self {
            Entry::Ns(nodes) => Route::Ns(nodes[i % nodes.len()]),
            Entry::Dispatch(ds) => Route::Dispatch(*ds),
        }
    }

    /// How many notification servers sessions are spread over (a dispatch server's: 1).
    pub fn nodes(&self) -> usize {
        match self {
            Entry::Ns(nodes) => nodes.len(),
            Entry::Dispatch(_) => 1,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Entry::Ns(nodes) => {
                let list: Vec<String> = nodes.iter().map(SocketAddr::to_string).collect();
                format!("ns={}", list.join(","))
            }
            Entry::Dispatch(ds) => format!("dispatch={ds}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Route {
    Ns(SocketAddr),
    Dispatch(SocketAddr),
}

/// The reading half of a connection: framed and parsed server lines.
pub struct Reader {
    half: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    /// The next line, `None` when the server closed the connection; no time limit.
    pub async fn next(&mut self) -> Result<Option<ServerCommand>> {
        loop {
            let frame = decode(&mut self.buf)
                .map_err(|e| anyhow!("unframeable line from the server: {e}"))?;
            if let Some(frame) = frame {
                let line = ServerCommand::parse(frame).context("line from the server")?;
                return Ok(Some(line));
            }
            self.buf.reserve(4096);
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// A protocol client connection.
pub struct Conn {
    pub reader: Reader,
    pub writer: OwnedWriteHalf,
    pub trid: u32,
}

impl Conn {
    pub async fn connect(address: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connect {address}"))?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Conn {
            reader: Reader {
                half: r,
                buf: BytesMut::new(),
            },
            writer: w,
            trid: 0,
        })
    }

    pub async fn cmd(&mut self, verb: &str, args: &str) -> Result<u32> {
        self.trid += 1;
        let line = format!("{verb} {} {args}\r\n", self.trid);
        self.writer.write_all(line.as_bytes()).await?;
        Ok(self.trid)
    }

    /// The next line, within [`READ_TIMEOUT`]; a challenge is answered on the way.
    pub async fn recv(&mut self) -> Result<ServerCommand> {
        tokio::time::timeout(READ_TIMEOUT, self.next_line())
            .await
            .map_err(|_| anyhow!("no line from the server within {READ_TIMEOUT:?}"))??
            .ok_or_else(|| anyhow!("the server closed the connection"))
    }

    /// The next line, or `None` once the server closed the connection; a challenge (`CHL`,
    /// MSNP6 and later) is answered on the way.
    async fn next_line(&mut self) -> Result<Option<ServerCommand>> {
        let line = self.reader.next().await?;
        if let Some(ServerCommand::Chl { challenge }) = &line {
            self.trid += 1;
            let answer = qry(self.trid, challenge);
            self.writer.write_all(answer.as_bytes()).await?;
        }
        Ok(line)
    }

    /// Reads until the reply to `verb` with this TrID (the line `is` it), skipping
    /// asynchronous lines; an error reply (`code trid`) to that TrID fails.
    pub async fn reply(
        &mut self,
        verb: &str,
        trid: u32,
        is: fn(&ServerCommand) -> bool,
    ) -> Result<ServerCommand> {
        loop {
            let line = self.recv().await?;
            if line.trid() == Some(TrId(trid)) {
                if is(&line) {
                    return Ok(line);
                }
                if matches!(line, ServerCommand::Error { .. }) {
                    bail!("error reply to {verb} {trid}: {line}");
                }
            }
        }
    }

    /// Reads until a line that `is` the one wanted, skipping others.
    pub async fn wait_for(&mut self, is: fn(&ServerCommand) -> bool) -> Result<ServerCommand> {
        loop {
            let line = self.recv().await?;
            if is(&line) {
                return Ok(line);
            }
        }
    }

    /// `ADD TrID FL handle name`, answered by `ADD`; error 215 (already there) is fine.
    pub async fn add_forward(&mut self, handle: &UserHandle) -> Result<()> {
        let t = self.cmd("ADD", &format!("FL {handle} {handle}")).await?;
        loop {
            let line = self.recv().await?;
            if line.trid() != Some(TrId(t)) {
                continue;
            }
            return match line {
                ServerCommand::Add { .. } => Ok(()),
                ServerCommand::Error { code, .. } if code.code() == 215 => Ok(()),
                other => bail!("ADD FL {handle}: {other}"),
            };
        }
    }

    /// Stays online as an idle client does, with no time limit: reads everything, answers
    /// `CHL`, and tells `presence` each contact's state an `ILN` or `NLN` gives, until it
    /// answers `Break`. Fails when the server closes the connection or a read fails.
    pub async fn stay_online(
        mut self,
        mut presence: impl FnMut(UserHandle, Status) -> ControlFlow<()>,
    ) -> Result<()> {
        loop {
            match self.next_line().await? {
                None => bail!("the server closed the connection"),
                Some(
                    ServerCommand::Iln { handle, status, .. }
                    | ServerCommand::Nln { handle, status, .. },
                ) => {
                    if presence(handle, status).is_break() {
                        return Ok(());
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// `OUT`, then waits (briefly) for the server to close the connection.
    pub async fn log_out(mut self) -> Result<()> {
        self.writer.write_all(b"OUT\r\n").await?;
        let closed = async {
            while self.reader.next().await?.is_some() {}
            Ok::<_, anyhow::Error>(())
        };
        tokio::time::timeout(READ_TIMEOUT, closed)
            .await
            .map_err(|_| anyhow!("the server did not close the connection after OUT"))?
    }
}

/// The answer to `CHL 0 challenge`: `QRY TrID client-id 32` and the MD5 as its payload.
pub fn qry(trid: u32, challenge: &str) -> String {
    let (client, key) = QRY_CLIENT;
    format!(
        "QRY {trid} {client} 32\r\n{}",
        md5_hex(&format!("{challenge}{key}"))
    )
}

/// Resolves `host:port` (a name or an address).
pub async fn resolve(address: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await
        .with_context(|| format!("resolving {address}"))?
        .next()
        .ok_or_else(|| anyhow!("{address}: no address"))
}

/// What a logon learned from the `SYN` burst.
pub struct Synced {
    /// The handles on the user's forward list.
    pub forward: Vec<UserHandle>,
}

/// `VER` offering what a client of `dialect` offered: that dialect and the lower ones its
/// client spoke (MSN 2.x and later offered MSNP4 and up).
async fn negotiate(c: &mut Conn, handle: &str, dialect: Dialect) -> Result<()> {
    use ServerCommand::*;
    let offered: Vec<&str> = Dialect::SUPPORTED
        .into_iter()
        .filter(|d| *d <= dialect && *d >= Dialect::Msnp4.min(dialect))
        .map(Dialect::name)
        .collect();
    let t = c.cmd("VER", &format!("{} CVR0", offered.join(" "))).await?;
    let ver = c.reply("VER", t, |l| matches!(l, Ver { .. })).await?;
    if !matches!(ver, Ver { dialect: Some(d), .. } if d == dialect) {
        bail!("{handle}: the server did not choose {dialect}: {ver}");
    }
    let t = c.cmd("INF", "").await?;
    c.reply("INF", t, |l| matches!(l, Inf { .. })).await?;
    Ok(())
}

/// The notification server a dispatch server refers `handle` to (`VER`, `INF`, `USR MD5 I`,
/// `XFR NS`), as a client does before its logon.
async fn referral(ds: SocketAddr, handle: &str, dialect: Dialect) -> Result<SocketAddr> {
    let mut c = Conn::connect(ds).await?;
    negotiate(&mut c, handle, dialect).await?;
    let t = c.cmd("USR", &format!("MD5 I {handle}")).await?;
    let xfr = c
        .reply("USR", t, |l| matches!(l, ServerCommand::XfrNs { .. }))
        .await?;
    let ServerCommand::XfrNs { address, .. } = xfr else {
        unreachable!("reply checks the kind")
    };
    resolve(&address).await
}

/// Logs on like an MSN client of `dialect` and goes online: VER (the dialects that client
/// offered), INF, USR MD5 I/S, SYN 0, CHG NLN. The later dialects' extra SYN lines (PRP, LSG,
/// BPR) are read past like the lists.
pub async fn login(
    route: Route,
    handle: &str,
    password: &str,
    dialect: Dialect,
) -> Result<(Conn, Synced)> {
    use ServerCommand::*;
    let ns = match route {
        Route::Ns(ns) => ns,
        Route::Dispatch(ds) => referral(ds, handle, dialect).await?,
    };
    let mut c = Conn::connect(ns).await?;
    negotiate(&mut c, handle, dialect).await?;
    let t = c.cmd("USR", &format!("MD5 I {handle}")).await?;
    let is_usr = |l: &ServerCommand| matches!(l, UsrChallenge { .. } | UsrOk { .. });
    let challenge = match c.reply("USR", t, is_usr).await? {
        UsrChallenge { challenge, .. } => challenge,
        other => bail!("{handle}: expected a challenge, got {other}"),
    };
    let response = md5_hex(&format!("{challenge}{password}"));
    let t = c.cmd("USR", &format!("MD5 S {response}")).await?;
    let ok = c.reply("USR", t, is_usr).await?;
    if !matches!(ok, UsrOk { .. }) {
        bail!("{handle}: login failed: {ok}");
    }
    let profile = c.recv().await?;
    if !matches!(profile, Msg { .. }) {
        bail!("{handle}: expected the profile MSG, got {profile}");
    }
    let t = c.cmd("SYN", "0").await?;
    let syn = c.reply("SYN", t, |l| matches!(l, Syn { .. })).await?;
    let mut forward = Vec::new();
    if !matches!(syn, Syn { serial: 0, .. }) {
        // GTC, BLP, (PRP, LSG), then LST FL, AL, BL, RL (with BPR after FL entries from
        // MSNP5 on); the last line of each list has index == total.
        loop {
            let Lst { list, item, .. } = c.recv().await? else {
                continue;
            };
            if let (ListKind::Forward, Some(item)) = (list, &item) {
                forward.push(item.handle.clone());
            }
            let last = item
                .as_ref()
                .is_none_or(|ListItem { index, total, .. }| index == total);
            if list == ListKind::Reverse && last {
                break;
            }
        }
    }
    let t = c.cmd("CHG", "NLN").await?;
    c.reply("CHG", t, |l| matches!(l, Chg { .. })).await?;
    Ok((c, Synced { forward }))
}
