//! The authenticated WebSocket handshake (`/ws`, and the chat port under
//! `--chat-require-token`).
//!
//! Everything is decided on the HTTP request, before a `101` is sent: a
//! request that is not a WebSocket upgrade gets 400, a foreign `Origin`
//! 403, a missing or bad credential 401 with `WWW-Authenticate: Bearer`,
//! and a store that cannot check the credential 503 with `Retry-After`.
//! Refusals carry `Connection: close`, so the TCP connection goes with the
//! response and nothing stays behind: no WebSocket, no task, no session.
//! Only an accepted upgrade spawns the connection's task.
//!
//! The credential comes from `Authorization: Bearer <token>`, else from a
//! `Sec-WebSocket-Protocol` entry `sotto.token.<token>` next to `sotto.v1`
//! (browsers cannot set headers on a WebSocket), else from the session
//! cookie. Only `sotto.v1` is echoed back, never the token.

use super::Edge;
use super::connection::{self, Start, WsLimits};
use super::credential::credential;
use super::error::ApiError;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use sotto_core::auth::accounts::AccountError;
use sotto_core::hub::Hub;
use sotto_core::metrics::bump;
use sotto_proto::native::SUBPROTOCOL;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::task::TaskTracker;

/// Which protocol the upgraded socket will speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Native,
    Compat,
}

/// What an upgrade needs from the server.
#[derive(Clone)]
pub struct Upgrader {
    pub hub: Arc<Hub>,
    pub edge: Edge,
    pub limits: WsLimits,
    pub tasks: TaskTracker,
    /// The server is reached over TLS (own origins are `https://`).
    pub tls: bool,
}

impl Upgrader {
    /// Answers an upgrade request: a refusal, or a 101 with the
    /// connection's task spawned to take over the socket.
    pub async fn upgrade<B>(
        &self,
        peer: SocketAddr,
        mut req: Request<B>,
        kind: Kind,
    ) -> Response<Body> {
        let started = std::time::Instant::now();
        let metrics = &self.edge.metrics;
        let key = match websocket_key(&req) {
            Ok(k) => k,
            Err(e) => {
                bump(&metrics.upgrades_bad_request);
                return refusal(e);
            }
        };
        if !origin_allowed(req.headers(), &self.edge.config.allowed_origins) {
            bump(&metrics.upgrades_forbidden_origin);
            tracing::warn!(%peer, origin = ?req.headers().get(header::ORIGIN), "upgrade refused: origin not allowed");
            return refusal(ApiError::forbidden_origin());
        }
        let offered = offered_protocols(req.headers());
        if kind == Kind::Native && !offered.is_empty() && !offered.iter().any(|p| p == SUBPROTOCOL)
        {
            bump(&metrics.upgrades_bad_request);
            return refusal(ApiError::bad_request(format!(
                "subprotocol {SUBPROTOCOL} is required when any is offered"
            )));
        }
        let after = match resume_after(req.uri().query()) {
            Ok(after) => after,
            Err(e) => {
                bump(&metrics.upgrades_bad_request);
                return refusal(e);
            }
        };
        let raw = match credential(req.headers(), &offered) {
            Ok(Some(raw)) => raw,
            Ok(None) => return self.unauthorized(peer, "a credential is required"),
            Err(why) => return self.unauthorized(peer, why),
        };
        let valid = match self.hub.valid_session(&raw).await {
            Ok(Some(valid)) => valid,
            Ok(None) => return self.unauthorized(peer, "invalid, expired or revoked token"),
            Err(e) => return self.unavailable(peer, e),
        };
        bump(&metrics.upgrades_accepted);
        metrics.upgrade_latency.observe(started.elapsed());
        tracing::debug!(%peer, user = %valid.user.id, "upgrade accepted");
        let on_upgrade = hyper::upgrade::on(&mut req);
        let start = match kind {
            Kind::Native => Start::Native(valid, after),
            Kind::Compat => Start::Compat {
                unauthenticated: None,
            },
        };
        let this = self.clone();
        self.tasks.spawn(async move {
            let upgraded =
                match tokio::time::timeout(this.limits.handshake_timeout, on_upgrade).await {
                    Ok(Ok(u)) => u,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "upgrade failed"),
                    Err(_) => return tracing::debug!(%peer, "upgrade timed out"),
                };
            let config = connection::ws_config(&this.limits);
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            connection::run(ws, peer, this.hub, this.edge, this.limits, start).await;
        });
        switching(&key, kind == Kind::Native && !offered.is_empty())
    }

    /// The store could not check the token: 503 with `Retry-After`, so the
    /// client keeps its token and reconnects later instead of logging out.
    fn unavailable(&self, peer: SocketAddr, e: AccountError) -> Response<Body> {
        tracing::warn!(%peer, error = %e, "upgrade refused: cannot check the token");
        refusal(ApiError::from(e))
    }

    fn unauthorized(&self, peer: SocketAddr, why: &str) -> Response<Body> {
        bump(&self.edge.metrics.upgrades_unauthorized);
        tracing::debug!(%peer, why, "upgrade refused: unauthorized");
        refusal(ApiError::unauthorized(why))
    }
}

