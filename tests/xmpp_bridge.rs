//! The XMPP bridge against a real Prosody, with independent XMPP clients on the other side:
//! an MSN 1.0 client whose account is mapped to an XMPP account sees its roster, presence and
//! chats as MSN contacts.
#![cfg(feature = "xmpp")]

mod common;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use common::{Client, Line, TestServer};
use support::process::{self, ServerProcess};
use support::prosody::{trust_test_certificate, Prosody};
use support::xmpp::XmppClient;
use tokio_xmpp::parsers::chatstates::ChatState;
use tokio_xmpp::parsers::presence::{Show, Type as PresenceType};

/// A running Prosody with `alice` (the bridged account) and `bob` (a plain XMPP user) who
/// have each other on their rosters, and an msngate whose alice@hotmail.com maps to alice.
struct Setup {
    prosody: Prosody,
    server: TestServer,
    bob: XmppClient,
}

async fn xmpp(prosody: &Prosody, user: &str) -> XmppClient {
    XmppClient::connect(&prosody.jid(user), &format!("{user}-pw"), prosody.port())
        .await
        .unwrap_or_else(|e| panic!("{user} could not connect: {e:?}\n{}", prosody.log()))
}

async fn setup_with(xmpp_password: &str) -> Setup {
    setup_with_contacts(xmpp_password, &["bob"]).await
}

/// [`setup_with`], with Alice and each of `contacts` mutual contacts on the XMPP side.
async fn setup_with_contacts(xmpp_password: &str, contacts: &[&str]) -> Setup {
    setup_configured(xmpp_password, contacts, |_| {}).await
}

/// [`setup_with_contacts`], with a change to msngate's configuration.
async fn setup_configured(
    xmpp_password: &str,
    contacts: &[&str],
    configure: impl FnOnce(&mut msngate::config::Config),
) -> Setup {
    trust_test_certificate();
    let prosody = Prosody::start().await;
    for user in ["alice", "bob", "carol"] {
        prosody.register(user, &format!("{user}-pw")).await;
    }
    // Alice and Bob are contacts on the XMPP side before msngate is involved (written into
    // Prosody's storage: deterministic, and the handshake itself is tested elsewhere).
    let jids: Vec<String> = contacts.iter().map(|c| format!("{c}@localhost")).collect();
    let items: Vec<(&str, &str)> = jids.iter().map(|j| (j.as_str(), "both")).collect();
    prosody.set_roster("alice", &items);
    for contact in contacts {
        prosody.set_roster(contact, &[("alice@localhost", "both")]);
    }
    let bob = xmpp(&prosody, "bob").await;

    let server = TestServer::start_linked(
        "alice@hotmail.com",
        "msn-pw",
        ("xmpp", &prosody.jid("alice"), xmpp_password),
        vec![("server".into(), prosody.addr())],
        configure,
    )
    .await;
    Setup {
        prosody,
        server,
        bob,
    }
}

async fn msn_alice(server: &TestServer) -> Client {
    server.login("alice@hotmail.com", "msn-pw").await
}

/// Opens a switchboard and calls Bob, an XMPP contact: he joins at once.
async fn call_bob(alice: &mut Client) -> Client {
    let mut sb = alice.open_switchboard("alice@hotmail.com").await;
    let t = sb.cmd("CAL", "bob@localhost").await;
    sb.expect(&format!("CAL {t} RINGING *")).await;
    sb.expect("JOI bob@localhost *").await;
    sb
}

