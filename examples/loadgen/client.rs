//! The load generator's MSN client: one connection, lines out, server lines in through the
//! crate's own framing and [`ServerCommand::parse`], and MSN Messenger 1.0's login.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use msngate::protocol::{decode, Dialect, ListItem, ListKind, ServerCommand, TrId};

/// How long any single expected line may take before the run is abandoned.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

pub fn password(handle: &str) -> String {
    format!("pw-{handle}")
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
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

    pub async fn recv(&mut self) -> Result<ServerCommand> {
        tokio::time::timeout(READ_TIMEOUT, self.reader.next())
            .await
            .map_err(|_| anyhow!("no line from the server within {READ_TIMEOUT:?}"))??
            .ok_or_else(|| anyhow!("the server closed the connection"))
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
}

/// Logs in like an MSN client of `dialect` and goes online: VER (the dialects that client
/// offered), INF, USR MD5 I/S, SYN 0, CHG NLN. The later dialects' extra SYN lines (PRP, LSG,
/// BPR) are read past like the lists.
pub async fn login(ns: SocketAddr, handle: &str, dialect: Dialect) -> Result<Conn> {
    use ServerCommand::*;
    let mut c = Conn::connect(ns).await?;
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
    let t = c.cmd("USR", &format!("MD5 I {handle}")).await?;
    let is_usr = |l: &ServerCommand| matches!(l, UsrChallenge { .. } | UsrOk { .. });
    let challenge = match c.reply("USR", t, is_usr).await? {
        UsrChallenge { challenge, .. } => challenge,
        other => bail!("{handle}: expected a challenge, got {other}"),
    };
    let response = md5_hex(&format!("{challenge}{}", password(handle)));
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
    if !matches!(syn, Syn { serial: 0, .. }) {
        // GTC, BLP, then LST FL, AL, BL, RL; the last line of each list has index == total.
        loop {
            if let Lst {
                list: ListKind::Reverse,
                item,
                ..
            } = c.recv().await?
            {
                if item.is_none_or(|ListItem { index, total, .. }| index == total) {
                    break;
                }
            }
        }
    }
    let t = c.cmd("CHG", "NLN").await?;
    c.reply("CHG", t, |l| matches!(l, Chg { .. })).await?;
    Ok(c)
}
