//! Test harness: a real msngate server on 127.0.0.1:0 with a temporary database, a plain TCP
//! client that speaks lines like an MSN client, and a runner for transcript files.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use msngate::config::Config;
use msngate::protocol::{decode, Dialect, FriendlyName, ServerCommand, UserHandle};
use msngate::server::{self, Running};
use msngate::store::{SqliteStore, Store};

/// How long a test waits for a line it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// A server with its own database in a temporary directory.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub config: Config,
}

impl TestServer {
    /// A config on free loopback ports with the database in `dir`.
    pub fn config(dir: &Path) -> Config {
        let mut config = Config::default();
        config.server.notification_listen = "127.0.0.1:0".parse().unwrap();
        config.server.switchboard_listen = "127.0.0.1:0".parse().unwrap();
        config.storage.database = dir.join("msngate.db").into();
        config
    }

    /// Starts a server with these accounts: (handle, password, name).
    pub async fn start(accounts: &[(&str, &str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = Self::config(dir.path());
        Self::start_with(dir, config, accounts).await
    }

    pub async fn start_with(
        dir: tempfile::TempDir,
        config: Config,
        accounts: &[(&str, &str, &str)],
    ) -> TestServer {
        create_accounts(&db_file(&config), accounts);
        let running = server::start(config.clone()).await.expect("server starts");
        TestServer {
            dir,
            running: Some(running),
            config,
        }
    }

    /// Starts a server whose one account, `handle` with MSN password `password`, is linked to
    /// `account` on `backend` (see [`link_account`]); `configure` may change the config first.
    pub async fn start_linked(
        handle: &str,
        password: &str,
        (backend, account, secret): (&str, &str, &str),
        options: Vec<(String, String)>,
        configure: impl FnOnce(&mut Config),
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Self::config(dir.path());
        configure(&mut config);
        config.secrets.key = Some(SECRETS_KEY.into());
        config.storage.backend_data = dir.path().join("backends");
        let db = db_file(&config);
        create_accounts(&db, &[(handle, password, "Alice")]);
        link_account(&db, handle, backend, account, secret, options);
        Self::start_with(dir, config, &[]).await
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("server running")
    }

    pub fn ns(&self) -> SocketAddr {
        self.running().notification_address
    }

    pub fn sb(&self) -> SocketAddr {
        self.running().switchboard_address
    }

    pub fn db_path(&self) -> PathBuf {
        db_file(&self.config)
    }

    /// Stops the server gracefully.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Stops and starts again on the same database (and new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.running = Some(
            server::start(self.config.clone())
                .await
                .expect("server restarts"),
        );
    }

    pub async fn login(&self, handle: &str, password: &str) -> Client {
        Client::login(self.ns(), handle, password).await
    }

    /// Logs in with a client's VER list `offered`, expecting the VER answer `answer`.
    pub async fn login_offering(
        &self,
        handle: &str,
        password: &str,
        offered: &str,
        answer: &str,
    ) -> Client {
        Client::login_offering(self.ns(), handle, password, offered, answer).await
    }
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `dir/msngate.toml` for a server run as a separate process: the notification and
/// switchboard listeners on free loopback ports, the database `database`, the key file in
/// `dir`. Returns the file and the notification port.
/// Waits (up to 20 s) until a server accepts connections at `address`, polling it.
pub fn wait_listening(address: impl std::net::ToSocketAddrs + Copy) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "server did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn write_config(dir: &Path, database: &Path) -> (PathBuf, u16) {
    let ns = free_port();
    let config = dir.join("msngate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nnotification_listen = \"127.0.0.1:{ns}\"\nswitchboard_listen = \"127.0.0.1:{}\"\n\
             public_host = \"127.0.0.1\"\n\n[storage]\ndatabase = \"{}\"\n\n[secrets]\nkey_file = \"{}\"\n",
            free_port(),
            database.display(),
            dir.join("msngate.key").display()
        ),
    )
    .unwrap();
    (config, ns)
}

/// The secrets key of test servers that link accounts (`config.secrets.key`).
pub const SECRETS_KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";

