//! The Matrix bridge end to end: an MSN 1.0 client whose account is linked (with the
//! `msngate user link ... matrix` command) to a Matrix account on a real Synapse, and
//! independent Matrix clients on the other side.
#![cfg(feature = "matrix")]
#![recursion_limit = "256"]

mod common;
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Client, Line, TestServer};
use matrix_sdk::ruma::presence::PresenceState as MatrixPresence;
use support::matrix::MatrixClient;
use support::synapse::Synapse;

use common::SECRETS_KEY as KEY;
const ALICE: &str = "alice@hotmail.com";
const BOB: &str = "bob@localhost";
const WAIT: Duration = Duration::from_secs(30);

/// A Synapse with alice (to be linked), bob and carol, and an msngate database with the MSN
/// account alice@hotmail.com, not yet linked.
struct Setup {
    synapse: Synapse,
    dir: tempfile::TempDir,
    config_file: PathBuf,
}

impl Setup {
    async fn new() -> Setup {
        let synapse = Synapse::start().await;
        for user in ["alice", "bob", "carol"] {
            synapse.register(user, &format!("{user}-pw")).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("msngate.toml");
        std::fs::write(
            &config_file,
            format!(
                "[storage]\ndatabase = {:?}\nbackend_data = {:?}\n[secrets]\nkey = {KEY:?}\n",
                dir.path().join("msngate.db"),
                dir.path().join("backends"),
            ),
        )
        .unwrap();
        common::create_accounts(
            &dir.path().join("msngate.db"),
            &[(ALICE, "msn-pw", "Alice")],
        );
        Setup {
            synapse,
            dir,
            config_file,
        }
    }

    async fn matrix(&self, user: &str) -> MatrixClient {
        MatrixClient::login(
            &self.synapse.url(),
            &self.synapse.user_id(user),
            &format!("{user}-pw"),
        )
        .await
    }

    /// Bob opens a direct chat with Alice, which she joins from her own Matrix device (then
    /// signs that device out of the picture), and she links her account: the usual start.
    async fn direct_chat_then_link(&self, bob: &MatrixClient) -> matrix_sdk::ruma::OwnedRoomId {
        let alice_matrix = self.matrix("alice").await;
        let dm = bob.create_dm(&self.synapse.user_id("alice")).await;
        alice_matrix.join(&dm).await;
        bob.wait_member_joined(&dm, &self.synapse.user_id("alice"))
            .await;
        drop(alice_matrix);
        self.linked();
        dm
    }

    /// `msngate user link alice@hotmail.com matrix ...`, the way a host does it.
    fn link(&self, password: &str) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_msngate"))
            .arg("--config")
            .arg(&self.config_file)
            .args(["user", "link", ALICE, "matrix", "--homeserver"])
            .arg(self.synapse.url())
            .args(["--user", &self.synapse.user_id("alice")])
            .env("MSNGATE_LINK_PASSWORD", password)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    fn linked(&self) {
        let out = self.link("alice-pw");
        assert!(
            out.status.success(),
            "link failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn server(&self) -> TestServer {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut config = TestServer::config(self.dir.path());
        config.secrets.key = Some(KEY.into());
        config.storage.backend_data = self.dir.path().join("backends");
        let dir = tempfile::tempdir().unwrap();
        TestServer::start_with(dir, config, &[]).await
    }
}

fn stdout_of(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_msngate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Logs in, synchronizes and goes online; returns the FL handles of the SYN.
async fn come_online(server: &TestServer) -> (Client, Vec<String>) {
    let mut c = server.login(ALICE, "msn-pw").await;
    let forward = c.come_online().await;
    (c, forward)
}

/// Waits for Bob's invitation (an RL addition) and accepts it the way MSN 1.0 answers one:
/// adding him to the AL.
async fn accept_invitation_from_bob(alice: &mut Client) {
    alice
        .wait_for_within(&format!("ADD 0 RL * {BOB} *"), WAIT)
        .await;
    let t = alice.cmd("ADD", &format!("AL {BOB} Bob")).await;
    alice
        .wait_for_within(&format!("ADD {t} AL * {BOB} *"), WAIT)
        .await;
}

/// Waits for a ring, answers it and returns the session with the first message's line.
async fn answer_ring(alice: &mut Client, caller: &str) -> (Client, Line) {
    let rng = alice
        .wait_for_within(&format!("RNG * * CKI * {caller} *"), WAIT)
        .await;
    let (mut sb, _) = Client::answer(&rng, ALICE).await;
    let msg = sb.wait_for_within(&format!("MSG {caller} * *"), WAIT).await;
    (sb, msg)
}

/// Sends a plain-text MSG in a switchboard session.
async fn say(sb: &mut Client, text: &str) {
    let payload =
        format!("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{text}");
    sb.msg("N", payload.as_bytes()).await;
}

/// Bob already has a direct chat with Alice (joined from her own Matrix client), then Alice
/// links her account: Bob is her contact, and they chat both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_chat_presence_and_typing_both_ways() {
    let s = Setup::new().await;
    let mut bob = s.matrix("bob").await;
    let dm = s.direct_chat_then_link(&bob).await;
    let listed = stdout_of(&s.config_file, &["user", "list"]);
    assert!(listed.contains("matrix:@alice:localhost"), "{listed}");

    let server = s.server().await;
    let (mut alice, forward) = come_online(&server).await;
    assert!(forward.iter().any(|h| h == BOB), "FL was {forward:?}");

    // Bob writes first: Alice's client is rung, as if Bob called.
    let hello = "Grüße aus Matrix ✓ 世界";
    bob.send_text(&dm, hello).await;
    let (mut sb, msg) = answer_ring(&mut alice, BOB).await;
    assert_eq!(msg.payload_text().split("\r\n\r\n").nth(1), Some(hello));

    let reply = "Antwort aus 1999: ça marche";
    say(&mut sb, reply).await;
    let (room, text) = bob.next_text_from(&s.synapse.user_id("alice")).await;
    assert_eq!((room.as_str(), text.as_str()), (dm.as_str(), reply));

    // Typing from Bob shows in the conversation window.
    bob.set_typing(&dm).await;
    let typing = sb.wait_for_within(&format!("MSG {BOB} * *"), WAIT).await;
    assert!(
        typing.payload_text().contains("text/x-msmsgscontrol"),
        "{}",
        typing.payload_text()
    );
}

/// Presence both ways, with a direct chat Alice accepted from MSN (so no other Matrix device
/// of hers is online: Synapse shows the most available of a user's devices).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_both_ways() {
    let s = Setup::new().await;
    s.linked();
    let server = s.server().await;
    let (mut alice, _) = come_online(&server).await;
    let mut bob = s.matrix("bob").await;
    let dm = bob.create_dm(&s.synapse.user_id("alice")).await;
    accept_invitation_from_bob(&mut alice).await;
    bob.wait_member_joined(&dm, &s.synapse.user_id("alice"))
        .await;
    alice
        .wait_for_within(&format!("ADD 0 FL * {BOB} *"), WAIT)
        .await;

    // Bob busy shows as BSY; Alice away shows on Matrix as unavailable, "Away".
    bob.set_presence(MatrixPresence::Unavailable, Some("Busy"))
        .await;
    alice
        .wait_for_within(&format!("NLN BSY {BOB} *"), WAIT)
        .await;
    let t = alice.cmd("CHG", "AWY").await;
    alice.wait_for_within(&format!("CHG {t} AWY"), WAIT).await;
    let (presence, status) = bob
        .next_presence(&s.synapse.user_id("alice"), |p, _| {
            *p == MatrixPresence::Unavailable
        })
        .await;
    assert_eq!(
        (presence, status.as_deref()),
        (MatrixPresence::Unavailable, Some("Away"))
    );
}

/// A wrong Matrix password is refused when linking, with a clear message, and nothing is linked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_at_link_time() {
    let s = Setup::new().await;
    let out = s.link("not-alices-password");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(!stderr.contains("not-alices-password"), "{stderr}");
    let listed = stdout_of(&s.config_file, &["user", "list"]);
    assert!(listed.contains(&format!("{ALICE}\tlocal")), "{listed}");
}

