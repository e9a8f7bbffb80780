//! The msncd scripting front end, driven with a plain socket client as a shell script would:
//! a script chats with an MSN 1.0 client on the same server, and, logged in as an account
//! mapped to XMPP or Matrix, with an XMPP client on a real Prosody or a Matrix client on a real
//! Synapse.

#![recursion_limit = "256"]

mod common;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{TestServer, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

/// A script's connection: write lines, read lines, like `socat` would.
struct Script {
    reader: BufReader<Box<dyn AsyncRead + Unpin + Send>>,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
}

impl Script {
    async fn tcp(server: &TestServer) -> Script {
        let address = server.running().msncd.tcp.expect("msncd on TCP");
        let (r, w) = TcpStream::connect(address).await.unwrap().into_split();
        Script {
            reader: BufReader::new(Box::new(r)),
            writer: Box::new(w),
        }
    }

    async fn unix(path: &std::path::Path) -> Script {
        let (r, w) = UnixStream::connect(path).await.unwrap().into_split();
        Script {
            reader: BufReader::new(Box::new(r)),
            writer: Box::new(w),
        }
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next line, without its newline.
    async fn line(&mut self) -> String {
        let mut raw = String::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut raw))
            .await
            .expect("a line from msncd in time")
            .unwrap();
        assert!(n > 0, "msncd closed the connection");
        raw.strip_suffix('\n').unwrap_or(&raw).to_string()
    }

    /// Sends a command and returns its one-line answer.
    async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.line().await
    }

    async fn ok(&mut self, line: &str) {
        assert_eq!(self.cmd(line).await, "OK", "answer to `{line}`");
    }

    /// One POLL: the event lines before POLLEND.
    async fn poll(&mut self) -> Vec<String> {
        self.send("POLL").await;
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            if line == "POLLEND" {
                return lines;
            }
            lines.push(line);
        }
    }

    /// Polls until an event line starting with `prefix` comes; returns the lines from it on
    /// (a MSG's lines follow it).
    async fn poll_for(&mut self, prefix: &str) -> Vec<String> {
        self.poll_for_within(prefix, WAIT).await.1
    }

    /// Like [`Script::poll_for`] for up to `limit`, also returning the events before it.
    async fn poll_for_within(
        &mut self,
        prefix: &str,
        limit: Duration,
    ) -> (Vec<String>, Vec<String>) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let lines = self.poll().await;
            if let Some(i) = lines.iter().position(|l| l.starts_with(prefix)) {
                seen.extend_from_slice(&lines[..i]);
                return (seen, lines[i..].to_vec());
            }
            seen.extend(lines);
            assert!(
                tokio::time::Instant::now() < deadline,
                "no `{prefix}` event within {limit:?}; saw {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn with_msncd(config: &mut msngate::config::Config) {
    config.msncd.listen = Some("127.0.0.1:0".parse().unwrap());
}

async fn server_with_msncd(
    accounts: &[(&str, &str, &str)],
    edit: impl FnOnce(&mut msngate::config::Config, &std::path::Path),
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    with_msncd(&mut config);
    edit(&mut config, dir.path());
    TestServer::start_with(dir, config, accounts).await
}

const ALICE: (&str, &str, &str) = ("alice@example.com", "alice-pw", "Alice");
const BOB: (&str, &str, &str) = ("bob@example.com", "bob-pw", "Bob");