/// Links an account to a backend account in the database, its secret sealed with
/// [`SECRETS_KEY`], as `msngate user link` does.
pub fn link_account(
    db: &Path,
    handle: &str,
    backend: &str,
    account: &str,
    secret: &str,
    options: Vec<(String, String)>,
) {
    let secrets = msngate::config::SecretsConfig {
        key: Some(SECRETS_KEY.into()),
        ..Default::default()
    };
    let key = msngate::secrets::SecretKey::load(&secrets, false)
        .unwrap()
        .unwrap();
    let handle: UserHandle = handle.parse().unwrap();
    let link = msngate::store::BackendLink {
        backend: backend.into(),
        account: account.into(),
        sealed_secret: key.seal(handle.as_str(), secret.as_bytes()),
        options,
    };
    let store = SqliteStore::open(db).unwrap();
    block_on(store.link(&handle, &link)).unwrap();
}

pub fn create_accounts(db: &Path, accounts: &[(&str, &str, &str)]) {
    let store = SqliteStore::open(db).unwrap();
    for (handle, password, name) in accounts {
        let handle: UserHandle = handle.parse().unwrap();
        block_on(store.create_account(&handle, &FriendlyName::new(name).unwrap(), password))
            .unwrap();
    }
}

/// Runs a future to completion on a thread of its own, so sync helpers can use the store from
/// async tests too.
pub fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(future)
            })
            .join()
            .unwrap()
    })
}

pub fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// One line from the server: the command it parsed as, and its tokens (for the `*` patterns
/// of [`matches`]) with its payload if it was a MSG.
#[derive(Debug, Clone)]
pub struct Line {
    pub command: ServerCommand,
    pub tokens: Vec<String>,
    pub payload: Option<Vec<u8>>,
}

impl Line {
    pub fn text(&self) -> String {
        self.tokens.join(" ")
    }

    pub fn payload_text(&self) -> String {
        String::from_utf8(self.payload.clone().unwrap_or_default()).unwrap()
    }

    pub fn get(&self, i: usize) -> &str {
        self.tokens.get(i).map(String::as_str).unwrap_or("")
    }
}

/// Whether a line matches a pattern of tokens where `*` matches any one token.
pub fn matches(line: &Line, pattern: &str) -> bool {
    let p: Vec<&str> = pattern.split(' ').collect();
    p.len() == line.tokens.len() && p.iter().zip(&line.tokens).all(|(p, t)| *p == "*" || p == t)
}

/// A client connection that reads and writes protocol lines.
pub struct Client {
    reader: OwnedReadHalf,
    /// What has been read and not yet taken as a line: a line cut by a timeout stays here.
    buf: BytesMut,
    writer: OwnedWriteHalf,
    pub trid: u32,
    pub name: String,
    /// The dialect the server's VER answer chose (MSNP2 until one comes): lines are checked
    /// against the encoder's form in it.
    pub dialect: Dialect,
}

