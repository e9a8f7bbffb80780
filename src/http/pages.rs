//! The self-service page: signing in with the MSN handle and password (throttled like an MSN
//! login), the account, linking to another network through its backend's `Linker` (as
//! `msngate user link` does), unlinking, changing the MSN password, signing out.
//!
//! Every form carries the session's CSRF token and a POST without it is refused (403) before
//! anything else happens. Passwords only ever arrive in POST bodies: they are never written
//! into a page, a URL or the log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use msngate_bridge_api::{LinkArgKind, LinkRequest, StoredLink};
use tracing::{info, warn};

use super::sessions::WebSession;
use super::views::{self, AccountView, Notice};
use super::Shared;
use crate::backend::registry;
use crate::protocol::UserHandle;
use crate::secrets::SecretKey;
use crate::store::{password, BackendLink, StoreError};

const COOKIE: &str = "msngate_session";

/// How long linking may take (a login on the other network) before the page gives up.
const LINK_WAIT: Duration = Duration::from_secs(45);

/// How long a visitor's session lasts before signing in.
const ANONYMOUS_COOKIE: Duration = Duration::from_secs(3600);

/// What a wrong handle or password gets, whether or not the handle exists.
const WRONG_LOGIN: &str = "That handle and password don't match an account here.";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(index))
        .route("/sign-in", post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/link/{backend}", post(link))
        .route("/unlink", post(unlink))
        .route("/password", post(change_password))
}

type FormFields = HashMap<String, String>;

fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn problem(text: impl Into<String>) -> Option<Notice> {
    Some(Notice::Problem(text.into()))
}

fn session_cookie(http: &Shared, token: String, lifetime: Duration) -> Cookie<'static> {
    let mut cookie = Cookie::new(COOKIE, token);
    cookie.set_http_only(true);
    cookie.set_same_site(SameSite::Strict);
    cookie.set_secure(http.services.config.http.secure_cookie);
    cookie.set_path("/");
    let seconds = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    cookie.set_max_age(time::Duration::seconds(seconds));
    cookie
}

/// The visitor's session, if its cookie names a live one.
fn current(http: &Shared, jar: &CookieJar) -> Option<(String, WebSession)> {
    let token = jar.get(COOKIE)?.value().to_string();
    let session = http.sessions.get(&token)?;
    Some((token, session))
}

fn too_busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "too many sessions; try again later\n",
    )
        .into_response()
}

/// Why a POST is not handled.
enum Refusal {
    /// No session, or the form's CSRF token is not the session's: 403.
    Forged,
    /// The form needs a signed-in session: back to the sign-in page.
    SignInFirst,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Forged => html(StatusCode::FORBIDDEN, views::forbidden()),
            Refusal::SignInFirst => Redirect::to("/").into_response(),
        }
    }
}

/// The session of a POST whose CSRF token matches it.
fn checked(
    http: &Shared,
    jar: &CookieJar,
    form: &FormFields,
) -> Result<(String, WebSession), Refusal> {
    let given = form.get("csrf").map(String::as_str).unwrap_or("");
    match current(http, jar) {
        Some((token, session)) if session.csrf_matches(given) => Ok((token, session)),
        _ => Err(Refusal::Forged),
    }
}

/// A signed-in session of a POST with a valid CSRF token.
fn signed_in(
    http: &Shared,
    jar: &CookieJar,
    form: &FormFields,
) -> Result<(WebSession, UserHandle), Refusal> {
    let (_, session) = checked(http, jar, form)?;
    match session.handle.clone() {
        Some(handle) => Ok((session, handle)),
        None => Err(Refusal::SignInFirst),
    }
}

async fn index(State(http): State<Shared>, jar: CookieJar) -> Response {
    match current(&http, &jar) {
        Some((_, session)) if session.handle.is_some() => {
            account_page(&http, &session, StatusCode::OK, None).await
        }
        Some((_, session)) => html(StatusCode::OK, views::sign_in(session.csrf(), None)),
        None => {
            let Some((token, session)) = http.sessions.anonymous() else {
                return too_busy();
            };
            let jar = jar.add(session_cookie(&http, token, ANONYMOUS_COOKIE));
            let page = views::sign_in(session.csrf(), None).into_string();
            (jar, Html(page)).into_response()
        }
    }
}

