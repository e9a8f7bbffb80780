//! The ejabberd test harness itself (tests/support/ejabberd.rs), against a real ejabberd:
//! servers start (installing ejabberd if the machine has none), accounts and rosters made
//! through its admin API work for an independent XMPP client, data survives a restart, and
//! nothing is left running after a server is dropped.
#![cfg(feature = "xmpp")]

mod support;

use std::time::{Duration, Instant};

use support::ejabberd::Ejabberd;
use support::xmpp::{ConnectError, XmppClient, TIMEOUT};
use tokio_xmpp::parsers::presence::Show;
use tokio_xmpp::parsers::roster::Subscription;

async fn connect(server: &Ejabberd, user: &str, password: &str) -> XmppClient {
    XmppClient::connect(&server.jid(user), password, server.port())
        .await
        .unwrap_or_else(|e| panic!("{user} could not connect: {e:?}\n{}", server.log()))
}

#[tokio::test]
async fn accounts_rosters_chat_and_blocking() {
    let t = Instant::now();
    let server = Ejabberd::start().await;
    eprintln!("ejabberd ready in {:.2?}", t.elapsed());
    let t = Instant::now();
    server.register("alice", "a").await;
    server.register("bob", "b").await;
    server
        .set_roster("alice", &[("bob@localhost", "both")])
        .await;
    server
        .set_roster("bob", &[("alice@localhost", "both")])
        .await;
    eprintln!("two accounts and rosters in {:.2?}", t.elapsed());

    let mut alice = connect(&server, "alice", "a").await;
    let roster = alice.roster().await;
    assert_eq!(roster.len(), 1, "{roster:?}");
    assert_eq!(roster[0].jid.to_string(), "bob@localhost");
    assert_eq!(roster[0].subscription, Subscription::Both);

    // Mutual subscriptions: presence flows without any request.
    let mut bob = connect(&server, "bob", "b").await;
    bob.send_presence(Some(Show::Away), None).await;
    loop {
        if alice.next_presence_from("bob@localhost").await.show == Some(Show::Away) {
            break;
        }
    }

    let text = "Grüße aus Zürich — 你好 ☕";
    alice.send_chat("bob@localhost", text, None).await;
    assert_eq!(bob.next_chat().await.body, text);

    // mod_blocking (XEP-0191) is on.
    alice.block("bob@localhost").await;
    bob.send_chat("alice@localhost", "can you hear me?", None)
        .await;
    let silent = alice
        .wait_for_within(Duration::from_millis(500), |st| match st {
            tokio_xmpp::Stanza::Message(m) if !m.bodies.is_empty() => Some(()),
            _ => None,
        })
        .await;
    assert!(silent.is_none(), "a blocked contact's message arrived");
    alice.unblock("bob@localhost").await;
    bob.send_chat("alice@localhost", "and now?", None).await;
    assert_eq!(alice.next_chat().await.body, "and now?");

    // A wrong password is refused at once; registering again changes the password.
    let t = Instant::now();
    let wrong = XmppClient::connect(&server.jid("alice"), "wrong", server.port()).await;
    assert!(
        matches!(wrong, Err(ConnectError::Auth(_))),
        "expected an authentication error, got {:?}",
        wrong.err()
    );
    assert!(t.elapsed() < TIMEOUT / 2, "took {:?}", t.elapsed());
    server.register("bob", "new").await;
    connect(&server, "bob", "new").await;
}

#[tokio::test]
async fn restart_keeps_accounts_and_offline_messages() {
    let mut server = Ejabberd::start().await;
    server.register("alice", "a").await;
    server.register("bob", "b").await;
    let mut alice = connect(&server, "alice", "a").await;
    alice
        .send_chat("bob@localhost", "stored while you were away", None)
        .await;
    // Give the server a moment to store it, and log out cleanly: this client could not come
    // back by itself (see the notes of support/xmpp.rs on ejabberd and resumption).
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.disconnect().await;

    let port = server.port();
    let t = Instant::now();
    server.stop().await;
    let stopped = t.elapsed();
    server.start_again().await;
    eprintln!("restart: stop {stopped:.2?}, total {:.2?}", t.elapsed());
    assert_eq!(server.port(), port);

    let mut bob = connect(&server, "bob", "b").await;
    let offline = bob.next_chat().await;
    assert_eq!(
        (offline.from.to_string(), offline.body.as_str()),
        ("alice@localhost".to_owned(), "stored while you were away")
    );
    let mut alice = connect(&server, "alice", "a").await;
    bob.send_chat("alice@localhost", "got it", None).await;
    assert_eq!(alice.next_chat().await.body, "got it");
}

#[tokio::test]
async fn dropping_the_server_leaves_no_process() {
    let mut server = Ejabberd::start().await;
    assert!(server.is_running());
    let vm = server.pid().expect("a running VM");
    let family = descendants(vm);
    assert!(!family.is_empty(), "the VM has helper processes");
    drop(server);
    // The helpers notice that the VM is gone and exit by themselves.
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left: Vec<u32> = std::iter::once(vm)
            .chain(family.iter().copied())
            .filter(|pid| alive(*pid))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(left.is_empty(), "still running: {left:?}");
}

/// Every process below `pid` (from /proc's children lists).
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{parent}/task")).into_iter();
        for task in tasks.flatten().flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// Whether `pid` exists and is not a zombie waiting to be reaped by someone else.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name in parentheses.
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}