impl Client {
    pub async fn connect(address: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(address).await.expect("connect"))
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        let (r, w) = stream.into_split();
        Client {
            reader: r,
            buf: BytesMut::new(),
            writer: w,
            trid: 0,
            name: String::new(),
            dialect: Dialect::Msnp2,
        }
    }

    /// The client's own address, as the server sees it.
    pub fn local_addr(&self) -> SocketAddr {
        self.writer
            .local_addr()
            .expect("a connected socket has an address")
    }

    /// Connects to the address in an `XFR`/`RNG` reply (`host:port`).
    pub async fn connect_to(host_port: &str) -> Client {
        Client::connect(host_port.parse().expect("host:port")).await
    }

    pub fn next_trid(&mut self) -> u32 {
        self.trid += 1;
        self.trid
    }

    /// Sends a line; CRLF is added.
    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Sends `VERB trid args...` with the next TrID and returns that TrID.
    pub async fn cmd(&mut self, verb: &str, args: &str) -> u32 {
        let trid = self.next_trid();
        let line = if args.is_empty() {
            format!("{verb} {trid}")
        } else {
            format!("{verb} {trid} {args}")
        };
        self.send(&line).await;
        trid
    }

    /// Sends a command and returns its answer (the line with its TrID), whatever else arrives
    /// meanwhile.
    pub async fn ask(&mut self, verb: &str, args: &str) -> Line {
        let t = self.cmd(verb, args).await.to_string();
        loop {
            let line = self.recv().await;
            if line.get(1) == t {
                return line;
            }
        }
    }

    /// Sends a switchboard MSG with a payload.
    pub async fn msg(&mut self, mode: &str, payload: &[u8]) -> u32 {
        let trid = self.next_trid();
        let mut bytes = format!("MSG {trid} {mode} {}\r\n", payload.len()).into_bytes();
        bytes.extend_from_slice(payload);
        self.send_raw(&bytes).await;
        trid
    }

    /// The next line, or `None` if the server closed the connection.
    pub async fn try_recv(&mut self) -> Option<Line> {
        match self.recv_within(WAIT).await {
            Ok(line) => line,
            Err(()) => panic!("{}: no line from the server within {WAIT:?}", self.name),
        }
    }

    /// The next line if one comes within `limit`: `Ok(None)` when the server closed the
    /// connection, `Err(())` when nothing came. A line cut by the limit is kept for next time.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<Line>, ()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(line) = self.take_line() {
                return Ok(Some(line));
            }
            let read = tokio::time::timeout_at(deadline, self.reader.read_buf(&mut self.buf));
            match read.await {
                Err(_) => return Err(()),
                Ok(Err(_)) => return Ok(None),
                Ok(Ok(0)) if self.buf.is_empty() => return Ok(None),
                Ok(Ok(0)) => panic!(
                    "{}: closed in the middle of a line: {:?}",
                    self.name,
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The first whole line (with its payload) in what was read, through the server's own
    /// framing and [`ServerCommand::parse`]. Stricter than either: every line ends with CRLF,
    /// parses, and is written the way the encoder writes it.
    fn take_line(&mut self) -> Option<Line> {
        if let Some(lf) = self.buf.iter().position(|&b| b == b'\n') {
            assert!(
                lf > 0 && self.buf[lf - 1] == b'\r',
                "{}: line not ended by CRLF: {:?}",
                self.name,
                String::from_utf8_lossy(&self.buf[..=lf])
            );
        }
        let frame = decode(&mut self.buf)
            .unwrap_or_else(|e| panic!("{}: unframeable line from the server: {e}", self.name))?;
        let text = String::from_utf8(frame.line.to_vec()).expect("server lines are UTF-8");
        let payload = frame.payload.as_ref().map(|p| p.to_vec());
        let command = ServerCommand::parse(frame)
            .unwrap_or_else(|e| panic!("{}: `{text}` is not a server line: {e}", self.name));
        if let ServerCommand::Ver {
            dialect: Some(d), ..
        } = command
        {
            self.dialect = d;
        }
        assert_eq!(
            command.line(self.dialect).to_string(),
            text,
            "{}: a server line not in the encoder's form ({})",
            self.name,
            self.dialect
        );
        // The tokens are for the wildcard patterns of tests, not for reading the line.
        let tokens = text.split(' ').map(String::from).collect();
        Some(Line {
            command,
            tokens,
            payload,
        })
    }

    pub async fn recv(&mut self) -> Line {
        let name = self.name.clone();
        self.try_recv()
            .await
            .unwrap_or_else(|| panic!("{name}: connection closed"))
    }

    /// Asserts the next line matches `pattern` (`*` matches one token) and returns it.
    pub async fn expect(&mut self, pattern: &str) -> Line {
        let line = self.recv().await;
        assert!(
            matches(&line, pattern),
            "{}: expected `{pattern}`, got `{}`",
            self.name,
            line.text()
        );
        line
    }

    /// Reads lines until one matches `pattern`, returning it; fails after [`WAIT`].
    pub async fn wait_for(&mut self, pattern: &str) -> Line {
        self.wait_for_within(pattern, WAIT).await
    }

    /// Reads lines until one matches `pattern`, for up to `limit`; fails with every line seen.
    pub async fn wait_for_within(&mut self, pattern: &str, limit: Duration) -> Line {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(remaining).await {
                Ok(Some(line)) if matches(&line, pattern) => return line,
                Ok(Some(line)) => seen.push(line.text()),
                Ok(None) => panic!(
                    "{}: closed while waiting for `{pattern}`; saw {seen:?}",
                    self.name
                ),
                Err(()) => panic!(
                    "{}: no `{pattern}` within {limit:?}; saw {seen:?}",
                    self.name
                ),
            }
        }
    }

    /// Asserts nothing arrives within `ms` milliseconds.
    pub async fn expect_silence(&mut self, ms: u64) {
        let mut raw = std::mem::take(&mut self.buf);
        let came = !raw.is_empty()
            || tokio::time::timeout(Duration::from_millis(ms), self.reader.read_buf(&mut raw))
                .await
                .is_ok();
        if came {
            panic!(
                "{}: expected silence, got {} bytes: {:?}",
                self.name,
                raw.len(),
                String::from_utf8_lossy(&raw)
            );
        }
    }

    /// Asserts the server closes the connection (after any lines still in flight).
    pub async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        let r = tokio::time::timeout(WAIT, self.reader.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("{}: connection not closed within {WAIT:?}", self.name));
        if let Err(e) = r {
            assert!(
                matches!(e.kind(), std::io::ErrorKind::ConnectionReset),
                "{}: unexpected read error {e}",
                self.name
            );
        }
    }

    /// Asserts the server closes the connection with nothing more than `lines` sent first.
    pub async fn expect_closed_after(&mut self, lines: &[&str]) {
        for l in lines {
            self.expect(l).await;
        }
        let mut rest = self.buf.to_vec();
        let _ = tokio::time::timeout(WAIT, self.reader.read_to_end(&mut rest))
            .await
            .expect("closed in time");
        assert!(
            rest.is_empty(),
            "{}: more data before close: {:?}",
            self.name,
            String::from_utf8_lossy(&rest)
        );
    }

    /// Sends MSN 1.0's `VER`, `INF` and the two `USR`s on a new connection, and returns the
    /// answer to the second `USR` (`USR t OK ...` or an error such as `911 t`).
    pub async fn try_md5_login(&mut self, handle: &str, password: &str) -> Line {
        self.try_md5_login_offering(handle, password, "MSNP2 CVR0", "MSNP2")
            .await
    }

    /// Like [`Client::try_md5_login`], offering the dialects `offered` (a client's VER list)
    /// and expecting the answer `answer`.
    pub async fn try_md5_login_offering(
        &mut self,
        handle: &str,
        password: &str,
        offered: &str,
        answer: &str,
    ) -> Line {
        let t = self.cmd("VER", offered).await;
        self.expect(&format!("VER {t} {answer}")).await;
        let t = self.cmd("INF", "").await;
        self.expect(&format!("INF {t} MD5")).await;
        let t = self.cmd("USR", &format!("MD5 I {handle}")).await;
        let line = self.expect(&format!("USR {t} MD5 S *")).await;
        let ServerCommand::UsrChallenge { challenge, .. } = line.command else {
            unreachable!("the pattern is a challenge")
        };
        let t = self
            .cmd(
                "USR",
                &format!("MD5 S {}", md5_hex(&format!("{challenge}{password}"))),
            )
            .await;
        let answer = self.recv().await;
        assert_eq!(answer.get(1), t.to_string(), "{}", answer.text());
        answer
    }

    /// Logs in the way MSN Messenger 1.0 does, up to and including the profile message.
    pub async fn login(address: SocketAddr, handle: &str, password: &str) -> Client {
        Client::login_offering(address, handle, password, "MSNP2 CVR0", "MSNP2").await
    }

    /// Logs in offering the dialects `offered` (a client's VER list), expecting the VER
    /// answer `answer`, up to and including the profile message.
    pub async fn login_offering(
        address: SocketAddr,
        handle: &str,
        password: &str,
        offered: &str,
        answer: &str,
    ) -> Client {
        let mut c = Client::connect(address).await;
        c.name = handle.to_string();
        let answer = c
            .try_md5_login_offering(handle, password, offered, answer)
            .await;
        let t = answer.get(1).to_string();
        let verified = if c.dialect >= Dialect::Msnp6 {
            " 1"
        } else {
            ""
        };
        assert!(
            matches(
                &answer,
                &format!("USR {t} OK {} *{verified}", handle.to_ascii_lowercase())
            ),
            "{}: expected USR OK, got `{}`",
            c.name,
            answer.text()
        );
        let profile = c.expect("MSG Hotmail Hotmail *").await;
        assert!(profile.payload_text().contains("text/x-msmsgsprofile"));
        c
    }

    /// SYN then CHG NLN (or another state), consuming the SYN burst and returning the ILNs.
    pub async fn go_online(&mut self, state: &str) -> Vec<Line> {
        let t = self.cmd("SYN", "0").await;
        let syn = self.expect(&format!("SYN {t} *")).await;
        if syn.get(2) != "0" {
            self.expect(&format!("GTC {t} * *")).await;
            self.expect(&format!("BLP {t} * *")).await;
            for list in ["FL", "AL", "BL", "RL"] {
                loop {
                    let mut l = self.recv().await;
                    // The later dialects' phone and group lines (MSNP5, MSNP7) come between.
                    while ["PRP", "LSG", "BPR"].contains(&l.get(0)) {
                        l = self.recv().await;
                    }
                    let prefix = format!("LST {t} {list} ");
                    assert!(
                        l.text().starts_with(&prefix),
                        "{}: expected `{prefix}...`, got `{}`",
                        self.name,
                        l.text()
                    );
                    if l.get(4) == l.get(5) {
                        break;
                    }
                }
            }
        }
        self.chg(state).await
    }

    /// `SYN 0`, reading past whatever else arrives: the list serial the server answers with
    /// and the FL handles.
    pub async fn synchronize(&mut self) -> (String, Vec<String>) {
        let t = self.cmd("SYN", "0").await.to_string();
        let (mut serial, mut forward) = (String::new(), Vec::new());
        loop {
            let l = self.recv().await;
            if l.get(1) != t {
                continue;
            }
            match (l.get(0), l.get(2)) {
                ("SYN", "0") => return ("0".into(), forward),
                ("SYN", current) => serial = current.to_string(),
                ("LST", "FL") if l.get(4) != "0" => forward.push(l.get(6).to_string()),
                ("LST", "RL") if l.get(4) == l.get(5) => return (serial, forward),
                _ => {}
            }
        }
    }

    /// SYN then CHG NLN, like [`Client::go_online`] but without assuming what else arrives
    /// meanwhile (a bridged account's contacts change, ring and show presence as they please).
    /// Returns the FL handles of the SYN.
    pub async fn come_online(&mut self) -> Vec<String> {
        let (_, forward) = self.synchronize().await;
        let t = self.cmd("CHG", "NLN").await;
        // The reply waits for the backend to take the state.
        self.wait_for_within(&format!("CHG {t} NLN"), Duration::from_secs(30))
            .await;
        forward
    }

    /// CHG to a state; returns the ILN lines of the first CHG (empty afterwards).
    pub async fn chg(&mut self, state: &str) -> Vec<Line> {
        let t = self.cmd("CHG", state).await;
        self.expect(&format!("CHG {t} {state}")).await;
        let mut ilns = Vec::new();
        // ILNs follow in the same write; give them a moment to arrive.
        while let Ok(Some(line)) = self.recv_within(Duration::from_millis(150)).await {
            assert_eq!(
                line.get(0),
                "ILN",
                "unexpected line after CHG: {}",
                line.text()
            );
            ilns.push(line);
        }
        ilns
    }

    /// Asks for a switchboard (XFR SB) and connects to it, returning the session connection.
    /// The answer must be the next line.
    pub async fn open_switchboard(&mut self, handle: &str) -> Client {
        let t = self.cmd("XFR", "SB").await;
        let xfr = self.expect(&format!("XFR {t} SB * CKI *")).await;
        Client::join_switchboard(&xfr, handle).await
    }

    /// Connects to the switchboard an `XFR SB` answer names, with its cookie.
    pub async fn join_switchboard(xfr: &Line, handle: &str) -> Client {
        let ServerCommand::XfrSb {
            address, cookie, ..
        } = &xfr.command
        else {
            panic!("not an XFR SB: {}", xfr.text());
        };
        let mut sb = Client::connect_to(address).await;
        sb.name = format!("{handle}/sb");
        let t = sb.cmd("USR", &format!("{handle} {cookie}")).await;
        sb.expect(&format!("USR {t} OK {handle} *")).await;
        sb
    }

    /// Answers a RNG line received on the notification connection.
    pub async fn answer(rng: &Line, handle: &str) -> (Client, Vec<Line>) {
        let ServerCommand::Rng {
            session_id,
            address,
            cookie,
            ..
        } = &rng.command
        else {
            panic!("not a RNG: {}", rng.text());
        };
        let mut sb = Client::connect_to(address).await;
        sb.name = format!("{handle}/sb");
        let t = sb
            .cmd("ANS", &format!("{handle} {cookie} {session_id}"))
            .await;
        let mut iro = Vec::new();
        loop {
            let line = sb.recv().await;
            if matches(&line, &format!("ANS {t} OK")) {
                return (sb, iro);
            }
            assert_eq!(
                line.get(0),
                "IRO",
                "unexpected line while answering: {}",
                line.text()
            );
            iro.push(line);
        }
    }
}