#[tokio::test]
async fn a_script_and_an_msn_client_chat_see_states_and_manage_contacts() {
    let server = server_with_msncd(&[ALICE, BOB], |_, _| {}).await;
    let mut bob = server.login("bob@example.com", "bob-pw").await;
    bob.go_online("NLN").await;

    let mut script = Script::tcp(&server).await;
    script.ok("LOGIN alice@example.com alice-pw").await;

    // The script adds Bob: he sees that Alice added him; the script learns of its new entry.
    script.ok("ADD Bobby bob@example.com").await;
    bob.wait_for("ADD 0 RL * alice@example.com *").await;
    script.poll_for("ADDFL bob@example.com").await;
    // Bob adds Alice back: the script hears of it.
    let t = bob.cmd("ADD", "FL alice@example.com Alice").await;
    bob.wait_for(&format!("ADD {t} FL * alice@example.com Alice"))
        .await;
    script.poll_for("UADD bob@example.com").await;

    // The script is invisible until its first STATUS; then Bob sees each change.
    script.ok("STATUS away").await;
    bob.wait_for("NLN AWY alice@example.com *").await;
    script.ok("STATUS online").await;
    bob.wait_for("NLN NLN alice@example.com *").await;
    // And the script sees Bob's.
    bob.chg("BSY").await;
    script.poll_for("STCH bob@example.com busy").await;

    // Script to MSN client, non-ASCII and two lines: Bob is rung and joins.
    script
        .ok("SENDMSG 2 bob@example.com\nGrüße, Bob ☺\nsecond line")
        .await;
    let rng = bob.wait_for("RNG * * CKI * alice@example.com *").await;
    let (mut sb, _) = common::Client::answer(&rng, "bob@example.com").await;
    let msg = sb.expect("MSG alice@example.com * *").await;
    let payload = msg.payload_text();
    assert!(payload.contains("text/plain; charset=UTF-8"), "{payload}");
    assert!(
        payload.ends_with("\r\n\r\nGrüße, Bob ☺\r\nsecond line"),
        "{payload:?}"
    );
    script.poll_for("MFLUSH bob@example.com").await;

    // A second message goes over the same chat, at once.
    script.ok("SENDMSG 1 bob@example.com\nagain").await;
    let msg = sb.expect("MSG alice@example.com * *").await;
    assert!(msg.payload_text().ends_with("\r\n\r\nagain"));

    // MSN client to script: typing, then text.
    sb.msg(
        "U",
        b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: bob@example.com\r\n\r\n\r\n",
    )
    .await;
    script.poll_for("TYPING bob@example.com").await;
    sb.msg(
        "N",
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n¿Qué tal?\r\nbien"
            .as_bytes(),
    )
    .await;
    let event = script.poll_for("MSG ").await;
    assert_eq!(event[0], "MSG 5 3 bob@example.com", "{event:?}");
    assert_eq!(
        event[1..6],
        [
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=UTF-8",
            "",
            "¿Qué tal?",
            "bien"
        ]
    );

    // Lists and details, nicks URL-encoded.
    script.send("GETCL").await;
    assert_eq!(script.line().await, "CL 1");
    assert_eq!(script.line().await, "busy bob@example.com Bob");
    script.send("GETRCL").await;
    assert_eq!(script.line().await, "CL 1");
    assert_eq!(script.line().await, "busy bob@example.com Bob");
    script.send("INFO bob@example.com").await;
    let mut info = Vec::new();
    loop {
        let l = script.line().await;
        if l.is_empty() {
            break;
        }
        info.push(l);
    }
    assert!(info.contains(&"status = busy".to_string()), "{info:?}");
    assert!(info.contains(&"lists = FL AL RL".to_string()), "{info:?}");
    script.ok("NICK Alice the script").await;
    bob.wait_for("NLN NLN alice@example.com Alice%20the%20script")
        .await;

    // Bob closes the chat: the script is told.
    sb.send("OUT").await;
    script.poll_for("SCLOSE USER bob@example.com 0").await;

    // Deleting both ways.
    script.ok("DEL bob@example.com").await;
    bob.wait_for("REM 0 RL * alice@example.com").await;
    script.poll_for("DELFL bob@example.com").await;
    let t = bob.cmd("REM", "FL alice@example.com").await;
    bob.wait_for(&format!("REM {t} FL * alice@example.com"))
        .await;
    script.poll_for("UDEL bob@example.com").await;

    // LOGOFF takes the script offline and back to the start.
    script.ok("LOGOFF").await;
    assert_eq!(script.cmd("STATUS online").await, "ERR 302 not logged in");
    script.ok("LOGIN alice@example.com alice-pw").await;
}

