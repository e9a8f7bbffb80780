//! A whole msngate server in the fuzzing process, and the fuzz input played into one of its
//! connections as an MSN client or a script would: whatever arrives, the server keeps framing
//! what it writes and closes the connection soon after the client does (no hang, no panic).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use md5::{Digest, Md5};
use msngate::config::Config;
use msngate::protocol::{decode, FriendlyName, ServerCommand, UserHandle};
use msngate::server::{self, Running};
use msngate::store::{SqliteStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// The accounts of the fuzzing server, all with this password.
pub const PASSWORD: &str = "fuzz";
/// How long a connection may stay open after the client stopped sending: past it, a hang.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);
/// How long a setup step (a login, a transfer) may take before the harness gives up on it.
const STEP: Duration = Duration::from_secs(2);

pub struct Harness {
    pub rt: Runtime,
    pub running: Running,
}

/// The server, started once per fuzzing process, with the accounts `handles`.
pub fn harness(handles: &[&str]) -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut config = Config::default();
        config.server.notification_listen = "127.0.0.1:0".parse().unwrap();
        config.server.switchboard_listen = "127.0.0.1:0".parse().unwrap();
        config.msncd.listen = Some("127.0.0.1:0".parse().unwrap());
        // The fuzzer fails logins by the thousand; the throttle would hide the logged-in states.
        config.limits.login_failures_per_handle = u32::MAX;
        config.limits.login_failures_per_address = u32::MAX;
        // Inputs ring the same contact hundreds of times, and unanswered rings count against the
        // caller for the cookies' lifetime (docs/SECURITY.md): with the default two minutes the
        // switchboard target's user would be refused every XFR SB nearly all the time.
        config.server.cookie_lifetime_secs = 1;
        // The store in memory, as the targets are meant to run: the same SQL as on disk,
        // without a file's locks and syncs.
        let running = rt.block_on(async {
            let store = SqliteStore::open_in_memory().unwrap();
            for handle in handles {
                let handle: UserHandle = handle.parse().unwrap();
                let name = FriendlyName::new(handle.as_str()).unwrap();
                store.create_account(&handle, &name, PASSWORD).await.unwrap();
            }
            server::start_with_store(config, Arc::new(store))
                .await
                .expect("the server starts")
        });
        Harness { rt, running }
    })
}

/// Lines as an MSN client reads them, with a deadline per line.
pub struct Lines {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Lines {
    pub async fn connect(address: SocketAddr) -> Option<Lines> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(address))
            .await
            .ok()?
            .ok()?;
        Some(Lines {
            stream,
            buf: BytesMut::new(),
        })
    }

    pub async fn send(&mut self, line: &str) -> Option<()> {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .ok()
    }

    /// The next server line, `None` at the end or after [`STEP`].
    pub async fn next(&mut self) -> Option<String> {
        tokio::time::timeout(STEP, async {
            loop {
                match decode(&mut self.buf) {
                    Ok(Some(frame)) => return Some(String::from_utf8_lossy(&frame.line).into()),
                    Ok(None) => {}
                    Err(e) => panic!("the server wrote a line that can't be framed: {e}"),
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Reads up to the first line that starts with `prefix`.
    pub async fn until(&mut self, prefix: &str) -> Option<String> {
        loop {
            let line = self.next().await?;
            if line.starts_with(prefix) {
                return Some(line);
            }
        }
    }

    /// Reads up to the answer to transaction `trid`, whatever it is (a reply or an error).
    pub async fn reply(&mut self, trid: u32) -> Option<String> {
        let trid = trid.to_string();
        loop {
            let line = self.next().await?;
            if line.split(' ').nth(1) == Some(trid.as_str()) {
                return Some(line);
            }
        }
    }

    /// Logs `handle` in with the MD5 challenge, in `dialect` (`MSNP2`…`MSNP7`).
    pub async fn login(address: SocketAddr, handle: &str, dialect: &str) -> Option<Lines> {
        let mut c = Lines::connect(address).await?;
        c.send(&format!("VER 1 {dialect} CVR0")).await?;
        c.until("VER 1").await?;
        c.send(&format!("USR 2 MD5 I {handle}")).await?;
        let challenge = c.until("USR 2 MD5 S ").await?;
        let challenge = challenge.rsplit(' ').next()?.to_string();
        let hash = Md5::digest(format!("{challenge}{PASSWORD}").as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        c.send(&format!("USR 3 MD5 S {hex}")).await?;
        c.until("USR 3 OK").await?;
        Some(c)
    }

    /// Sends `data` as it is while reading everything the server writes, then closes the
    /// sending side and waits for the server to close too. Every line the server writes must
    /// frame and parse as a server line; a server that does not close in time is a hang.
    pub async fn play(self, data: &[u8]) {
        self.play_checking(data, true).await
    }

    /// Like [`Lines::play`], for a protocol that is not MSN's (msncd's): only the close is
    /// checked.
    pub async fn play_checking(self, data: &[u8], msn_lines: bool) {
        let Lines { stream, buf } = self;
        let (mut reader, mut writer) = stream.into_split();
        let reading = tokio::spawn(async move {
            let mut buf = buf;
            let mut chunk = [0u8; 8192];
            loop {
                match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) if msn_lines => buf.extend_from_slice(&chunk[..n]),
                    Ok(_) => {}
                }
                check_lines(&mut buf);
            }
        });
        let _ = writer.write_all(data).await;
        let _ = writer.shutdown().await;
        match tokio::time::timeout(CLOSE_WITHIN, reading).await {
            Ok(result) => result.expect("the reader does not panic"),
            Err(_) => panic!("the server kept the connection open after the client closed it"),
        }
    }
}

fn check_lines(buf: &mut BytesMut) {
    loop {
        match decode(buf) {
            Ok(Some(frame)) => {
                let line = String::from_utf8_lossy(&frame.line).into_owned();
                if let Err(e) = ServerCommand::parse(frame) {
                    panic!("the server wrote `{line}`, which does not parse: {e:?}");
                }
            }
            Ok(None) => return,
            Err(e) => panic!("the server wrote a line that can't be framed: {e}"),
        }
    }
}

/// The dialect a fuzz input's first byte picks.
pub fn dialect(selector: u8) -> &'static str {
    ["MSNP2", "MSNP3", "MSNP4", "MSNP5", "MSNP6", "MSNP7"][usize::from(selector) % 6]
}