/// Bob invites Alice into an encrypted room: the invitation is an RL addition, accepting it
/// (AL) joins, and the room then works like a plain one both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_to_an_encrypted_room_and_chat_in_it() {
    let s = Setup::new().await;
    s.linked();
    let server = s.server().await;
    let (mut alice, _) = come_online(&server).await;
    let mut bob = s.matrix("bob").await;
    let room = bob
        .create_room("Geheimer Raum", true, &[&s.synapse.user_id("alice")])
        .await;
    accept_invitation_from_bob(&mut alice).await;
    bob.wait_member_joined(&room, &s.synapse.user_id("alice"))
        .await;

    let secret = "verschlüsselt: niemand sonst liest das 🔒";
    bob.send_text(&room, secret).await;
    let (mut sb, msg) = answer_ring(&mut alice, BOB).await;
    assert_eq!(msg.payload_text().split("\r\n\r\n").nth(1), Some(secret));
    say(&mut sb, "und zurück, auch verschlüsselt").await;
    let (in_room, text) = bob.next_text_from(&s.synapse.user_id("alice")).await;
    assert_eq!(
        (in_room.as_str(), text.as_str()),
        (room.as_str(), "und zurück, auch verschlüsselt")
    );
}

/// A room with Alice, Bob and Carol: speakers join Alice's conversation as they speak, and
/// what Alice writes reaches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_with_three_people() {
    let s = Setup::new().await;
    let bob = s.matrix("bob").await;
    let mut carol = s.matrix("carol").await;
    let alice_matrix = s.matrix("alice").await;
    let room = bob
        .create_room(
            "Stammtisch",
            false,
            &[&s.synapse.user_id("alice"), &s.synapse.user_id("carol")],
        )
        .await;
    alice_matrix.join(&room).await;
    carol.join(&room).await;
    bob.wait_member_joined(&room, &s.synapse.user_id("alice"))
        .await;
    bob.wait_member_joined(&room, &s.synapse.user_id("carol"))
        .await;
    drop(alice_matrix);
    s.linked();
    let server = s.server().await;
    let (mut alice, forward) = come_online(&server).await;
    assert!(
        forward.iter().any(|h| h.starts_with("+room.")),
        "the room is a contact: {forward:?}"
    );

    bob.send_text(&room, "Bob hier").await;
    let (mut sb, msg) = answer_ring(&mut alice, BOB).await;
    assert_eq!(
        msg.payload_text().split("\r\n\r\n").nth(1),
        Some("Bob hier")
    );
    carol.send_text(&room, "Carol auch").await;
    sb.wait_for_within("JOI carol@localhost *", WAIT).await;
    let msg = sb.wait_for_within("MSG carol@localhost * *", WAIT).await;
    assert_eq!(
        msg.payload_text().split("\r\n\r\n").nth(1),
        Some("Carol auch")
    );

    say(&mut sb, "Hallo ihr beiden").await;
    let (in_room, text) = carol.next_text_from(&s.synapse.user_id("alice")).await;
    assert_eq!(
        (in_room.as_str(), text.as_str()),
        (room.as_str(), "Hallo ihr beiden")
    );
    let more = carol.texts_within(Duration::from_secs(2)).await;
    assert!(
        !more.iter().any(|t| t == "Hallo ihr beiden"),
        "Alice's message reached the room twice: {more:?}"
    );
}