/// The 101 response.
fn switching(key: &str, select_protocol: bool) -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if select_protocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    res
}

/// A refusal closes the TCP connection with the response.
fn refusal(e: ApiError) -> Response<Body> {
    let mut res = axum::response::IntoResponse::into_response(e);
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Checks the request is a WebSocket version 13 upgrade; returns its key.
fn websocket_key<B>(req: &Request<B>) -> Result<String, ApiError> {
    let h = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if req.method() != Method::GET
        || !has(header::CONNECTION, "upgrade")
        || !has(header::UPGRADE, "websocket")
    {
        return Err(ApiError::bad_request(
            "this endpoint only accepts WebSocket upgrades",
        ));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err(ApiError::bad_request("Sec-WebSocket-Version must be 13"));
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // A key is 16 random bytes in base64: 24 characters.
    if key.len() != 24 {
        return Err(ApiError::bad_request(
            "Sec-WebSocket-Key is missing or malformed",
        ));
    }
    Ok(key.to_owned())
}

/// Browsers always send `Origin`; other clients need not. With no
/// allow-list, an origin must name the host the request was sent to.
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if !allowed.is_empty() {
        return allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    ["http://", "https://"].iter().any(|scheme| {
        origin
            .strip_prefix(scheme)
            .is_some_and(|o| o.eq_ignore_ascii_case(host))
    })
}

/// Every entry of every `Sec-WebSocket-Protocol` header.
fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let own = headers(&[
            ("host", "chat.example:8080"),
            ("origin", "http://chat.example:8080"),
        ]);
        assert!(origin_allowed(&own, &[]));
        let foreign = headers(&[
            ("host", "chat.example:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(!origin_allowed(&foreign, &[]));
        assert!(origin_allowed(&foreign, &["https://evil.example/".into()]));
        assert!(!origin_allowed(&own, &["https://other.example".into()]));
        assert!(
            origin_allowed(&headers(&[("host", "x")]), &[]),
            "no Origin: not a browser"
        );
        assert!(
            !origin_allowed(&headers(&[("origin", "http://x")]), &[]),
            "no Host to compare"
        );
    }
}

/// The `after` query parameter of a `/ws` upgrade: the last inbox position
/// the client processed, so it resumes right after it. Absent means "what
/// my user has not confirmed".
fn resume_after(query: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    let mut after = None;
    for pair in query.split('&') {
        let Some(value) = pair.strip_prefix("after=") else {
            continue;
        };
        let valid =
            !value.is_empty() && value.len() <= 18 && value.bytes().all(|b| b.is_ascii_digit());
        let parsed = valid.then(|| value.parse::<i64>().ok()).flatten();
        match parsed {
            Some(n) => after = Some(n),
            None => {
                return Err(ApiError::bad_request(
                    "after must be a non-negative integer (an inbox position)",
                ));
            }
        }
    }
    Ok(after)
}

#[cfg(test)]
mod resume_tests {
    use super::resume_after;

    #[test]
    fn after_is_a_position_or_absent() {
        assert_eq!(resume_after(None).ok(), Some(None));
        assert_eq!(resume_after(Some("x=1")).ok(), Some(None));
        assert_eq!(resume_after(Some("after=0")).ok(), Some(Some(0)));
        assert_eq!(resume_after(Some("a=b&after=42")).ok(), Some(Some(42)));
        for bad in [
            "after=",
            "after=-1",
            "after=1e3",
            "after=99999999999999999999",
            "after=%31",
        ] {
            assert!(resume_after(Some(bad)).is_err(), "{bad}");
        }
    }
}