#[tokio::test]
async fn an_msn_client_can_start_the_chat() {
    let server = server_with_msncd(&[ALICE, BOB], |_, _| {}).await;
    let mut script = Script::tcp(&server).await;
    script.ok("LOGIN alice@example.com alice-pw").await;
    script.ok("STATUS online").await;
    let mut bob = server.login("bob@example.com", "bob-pw").await;
    bob.go_online("NLN").await;
    let mut sb = bob.open_switchboard("bob@example.com").await;
    let t = sb.cmd("CAL", "alice@example.com").await;
    sb.expect(&format!("CAL {t} RINGING *")).await;
    sb.expect("JOI alice@example.com *").await;
    sb.msg(
        "N",
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nping",
    )
    .await;
    let event = script.poll_for("MSG ").await;
    assert_eq!(event[0], "MSG 4 3 bob@example.com");
    assert_eq!(event[4], "ping");
    // The answer goes back over the chat Bob opened.
    script.ok("SENDMSG 1 bob@example.com\npong").await;
    let msg = sb.expect("MSG alice@example.com * *").await;
    assert!(msg.payload_text().ends_with("\r\n\r\npong"));
}

#[tokio::test]
async fn bad_input_gets_err_and_the_connection_stays_usable() {
    let server = server_with_msncd(&[ALICE, BOB], |_, _| {}).await;
    let mut script = Script::tcp(&server).await;
    assert_eq!(
        script.cmd("LOGIN alice@example.com wrong").await,
        "ERR 911 authentication failed (wrong e-mail or password)"
    );
    assert_eq!(
        script.cmd("LOGIN nobody@example.com x").await,
        "ERR 911 authentication failed (wrong e-mail or password)"
    );
    assert_eq!(script.cmd("FROB").await, "ERR 0 unknown command FROB");
    assert_eq!(script.cmd("STATUS online").await, "ERR 302 not logged in");
    assert_eq!(script.cmd(&"x".repeat(5000)).await, "ERR 0 line too long");
    assert_eq!(script.poll().await, Vec::<String>::new());
    script.ok("LOGIN alice@example.com alice-pw").await;
    assert!(script
        .cmd("STATUS sleepy")
        .await
        .starts_with("ERR 0 unknown status"));
    assert!(script
        .cmd("ADD onlyonearg")
        .await
        .starts_with("ERR 0 usage"));
    assert!(script
        .cmd("LOGIN alice@example.com alice-pw")
        .await
        .starts_with("ERR 0 already"));
    assert_eq!(
        script.cmd("SENDMSG 1000 bob@example.com").await,
        "ERR 0 at most 256 lines per message"
    );
    let long = "y".repeat(2000);
    let mut send = String::from("SENDMSG 5 bob@example.com");
    for _ in 0..5 {
        send.push('\n');
        send.push_str(&long);
    }
    assert!(script
        .cmd(&send)
        .await
        .starts_with("ERR 0 message too long"));
    assert_eq!(
        script.cmd("DEL nobody-known").await,
        "ERR 0 no contact with the e-mail or nick nobody-known"
    );
    assert_eq!(
        script.cmd("DEL carol@example.com").await,
        "ERR 216 not on the list"
    );
    // Still logged in and usable.
    script.ok("STATUS busy").await;
    assert_eq!(script.poll().await, Vec::<String>::new());
}

/// A shell script whose `$to` came out empty (or which put an extra word in) announces a line
/// all the same: that line is message text, read and never run as a command, however wrong
/// the SENDMSG line is.
#[tokio::test]
async fn message_text_is_never_run_as_a_command_whatever_is_wrong_with_sendmsg() {
    let server = server_with_msncd(&[ALICE, BOB], |_, _| {}).await;
    let mut script = Script::tcp(&server).await;
    script.ok("LOGIN alice@example.com alice-pw").await;
    script.ok("ADD Bob bob@example.com").await;
    script.poll_for("ADDFL bob@example.com").await;
    for header in ["SENDMSG 1 ", "SENDMSG 1", "SENDMSG 1 bob@example.com extra"] {
        let answer = script.cmd(&format!("{header}\nDEL bob@example.com")).await;
        assert!(answer.starts_with("ERR 0 usage"), "{header:?}: {answer}");
    }
    // Not logged in: the lines are read too.
    let mut other = Script::tcp(&server).await;
    assert_eq!(
        other.cmd("SENDMSG 1 bob@example.com\nFROB").await,
        "ERR 302 not logged in"
    );
    assert_eq!(other.cmd("FROB").await, "ERR 0 unknown command FROB");
    // Bob is still Alice's contact, and the connection is in step.
    script.send("GETCL").await;
    assert_eq!(script.line().await, "CL 1");
    assert!(script.line().await.contains(" bob@example.com "));
    assert_eq!(script.poll().await, Vec::<String>::new());
}