async fn account_page(
    http: &Shared,
    session: &WebSession,
    status: StatusCode,
    message: Option<Notice>,
) -> Response {
    let Some(handle) = &session.handle else {
        return Redirect::to("/").into_response();
    };
    let store = &http.services.store;
    let found = async {
        Ok::<_, StoreError>((
            store.account(handle).await?,
            store.backend_link(handle).await?,
            store.refused_links().await?,
        ))
    }
    .await;
    let (account, link, refused) = match found {
        Ok(found) => found,
        Err(e) => {
            warn!(error = %e, "the page could not read an account");
            let text = "the database did not answer\n";
            return (StatusCode::INTERNAL_SERVER_ERROR, text).into_response();
        }
    };
    let networks = registry::networks()
        .iter()
        .map(|n| {
            let args = n.link_args().to_vec();
            (n.name().to_string(), n.link_help().to_string(), args)
        })
        .collect();
    let view = AccountView {
        handle: handle.to_string(),
        name: account.name.as_str().to_string(),
        link: link.map(|l| (l.backend, l.account)),
        online: http
            .services
            .hub
            .backend(handle)
            .map(|a| a.connection_state()),
        refused: refused.iter().any(|(h, _)| h == handle),
        networks,
    };
    html(
        status,
        views::account(&view, session.csrf(), message.as_ref()),
    )
}

async fn sign_in(
    State(http): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    Form(form): Form<FormFields>,
) -> Response {
    let (token, session) = match checked(&http, &jar, &form) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let wrong = || {
        let notice = Notice::Problem(WRONG_LOGIN.into());
        let page = views::sign_in(session.csrf(), Some(&notice));
        html(StatusCode::UNAUTHORIZED, page)
    };
    let given = form.get("handle").map(|h| h.trim()).unwrap_or("");
    let Ok(handle) = given.to_ascii_lowercase().parse::<UserHandle>() else {
        return wrong();
    };
    let password = form.get("password").map(String::as_str).unwrap_or("");
    let throttle = &http.services.node.throttle;
    let address = peer.ip();
    // Throttled like an MSN login: a blocked handle is refused without looking at the
    // password, and unknown handles count like known ones.
    if throttle.blocked(address, &handle).is_some()
        || !password_matches(&http, &handle, password).await
    {
        throttle.failed(address, &handle);
        http.services.metrics.failed_logons.inc();
        info!(%address, "a sign-in on the page failed");
        return wrong();
    }
    throttle.succeeded(address, &handle);
    let Some((token, _)) = http.sessions.sign_in(&token, handle.clone()) else {
        return too_busy();
    };
    info!(%handle, "signed in on the page");
    let lifetime = http.sessions.lifetime();
    let jar = jar.add(session_cookie(&http, token, lifetime));
    (jar, Redirect::to("/")).into_response()
}

/// Whether `password` is the account's MSN password; an unknown handle costs the same digest.
async fn password_matches(http: &Shared, handle: &UserHandle, password: &str) -> bool {
    let credentials = http.services.store.credentials(handle).await.ok().flatten();
    let salt = credentials
        .as_ref()
        .map_or("no-such-account", |c| c.password.salt.as_str());
    let response = password::md5_hex(&format!("{salt}{password}"));
    credentials.is_some_and(|c| password::verify_response(&c.password, &response))
}

async fn sign_out(
    State(http): State<Shared>,
    jar: CookieJar,
    Form(form): Form<FormFields>,
) -> Response {
    let (token, _) = match checked(&http, &jar, &form) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    http.sessions.remove(&token);
    let jar = jar.remove(Cookie::build(COOKIE).path("/"));
    (jar, Redirect::to("/")).into_response()
}

