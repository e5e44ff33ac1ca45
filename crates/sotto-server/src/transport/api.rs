//! The HTTP account API (`/api/...`), the `/ws` upgrade route and
//! `/readyz` (`/metrics` is in `metrics.rs`). JSON in and out; every error is
//! `{"error":{"code":"…","message":"…"}}` with a fitting status.
//!
//! Requests with a body must say `Content-Type: application/json` (415
//! otherwise): besides being honest, that makes a cross-site form post
//! impossible without a CORS preflight, which this server never grants.
//! The session cookie is `SameSite=Strict` and `HttpOnly` on top.

mod devices;
mod directory;

use super::credential::{self, SESSION_COOKIE};
use super::error::ApiError;
use super::listener::Peer;
use super::upgrade::{Kind, Upgrader};
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;
use sotto_core::auth::accounts::{AccountError, ValidSession};
use sotto_core::auth::throttle::retry_after_secs;
use sotto_core::broker::BrokerState;
use sotto_core::metrics::bump;
use sotto_core::ports::{SessionKind, StoreError};
use sotto_proto::api::{LoginBody, RegisterBody, parse_body};
use std::sync::Arc;
use std::time::Duration;

impl ApiError {
    pub(super) fn rate_limited(wait: Duration) -> ApiError {
        let secs = retry_after_secs(wait);
        ApiError {
            retry_after: Some(secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many attempts; retry in {secs} s"),
            )
        }
    }
}

/// Seconds a client should wait before retrying while the store is
/// unreachable: long enough not to hammer a recovering database.
const UNAVAILABLE_RETRY_SECS: u64 = 5;

impl From<AccountError> for ApiError {
    /// The one place account failures get their HTTP status.
    fn from(e: AccountError) -> ApiError {
        let (status, code, retry_after) = match e {
            AccountError::MissingFields
            | AccountError::BadName(_)
            | AccountError::PasswordTooLong
            | AccountError::KeyTooLong => (StatusCode::BAD_REQUEST, "invalid", None),
            AccountError::InvalidCredentials => {
                (StatusCode::UNAUTHORIZED, "invalid_credentials", None)
            }
            AccountError::NameTaken => (StatusCode::CONFLICT, "name_taken", None),
            AccountError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy", Some(1)),
            AccountError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                Some(UNAVAILABLE_RETRY_SECS),
            ),
            AccountError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        ApiError {
            retry_after,
            ..ApiError::new(status, code, e.to_string())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::from(AccountError::from(e))
    }
}

/// What the API handlers share.
pub(crate) struct ApiState {
    pub upgrader: Upgrader,
    pub max_body: usize,
}

pub(crate) fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/register", post(register))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/logout-all", post(devices::logout_all))
        .route("/api/me", get(directory::me))
        .route("/api/users", get(directory::users))
        .route("/api/users/{id}", get(directory::user))
        .route("/api/conversations", get(directory::conversations))
        .route("/api/devices", post(devices::register).get(devices::list))
        .route("/api/devices/{id}", delete(devices::delete))
        .route("/ws", get(ws))
        .route("/readyz", get(readyz))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            same_origin_writes,
        ))
        .with_state(state)
}

/// Every request that changes state (anything but GET and HEAD) must come
/// from an allowed Origin when it names one. `SameSite=Strict` keeps the
/// cookie from other *sites*, but a page on another port of the same host
/// is the same site: without this it could log a user out by form post.
/// Clients that send no Origin (not browsers) are not affected.
async fn same_origin_writes(
    State(st): State<Arc<ApiState>>,
    req: Request,
    next: middleware::Next,
) -> Response {
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reads
        && !super::upgrade::origin_allowed(req.headers(), &st.upgrader.edge.config.allowed_origins)
    {
        return ApiError::forbidden_origin().into_response();
    }
    next.run(req).await
}

async fn register(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    req: Request,
) -> Result<Response, ApiError> {
    let body: RegisterBody = read_json(req, st.max_body).await?;
    attempt(&st, peer.ip(), &body.name)?;
    let accounts = st.upgrader.hub.accounts();
    let user = accounts
        .register(&body.name, &body.password, &body.public_key)
        .await
        .inspect_err(|_| failed(&st))?;
    let body = json!({"id": user.id.as_str(), "name": user.name.as_str()});
    Ok((StatusCode::CREATED, json_body(body)).into_response())
}

