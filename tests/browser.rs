//! The self-service page in a real browser: Debian's Chromium driven through chromedriver
//! (tests/support/browser.rs), against a real msngate, the test Prosody and the test Synapse.
//! Each test saves screenshots in its temporary directory (and, when MSNGATE_SCREENSHOTS names
//! a directory, a copy there) and checks the text the page shows.
#![cfg(feature = "xmpp")]

mod common;
mod support;

use std::path::PathBuf;
use std::time::Duration;

use common::{Client, TestServer, SECRETS_KEY};
use support::browser::Browser;
use support::prosody::{trust_test_certificate, Prosody};

const WAIT: Duration = Duration::from_secs(10);
/// Linking logs in on the other network once.
const LINK_WAIT: Duration = Duration::from_secs(60);

async fn page_server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    config.secrets.key = Some(SECRETS_KEY.into());
    config.storage.backend_data = dir.path().join("backends");
    TestServer::start_with(dir, config, &[("alice@hotmail.com", "msn-pw", "Alice")]).await
}

fn base(server: &TestServer) -> String {
    format!("http://{}", server.running().http_address.unwrap())
}

async fn screenshot(browser: &Browser, name: &str) -> PathBuf {
    let path = browser.screenshot(name).await;
    if let Some(dir) = std::env::var_os("MSNGATE_SCREENSHOTS") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&path, PathBuf::from(dir).join(path.file_name().unwrap()));
    }
    path
}

async fn sign_in(browser: &Browser, server: &TestServer) -> String {
    browser.goto(&format!("{}/", base(server))).await;
    browser
        .wait_for_text("Sign in with your MSN handle", WAIT)
        .await;
    browser.fill("#handle", "alice@hotmail.com").await;
    browser.fill("#password", "msn-pw").await;
    browser.click_button("Sign in").await;
    browser.wait_for_text("Your msngate account", WAIT).await
}

#[tokio::test]
async fn link_xmpp_in_the_browser_then_msn_sees_the_roster() {
    trust_test_certificate();
    let prosody = Prosody::start().await;
    prosody.register("alice", "alice-xmpp-pw").await;
    prosody.register("bob", "bob-pw").await;
    prosody.set_roster("alice", &[("bob@localhost", "both")]);
    prosody.set_roster("bob", &[("alice@localhost", "both")]);
    let server = page_server().await;
    let browser = Browser::start(server.dir.path()).await;

    // The sign-in page first, then a wrong password: the same words as an unknown handle.
    browser.goto(&format!("{}/", base(&server))).await;
    browser.wait_for_text("Sign in", WAIT).await;
    screenshot(&browser, "sign-in").await;
    browser.fill("#handle", "alice@hotmail.com").await;
    browser.fill("#password", "not it").await;
    browser.click_button("Sign in").await;
    browser
        .wait_for_text(
            "That handle and password don't match an account here.",
            WAIT,
        )
        .await;

    let text = sign_in(&browser, &server).await;
    assert!(text.contains("alice@hotmail.com"), "{text}");
    assert!(text.contains("local (contacts on this server)"), "{text}");
    assert!(text.contains("not signed in with MSN"), "{text}");
    screenshot(&browser, "account-local").await;

    browser.fill("#xmpp-jid", "alice@localhost").await;
    browser.fill("#xmpp-password", "alice-xmpp-pw").await;
    browser.fill("#xmpp-server", &prosody.addr()).await;
    browser.click_button("Link xmpp account").await;
    let text = browser
        .wait_for_text("Linked to xmpp: alice@localhost", LINK_WAIT)
        .await;
    assert!(
        text.contains("Backend\nxmpp: alice@localhost") || text.contains("xmpp: alice@localhost")
    );
    let source = browser.client.source().await.unwrap();
    assert!(!source.contains("alice-xmpp-pw"), "a password in the page");
    assert!(!browser
        .client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("pw"));
    screenshot(&browser, "linked-xmpp").await;

    // MSN Messenger now sees the XMPP roster.
    let mut msn = Client::login(server.ns(), "alice@hotmail.com", "msn-pw").await;
    let forward = msn.come_online().await;
    assert_eq!(forward, vec!["bob@localhost".to_string()]);
    browser.goto(&format!("{}/", base(&server))).await;
    let text = browser
        .wait_for_text("online with MSN; backend connected", WAIT)
        .await;
    assert!(text.contains("xmpp: alice@localhost"), "{text}");
    screenshot(&browser, "online").await;

    browser.click_button("Sign out").await;
    browser
        .wait_for_text("Sign in with your MSN handle", WAIT)
        .await;
    screenshot(&browser, "signed-out").await;
}

#[tokio::test]
async fn a_wrong_backend_password_is_shown_and_changes_nothing() {
    trust_test_certificate();
    let prosody = Prosody::start().await;
    prosody.register("alice", "alice-xmpp-pw").await;
    let server = page_server().await;
    let browser = Browser::start(server.dir.path()).await;
    sign_in(&browser, &server).await;
    browser.fill("#xmpp-jid", "alice@localhost").await;
    browser.fill("#xmpp-password", "wrong-xmpp-pw").await;
    browser.fill("#xmpp-server", &prosody.addr()).await;
    browser.click_button("Link xmpp account").await;
    let text = browser.wait_for_text("Not linked:", LINK_WAIT).await;
    assert!(text.contains("Nothing was changed"), "{text}");
    assert!(text.contains("local (contacts on this server)"), "{text}");
    assert!(!browser
        .client
        .source()
        .await
        .unwrap()
        .contains("wrong-xmpp-pw"));
    screenshot(&browser, "wrong-backend-password").await;
    let link = server
        .running()
        .services
        .store
        .backend_link(&"alice@hotmail.com".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(link, None, "nothing stored");
}

#[tokio::test]
async fn a_forged_post_is_refused() {
    let server = page_server().await;
    let browser = Browser::start(server.dir.path()).await;
    sign_in(&browser, &server).await;
    // A form whose token is not the session's, as a page elsewhere would send it.
    browser
        .client
        .execute(
            "document.querySelectorAll('input[name=csrf]').forEach(i => i.value = 'forged');",
            vec![],
        )
        .await
        .unwrap();
    browser.fill("#current", "msn-pw").await;
    browser.fill("#new-password", "hijacked").await;
    browser.click_button("Change password").await;
    let text = browser.wait_for_text("Refused", WAIT).await;
    assert!(text.contains("Nothing was changed"), "{text}");
    screenshot(&browser, "forged-post").await;
    // The password is unchanged: MSN still logs in with it.
    Client::login(server.ns(), "alice@hotmail.com", "msn-pw").await;
}

#[cfg(feature = "matrix")]
#[tokio::test]
async fn link_matrix_in_the_browser() {
    let synapse = support::synapse::Synapse::start().await;
    synapse.register("alice", "alice-matrix-pw").await;
    let server = page_server().await;
    let browser = Browser::start(server.dir.path()).await;
    sign_in(&browser, &server).await;
    let user_id = synapse.user_id("alice");
    browser.fill("#matrix-homeserver", &synapse.url()).await;
    browser.fill("#matrix-user", &user_id).await;
    browser.fill("#matrix-password", "alice-matrix-pw").await;
    browser.click_button("Link matrix account").await;
    let text = browser
        .wait_for_text(&format!("Linked to matrix: {user_id}"), LINK_WAIT)
        .await;
    assert!(text.contains(&format!("matrix: {user_id}")), "{text}");
    assert!(!browser
        .client
        .source()
        .await
        .unwrap()
        .contains("alice-matrix-pw"));
    screenshot(&browser, "linked-matrix").await;
}