/// One documented bound for a line, 2,048 bytes, wherever it falls in what msncd reads: a
/// longer command is refused and not run, whether it arrives alone, after other lines in the
/// same write, or in pieces.
#[tokio::test]
async fn a_line_over_2048_bytes_is_refused_wherever_it_falls() {
    let server = server_with_msncd(&[ALICE, BOB], |_, _| {}).await;
    let mut script = Script::tcp(&server).await;
    script.ok("LOGIN alice@example.com alice-pw").await;
    let long_status = format!("STATUS away{}", " ".repeat(3000));
    assert_eq!(script.cmd(&long_status).await, "ERR 0 line too long");
    for before in [1, 100, 1000, 3000] {
        let mut batch = String::new();
        for _ in 0..before {
            batch.push_str("FROB\n");
        }
        script.send(&format!("{batch}{long_status}")).await;
        for _ in 0..before {
            script.line().await;
        }
        assert_eq!(
            script.line().await,
            "ERR 0 line too long",
            "after {before} lines"
        );
    }
    // In pieces, slowly.
    script.writer.write_all(b"STATUS away").await.unwrap();
    for _ in 0..3 {
        script.writer.write_all(&[b' '; 1000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    script.send("").await;
    assert_eq!(script.line().await, "ERR 0 line too long");
    // Exactly 2,048 bytes is still a line.
    let fits = format!("STATUS busy{}", " ".repeat(2048 - "STATUS busy".len()));
    script.ok(&fits).await;
    // Nothing of the long lines was run: Alice is busy, never away.
    let mut bob = server.login("bob@example.com", "bob-pw").await;
    bob.go_online("NLN").await;
    let t = bob.cmd("ADD", "FL alice@example.com Alice").await;
    bob.expect(&format!("ADD {t} FL * alice@example.com Alice"))
        .await;
    bob.expect(&format!("ILN {t} BSY alice@example.com Alice"))
        .await;
}

#[tokio::test]
async fn the_unix_socket_is_owner_only_and_removed_at_shutdown() {
    let mut server = server_with_msncd(&[ALICE], |c, dir| {
        c.msncd.listen = None;
        c.msncd.unix_socket = Some(dir.join("msncd.sock"));
    })
    .await;
    let path = server.running().msncd.unix_socket.clone().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let mut script = Script::unix(&path).await;
    script.ok("LOGIN alice@example.com alice-pw").await;
    assert_eq!(script.poll().await, Vec::<String>::new());
    server.stop().await;
    assert!(!path.exists(), "socket left behind");
    // A stale socket file is replaced when the server starts again.
    let _stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(_stale);
    server.restart().await;
    let mut script = Script::unix(&path).await;
    script.ok("LOGIN alice@example.com alice-pw").await;
}

#[tokio::test]
async fn a_full_event_queue_drops_the_oldest_and_says_so() {
    let server = server_with_msncd(&[ALICE, BOB], |c, _| c.msncd.max_events = 3).await;
    let mut bob = server.login("bob@example.com", "bob-pw").await;
    bob.go_online("NLN").await;
    let mut script = Script::tcp(&server).await;
    script.ok("LOGIN alice@example.com alice-pw").await;
    script.ok("ADD Bob bob@example.com").await;
    bob.wait_for("ADD 0 RL * alice@example.com *").await;
    script.poll_for("STCH bob@example.com online").await;
    for state in ["AWY", "BSY", "BRB", "PHN", "LUN"] {
        bob.chg(state).await;
    }
    // A command through the server after Bob's changes: their events are queued by now.
    script.ok("STATUS online").await;
    let events = script.poll().await;
    assert!(
        events[0].starts_with("ERR 0 ")
            && events[0].ends_with(" events discarded: more than 3 arrived between two POLLs"),
        "{events:?}"
    );
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[3], "STCH bob@example.com lunch");
}

#[tokio::test]
async fn a_public_tcp_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    config.msncd.listen = Some("0.0.0.0:0".parse().unwrap());
    let err = msngate::server::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[cfg(feature = "xmpp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_mapped_to_xmpp_chats_with_an_xmpp_user() {
    use support::prosody::{trust_test_certificate, Prosody};
    use support::xmpp::XmppClient;

    trust_test_certificate();
    let prosody = Prosody::start().await;
    for user in ["alice", "bob"] {
        prosody.register(user, &format!("{user}-pw")).await;
    }
    prosody.set_roster("alice", &[("bob@localhost", "both")]);
    prosody.set_roster("bob", &[("alice@localhost", "both")]);
    let mut bob = XmppClient::connect(&prosody.jid("bob"), "bob-pw", prosody.port())
        .await
        .unwrap_or_else(|e| panic!("bob could not connect: {e:?}\n{}", prosody.log()));
    bob.send_presence(None, None).await;

    let server = TestServer::start_linked(
        "alice@hotmail.com",
        "msn-pw",
        ("xmpp", &prosody.jid("alice"), "alice-pw"),
        vec![("server".into(), prosody.addr())],
        with_msncd,
    )
    .await;

    let mut script = Script::tcp(&server).await;
    script.ok("LOGIN alice@hotmail.com msn-pw").await;
    script.ok("STATUS online").await;
    script.poll_for("STCH bob@localhost online").await;

    script
        .ok("SENDMSG 1 bob@localhost\nhello from a script ✓")
        .await;
    let chat = bob.next_chat().await;
    assert_eq!(
        (chat.from.to_string(), chat.body.as_str()),
        (prosody.jid("alice"), "hello from a script ✓")
    );

    bob.send_chat(&prosody.jid("alice"), "hi, script — ça va?", None)
        .await;
    let event = script.poll_for("MSG ").await;
    assert!(event[0].ends_with(" bob@localhost"), "{event:?}");
    assert!(
        event.iter().any(|l| l == "hi, script — ça va?"),
        "{event:?}"
    );
}

/// A script whose account is linked to Matrix accepts a direct chat invitation the way msncd
/// scripts add anyone (`ADD`: FL, then AL), sees the inviter come online without the contact
/// flapping off and on its lists, and chats both ways.
#[cfg(feature = "matrix")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_mapped_to_matrix_accepts_an_invitation_and_chats() {
    use matrix_sdk::ruma::presence::PresenceState;
    use support::matrix::MatrixClient;
    use support::synapse::Synapse;

    const LONG: Duration = Duration::from_secs(30);
    let synapse = Synapse::start().await;
    synapse.register("alice", "alice-pw").await;
    synapse.register("bob", "bob-pw").await;
    let store = tempfile::tempdir().unwrap();
    let linked = msngate_bridge_matrix::link(
        &synapse.url(),
        &synapse.user_id("alice"),
        "alice-pw",
        &store.path().join("alice"),
    )
    .await
    .expect("alice's account links");
    let server = TestServer::start_linked(
        "alice@hotmail.com",
        "msn-pw",
        ("matrix", &linked.account, &linked.secret),
        linked.options.clone(),
        with_msncd,
    )
    .await;

    let mut script = Script::tcp(&server).await;
    script.ok("LOGIN alice@hotmail.com msn-pw").await;
    script.ok("STATUS online").await;
    let mut bob = MatrixClient::login(&synapse.url(), &synapse.user_id("bob"), "bob-pw").await;
    bob.set_presence(PresenceState::Online, None).await;
    let dm = bob.create_dm(&synapse.user_id("alice")).await;
    script.poll_for_within("UADD bob@localhost", LONG).await;

    script.ok("ADD Bob bob@localhost").await;
    let (before, _) = script
        .poll_for_within("STCH bob@localhost online", LONG)
        .await;
    let flaps: Vec<_> = before
        .iter()
        .filter(|e| e.starts_with("DELFL") || e.starts_with("UDEL") || e.contains("+room"))
        .collect();
    assert!(flaps.is_empty(), "the contact flapped: {before:?}");
    bob.wait_member_joined(&dm, &synapse.user_id("alice")).await;

    script
        .ok("SENDMSG 1 bob@localhost\nhello from a script ✓")
        .await;
    let (_, text) = bob.next_text_from(&synapse.user_id("alice")).await;
    assert_eq!(text, "hello from a script ✓");

    bob.send_text(&dm, "hi, script — ça va?").await;
    let (_, event) = script.poll_for_within("MSG ", LONG).await;
    assert!(event[0].ends_with(" bob@localhost"), "{event:?}");
    assert!(
        event.iter().any(|l| l == "hi, script — ça va?"),
        "{event:?}"
    );
}