/// Alice chats with Bob, signs out with `OUT`, and Bob writes once more while she is away. When
/// she signs in again (four seconds later, then one second later), her first CHG is answered at
/// once (MSN 1.0 stays on "Signing in..." until it is), and Bob's message rings her after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_again_after_out_answers_the_first_chg_at_once() {
    let s = Setup::new().await;
    let bob = s.matrix("bob").await;
    let dm = s.direct_chat_then_link(&bob).await;
    let server = s.server().await;

    let (mut alice, _) = come_online(&server).await;
    bob.send_text(&dm, "bist du da?").await;
    let (mut sb, _) = answer_ring(&mut alice, BOB).await;
    say(&mut sb, "ja, aber gleich weg").await;
    for (round, away) in [(1, Duration::from_secs(4)), (2, Duration::from_secs(1))] {
        alice.send("OUT").await;
        alice.expect_closed().await;
        drop(sb);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = format!("noch eine Nachricht ({round})");
        bob.send_text(&dm, &text).await;
        tokio::time::sleep(away.saturating_sub(Duration::from_millis(500))).await;

        alice = server.login(ALICE, "msn-pw").await;
        let t = alice.cmd("SYN", "0").await;
        alice.wait_for_within(&format!("SYN {t} *"), WAIT).await;
        let asked = tokio::time::Instant::now();
        let t = alice.cmd("CHG", "NLN").await;
        alice
            .wait_for_within(&format!("CHG {t} NLN"), Duration::from_secs(2))
            .await;
        let answered = asked.elapsed();
        assert!(
            answered < Duration::from_secs(2),
            "round {round}: CHG answered after {answered:?}"
        );
        let (next_sb, msg) = answer_ring(&mut alice, BOB).await;
        assert_eq!(
            msg.payload_text().split("\r\n\r\n").nth(1),
            Some(text.as_str()),
            "round {round}"
        );
        sb = next_sb;
    }
}

