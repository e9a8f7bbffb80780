//! The HTTP listener as a host's monitoring sees it: `/health` and `/metrics` of a real server
//! on 127.0.0.1:0, and no HTTP at all unless configured.

mod common;

use common::TestServer;
use msngate::config::Config;

async fn start_http(configure: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(dir.path());
    config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    configure(&mut config);
    TestServer::start_with(
        dir,
        config,
        &[
            ("alice@example.com", "pw-a", "Alice"),
            ("bob@example.com", "pw-b", "Bob"),
        ],
    )
    .await
}

fn url(server: &TestServer, path: &str) -> String {
    let address = server.running().http_address.expect("http listening");
    format!("http://{address}{path}")
}

async fn metrics_text(server: &TestServer) -> String {
    let response = reqwest::get(url(server, "/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test]
async fn health_is_ok_and_counts_backend_sessions_without_handles() {
    let server = start_http(|_| {}).await;
    let _alice = server.login("alice@example.com", "pw-a").await;
    let response = reqwest::get(url(&server, "/health")).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    assert_eq!(body["listeners"]["notification"], "ok", "{body}");
    assert_eq!(body["listeners"]["switchboard"], "ok", "{body}");
    assert_eq!(body["backend_sessions"]["local"]["connected"], 1, "{body}");
    assert!(!text.contains("alice"), "no handles in /health: {text}");
}

#[tokio::test]
async fn http_stops_with_the_server() {
    let mut server = start_http(|_| {}).await;
    let health = url(&server, "/health");
    server.stop().await;
    // After shutdown nothing answers at all: a monitor sees the failure either way.
    assert!(reqwest::get(&health).await.is_err());
}

#[tokio::test]
async fn metrics_count_connections_logons_messages_and_store_calls() {
    let server = start_http(|_| {}).await;
    let mut alice = server.login("alice@example.com", "pw-a").await;
    alice.go_online("NLN").await;
    let mut bob = server.login("bob@example.com", "pw-b").await;
    bob.go_online("NLN").await;
    let mut failed = common::Client::connect(server.ns()).await;
    failed
        .try_md5_login("alice@example.com", "wrong password")
        .await;

    let mut sb = alice.open_switchboard("alice@example.com").await;
    let t = sb.cmd("CAL", "bob@example.com").await;
    sb.expect(&format!("CAL {t} RINGING *")).await;
    let rng = bob.wait_for("RNG * * CKI * alice@example.com Alice").await;
    let (mut bob_sb, _) = common::Client::answer(&rng, "bob@example.com").await;
    sb.wait_for("JOI bob@example.com *").await;
    sb.msg(
        "N",
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhello",
    )
    .await;
    bob_sb.wait_for("MSG alice@example.com Alice *").await;

    let text = metrics_text(&server).await;
    for line in [
        "msngate_logons_total 2",
        "msngate_failed_logons_total 1",
        "msngate_online_users{backend=\"local\"} 2",
        "msngate_backend_sessions{backend=\"local\",state=\"connected\"} 2",
        "msngate_connections{role=\"switchboard\"} 2",
        "msngate_connections{role=\"dispatch\"} 0",
        "msngate_switchboard_sessions 1",
        "msngate_switchboard_sessions_started_total 1",
        "msngate_messages_relayed_total{backend=\"local\",direction=\"out\"} 1",
        "msngate_slow_clients_disconnected_total{reason=\"queue_full\"} 0",
    ] {
        assert!(has_line(&text, line), "{line} missing in\n{text}");
    }
    // Two logged-in clients and the failed one are notification connections.
    assert!(
        has_line(&text, "msngate_connections{role=\"notification\"} 3"),
        "{text}"
    );
    let store_calls = text
        .lines()
        .find_map(|l| l.strip_prefix("msngate_store_call_duration_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(store_calls > 5, "{text}");
    assert!(text.contains("# TYPE msngate_store_call_duration_seconds histogram"));
    assert!(!text.contains("alice"), "no handles in /metrics");
}

#[tokio::test]
async fn metrics_token_is_required_when_set() {
    let server = start_http(|c| c.http.metrics_token = Some("s3cret-token".into())).await;
    let client = reqwest::Client::new();
    let metrics = url(&server, "/metrics");
    let refused = client.get(&metrics).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(!refused.text().await.unwrap().contains("msngate_"));
    let wrong = client
        .get(&metrics)
        .bearer_auth("not-it")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client
        .get(&metrics)
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("msngate_logons_total"));
    // Health stays open for the load balancer.
    let health = client.get(url(&server, "/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn no_http_unless_configured() {
    let server = TestServer::start(&[]).await;
    assert_eq!(server.running().http_address, None);
}

/// A browser's side of the page, by hand: the cookie it was given and the page's CSRF token.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: String,
}

fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[start..].split('"').next().unwrap().to_string()
}

impl Browser {
    async fn open(server: &TestServer) -> (Browser, String) {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = url(server, "");
        let response = client.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let set = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(set.contains("HttpOnly"), "{set}");
        assert!(set.contains("SameSite=Strict"), "{set}");
        assert!(set.contains("Max-Age="), "{set}");
        let cookie = set.split(';').next().unwrap().to_string();
        let page = response.text().await.unwrap();
        (
            Browser {
                client,
                base,
                cookie,
            },
            page,
        )
    }

    async fn get(&self) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}/", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap();
        if let Some(set) = r.headers().get("set-cookie") {
            self.cookie = set.to_str().unwrap().split(';').next().unwrap().to_string();
        }
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

#[tokio::test]
async fn page_signs_in_changes_the_password_and_signs_out() {
    let server = start_http(|_| {}).await;
    let (mut browser, page) = Browser::open(&server).await;
    let csrf = csrf_of(&page);
    assert!(page.contains("name=\"handle\"") && page.contains("name=\"password\""));

    // Without the token, or with another, nothing happens.
    let form = [("handle", "alice@example.com"), ("password", "pw-a")];
    assert_eq!(browser.post("/sign-in", &form).await.0, 403);
    let forged = [
        ("csrf", "0000"),
        ("handle", "alice@example.com"),
        ("password", "pw-a"),
    ];
    assert_eq!(browser.post("/sign-in", &forged).await.0, 403);

    // A wrong password and an unknown handle read the same.
    let wrong = [
        ("csrf", csrf.as_str()),
        ("handle", "alice@example.com"),
        ("password", "nope"),
    ];
    let (status, wrong_page) = browser.post("/sign-in", &wrong).await;
    assert_eq!(status, 401);
    let unknown = [
        ("csrf", csrf.as_str()),
        ("handle", "nobody@example.com"),
        ("password", "nope"),
    ];
    let (status, unknown_page) = browser.post("/sign-in", &unknown).await;
    assert_eq!(status, 401);
    assert!(wrong_page.contains("don&#39;t match") || wrong_page.contains("don't match"));
    assert_eq!(wrong_page, unknown_page);
    assert!(!wrong_page.contains("nope"), "no password echoed");

    let anonymous = browser.cookie.clone();
    let right = [
        ("csrf", csrf.as_str()),
        ("handle", "alice@example.com"),
        ("password", "pw-a"),
    ];
    let (status, _) = browser.post("/sign-in", &right).await;
    assert_eq!(status, 303);
    assert_ne!(browser.cookie, anonymous, "a new session on signing in");
    let (status, account) = browser.get().await;
    assert_eq!(status, 200);
    assert!(account.contains("alice@example.com"), "{account}");
    assert!(account.contains("Alice"));
    assert!(account.contains("local (contacts on this server)"));
    assert!(account.contains("not signed in with MSN"));
    let csrf = csrf_of(&account);

    // Signed in with MSN too, the page shows the backend connection.
    let msn = server.login("alice@example.com", "pw-a").await;
    let (_, account) = browser.get().await;
    assert!(
        account.contains("online with MSN; backend connected"),
        "{account}"
    );
    drop(msn);

    let forged = [("csrf", "x"), ("current", "pw-a"), ("password", "hijacked")];
    assert_eq!(browser.post("/password", &forged).await.0, 403);
    let bad = [
        ("csrf", csrf.as_str()),
        ("current", "wrong"),
        ("password", "new-pw"),
    ];
    let (status, page) = browser.post("/password", &bad).await;
    assert_eq!(status, 400);
    assert!(page.contains("Nothing was changed"));
    let good = [
        ("csrf", csrf.as_str()),
        ("current", "pw-a"),
        ("password", "new-pw"),
    ];
    let (status, page) = browser.post("/password", &good).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Password changed"));
    assert!(!page.contains("new-pw"));
    server.login("alice@example.com", "new-pw").await;

    let (status, _) = browser.post("/sign-out", &[("csrf", csrf.as_str())]).await;
    assert_eq!(status, 303);
    let (_, page) = browser.get().await;
    assert!(page.contains("Sign in"), "{page}");
    assert!(!page.contains("Change your MSN password"));
}

#[tokio::test]
async fn page_cookie_is_secure_when_configured_and_the_page_can_be_off() {
    let server = start_http(|c| c.http.secure_cookie = true).await;
    let response = reqwest::get(url(&server, "/")).await.unwrap();
    let set = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set.contains("Secure"), "{set}");

    let server = start_http(|c| c.http.self_service = false).await;
    assert_eq!(reqwest::get(url(&server, "/")).await.unwrap().status(), 404);
    assert_eq!(
        reqwest::get(url(&server, "/health"))
            .await
            .unwrap()
            .status(),
        200
    );
}
