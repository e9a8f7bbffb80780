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