/// Runs a transcript file: see tests/transcripts/README.md for the format.
pub async fn run_transcript(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut accounts: Vec<(String, String, String)> = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    config.server.dispatch_listen = Some("127.0.0.1:0".parse().unwrap());
    for (n, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("account ") {
            let parts: Vec<&str> = rest.splitn(3, ' ').collect();
            accounts.push((parts[0].into(), parts[1].into(), parts[2].into()));
        } else if let Some(rest) = line.strip_prefix("config ") {
            let (key, value) = rest.trim_end().split_once(' ').unwrap_or((rest, ""));
            let bad = || -> ! { panic!("{}:{}: bad config line", path.display(), n + 1) };
            match key {
                "cookie_lifetime_secs" => {
                    config.server.cookie_lifetime_secs = value.parse().unwrap_or_else(|_| bad())
                }
                "login_timeout_secs" => {
                    config.server.login_timeout_secs = value.parse().unwrap_or_else(|_| bad())
                }
                "challenges" => config.client.challenges = value.parse().unwrap_or_else(|_| bad()),
                _ => bad(),
            }
        }
    }
    let refs: Vec<(&str, &str, &str)> = accounts
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    let mut server = TestServer::start_with(dir, config, &refs).await;
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    // The payload of the last MSG each client received, for `C=`.
    let mut payloads: HashMap<String, Vec<u8>> = HashMap::new();
    let place = |n: usize| format!("{}:{}", path.display(), n + 1);
    // `$VAR` tokens are replaced; `md5(A+B+...)` becomes the MD5 hex digest of the parts joined,
    // each part being a `$VAR` or literal text.
    let substitute = |s: &str, vars: &HashMap<String, String>| {
        let one = |t: &str| {
            t.strip_prefix('$')
                .and_then(|v| vars.get(v))
                .cloned()
                .unwrap_or_else(|| t.to_string())
        };
        // A token is also cut at `\r\n` and `\NOCRLF`, so a payload may start or be an md5.
        let piece = |t: &str| {
            let (t, tail) = match t.strip_suffix("\\NOCRLF") {
                Some(t) => (t, "\\NOCRLF"),
                None => (t, ""),
            };
            let value = match t.strip_prefix("md5(").and_then(|t| t.strip_suffix(')')) {
                Some(inner) => md5_hex(&inner.split('+').map(one).collect::<String>()),
                None => one(t),
            };
            value + tail
        };
        s.split(' ')
            .map(|t| {
                t.split("\\r\\n")
                    .map(piece)
                    .collect::<Vec<_>>()
                    .join("\\r\\n")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with("account ")
            || line.starts_with("config ")
        {
            continue;
        }
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        if head == "connect" {
            let parts: Vec<&str> = rest.split(' ').collect();
            let address = match parts[1] {
                "ns" => server.ns(),
                "sb" => server.sb(),
                "ds" => server.running().dispatch_address.unwrap(),
                other => substitute(other, &vars)
                    .parse()
                    .unwrap_or_else(|_| panic!("{}: bad address", place(n))),
            };
            let mut c = Client::connect(address).await;
            c.name = format!("{} ({})", parts[0], place(n));
            clients.insert(parts[0].to_string(), c);
        } else if head == "login" {
            let parts: Vec<&str> = rest.split(' ').collect();
            let mut c = Client::login(server.ns(), parts[1], parts[2]).await;
            c.name = parts[0].to_string();
            clients.insert(parts[0].to_string(), c);
        } else if head == "sleep" {
            tokio::time::sleep(Duration::from_millis(rest.parse().unwrap())).await;
        } else if head == "shutdown" {
            tokio::time::timeout(WAIT, server.stop())
                .await
                .unwrap_or_else(|_| panic!("{}: server not stopped within {WAIT:?}", place(n)));
        } else if head == "restart" {
            tokio::time::timeout(WAIT, server.restart())
                .await
                .unwrap_or_else(|_| panic!("{}: server not restarted within {WAIT:?}", place(n)));
        } else if let Some((name, op)) = head.split_at_checked(head.len() - 1) {
            if op == "!" {
                let client = clients
                    .remove(name)
                    .unwrap_or_else(|| panic!("{}: no client {name}", place(n)));
                drop(client);
                continue;
            }
            let client = clients
                .get_mut(name)
                .unwrap_or_else(|| panic!("{}: no client {name}", place(n)));
            client.name = format!("{name} ({})", place(n));
            match op {
                ">" => {
                    let line = substitute(rest, &vars).replace("\\r\\n", "\r\n");
                    if rest.ends_with("\\NOCRLF") {
                        client
                            .send_raw(line.trim_end_matches("\\NOCRLF").as_bytes())
                            .await;
                    } else {
                        client.send(&line).await;
                    }
                }
                "<" => {
                    let got = client.recv().await;
                    let expected: Vec<&str> = rest.split(' ').collect();
                    let ok = expected.len() == got.tokens.len()
                        && expected.iter().zip(&got.tokens).all(|(e, g)| {
                            match e.strip_prefix('$') {
                                Some(var) => match vars.get(var) {
                                    Some(v) => v == g,
                                    None => {
                                        vars.insert(var.to_string(), g.clone());
                                        true
                                    }
                                },
                                None => *e == "*" || e == g,
                            }
                        });
                    assert!(ok, "{}: expected `{rest}`, got `{}`", place(n), got.text());
                    if let Some(p) = got.payload {
                        payloads.insert(name.to_string(), p);
                    }
                }
                "=" => {
                    let want = rest.replace("\\r\\n", "\r\n");
                    let got = payloads.remove(name).unwrap_or_else(|| {
                        panic!("{}: {name} has no MSG payload to check", place(n))
                    });
                    assert!(
                        got == want.as_bytes(),
                        "{}: expected payload {want:?}, got {:?}",
                        place(n),
                        String::from_utf8_lossy(&got)
                    );
                }
                "~" => client.expect_silence(rest.parse().unwrap_or(200)).await,
                "." => client.expect_closed().await,
                _ => panic!("{}: unknown directive {head}", place(n)),
            }
        } else {
            panic!("{}: unknown directive {head}", place(n));
        }
    }
}

/// The SQLite file of a test server's config.
pub fn db_file(config: &Config) -> PathBuf {
    config
        .storage
        .database
        .file()
        .expect("an SQLite database")
        .to_owned()
}