async fn login(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    req: Request,
) -> Result<Response, ApiError> {
    let body: LoginBody = read_json(req, st.max_body).await?;
    attempt(&st, peer.ip(), &body.name)?;
    let accounts = st.upgrader.hub.accounts();
    let user = accounts
        .check_password(&body.name, &body.password)
        .await
        .inspect_err(|_| failed(&st))?;
    let (token, record) = accounts.start_session(&user.id, SessionKind::Api).await?;
    let lifetime = accounts.limits().session_lifetime;
    let expires_at = record
        .created_at
        .saturating_add(sotto_core::clock::millis(lifetime));
    tracing::info!(%peer, user = %user.id, "API login");
    let body = json!({
        "token": token.as_str(),
        "user": {"id": user.id.as_str(), "name": user.name.as_str()},
        "expires_at": expires_at,
        "idle_timeout_secs": accounts.limits().session_idle.as_secs(),
    });
    let cookie = session_cookie(token.as_str(), lifetime.as_secs(), st.upgrader.tls);
    Ok((
        StatusCode::OK,
        [(header::SET_COOKIE, cookie)],
        json_body(body),
    )
        .into_response())
}

async fn logout(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let session = authenticate(&st, &headers).await?;
    let hash = session.token.hash();
    st.upgrader.hub.accounts().revoke(&hash).await?;
    let closed = st
        .upgrader
        .hub
        .close_session(&hash, sotto_core::hub::CloseReason::LoggedOut);
    tracing::info!(user = %session.user.id, closed, "API logout");
    let cookie = session_cookie("", 0, st.upgrader.tls);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

async fn ws(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    req: Request,
) -> Response {
    st.upgrader.upgrade(peer, req, Kind::Native).await
}

/// Ready when the store answers and, with several nodes, the broker is
/// connected; 503 otherwise, naming the service that is down, so a load
/// balancer stops sending users to a node that cannot log them in or
/// cannot reach the others (it still serves the users it has).
async fn readyz(State(st): State<Arc<ApiState>>) -> Response {
    let hub = &st.upgrader.hub;
    let mut down = serde_json::Map::new();
    match tokio::time::timeout(Duration::from_secs(2), hub.store_ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "readiness check: store failed");
            down.insert("database".into(), json!("unavailable"));
        }
        Err(_) => {
            down.insert("database".into(), json!("too slow"));
        }
    }
    if let BrokerState::Disconnected(why) = hub.broker_state() {
        down.insert("broker".into(), json!(why));
    }
    if down.is_empty() {
        return json_body(json!({"status": "ready"}));
    }
    let status = match down.len() {
        1 if down.contains_key("database") => "store unavailable",
        1 => "broker unavailable",
        _ => "store and broker unavailable",
    };
    let body = json!({"status": status, "down": down});
    (StatusCode::SERVICE_UNAVAILABLE, json_body(body)).into_response()
}

/// The session behind the request's bearer token or cookie; 503 (not 401)
/// when the store cannot say, so clients keep their token.
pub(super) async fn authenticate(
    st: &ApiState,
    headers: &HeaderMap,
) -> Result<ValidSession, ApiError> {
    let raw = credential::credential(headers, &[])
        .map_err(ApiError::unauthorized)?
        .ok_or_else(|| ApiError::unauthorized("a bearer token or session cookie is required"))?;
    st.upgrader
        .hub
        .valid_session(&raw)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid, expired or revoked token"))
}

fn attempt(st: &ApiState, ip: std::net::IpAddr, name: &str) -> Result<(), ApiError> {
    let edge = &st.upgrader.edge;
    bump(&edge.metrics.login_attempts);
    edge.throttle.attempt(ip, name).map_err(|wait| {
        bump(&edge.metrics.rate_limited);
        tracing::warn!(%ip, name, "API login attempt rate-limited");
        ApiError::rate_limited(wait)
    })
}

fn failed(st: &ApiState) {
    bump(&st.upgrader.edge.metrics.login_failures);
}

/// Reads a JSON body of at most `limit` bytes into `T`.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request,
    limit: usize,
) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("bodies are limited to {limit} bytes"),
        )
    };
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| match super::deadline::is_body_timeout(&e) {
            true => body_timeout(),
            false => too_large(),
        })?;
    parse_body(&bytes).map_err(ApiError::bad_request)
}

/// 408: the body did not arrive within `--body-timeout-secs` of its
/// headers. The connection layer closes the connection after it.
fn body_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "timeout",
        "the request body did not arrive in time",
    )
}

pub(super) fn json_body(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

pub(super) fn session_cookie(token: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    )
}
