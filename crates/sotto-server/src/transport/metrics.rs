//! `/metrics`, in Prometheus text. Served on the HTTP port by default (so
//! existing scrapers keep working), or only on a listener of its own
//! (`--metrics-listen`, the HTTP port then answering 404), and behind a
//! bearer token when `--metrics-token` is set. The counters say how many
//! users are online and how the server is attacked: not for everyone.

use super::error::ApiError;
use super::upgrade::Upgrader;
use crate::config::Secret;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use sotto_core::metrics::Gauges;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What `/metrics` reads, and whom it answers.
pub(crate) struct MetricsState {
    pub upgrader: Upgrader,
    /// The DTLS endpoint's counters, when it runs.
    pub dtls: Option<Arc<sotto_dtls::stats::Stats>>,
    pub token: Option<TokenCheck>,
}

/// The router serving `/metrics`.
pub(crate) fn router(state: Arc<MetricsState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// For the HTTP port while `/metrics` lives on its own listener: a plain
/// 404, so the public port does not even say a scrape exists elsewhere
/// (and a file named `metrics` in the UI folder is not served instead).
pub(crate) fn hidden() -> Router {
    Router::new().route("/metrics", get(|| async { StatusCode::NOT_FOUND }))
}

/// A configured token, kept as its SHA-256 so comparing takes the same
/// time whatever the length and content of the guess.
pub(crate) struct TokenCheck([u8; 32]);

impl TokenCheck {
    pub(crate) fn new(token: &Secret) -> TokenCheck {
        TokenCheck(Sha256::digest(token.0.as_bytes()).into())
    }

    /// Whether the request carries `Authorization: Bearer <the token>`.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = bearer(headers) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

/// The token of an `Authorization: Bearer` header, if there is one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn metrics(State(st): State<Arc<MetricsState>>, headers: HeaderMap) -> Response {
    if let Some(check) = &st.token
        && !check.admits(&headers)
    {
        return ApiError::unauthorized("/metrics needs its bearer token").into_response();
    }
    let u = &st.upgrader;
    let g = Gauges {
        tcp_connections: u.edge.connections.held(),
        unauthenticated_chat: u.edge.unauthenticated.held(),
        hub_connections: u.hub.connection_count(),
        online_users: u.hub.online_count(),
        tasks: u.tasks.len(),
    };
    let mut body = u.edge.metrics.render(g);
    render_broker(&mut body, &u.hub);
    if let Some(dtls) = &st.dtls {
        use std::fmt::Write;
        for (name, value) in dtls.snapshot().pairs() {
            let _ = writeln!(
                body,
                "# TYPE sotto_dtls_{name} untyped\nsotto_dtls_{name} {value}"
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The link to the other nodes: whether it is up (1 also for a single
/// node, which needs none) and what went through it.
fn render_broker(body: &mut String, hub: &sotto_core::hub::Hub) {
    use sotto_core::broker::BrokerState;
    use std::fmt::Write;
    let connected = u8::from(!matches!(hub.broker_state(), BrokerState::Disconnected(_)));
    let (published, received, dropped) = hub.broker_stats().read();
    let _ = writeln!(
        body,
        "# HELP sotto_broker_connected Whether the link to the other nodes is up.\n\
         # TYPE sotto_broker_connected gauge\nsotto_broker_connected {connected}\n\
         # TYPE sotto_broker_announcements_published_total counter\n\
         sotto_broker_announcements_published_total {published}\n\
         # TYPE sotto_broker_announcements_received_total counter\n\
         sotto_broker_announcements_received_total {received}\n\
         # TYPE sotto_broker_announcements_dropped_total counter\n\
         sotto_broker_announcements_dropped_total {dropped}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let check = TokenCheck::new(&Secret("s3cret-token".into()));
        assert!(check.admits(&with_auth("Bearer s3cret-token")));
        assert!(check.admits(&with_auth("bearer s3cret-token")));
        for bad in [
            "Bearer s3cret-toke",
            "Bearer s3cret-token2",
            "Bearer ",
            "Basic s3cret-token",
            "s3cret-token",
        ] {
            assert!(!check.admits(&with_auth(bad)), "{bad}");
        }
        assert!(!check.admits(&HeaderMap::new()));
    }
}
