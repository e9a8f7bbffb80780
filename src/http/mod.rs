//! The HTTP listener (off unless `[http] listen` is set): `/health` for the host's monitoring,
//! `/metrics` for Prometheus and, unless `[http] self_service = false`, the self-service page
//! where users link their account to another network (`pages`).
//!
//! Built on axum (hyper underneath): no HTTP is parsed here by hand. It speaks plain HTTP and
//! is meant to sit behind the host's reverse proxy for TLS (docs/OPERATIONS.md).

mod pages;
mod sessions;
mod views;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::services::Services;

/// A listener of the server as `/health` reports it: alive while its accept loop runs.
#[derive(Clone, Debug)]
pub struct ListenerStatus {
    pub role: &'static str,
    pub address: SocketAddr,
    pub accepting: Arc<AtomicBool>,
}

impl ListenerStatus {
    pub fn new(role: &'static str, address: SocketAddr) -> ListenerStatus {
        ListenerStatus {
            role,
            address,
            accepting: Arc::new(AtomicBool::new(true)),
        }
    }
}

/// What the handlers share.
struct Http {
    services: Arc<Services>,
    listeners: Vec<ListenerStatus>,
    shutdown: CancellationToken,
    sessions: sessions::Sessions,
}

type Shared = Arc<Http>;

/// How long `/health` waits for the database.
const DATABASE_WAIT: Duration = Duration::from_secs(2);

/// Serves HTTP on `listener` until `shutdown`, as a task of the server's tracker.
pub fn start(
    listener: TcpListener,
    services: Arc<Services>,
    listeners: Vec<ListenerStatus>,
    shutdown: CancellationToken,
) {
    let address = listener.local_addr().ok();
    let http = Arc::new(Http {
        sessions: sessions::Sessions::new(Duration::from_secs(
            services.config.http.session_minutes.saturating_mul(60),
        )),
        services: services.clone(),
        listeners,
        shutdown: shutdown.clone(),
    });
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics));
    if services.config.http.self_service {
        router = router.merge(pages::routes());
    }
    let router = router.with_state(http);
    info!(address = ?address, self_service = services.config.http.self_service, "HTTP is listening");
    services.tracker.spawn(async move {
        let stopped = shutdown.clone();
        // The peer's address feeds the sign-in throttle, as an MSN login's does.
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
        {
            warn!(error = %e, "the HTTP listener stopped");
        }
    });
}

/// `GET /health`: 200 and `"status": "ok"` when every listener accepts and the database
/// answers; 503 and the reasons otherwise. Backend sessions are counted by backend and state;
/// no handle or secret appears.
async fn health(State(http): State<Shared>) -> Response {
    let mut problems = Vec::new();
    let mut listeners = BTreeMap::new();
    for l in &http.listeners {
        let up = l.accepting.load(Ordering::Relaxed) && !http.shutdown.is_cancelled();
        if !up {
            problems.push(format!("the {} listener is not accepting", l.role));
        }
        listeners.insert(l.role, if up { "ok" } else { "down" });
    }
    let database =
        match tokio::time::timeout(DATABASE_WAIT, http.services.store.server_secret()).await {
            Ok(Ok(_)) => "ok".to_string(),
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => format!("no answer within {} s", DATABASE_WAIT.as_secs()),
        };
    if database != "ok" {
        problems.push(format!("database: {database}"));
    }
    let mut sessions: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for account in http.services.hub.accounts() {
        *sessions
            .entry(account.backend)
            .or_default()
            .entry(account.connection_state())
            .or_default() += 1;
    }
    let ok = problems.is_empty();
    let mut body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "reasons": problems,
        "listeners": listeners,
        "database": database,
        "backend_sessions": sessions,
    });
    // A node of a cluster that lost NATS still serves its own users: shown, not unhealthy.
    if let Some(cluster) = http.services.hub.cluster_status() {
        body["cluster"] = serde_json::json!(cluster);
    }
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /metrics`: the Prometheus text format; with `[http] metrics_token`, only for
/// `Authorization: Bearer TOKEN`.
async fn metrics(State(http): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(token) = &http.services.config.http.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is needed\n",
            )
                .into_response();
        }
    }
    if let Some(cluster) = http.services.hub.cluster_status() {
        http.services.metrics.set_cluster(
            cluster.nodes.len(),
            cluster.remote_users,
            cluster.nats_connected,
        );
    }
    let accounts = http.services.hub.accounts();
    let sessions: Vec<(&str, &'static str)> = accounts
        .iter()
        .map(|a| (a.backend, a.connection_state()))
        .collect();
    let text = http
        .services
        .metrics
        .encode(&sessions, http.services.hub.switchboard_count());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