/// The next presence from `jid` that `want` accepts.
async fn presence_where(
    bob: &mut XmppClient,
    jid: &str,
    mut want: impl FnMut(&tokio_xmpp::parsers::presence::Presence) -> bool,
) -> tokio_xmpp::parsers::presence::Presence {
    let jid = jid.to_owned();
    bob.wait_for(
        &format!("presence from {jid}"),
        move |stanza| match stanza {
            tokio_xmpp::Stanza::Presence(p)
                if p.from
                    .as_ref()
                    .is_some_and(|f| f.to_bare().to_string() == jid)
                    && want(p) =>
            {
                Some(p.clone())
            }
            _ => None,
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_and_presence_both_ways() {
    let Setup {
        prosody: _p,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    bob.send_presence(Some(Show::Away), Some("at the shops"))
        .await;
    let mut alice = msn_alice(&server).await;
    // The roster is the FL (and, with a mutual subscription, the AL and RL) in SYN.
    let t = alice.cmd("SYN", "0").await;
    let syn = alice.expect(&format!("SYN {t} *")).await;
    assert_ne!(syn.get(2), "0");
    alice.expect(&format!("GTC {t} * A")).await;
    alice.expect(&format!("BLP {t} * AL")).await;
    alice
        .expect(&format!("LST {t} FL * 1 1 bob@localhost *"))
        .await;
    alice
        .expect(&format!("LST {t} AL * 1 1 bob@localhost *"))
        .await;
    alice.expect(&format!("LST {t} BL * 0 0")).await;
    alice
        .expect(&format!("LST {t} RL * 1 1 bob@localhost *"))
        .await;

    // Bob's XMPP presence is an MSN state. The bridge goes online for Alice at her first CHG,
    // so his state follows it as NLN; changes arrive as NLN too.
    let t = alice.cmd("CHG", "NLN").await;
    alice.expect(&format!("CHG {t} NLN")).await;
    alice
        .wait_for_within("NLN AWY bob@localhost *", Duration::from_secs(5))
        .await;
    bob.send_presence(Some(Show::Dnd), None).await;
    alice
        .wait_for_within("NLN BSY bob@localhost *", Duration::from_secs(5))
        .await;

    // Alice's MSN state reaches Bob as XMPP presence, and HDN looks offline.
    let from = format!("alice@{}", prosody_domain());
    alice.chg("BSY").await;
    presence_where(&mut bob, &from, |p| {
        p.type_ == PresenceType::None && p.show == Some(Show::Dnd)
    })
    .await;
    alice.chg("LUN").await;
    let p = presence_where(&mut bob, &from, |p| p.show == Some(Show::Xa)).await;
    assert_eq!(
        p.statuses.values().next().map(String::as_str),
        Some("Out to Lunch")
    );
    alice.chg("HDN").await;
    presence_where(&mut bob, &from, |p| p.type_ == PresenceType::Unavailable).await;

    // Bob going offline is FLN.
    alice.chg("NLN").await;
    presence_where(&mut bob, &from, |p| {
        p.type_ == PresenceType::None && p.show.is_none()
    })
    .await;
    bob.send_unavailable().await;
    alice
        .wait_for_within("FLN bob@localhost", Duration::from_secs(5))
        .await;
}

fn prosody_domain() -> &'static str {
    support::prosody::DOMAIN
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_both_ways_with_typing_and_non_ascii_text() {
    let Setup {
        prosody: _p,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    bob.send_presence(None, None).await;
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    // Bob shows up once the bridge is online for Alice (at her first CHG).
    alice
        .wait_for_within("NLN NLN bob@localhost *", Duration::from_secs(5))
        .await;
    // Alice opens a conversation with Bob: he joins at once.
    let mut sb = call_bob(&mut alice).await;

    let text = "Grüße aus 1999 ☺ — 你好";
    let payload =
        format!("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{text}");
    let t = sb.msg("A", payload.as_bytes()).await;
    // The ACK means the XMPP server acknowledged the stanza (stream management).
    sb.expect(&format!("ACK {t}")).await;
    let got = bob.next_chat().await;
    assert_eq!(
        (got.from.to_string(), got.body),
        (format!("alice@{}", prosody_domain()), text.to_owned())
    );

    // Typing both ways.
    let typing = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: alice@hotmail.com\r\n\r\n\r\n";
    sb.msg("U", typing).await;
    let (from, state) = bob.next_chat_state().await;
    assert_eq!(
        (from.to_string(), state),
        (format!("alice@{}", prosody_domain()), ChatState::Composing)
    );
    bob.send_chat_state(&format!("alice@{}", prosody_domain()), ChatState::Composing)
        .await;
    let line = sb.expect("MSG bob@localhost * *").await;
    assert!(
        line.payload_text().contains("text/x-msmsgscontrol"),
        "{}",
        line.payload_text()
    );

    // Bob answers with a multi-line, non-ASCII message.
    bob.send_chat(
        &format!("alice@{}", prosody_domain()),
        "Ça va?\nOui ☕",
        Some(ChatState::Active),
    )
    .await;
    let line = sb.expect("MSG bob@localhost * *").await;
    let body = line.payload_text();
    assert!(body.contains("text/plain; charset=UTF-8"), "{body}");
    assert!(body.ends_with("\r\n\r\nÇa va?\r\nOui ☕"), "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_message_rings_the_msn_client() {
    let Setup {
        prosody: _p,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    bob.send_chat(
        &format!("alice@{}", prosody_domain()),
        "Are you there?",
        None,
    )
    .await;
    bob.send_chat(&format!("alice@{}", prosody_domain()), "Hello??", None)
        .await;
    let rng = alice
        .wait_for_within("RNG * * CKI * bob@localhost *", Duration::from_secs(5))
        .await;
    let (mut sb, iro) = Client::answer(&rng, "alice@hotmail.com").await;
    assert_eq!(iro.len(), 1);
    assert!(
        common::matches(&iro[0], "IRO * 1 1 bob@localhost *"),
        "{}",
        iro[0].text()
    );
    // Both messages were held until the client answered, and arrive in order.
    let first = sb.expect("MSG bob@localhost * *").await;
    assert!(first.payload_text().ends_with("Are you there?"));
    let second = sb.expect("MSG bob@localhost * *").await;
    assert!(second.payload_text().ends_with("Hello??"));
    // The reply goes back through the same session.
    let t = sb
        .msg(
            "A",
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nyes!",
        )
        .await;
    assert_eq!(bob.next_chat().await.body, "yes!");
    sb.expect(&format!("ACK {t}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_request_appears_on_the_rl_and_is_approved_or_blocked() {
    let Setup {
        prosody,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    let mut carol = xmpp(&prosody, "carol").await;
    let alice_jid = format!("alice@{}", prosody_domain());
    carol.subscribe(&alice_jid).await;
    alice
        .wait_for_within("ADD 0 RL * carol@localhost *", Duration::from_secs(5))
        .await;
    // Allowing her approves the subscription.
    let t = alice.cmd("ADD", "AL carol@localhost Carol").await;
    alice
        .wait_for_within(
            &format!("ADD {t} AL * carol@localhost Carol"),
            Duration::from_secs(5),
        )
        .await;
    carol
        .expect_subscription(&alice_jid, PresenceType::Subscribed)
        .await;

    // Blocking Bob, as MSN 1.0 does it (off the AL, onto the BL), revokes his subscription
    // and blocks the JID; AL and BL stay exclusive. Unblocking lifts the block.
    let t = alice.cmd("ADD", "BL bob@localhost Bob").await;
    alice
        .wait_for_within(&format!("219 {t}"), Duration::from_secs(5))
        .await;
    let t = alice.cmd("REM", "AL bob@localhost").await;
    alice
        .wait_for_within(
            &format!("REM {t} AL * bob@localhost"),
            Duration::from_secs(5),
        )
        .await;
    let t = alice.cmd("ADD", "BL bob@localhost Bob").await;
    alice
        .wait_for_within(
            &format!("ADD {t} BL * bob@localhost Bob"),
            Duration::from_secs(5),
        )
        .await;
    bob.expect_subscription(&alice_jid, PresenceType::Unsubscribed)
        .await;
    let t = alice.cmd("REM", "BL bob@localhost").await;
    alice
        .wait_for_within(
            &format!("REM {t} BL * bob@localhost"),
            Duration::from_secs(5),
        )
        .await;

    // Adding someone to the FL subscribes to them.
    let t = alice.cmd("ADD", "FL carol@localhost Carol").await;
    alice
        .wait_for_within(
            &format!("ADD {t} FL * carol@localhost Carol"),
            Duration::from_secs(5),
        )
        .await;
    carol
        .expect_subscription(&alice_jid, PresenceType::Subscribe)
        .await;
    // Removing from the FL removes the roster item.
    let t = alice.cmd("REM", "FL carol@localhost").await;
    alice
        .wait_for_within(
            &format!("REM {t} FL * carol@localhost"),
            Duration::from_secs(5),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_offline_arrive_at_the_next_logon() {
    let Setup {
        prosody: _p,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    // Alice is not logged in to MSN, so not to XMPP either: the server keeps the message.
    bob.send_chat(
        &format!("alice@{}", prosody_domain()),
        "while you were out ✉",
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    let rng = alice
        .wait_for_within("RNG * * CKI * bob@localhost *", Duration::from_secs(10))
        .await;
    let (mut sb, _) = Client::answer(&rng, "alice@hotmail.com").await;
    let msg = sb.expect("MSG bob@localhost * *").await;
    assert!(
        msg.payload_text().ends_with("while you were out ✉"),
        "{}",
        msg.payload_text()
    );
    sb.expect_silence(500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_xmpp_password_fails_the_msn_logon() {
    let Setup {
        prosody: _p,
        server,
        bob: _b,
    } = setup_with("not-the-password").await;
    let mut c = Client::connect(server.ns()).await;
    let answer = c.try_md5_login("alice@hotmail.com", "msn-pw").await;
    assert_eq!(answer.get(0), "911", "{}", answer.text());
    // The host sees why in `msngate user list`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_msngate"))
        .args(["user", "list"])
        .env("MSNGATE__STORAGE__DATABASE", server.db_path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("alice@hotmail.com\txmpp:alice@localhost\t")
            && listed.contains("credentials refused"),
        "{listed}"
    );
}

/// Reads lines until the reply with TrID `t` and returns it.
async fn reply_to(client: &mut Client, t: u32) -> common::Line {
    loop {
        let l = client.recv().await;
        if l.get(1) == t.to_string() {
            return l;
        }
    }
}

/// MSN 1.0 answers a subscription request (an `ADD 0 RL`) whose user clicked "allow, and add
/// to my list" with `ADD AL` and `ADD FL` at once; some clients send FL first. Either way each
/// ADD is answered as an addition, and the lists are right afterwards: Prosody's roster pushes
/// for the FL addition, still on their way when the AL addition is answered, must not take
/// the contact off the AL again (several contacts, as that race is lost only sometimes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_a_subscription_request_as_msn_clients_do() {
    let Setup {
        prosody,
        server,
        bob: _b,
    } = setup_with("alice-pw").await;
    for contact in ["dave", "erin", "frank", "gina"] {
        prosody.register(contact, &format!("{contact}-pw")).await;
    }
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    let alice_jid = format!("alice@{}", prosody_domain());
    let contacts = [
        ("carol", "AL", "FL"),
        ("dave", "FL", "AL"),
        ("erin", "FL", "AL"),
        ("frank", "AL", "FL"),
        ("gina", "FL", "AL"),
    ];
    for (contact, first, second) in contacts {
        let mut them = xmpp(&prosody, contact).await;
        let handle = format!("{contact}@localhost");
        them.subscribe(&alice_jid).await;
        alice
            .wait_for_within(&format!("ADD 0 RL * {handle} *"), Duration::from_secs(10))
            .await;
        let t1 = alice
            .cmd("ADD", &format!("{first} {handle} {contact}"))
            .await;
        let t2 = alice
            .cmd("ADD", &format!("{second} {handle} {contact}"))
            .await;
        for (t, list) in [(t1, first), (t2, second)] {
            let answer = reply_to(&mut alice, t).await;
            assert!(
                common::matches(&answer, &format!("ADD {t} {list} * {handle} *")),
                "{contact}: ADD {list} answered {}",
                answer.text()
            );
        }
        them.expect_subscription(&alice_jid, PresenceType::Subscribed)
            .await;
        for list in ["FL", "AL", "RL"] {
            let t = alice.cmd("LST", list).await;
            let mut on = false;
            loop {
                let l = alice.recv().await;
                if l.get(0) != "LST" || l.get(1) != t.to_string() {
                    continue;
                }
                on |= l.get(6) == handle;
                if l.get(4) == l.get(5) {
                    break;
                }
            }
            assert!(on, "{contact} is not on the {list}");
        }
    }
}

/// A contact who pastes a novel: the text arrives as several messages, the end cut with a note,
/// and the MSN user's connection stays up (a 300 KB message used to fill the outbound queue and
/// disconnect the user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_very_long_message_arrives_in_parts_and_keeps_the_user_connected() {
    let Setup {
        prosody: _p,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    let line = "Es war einmal ein langer Text, der nicht aufhören wollte. ";
    let novel = line.repeat(300 * 1024 / line.len());
    bob.send_chat(&format!("alice@{}", prosody_domain()), &novel, None)
        .await;
    let rng = alice
        .wait_for_within("RNG * * CKI * bob@localhost *", Duration::from_secs(10))
        .await;
    let (mut sb, _) = Client::answer(&rng, "alice@hotmail.com").await;
    let mut text = String::new();
    let mut parts = 0;
    loop {
        let msg = sb.expect("MSG bob@localhost * *").await;
        parts += 1;
        let body = msg.payload_text();
        let body = body.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        if body.starts_with('[') && body.contains("were not shown") {
            break;
        }
        text.push_str(&body);
    }
    assert!(parts > 2, "{parts} parts");
    assert!(
        novel.starts_with(&text),
        "the parts are not the text's beginning"
    );
    assert!(text.len() > 30_000, "only {} bytes shown", text.len());
    // Both connections are still there: a reply goes out, and the server still answers.
    let t = sb
        .msg(
            "A",
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\ntoo long!",
        )
        .await;
    assert_eq!(bob.next_chat().await.body, "too long!");
    sb.expect(&format!("ACK {t}")).await;
    let t = alice.cmd("CHG", "BSY").await;
    alice.expect(&format!("CHG {t} BSY")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_restart_mid_conversation_loses_nothing_and_flashes_nothing() {
    let Setup {
        mut prosody,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    let alice_jid = format!("alice@{}", prosody_domain());
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    alice
        .wait_for_within("NLN NLN bob@localhost *", Duration::from_secs(5))
        .await;
    let mut sb = call_bob(&mut alice).await;
    let text = |body: &str| {
        format!("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{body}")
    };
    let t = sb.msg("A", text("before").as_bytes()).await;
    assert_eq!(bob.next_chat().await.body, "before");
    sb.expect(&format!("ACK {t}")).await;

    // The server goes away and comes back well within the presence debounce.
    prosody.restart().await;
    bob.wait_reconnected().await;
    // Alice writes while the bridge may still be reconnecting: it must arrive exactly once.
    // (Prosody itself may hand Bob's client "before" again: the server had not seen his
    // client acknowledge it when it went down. That is between Prosody and Bob.)
    let t = sb.msg("A", text("during").as_bytes()).await;
    // It waits for the bridge's reconnection (backoff with jitter), hence the longer wait.
    let during = bob
        .wait_for_within(Duration::from_secs(30), |s| match s {
            tokio_xmpp::Stanza::Message(m) => m
                .get_best_body_cloned(vec![])
                .filter(|(_, b)| b == "during"),
            _ => None,
        })
        .await;
    assert!(during.is_some(), "\"during\" never reached bob");
    let ack = sb
        .wait_for_within(&format!("* {t}"), Duration::from_secs(30))
        .await;
    assert_eq!(ack.get(0), "ACK", "{}", ack.text());
    // Bob writes back on the new connections.
    bob.send_chat(&alice_jid, "after", None).await;
    let got = sb
        .wait_for_within("MSG bob@localhost * *", Duration::from_secs(30))
        .await;
    assert!(
        got.payload_text().ends_with("after"),
        "{}",
        got.payload_text()
    );

    // Nothing was doubled, and Bob never flashed offline on the MSN side.
    let quiet = bob
        .wait_for_within(Duration::from_secs(2), |s| match s {
            tokio_xmpp::Stanza::Message(m)
                if m.get_best_body_cloned(vec![])
                    .is_some_and(|(_, b)| b == "during" || b == "after") =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    assert!(quiet.is_none(), "a message was delivered twice");
    while let Ok(Some(line)) = alice.recv_within(Duration::from_millis(300)).await {
        assert_ne!(
            line.text(),
            "FLN bob@localhost",
            "bob flashed offline during a short outage"
        );
    }
    sb.expect_silence(300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_xmpp_server_does_not_block_the_msn_logon() {
    let Setup {
        mut prosody,
        server,
        bob,
    } = setup_with("alice-pw").await;
    bob.disconnect().await;
    prosody.stop().await;
    // The logon succeeds on the last known contact list, and the bridge keeps trying.
    let mut alice = msn_alice(&server).await;
    let t = alice.cmd("SYN", "0").await;
    alice.expect(&format!("SYN {t} *")).await;
    alice.come_online().await;
    prosody.start_again().await;
    // Once the server is back, the bridge connects by itself and shows the contact.
    let mut bob = xmpp(&prosody, "bob").await;
    bob.send_presence(None, None).await;
    alice
        .wait_for_within("NLN NLN bob@localhost *", Duration::from_secs(40))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_chat_with_two_xmpp_occupants() {
    let Setup {
        prosody,
        server,
        bob: _b,
    } = setup_with("alice-pw").await;
    let room = format!("lounge@{}", prosody.muc_domain());
    // Alice has the room bookmarked; Bob and Carol are in it.
    let mut alice_xmpp = xmpp(&prosody, "alice").await;
    alice_xmpp.set_bookmarks(&[(&room, "Lounge", false)]).await;
    alice_xmpp.disconnect().await;
    let mut bob = xmpp(&prosody, "bob").await;
    let mut carol = xmpp(&prosody, "carol").await;
    bob.join_room(&room, "Bob").await;
    carol.join_room(&room, "Carol").await;

    let mut alice = msn_alice(&server).await;
    let t = alice.cmd("SYN", "0").await;
    alice
        .wait_for_within(
            &format!("LST {t} FL * * * {room} Lounge"),
            Duration::from_secs(5),
        )
        .await;
    let t = alice.cmd("CHG", "NLN").await;
    alice
        .wait_for_within(&format!("CHG {t} NLN"), Duration::from_secs(5))
        .await;
    // The room is always callable, so MSN 1.0 lets the user open it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let line = tokio::time::timeout_at(deadline, alice.recv())
            .await
            .expect("the room shows online");
        if line.get(2) == room || line.get(3) == room {
            break;
        }
    }
    // Other presence lines may still be on their way (the room's, the occupants'): let them
    // pass before the XFR, whose reply the helper expects next.
    while let Ok(Some(_)) = alice.recv_within(Duration::from_millis(500)).await {}

    let mut sb = alice.open_switchboard("alice@hotmail.com").await;
    let t = sb.cmd("CAL", &room).await;
    sb.expect(&format!("CAL {t} RINGING *")).await;
    let mut joined = vec![
        sb.expect("JOI * *").await.get(1).to_string(),
        sb.expect("JOI * *").await.get(1).to_string(),
    ];
    joined.sort();
    assert_eq!(
        joined,
        [
            "lounge+2f+42ob@conference.localhost",
            "lounge+2f+43arol@conference.localhost"
        ]
    );

    // An occupant's message reaches the MSN client, named after the occupant.
    bob.send_groupchat(&room, "Hallo zusammen ☺").await;
    let msg = sb
        .expect("MSG lounge+2f+42ob@conference.localhost Bob *")
        .await;
    assert!(
        msg.payload_text().ends_with("Hallo zusammen ☺"),
        "{}",
        msg.payload_text()
    );
    // The MSN user's message reaches both occupants once, and is not echoed back to her.
    let t = sb
        .msg(
            "A",
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhi all",
        )
        .await;
    sb.expect(&format!("ACK {t}")).await;
    for client in [&mut bob, &mut carol] {
        let heard = client
            .wait_for_within(Duration::from_secs(10), |s| match s {
                tokio_xmpp::Stanza::Message(m)
                    if m.get_best_body_cloned(vec![])
                        .is_some_and(|(_, b)| b == "hi all") =>
                {
                    m.from
                        .as_ref()
                        .and_then(|f| f.resource().map(|r| r.to_string()))
                }
                _ => None,
            })
            .await;
        assert_eq!(heard.as_deref(), Some("alice"));
    }
    // Carol leaving is a BYE; nothing else (no echo) arrived meanwhile.
    carol.leave_room(&room, "Carol").await;
    sb.expect("BYE lounge+2f+43arol@conference.localhost").await;
    sb.expect_silence(300).await;

    // A room she is invited to becomes a contact she can call.
    let den = format!("den@{}", prosody.muc_domain());
    bob.join_room(&den, "Bob").await;
    bob.invite(
        &den,
        &format!("alice@{}", prosody_domain()),
        Some("come in"),
    )
    .await;
    alice
        .wait_for_within(&format!("ADD 0 FL * {den} den"), Duration::from_secs(5))
        .await;
    alice
        .wait_for_within(&format!("NLN NLN {den} den"), Duration::from_secs(5))
        .await;
}

// ---- bounds: the MSN client is answered whatever the XMPP server does ----

/// Freezes (SIGSTOP) or thaws (SIGCONT) the test's Prosody: its sockets stay open, and the
/// kernel still accepts connections for it, but it answers nothing.
fn freeze(prosody: &mut Prosody, frozen: bool) {
    let child = ServerProcess::child(prosody)
        .as_ref()
        .expect("Prosody is running");
    process::signal(child, if frozen { libc::SIGSTOP } else { libc::SIGCONT });
}

/// The MSN logon of alice@hotmail.com, which must end with `USR OK` within `limit`.
async fn logon_within(server: &TestServer, limit: Duration) -> Client {
    let started = tokio::time::Instant::now();
    let alice = msn_alice(server).await;
    let took = started.elapsed();
    assert!(took < limit, "USR OK came after {took:?}");
    alice
}

/// The answer to the command with TrID `t` (whatever it is), within `limit`; other lines
/// (presence, list changes) are skipped.
async fn reply_within(client: &mut Client, t: u32, limit: Duration) -> Line {
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.recv_within(remaining).await {
            Ok(Some(line)) if line.get(1) == t.to_string() => return line,
            Ok(Some(line)) => seen.push(line.text()),
            Ok(None) => panic!("closed while waiting for the answer to {t}; saw {seen:?}"),
            Err(()) => panic!("no answer to {t} within {limit:?}; saw {seen:?}"),
        }
    }
}

/// SYN is answered, and the first CHG at once (it never waits for the XMPP server).
async fn syn_and_first_chg_answered_at_once(alice: &mut Client) {
    let t = alice.cmd("SYN", "0").await;
    reply_within(alice, t, Duration::from_secs(2)).await;
    let t = alice.cmd("CHG", "NLN").await;
    let reply = reply_within(alice, t, Duration::from_secs(1)).await;
    assert_eq!(reply.text(), format!("CHG {t} NLN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logon_is_bounded_when_the_xmpp_server_accepts_and_stays_silent() {
    trust_test_certificate();
    // A "server" that accepts TCP connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let server = TestServer::start_linked(
        "alice@hotmail.com",
        "msn-pw",
        ("xmpp", "alice@localhost", "alice-pw"),
        vec![("server".into(), address)],
        |_| {},
    )
    .await;
    let mut alice = logon_within(&server, Duration::from_secs(4)).await;
    syn_and_first_chg_answered_at_once(&mut alice).await;
    // A list change can't be made without the server: it fails fast instead of hanging.
    let t = alice.cmd("ADD", "FL bob@localhost Bob").await;
    let reply = reply_within(&mut alice, t, Duration::from_secs(5)).await;
    assert_eq!(reply.text(), format!("601 {t}"));
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logon_is_bounded_when_the_xmpp_server_is_frozen_and_connects_once_it_thaws() {
    let Setup {
        mut prosody,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    bob.send_presence(None, None).await;
    freeze(&mut prosody, true);
    let mut alice = logon_within(&server, Duration::from_secs(4)).await;
    syn_and_first_chg_answered_at_once(&mut alice).await;
    // The attempt still under way carries on once the server answers again.
    freeze(&mut prosody, false);
    alice
        .wait_for_within("NLN NLN bob@localhost *", Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_refused_after_the_logon_bound_is_final_and_reported_once() {
    use msngate_bridge_api::{Backend, BackendEvent, ConnectionState, Credentials};
    let Setup {
        mut prosody,
        server: _s,
        bob: _b,
    } = setup_with("alice-pw").await;
    freeze(&mut prosody, true);
    let (events, mut received) = tokio::sync::mpsc::channel(64);
    let credentials = Credentials {
        msn_handle: "alice@hotmail.com".into(),
        account: prosody.jid("alice"),
        secret: "not-the-password".into(),
        options: vec![("server".into(), prosody.addr())],
    };
    let started = tokio::time::Instant::now();
    let login = msngate_bridge_xmpp::XmppBackend.login(credentials, events);
    let session = tokio::time::timeout(Duration::from_secs(4), login)
        .await
        .expect("login within the bound")
        .expect("no answer yet is not a refusal");
    assert!(started.elapsed() < msngate_bridge_api::LOGIN_BOUND);
    freeze(&mut prosody, false);
    // The refusal comes once the server answers...
    let mut before = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, received.recv()).await {
            Ok(Some(BackendEvent::Connection(ConnectionState::BadCredentials))) => break,
            Ok(Some(BackendEvent::Connection(state))) => before.push(state),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("no refusal reported; connection events: {before:?}"),
        }
    }
    // ...once: nothing is tried after it.
    let quiet = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(event)) = tokio::time::timeout_at(quiet, received.recv()).await {
        assert!(
            !matches!(event, BackendEvent::Connection(_)),
            "{event:?} after the refusal"
        );
    }
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changes_fail_fast_while_the_xmpp_server_is_down() {
    let Setup {
        mut prosody,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    bob.send_presence(None, None).await;
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    alice
        .wait_for_within("NLN NLN bob@localhost *", Duration::from_secs(5))
        .await;
    process::kill(&mut prosody);
    // The bridge sees its connection closed at once (the kernel closes a dead process's).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = alice.cmd("ADD", "FL carol@localhost Carol").await;
    let reply = reply_within(&mut alice, t, Duration::from_secs(5)).await;
    assert_eq!(reply.text(), format!("601 {t}"));
    let t = alice.cmd("REM", "FL bob@localhost").await;
    let reply = reply_within(&mut alice, t, Duration::from_secs(5)).await;
    assert_eq!(reply.text(), format!("601 {t}"));
    let t = alice.cmd("CHG", "BSY").await;
    let reply = reply_within(&mut alice, t, Duration::from_secs(1)).await;
    assert_eq!(reply.text(), format!("CHG {t} BSY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_answered_while_the_xmpp_server_is_frozen() {
    let Setup {
        mut prosody,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    bob.send_presence(None, None).await;
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    alice
        .wait_for_within("NLN NLN bob@localhost *", Duration::from_secs(5))
        .await;
    freeze(&mut prosody, true);
    // A state change is answered at once, whatever the server does.
    let t = alice.cmd("CHG", "BSY").await;
    let reply = reply_within(&mut alice, t, Duration::from_secs(1)).await;
    assert_eq!(reply.text(), format!("CHG {t} BSY"));
    // List changes are answered within the bound (an error: the server did not answer).
    for command in ["FL carol@localhost Carol"] {
        let t = alice.cmd("ADD", command).await;
        reply_within(&mut alice, t, Duration::from_secs(5)).await;
    }
    let t = alice.cmd("REM", "FL bob@localhost").await;
    reply_within(&mut alice, t, Duration::from_secs(5)).await;
    // Once the server thaws, Bob sees the state the user chose meanwhile.
    freeze(&mut prosody, false);
    presence_where(&mut bob, &format!("alice@{}", prosody_domain()), |p| {
        p.type_ == PresenceType::None && p.show == Some(Show::Dnd)
    })
    .await;
}

// ---- outages: messages once or refused, no presence flash ----

fn text_payload(body: &str) -> Vec<u8> {
    format!("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{body}")
        .into_bytes()
}

/// How many chat messages with this body reach `client` within `limit`.
async fn count_chats(client: &mut XmppClient, body: &str, limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    let mut count = 0;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let got = client
            .wait_for_within(remaining, |s| match s {
                tokio_xmpp::Stanza::Message(m)
                    if m.get_best_body_cloned(vec![])
                        .is_some_and(|(_, b)| b == body) =>
                {
                    Some(())
                }
                _ => None,
            })
            .await;
        match got {
            Some(()) => count += 1,
            None => return count,
        }
    }
}

/// How many MSG lines ending with `body` reach `sb` within `limit`.
async fn count_msgs(sb: &mut Client, body: &str, limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    let mut count = 0;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match sb.recv_within(remaining).await {
            Ok(Some(line)) if line.get(0) == "MSG" && line.payload_text().ends_with(body) => {
                count += 1
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(()) => return count,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_while_the_xmpp_server_is_down_is_delivered_once() {
    let Setup {
        mut prosody,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    let alice_jid = format!("alice@{}", prosody_domain());
    bob.send_presence(None, None).await;
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    alice
        .wait_for_within("NLN NLN bob@localhost *", Duration::from_secs(5))
        .await;
    let mut sb = call_bob(&mut alice).await;

    // The server crashes; Alice writes while it is down; it comes back a few seconds later.
    process::kill(&mut prosody);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = sb.msg("A", &text_payload("written during the crash")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    prosody.start_again().await;
    // A fresh client for Bob (his old one would take its own time to reconnect); he writes
    // at once, maybe before the bridge is back: the server keeps it for Alice meanwhile.
    let mut bob = xmpp(&prosody, "bob").await;
    bob.send_chat(&alice_jid, "right after the crash", None)
        .await;

    // Alice's message: acknowledged and delivered once, or refused and never delivered.
    let answer = reply_within(&mut sb, t, msngate_bridge_api::SEND_DEADLINE).await;
    let delivered = count_chats(&mut bob, "written during the crash", Duration::from_secs(5)).await;
    match answer.get(0) {
        "ACK" => assert_eq!(
            delivered, 1,
            "acknowledged, but delivered {delivered} times"
        ),
        "NAK" => assert_eq!(delivered, 0, "refused, but delivered {delivered} times"),
        other => panic!("unexpected answer {other}"),
    }
    // With the server back within seconds, it is delivered.
    assert_eq!(answer.get(0), "ACK");
    // Bob's message reaches Alice once (rung in a new session or in this one).
    let mut seen = count_msgs(&mut sb, "right after the crash", Duration::from_secs(3)).await;
    if seen == 0 {
        let rng = alice
            .wait_for_within("RNG * * CKI * bob@localhost *", Duration::from_secs(10))
            .await;
        let (mut sb2, _) = Client::answer(&rng, "alice@hotmail.com").await;
        seen = count_msgs(&mut sb2, "right after the crash", Duration::from_secs(3)).await;
    }
    assert_eq!(seen, 1, "Bob's message reached Alice {seen} times");
    // And the conversation goes on.
    bob.send_chat(&alice_jid, "still there?", None).await;
    let t = sb.msg("A", &text_payload("yes")).await;
    let answer = reply_within(&mut sb, t, Duration::from_secs(10)).await;
    assert_eq!(answer.get(0), "ACK");
    assert_eq!(
        count_chats(&mut bob, "yes", Duration::from_secs(2)).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_during_a_long_outage_is_never_delivered_later() {
    let Setup {
        mut prosody,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    let alice_jid = format!("alice@{}", prosody_domain());
    bob.send_presence(None, None).await;
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    alice
        .wait_for_within("NLN NLN bob@localhost *", Duration::from_secs(5))
        .await;
    let mut sb = call_bob(&mut alice).await;
    bob.disconnect().await;

    // The server crashes and comes back frozen: the bridge's reconnection attempts get no
    // answer until it thaws, after the message's deadline.
    process::kill(&mut prosody);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = sb.msg("A", &text_payload("too late")).await;
    prosody.start_again().await;
    freeze(&mut prosody, true);
    let answer = reply_within(
        &mut sb,
        t,
        msngate_bridge_api::SEND_DEADLINE + Duration::from_secs(2),
    )
    .await;
    assert_eq!(answer.get(0), "NAK", "{}", answer.text());
    freeze(&mut prosody, false);

    // Once the bridge is back (Bob sees Alice available again), the refused message never
    // turns up: not live, not from offline storage.
    let mut bob = xmpp(&prosody, "bob").await;
    bob.send_presence(None, None).await;
    let back = bob
        .wait_for_within(Duration::from_secs(40), |s| match s {
            tokio_xmpp::Stanza::Presence(p)
                if p.type_ == PresenceType::None
                    && p.from
                        .as_ref()
                        .is_some_and(|f| f.to_bare().to_string() == alice_jid) =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    assert!(back.is_some(), "the bridge did not come back");
    assert_eq!(
        count_chats(&mut bob, "too late", Duration::from_secs(3)).await,
        0,
        "a message refused to the MSN user was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_outage_flashes_no_contact_offline() {
    let Setup {
        mut prosody,
        server,
        mut bob,
    } = setup_with_contacts("alice-pw", &["bob", "carol"]).await;
    bob.send_presence(None, None).await;
    let mut carol = xmpp(&prosody, "carol").await;
    carol.send_presence(None, None).await;
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    let mut online = Vec::new();
    while online.len() < 2 {
        let line = alice.recv().await;
        if common::matches(&line, "NLN NLN * *") {
            online.push(line.get(2).to_owned());
        }
    }

    // The server is down for 10 s. Bob comes back (away now), Carol does not.
    process::kill(&mut prosody);
    let (_old_bob, _old_carol) = (bob, carol);
    let mut seen = Vec::new();
    let outage_end = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(line)) = alice
        .recv_within(outage_end.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        seen.push(line.text());
    }
    prosody.start_again().await;
    let mut bob = xmpp(&prosody, "bob").await;
    bob.send_presence(Some(Show::Away), None).await;

    // The MSN user sees Bob's new state and Carol going offline, and never Bob offline.
    let (mut bob_away, mut carol_offline) = (false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while !(bob_away && carol_offline) {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match alice.recv_within(remaining).await {
            Ok(Some(line)) => {
                bob_away |= common::matches(&line, "NLN AWY bob@localhost *");
                carol_offline |= line.text() == "FLN carol@localhost";
                seen.push(line.text());
            }
            _ => panic!("bob away: {bob_away}, carol offline: {carol_offline}; saw {seen:?}"),
        }
    }
    while let Ok(Some(line)) = alice.recv_within(Duration::from_secs(2)).await {
        seen.push(line.text());
    }
    assert!(
        !seen.iter().any(|l| l == "FLN bob@localhost"),
        "Bob flashed offline: {seen:?}"
    );
    let carol_lines = seen
        .iter()
        .filter(|l| l.contains("carol@localhost"))
        .count();
    assert_eq!(carol_lines, 1, "Carol: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_message_from_an_xmpp_contact_is_passed_on_whole() {
    use msngate_bridge_api::{Backend, BackendEvent, BackendSession, Credentials, PresenceState};
    let Setup {
        prosody,
        server: _s,
        mut bob,
    } = setup_with("alice-pw").await;
    let (events, mut received) = tokio::sync::mpsc::channel(1024);
    let credentials = Credentials {
        msn_handle: "alice@hotmail.com".into(),
        account: prosody.jid("alice"),
        secret: "alice-pw".into(),
        options: vec![("server".into(), prosody.addr())],
    };
    let session = msngate_bridge_xmpp::XmppBackend
        .login(credentials, events)
        .await
        .expect("login");
    session
        .set_presence(PresenceState::Online, "Alice")
        .await
        .expect("presence");
    let alice_jid = format!("alice@{}", prosody_domain());
    presence_where(&mut bob, &alice_jid, |p| p.type_ == PresenceType::None).await;
    // About 300 KB of text over many lines (the test Prosody takes stanzas up to 1 MiB).
    let line = "Ein langer Brief, Zeile für Zeile — a long letter ☺ 0123456789\n";
    let text = line.repeat(300_000 / line.len());
    bob.send_chat(&alice_jid, &text, None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, received.recv()).await {
            Ok(Some(BackendEvent::Message {
                from, text: got, ..
            })) => {
                assert_eq!(from, "bob@localhost");
                assert!(got == text, "{} bytes of {} arrived", got.len(), text.len());
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("no message: {other:?}"),
        }
    }
    session.logout().await;
}

/// An outage longer than the presence debounce (3 s here, 30 s by default) shows each contact
/// offline once, and online once when the server is back: no more, no less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_debounce_shows_contacts_offline_once_and_back_once() {
    let Setup {
        mut prosody,
        server,
        mut bob,
    } = setup_configured("alice-pw", &["bob"], |c| {
        c.bridges.presence_debounce_secs = 3;
    })
    .await;
    bob.send_presence(None, None).await;
    let mut alice = msn_alice(&server).await;
    alice.come_online().await;
    alice
        .wait_for_within("NLN NLN bob@localhost *", Duration::from_secs(10))
        .await;

    process::kill(&mut prosody);
    let _old_bob = bob;
    let mut seen = Vec::new();
    let outage_end = tokio::time::Instant::now() + Duration::from_secs(8);
    while let Ok(Some(line)) = alice
        .recv_within(outage_end.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        seen.push(line.text());
    }
    assert_eq!(
        seen.iter().filter(|l| *l == "FLN bob@localhost").count(),
        1,
        "during the outage: {seen:?}"
    );
    prosody.start_again().await;
    let mut bob = xmpp(&prosody, "bob").await;
    bob.send_presence(None, None).await;
    alice
        .wait_for_within("NLN NLN bob@localhost *", Duration::from_secs(40))
        .await;
    while let Ok(Some(line)) = alice.recv_within(Duration::from_secs(3)).await {
        seen.push(line.text());
    }
    let bob_lines: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("bob@localhost"))
        .collect();
    assert_eq!(
        bob_lines,
        vec!["FLN bob@localhost"],
        "after the FLN, only one NLN: {seen:?}"
    );
}

/// Alice signs in twice in quick succession (a second client, or MSN 1.0 reconnecting): the
/// first connection gets `OUT OTH`, the XMPP account stays online with exactly one resource,
/// and Bob's next message rings the new connection once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_logon_leaves_exactly_one_xmpp_session() {
    let Setup {
        prosody: _p,
        server,
        mut bob,
    } = setup_with("alice-pw").await;
    let mut first = msn_alice(&server).await;
    first.come_online().await;
    let mut second = msn_alice(&server).await;
    first
        .wait_for_within("OUT OTH", Duration::from_secs(5))
        .await;
    second.come_online().await;

    // Bob's view of Alice's resources settles on one available one.
    let mut resources: std::collections::BTreeMap<String, bool> = Default::default();
    let settle = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = settle.saturating_duration_since(tokio::time::Instant::now());
        let presence = bob
            .wait_for_within(left, |s| match s {
                tokio_xmpp::Stanza::Presence(p)
                    if p.from
                        .as_ref()
                        .is_some_and(|f| f.to_bare().to_string() == "alice@localhost") =>
                {
                    Some(p.clone())
                }
                _ => None,
            })
            .await;
        let Some(p) = presence else { break };
        let from = p.from.map(|f| f.to_string()).unwrap_or_default();
        resources.insert(from, p.type_ != PresenceType::Unavailable);
    }
    let available: Vec<_> = resources.iter().filter(|(_, on)| **on).collect();
    assert_eq!(
        available.len(),
        1,
        "Alice's resources as Bob sees them: {resources:?}"
    );

    bob.send_chat("alice@localhost", "which one of you?", None)
        .await;
    let rng = second
        .wait_for_within("RNG * * CKI * bob@localhost *", Duration::from_secs(10))
        .await;
    let (mut sb, _) = Client::answer(&rng, "alice@hotmail.com").await;
    let msg = sb.expect("MSG bob@localhost * *").await;
    assert!(msg.payload_text().ends_with("which one of you?"));
    sb.expect_silence(1000).await;
    second.expect_silence(500).await;
}

/// Where a fake XMPP server stops answering.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum SilentFrom {
    /// After its stream header and features, when the client authenticates.
    Sasl,
    /// After SASL success, when the client restarts the stream.
    AfterSasl,
    /// After the authenticated stream's features, when the client binds a resource.
    Bind,
}

/// Reads from `socket` into `seen` until `done` holds; false if the client went away.
async fn read_until(
    socket: &mut tokio::net::TcpStream,
    seen: &mut String,
    done: impl Fn(&str) -> bool,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    while !done(seen) {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    true
}

/// A plain-TCP XMPP "server" for localhost that accepts any PLAIN login and goes silent at
/// `stage`, holding every connection open.
async fn half_xmpp_server(stage: SilentFrom) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' \
                version='1.0'>";
            let headers =
                |s: &str, n: usize| s.matches("<stream:stream").count() >= n && s.ends_with('>');
            let mut seen = String::new();
            let serve = async {
                if !read_until(&mut socket, &mut seen, |s| headers(s, 1)).await {
                    return;
                }
                let features = "<stream:features><mechanisms \
                    xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism>\
                    </mechanisms></stream:features>";
                let _ = socket
                    .write_all(format!("{header}{features}").as_bytes())
                    .await;
                if stage == SilentFrom::Sasl
                    || !read_until(&mut socket, &mut seen, |s| s.contains("</auth>")).await
                {
                    return;
                }
                let success = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";
                let _ = socket.write_all(success.as_bytes()).await;
                if stage == SilentFrom::AfterSasl
                    || !read_until(&mut socket, &mut seen, |s| headers(s, 2)).await
                {
                    return;
                }
                let features = "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
                    </stream:features>";
                let _ = socket
                    .write_all(format!("{header}{features}").as_bytes())
                    .await;
            };
            serve.await;
            held.push(socket);
        }
    });
    (address, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logon_is_bounded_whichever_step_the_xmpp_server_stops_answering_at() {
    for stage in [SilentFrom::Sasl, SilentFrom::AfterSasl, SilentFrom::Bind] {
        let (address, fake) = half_xmpp_server(stage).await;
        let server = TestServer::start_linked(
            "alice@hotmail.com",
            "msn-pw",
            ("xmpp", "alice@localhost", "alice-pw"),
            vec![
                ("server".into(), address),
                ("plaintext".into(), "true".into()),
            ],
            |_| {},
        )
        .await;
        let started = tokio::time::Instant::now();
        let mut alice = msn_alice(&server).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "{stage:?}: USR OK after {took:?}"
        );
        syn_and_first_chg_answered_at_once(&mut alice).await;
        fake.abort();
    }
}

/// What an MSNP7 client's SYN shows: group name → id, and each FL contact's group ids.
async fn syn_groups(alice: &mut Client) -> (HashMap<String, String>, HashMap<String, String>) {
    let t = alice.cmd("SYN", "0").await;
    alice.expect(&format!("SYN {t} *")).await;
    let (mut groups, mut fl) = (HashMap::new(), HashMap::new());
    loop {
        let l = alice.recv().await;
        match l.get(0) {
            "LSG" => {
                groups.insert(l.get(6).to_string(), l.get(5).to_string());
            }
            "LST" if l.get(2) == "FL" => {
                fl.insert(l.get(6).to_string(), l.get(8).to_string());
            }
            // The last RL line (the setup makes the RL non-empty).
            "LST" if l.get(2) == "RL" && l.get(4) == l.get(5) => break,
            _ => {}
        }
    }
    (groups, fl)
}

async fn roster_groups_of(client: &mut XmppClient, jid: &str) -> Vec<String> {
    let item = client
        .roster()
        .await
        .into_iter()
        .find(|i| i.jid.to_string() == jid);
    let mut groups: Vec<String> = item
        .expect("on the roster")
        .groups
        .into_iter()
        .map(|g| g.0)
        .collect();
    groups.sort();
    groups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_groups_are_msn_groups_both_ways() {
    const MSNP7: &str = "MSNP7 MSNP6 MSNP5 MSNP4 CVR0";
    let Setup {
        prosody,
        server,
        bob: _bob,
    } = setup_with_contacts("alice-pw", &["bob", "carol"]).await;
    // Alice's own XMPP client files Bob in two groups and Carol in one.
    let mut alice_xmpp = xmpp(&prosody, "alice").await;
    alice_xmpp
        .roster_groups("bob@localhost", None, &["Friends", "Work"])
        .await;
    alice_xmpp
        .roster_groups("carol@localhost", None, &["Work"])
        .await;
    let mut alice = server
        .login_offering("alice@hotmail.com", "msn-pw", MSNP7, MSNP7)
        .await;
    let (groups, fl) = syn_groups(&mut alice).await;
    assert_eq!(groups.len(), 3, "{groups:?}");
    let (friends, work) = (groups["Friends"].clone(), groups["Work"].clone());
    let mut bobs: Vec<&str> = fl["bob@localhost"].split(',').collect();
    bobs.sort();
    let mut want = vec![friends.as_str(), work.as_str()];
    want.sort();
    assert_eq!(bobs, want);
    assert_eq!(fl["carol@localhost"], work);
    let t = alice.cmd("CHG", "NLN").await;
    alice.wait_for(&format!("CHG {t} NLN")).await;

    // The XMPP user moves Carol from Work to Friends: the MSN client sees her move.
    alice_xmpp
        .roster_groups("carol@localhost", None, &["Friends"])
        .await;
    alice
        .wait_for(&format!("ADD 0 FL * carol@localhost * {friends}"))
        .await;
    alice
        .wait_for(&format!("REM 0 FL * carol@localhost {work}"))
        .await;

    // The MSN user makes a group and files Bob in it too: the roster item follows.
    let t = alice.cmd("ADG", "Family 0").await;
    let adg = alice.wait_for(&format!("ADG {t} * Family * 0")).await;
    let family = adg.get(4).to_string();
    let t = alice
        .cmd("ADD", &format!("FL bob@localhost bob@localhost {family}"))
        .await;
    alice
        .wait_for(&format!("ADD {t} FL * bob@localhost * {family}"))
        .await;
    assert_eq!(
        roster_groups_of(&mut alice_xmpp, "bob@localhost").await,
        ["Family", "Friends", "Work"]
    );
    // ... and out of Work.
    let t = alice.cmd("REM", &format!("FL bob@localhost {work}")).await;
    alice
        .wait_for(&format!("REM {t} FL * bob@localhost {work}"))
        .await;
    assert_eq!(
        roster_groups_of(&mut alice_xmpp, "bob@localhost").await,
        ["Family", "Friends"]
    );
    // Both the SYN of a new logon and the roster agree; Bob is still a contact.
    drop(alice);
    let mut alice = server
        .login_offering("alice@hotmail.com", "msn-pw", MSNP7, MSNP7)
        .await;
    let (_, fl) = syn_groups(&mut alice).await;
    let mut bobs: Vec<&str> = fl["bob@localhost"].split(',').collect();
    bobs.sort();
    let mut want = vec![friends.as_str(), family.as_str()];
    want.sort();
    assert_eq!(bobs, want);
}