/// How MSN 1.0 accepts an invitation when its user clicks "allow, and add to my list": after
/// the `ADD 0 RL` it sends `ADD AL` and then `ADD FL` at once. On Matrix accepting joins the
/// direct chat, which by itself puts Bob on the FL too; both of the client's ADDs must still be
/// answered as additions (never `215`, which MSN clients show as an error), and the lists be
/// right afterwards. Then the other order (FL, then AL).
async fn accept_as_msn_1_0(first: &str, second: &str, encrypted: bool) {
    let s = Setup::new().await;
    s.linked();
    let server = s.server().await;
    let (mut alice, _) = come_online(&server).await;
    let bob = s.matrix("bob").await;
    let alice_id = s.synapse.user_id("alice");
    let dm = if encrypted {
        bob.create_dm(&alice_id).await
    } else {
        let mut request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
        request.is_direct = true;
        request.invite = vec![matrix_sdk::ruma::UserId::parse(&alice_id).unwrap()];
        let room = bob.client.create_room(request).await.expect("create room");
        room.room_id().to_owned()
    };
    let mut seen = Vec::new();
    wait_noting(&mut alice, &format!("ADD 0 RL * {BOB} *"), &mut seen).await;
    let t1 = alice.cmd("ADD", &format!("{first} {BOB} Bob")).await;
    let t2 = alice.cmd("ADD", &format!("{second} {BOB} Bob")).await;
    for (t, list) in [(t1, first), (t2, second)] {
        let answer = loop {
            let l = alice.recv().await;
            seen.push(l.text());
            if l.get(1) == t.to_string() {
                break l;
            }
        };
        assert!(
            common::matches(&answer, &format!("ADD {t} {list} * {BOB} *")),
            "ADD {list} answered {}; saw {seen:#?}",
            answer.text()
        );
    }
    bob.wait_member_joined(&dm, &alice_id).await;
    // Whatever the backend reports later changes nothing the client was not told.
    while let Ok(Some(line)) = alice.recv_within(Duration::from_secs(12)).await {
        seen.push(line.text());
    }
    let forward = forward_list(&mut alice, &mut seen).await;
    assert_eq!(forward, vec![BOB.to_string()], "the FL; saw {seen:#?}");
    // A fresh SYN shows Bob once on each of FL, AL and RL.
    drop(alice);
    let mut again = server.login(ALICE, "msn-pw").await;
    let t = again.cmd("SYN", "0").await;
    let mut lists = Vec::new();
    loop {
        let l = again.recv().await;
        if l.get(0) != "LST" || l.get(1) != t.to_string() {
            continue;
        }
        // `LST t LIST serial index total handle name`, or `LST t LIST serial 0 0`; RL is last.
        if l.get(4) != "0" {
            lists.push((l.get(2).to_string(), l.get(6).to_string()));
        }
        if l.get(2) == "RL" && l.get(4) == l.get(5) {
            break;
        }
    }
    lists.sort();
    let expected: Vec<(String, String)> = ["AL", "FL", "RL"]
        .iter()
        .map(|l| (l.to_string(), BOB.to_string()))
        .collect();
    assert_eq!(lists, expected, "SYN lists; saw before {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_an_encrypted_direct_chat_with_add_al_then_add_fl() {
    accept_as_msn_1_0("AL", "FL", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_a_plain_direct_chat_with_add_al_then_add_fl() {
    accept_as_msn_1_0("AL", "FL", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_a_direct_chat_with_add_fl_then_add_al() {
    accept_as_msn_1_0("FL", "AL", true).await;
}

/// Messages sent while Alice's MSN client is offline arrive at her next logon, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_arrive_once_at_the_next_logon() {
    let s = Setup::new().await;
    let bob = s.matrix("bob").await;
    let dm = s.direct_chat_then_link(&bob).await;
    let server = s.server().await;
    {
        let (alice, _) = come_online(&server).await;
        drop(alice);
    }
    // Let the server notice the logout and stop syncing for Alice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    bob.send_text(&dm, "erste, während du weg warst").await;
    bob.send_text(&dm, "zweite").await;

    let (mut alice, _) = come_online(&server).await;
    let (mut sb, first) = answer_ring(&mut alice, BOB).await;
    assert_eq!(
        first.payload_text().split("\r\n\r\n").nth(1),
        Some("erste, während du weg warst")
    );
    let second = sb.wait_for_within(&format!("MSG {BOB} * *"), WAIT).await;
    assert_eq!(
        second.payload_text().split("\r\n\r\n").nth(1),
        Some("zweite")
    );
    drop(sb);
    drop(alice);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A logon after that brings nothing again.
    let (mut alice, _) = come_online(&server).await;
    let again = alice.recv_within(Duration::from_secs(5)).await;
    assert!(
        !matches!(&again, Ok(Some(l)) if l.get(0) == "RNG"),
        "messages delivered twice: {:?}",
        again.ok().flatten().map(|l| l.text())
    );
}

/// Reads lines until one matches `pattern`, for up to [`WAIT`], keeping every line read
/// (the match too) in `seen`.
async fn wait_noting(client: &mut Client, pattern: &str, seen: &mut Vec<String>) -> Line {
    wait_noting_any(client, &[pattern], seen).await
}

/// Like [`wait_noting`], for a line matching any of `patterns`.
async fn wait_noting_any(client: &mut Client, patterns: &[&str], seen: &mut Vec<String>) -> Line {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.recv_within(remaining).await {
            Ok(Some(line)) => {
                seen.push(line.text());
                if patterns.iter().any(|p| common::matches(&line, p)) {
                    return line;
                }
            }
            Ok(None) => panic!("closed while waiting for {patterns:?}; saw {seen:#?}"),
            Err(()) => panic!("no {patterns:?} within {WAIT:?}; saw {seen:#?}"),
        }
    }
}

/// The handles on the FL, as `LST FL` shows them now.
async fn forward_list(client: &mut Client, seen: &mut Vec<String>) -> Vec<String> {
    let t = client.cmd("LST", "FL").await;
    let mut handles = Vec::new();
    loop {
        let l = client.recv().await;
        seen.push(l.text());
        if l.get(0) != "LST" || l.get(1) != t.to_string() {
            continue;
        }
        // `LST t FL serial index total handle name`, or `LST t FL serial 0 0` when empty.
        if l.get(4) == "0" {
            return handles;
        }
        handles.push(l.get(6).to_string());
        if l.get(4) == l.get(5) {
            return handles;
        }
    }
}

/// Bob invites Alice to a direct chat and Alice accepts it from MSN by adding him to her FL
/// (then the AL, as msncd's ADD does): Bob stays her contact without flapping (no REM of him,
/// the room never listed on its own), he shows online, and his messages arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_a_direct_chat_invite_with_add_fl() {
    let s = Setup::new().await;
    s.linked();
    let server = s.server().await;
    let (mut alice, _) = come_online(&server).await;
    let mut seen = Vec::new();
    // Bob is online when Alice accepts: she must see that, although he does not change.
    let bob = s.matrix("bob").await;
    bob.set_presence(MatrixPresence::Online, None).await;
    let dm = bob.create_dm(&s.synapse.user_id("alice")).await;
    wait_noting(&mut alice, &format!("ADD 0 RL * {BOB} *"), &mut seen).await;

    let t = alice.cmd("ADD", &format!("FL {BOB} Bob")).await;
    wait_noting(&mut alice, &format!("ADD {t} FL * {BOB} *"), &mut seen).await;
    // Bob may be on the AL already (the backend reports the accepted chat's person on FL,
    // AL and RL), then the client is told so.
    let t = alice.cmd("ADD", &format!("AL {BOB} Bob")).await;
    let answer = loop {
        let l = alice.recv().await;
        seen.push(l.text());
        if l.get(1) == t.to_string() {
            break l;
        }
    };
    assert!(
        common::matches(&answer, &format!("ADD {t} AL * {BOB} *"))
            || common::matches(&answer, &format!("215 {t}")),
        "ADD AL answered {}",
        answer.text()
    );
    bob.wait_member_joined(&dm, &s.synapse.user_id("alice"))
        .await;

    // He is shown online, perhaps already among the lines so far.
    let online = format!("NLN NLN {BOB} ");
    if !seen.iter().any(|l| l.starts_with(&online)) {
        wait_noting(&mut alice, &format!("{online}*"), &mut seen).await;
    }

    bob.send_text(&dm, "Hallo Alice, schön dass du da bist")
        .await;
    let rng = wait_noting(&mut alice, &format!("RNG * * CKI * {BOB} *"), &mut seen).await;
    let (mut sb, _) = Client::answer(&rng, ALICE).await;
    let msg = sb.wait_for_within(&format!("MSG {BOB} * *"), WAIT).await;
    assert_eq!(
        msg.payload_text().split("\r\n\r\n").nth(1),
        Some("Hallo Alice, schön dass du da bist")
    );

    // Whatever m.direct and the syncs bring later changes nothing either.
    while let Ok(Some(line)) = alice.recv_within(Duration::from_secs(3)).await {
        seen.push(line.text());
    }
    let forward = forward_list(&mut alice, &mut seen).await;
    assert_eq!(forward, vec![BOB.to_string()], "the FL; saw {seen:#?}");
    let flaps: Vec<&String> = seen
        .iter()
        .filter(|l| {
            l.contains("+room.")
                || (l.starts_with("REM ") && l.split(' ').nth(4) == Some(BOB))
                || (l.starts_with("FLN ") && l.ends_with(BOB))
        })
        .collect();
    assert!(
        flaps.is_empty(),
        "the contact flapped: {flaps:#?} in {seen:#?}"
    );
}

/// Bob's direct chat leaves Alice's list and comes back without her MSN client doing anything
/// (her other Matrix device leaves it; Bob invites her again and that device joins): Bob,
/// online all along, is shown online again once he is back on her FL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_back_on_the_list_is_shown_online_again() {
    let s = Setup::new().await;
    let alice_id = s.synapse.user_id("alice");
    let bob = s.matrix("bob").await;
    bob.set_presence(MatrixPresence::Online, None).await;
    // Syncing offline, so that this device doesn't make Alice look online to Bob.
    let alice_matrix = MatrixClient::login_offline(&s.synapse.url(), &alice_id, "alice-pw").await;
    let dm = bob.create_dm(&alice_id).await;
    alice_matrix.join(&dm).await;
    bob.wait_member_joined(&dm, &alice_id).await;
    s.linked();
    let server = s.server().await;

    let mut alice = server.login(ALICE, "msn-pw").await;
    let mut seen = Vec::new();
    let t = alice.cmd("SYN", "0").await;
    wait_noting(&mut alice, &format!("LST {t} FL * 1 1 {BOB} *"), &mut seen).await;
    let t = alice.cmd("CHG", "NLN").await;
    wait_noting(&mut alice, &format!("CHG {t} NLN"), &mut seen).await;
    let online = [format!("ILN {t} NLN {BOB} *"), format!("NLN NLN {BOB} *")];
    wait_noting_any(&mut alice, &[&online[0], &online[1]], &mut seen).await;

    alice_matrix.room(&dm).await.leave().await.expect("leave");
    wait_noting(&mut alice, &format!("REM 0 FL * {BOB}"), &mut seen).await;
    bob.room(&dm)
        .await
        .invite_user_by_id(&matrix_sdk::ruma::UserId::parse(&alice_id).unwrap())
        .await
        .expect("invite again");
    wait_noting(&mut alice, &format!("ADD 0 RL * {BOB} *"), &mut seen).await;
    alice_matrix.join(&dm).await;
    wait_noting(&mut alice, &format!("ADD 0 FL * {BOB} *"), &mut seen).await;
    wait_noting(&mut alice, &format!("NLN NLN {BOB} *"), &mut seen).await;
}

/// An MSNP7 client of a Matrix-linked account sees its direct chats in a group "People" and
/// its rooms in "Rooms".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_chats_are_people_and_rooms_are_rooms() {
    const MSNP7: &str = "MSNP7 MSNP6 MSNP5 MSNP4 CVR0";
    let s = Setup::new().await;
    let bob = s.matrix("bob").await;
    let alice_matrix = s.matrix("alice").await;
    let room = bob
        .create_room("Stammtisch", false, &[&s.synapse.user_id("alice")])
        .await;
    alice_matrix.join(&room).await;
    bob.wait_member_joined(&room, &s.synapse.user_id("alice"))
        .await;
    drop(alice_matrix);
    s.direct_chat_then_link(&bob).await;
    let server = s.server().await;
    let mut alice = server.login_offering(ALICE, "msn-pw", MSNP7, MSNP7).await;
    let t = alice.cmd("SYN", "0").await;
    alice.expect(&format!("SYN {t} *")).await;
    let (mut groups, mut fl) = (HashMap::new(), HashMap::new());
    loop {
        let l = alice.recv().await;
        match l.get(0) {
            "LSG" => {
                groups.insert(l.get(6).to_string(), l.get(5).to_string());
            }
            "LST" if l.get(2) == "FL" && l.get(5) != "0" => {
                fl.insert(l.get(6).to_string(), l.get(8).to_string());
            }
            "LST" if l.get(2) == "RL" && l.get(4) == l.get(5) => break,
            _ => {}
        }
    }
    let (people, rooms) = (&groups["People"], &groups["Rooms"]);
    assert_eq!(fl[BOB], *people, "Bob's direct chat: {fl:?} {groups:?}");
    let room_contact = fl
        .keys()
        .find(|h| h.starts_with("+room."))
        .unwrap_or_else(|| panic!("the room is a contact: {fl:?}"));
    assert_eq!(fl[room_contact], *rooms, "{fl:?} {groups:?}");
}
