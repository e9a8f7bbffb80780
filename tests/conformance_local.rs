//! The MSN-level conformance suite (tests/conformance/msn.rs) against the local backend: alice
//! and her contact bob are both accounts on the same msngate, and bob is a second MSN client.
//! (The interface-level suite in tests/conformance needs backend events, which the local
//! backend does not send: its contacts' clients are told directly.)

mod common;
// The interface-level half of the suite is not for this backend.
#[allow(dead_code)]
mod conformance;

use std::time::Duration;

use common::{matches, Client, TestServer};
use conformance::msn::{Served, ALICE};
use msngate::protocol::{FriendlyName, ListKind, UserHandle};
use msngate::store::{SqliteStore, Store};
use msngate_bridge_api::PresenceState;
use tokio::sync::mpsc;

const BOB: &str = "bob@hotmail.com";

struct Local {
    server: TestServer,
}

impl Served for Local {
    type Peer = MsnPeer;

    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = TestServer::config(dir.path());
        let db = common::db_file(&config);
        common::create_accounts(
            &db,
            &[
                (ALICE, conformance::msn::ALICE_PASSWORD, "Alice"),
                (BOB, "bob-pw", "Bob"),
            ],
        );
        let database = SqliteStore::open(&db).unwrap();
        for (owner, contact, name) in [(ALICE, BOB, "Bob"), (BOB, ALICE, "Alice")] {
            let (owner, contact): (UserHandle, UserHandle) =
                (owner.parse().unwrap(), contact.parse().unwrap());
            database
                .add_entry(
                    &owner,
                    ListKind::Forward,
                    &contact,
                    &FriendlyName::new(name).unwrap(),
                )
                .await
                .unwrap();
        }
        drop(database);
        Local {
            server: TestServer::start_with(dir, config, &[]).await,
        }
    }

    fn server(&self) -> &TestServer {
        &self.server
    }

    fn contact_handle(&self) -> String {
        BOB.into()
    }

    async fn peer(&mut self) -> MsnPeer {
        let mut ns = self.server.login(BOB, "bob-pw").await;
        ns.come_online().await;
        MsnPeer {
            ns,
            chat: None,
            texts: None,
        }
    }
}

/// Bob on MSN. His side of a conversation runs in a task of its own, as a client's window
/// does, so that it can wait for alice to join before sending while the test drives alice.
struct MsnPeer {
    ns: Client,
    chat: Option<mpsc::Sender<String>>,
    texts: Option<mpsc::Receiver<String>>,
}

impl MsnPeer {
    async fn start_chat(&mut self) -> mpsc::Sender<String> {
        // Not `open_switchboard`: alice's presence may come first on bob's connection.
        let t = self.ns.cmd("XFR", "SB").await;
        let xfr = self.ns.wait_for(&format!("XFR {t} SB * CKI *")).await;
        let mut sb = Client::connect_to(xfr.get(3)).await;
        let t = sb.cmd("USR", &format!("{BOB} {}", xfr.get(5))).await;
        sb.expect(&format!("USR {t} OK {BOB} *")).await;
        let t = sb.cmd("CAL", ALICE).await;
        sb.expect(&format!("CAL {t} RINGING *")).await;
        let (to_send, mut outgoing) = mpsc::channel::<String>(16);
        let (received, texts) = mpsc::channel(16);
        self.texts = Some(texts);
        tokio::spawn(async move {
            let mut joined = false;
            let mut pending = Vec::new();
            loop {
                while let Ok(text) = outgoing.try_recv() {
                    pending.push(text);
                }
                if joined {
                    for text in pending.drain(..) {
                        let payload = format!(
                            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{text}"
                        );
                        sb.msg("N", payload.as_bytes()).await;
                    }
                }
                match sb.recv_within(Duration::from_millis(100)).await {
                    Ok(Some(line)) if matches(&line, &format!("JOI {ALICE} *")) => joined = true,
                    Ok(Some(line)) if line.get(0) == "MSG" => {
                        let payload = line.payload_text();
                        if let Some((_, body)) = payload
                            .split_once("\r\n\r\n")
                            .filter(|(h, _)| h.contains("text/plain"))
                        {
                            let _ = received.send(body.to_owned()).await;
                        }
                    }
                    Ok(Some(_)) | Err(()) => {}
                    Ok(None) => return,
                }
            }
        });
        to_send
    }
}

impl conformance::Peer for MsnPeer {
    async fn send_text(&mut self, text: &str) {
        let chat = match self.chat.clone() {
            Some(chat) => chat,
            None => {
                let chat = self.start_chat().await;
                self.chat = Some(chat.clone());
                chat
            }
        };
        chat.send(text.to_owned())
            .await
            .expect("bob's window is open");
    }

    async fn next_text(&mut self) -> String {
        let texts = self.texts.as_mut().expect("bob has a conversation open");
        tokio::time::timeout(conformance::WAIT, texts.recv())
            .await
            .expect("a message within the wait")
            .expect("bob's window is open")
    }

    async fn go_away(&mut self) {
        let t = self.ns.cmd("CHG", "AWY").await;
        self.ns.wait_for(&format!("CHG {t} AWY")).await;
    }

    async fn wait_for_user_state(&mut self, state: PresenceState) {
        let code = match state {
            PresenceState::Online => "NLN",
            PresenceState::Busy => "BSY",
            PresenceState::Away => "AWY",
            other => panic!("no MSN state for {other:?} in this test"),
        };
        self.ns
            .wait_for_within(&format!("NLN {code} {ALICE} *"), conformance::WAIT)
            .await;
    }
}

msn_conformance_suite!(Local);