async fn link(
    State(http): State<Shared>,
    jar: CookieJar,
    Path(backend): Path<String>,
    Form(form): Form<FormFields>,
) -> Response {
    let (session, handle) = match signed_in(&http, &jar, &form) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let page = |status, notice| account_page(&http, &session, status, notice);
    let Some(network) = registry::network(&backend) else {
        let text = format!("This server cannot link {backend} accounts.");
        return page(StatusCode::NOT_FOUND, problem(text)).await;
    };
    let mut args = Vec::new();
    for arg in network.link_args() {
        let value = form
            .get(arg.name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty());
        match (arg.kind, value) {
            (LinkArgKind::Flag, Some(_)) => args.push((arg.name.to_string(), "true".into())),
            (LinkArgKind::Required, None) => {
                let text = format!("Fill in {} to link a {backend} account.", arg.name);
                return page(StatusCode::BAD_REQUEST, problem(text)).await;
            }
            (_, Some(v)) => args.push((arg.name.to_string(), v.to_string())),
            (_, None) => {}
        }
    }
    let config = &http.services.config;
    let Ok(Some(key)) = SecretKey::load(&config.secrets, true) else {
        warn!("the page cannot link: the secrets key is unusable (see msngate check-config)");
        let text = "The server cannot store linked accounts' secrets right now; tell its host.";
        return page(StatusCode::INTERNAL_SERVER_ERROR, problem(text)).await;
    };
    let request = LinkRequest {
        msn_handle: handle.to_string(),
        args,
        data_dir: config.storage.backend_dir(&handle, network.name()),
    };
    // Linking, then one try of what was linked where linking did not log in: a wrong
    // password or a server out of reach is said now, and nothing is stored.
    let attempt = async {
        let linked = network.link(request).await?;
        if let Err(e) = network.check(&linked).await {
            // Whatever linking left on the network's side goes again.
            let left = StoredLink {
                account: linked.account.clone(),
                secret: Some(linked.secret.clone()),
                options: linked.options.clone(),
            };
            let _ = network.unlink(left).await;
            return Err(e);
        }
        Ok::<_, msngate_bridge_api::LinkError>(linked)
    };
    let linked = match tokio::time::timeout(LINK_WAIT, attempt).await {
        Ok(Ok(linked)) => linked,
        Ok(Err(e)) => {
            info!(%handle, backend, error = %e, "linking on the page failed");
            let text = format!("Not linked: {e}. Nothing was changed.");
            return page(StatusCode::BAD_REQUEST, problem(text)).await;
        }
        Err(_) => {
            let text = format!(
                "Not linked: the {backend} server did not answer within {} s. Nothing was changed.",
                LINK_WAIT.as_secs()
            );
            return page(StatusCode::GATEWAY_TIMEOUT, problem(text)).await;
        }
    };
    let link = BackendLink {
        backend: network.name().into(),
        account: linked.account.clone(),
        sealed_secret: key.seal(handle.as_str(), linked.secret.as_bytes()),
        options: linked.options,
    };
    let store = &http.services.store;
    let previous = store.backend_link(&handle).await.ok().flatten();
    if let Err(e) = store.link(&handle, &link).await {
        warn!(%handle, error = %e, "the page could not store a link");
        let text = "The link could not be saved.";
        return page(StatusCode::INTERNAL_SERVER_ERROR, problem(text)).await;
    }
    if let Some(previous) = previous {
        undo_link(&handle, previous, Some(&key)).await;
    }
    info!(%handle, backend, "linked on the page");
    let text = format!(
        "Linked to {}: {}. It takes effect at your next MSN sign-in.",
        network.name(),
        linked.account
    );
    page(StatusCode::OK, Some(Notice::Done(text))).await
}

async fn unlink(
    State(http): State<Shared>,
    jar: CookieJar,
    Form(form): Form<FormFields>,
) -> Response {
    let (session, handle) = match signed_in(&http, &jar, &form) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let message = match http.services.store.unlink(&handle).await {
        Ok(previous) => {
            let key = SecretKey::load(&http.services.config.secrets, false)
                .ok()
                .flatten();
            undo_link(&handle, previous, key.as_ref()).await;
            info!(%handle, "unlinked on the page");
            Notice::Done("Unlinked: this is a local account from your next MSN sign-in.".into())
        }
        Err(StoreError::NotLinked) => Notice::Problem("This account is not linked.".into()),
        Err(e) => {
            warn!(%handle, error = %e, "the page could not unlink");
            Notice::Problem("The link could not be removed.".into())
        }
    };
    account_page(&http, &session, StatusCode::OK, Some(message)).await
}

/// Ends what a replaced or removed link kept on its network (a Matrix device), as
/// `msngate user unlink` does. Failures are logged: the link is already gone here.
async fn undo_link(handle: &UserHandle, link: BackendLink, key: Option<&SecretKey>) {
    let Some(network) = registry::network(&link.backend) else {
        return;
    };
    let secret = key
        .and_then(|key| key.open(handle.as_str(), &link.sealed_secret).ok())
        .map(|s| String::from_utf8_lossy(&s).into_owned());
    let stored = StoredLink {
        account: link.account,
        secret,
        options: link.options,
    };
    match tokio::time::timeout(LINK_WAIT, network.unlink(stored)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(%handle, error = %e, "undoing the old link failed"),
        Err(_) => warn!(%handle, "undoing the old link timed out"),
    }
}

async fn change_password(
    State(http): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    Form(form): Form<FormFields>,
) -> Response {
    let (session, handle) = match signed_in(&http, &jar, &form) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let page = |status, notice| account_page(&http, &session, status, notice);
    let current = form.get("current").map(String::as_str).unwrap_or("");
    let new = form.get("password").map(String::as_str).unwrap_or("");
    let throttle = &http.services.node.throttle;
    if throttle.blocked(peer.ip(), &handle).is_some()
        || !password_matches(&http, &handle, current).await
    {
        throttle.failed(peer.ip(), &handle);
        let text = "The current password is not right. Nothing was changed.";
        return page(StatusCode::BAD_REQUEST, problem(text)).await;
    }
    if new.is_empty() {
        let text = "The new password must not be empty. Nothing was changed.";
        return page(StatusCode::BAD_REQUEST, problem(text)).await;
    }
    let message = match http.services.store.set_password(&handle, new).await {
        Ok(()) => {
            info!(%handle, "password changed on the page");
            Notice::Done("Password changed: use the new one in MSN Messenger from now on.".into())
        }
        Err(e) => {
            warn!(%handle, error = %e, "the page could not change a password");
            Notice::Problem("The password could not be changed.".into())
        }
    };
    page(StatusCode::OK, Some(message)).await
}
