//! The compat chat port: QMessageServer's WebSocket endpoint.
//!
//! Any request path upgrades, as in QMessageServer, and the client logs in
//! in-band after connecting. Unlike QMessageServer, a socket holds an
//! "unauthenticated" slot until it logs in (capped per address and in
//! total, shared fairly between addresses: see `anonymous`) and is closed
//! if it has not logged in by the deadline, so idle anonymous sockets
//! cannot pile up. With `--chat-require-token` the port
//! instead checks a credential on the upgrade request, as `/ws` does.

use super::Edge;
use super::anonymous::{self, AnonSlot};
use super::connection::{self, Start, WsLimits};
use super::tls::Tls;
use super::upgrade::{Kind, Upgrader};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sotto_core::hub::Hub;
use sotto_core::metrics::bump;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

/// Accepts connections until the hub's shutdown token is cancelled.
/// With `tls`, the port speaks WSS: the TLS handshake comes first, under
/// the same deadline as the upgrade.
pub async fn serve(
    listener: TcpListener,
    upgrader: Upgrader,
    tls: Option<Tls>,
    tasks: TaskTracker,
) {
    let shutdown = upgrader.hub.shutdown_token().clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = super::listener::accept(&listener, &upgrader.edge, "chat") => a,
        };
        let Ok(unauthenticated) = admit(&upgrader.edge, peer) else {
            continue;
        };
        let u = upgrader.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            match tls {
                None => upgrade(stream, peer, u, unauthenticated).await,
                // Boxed, like the gated handshake below: a task is as large
                // as its largest branch, and the TLS stream's state would
                // otherwise be allocated for every plain connection too.
                Some(tls) => Box::pin(secure(stream, peer, u, unauthenticated, tls)).await,
            }
        });
    }
}

async fn secure(
    stream: super::listener::Counted,
    peer: SocketAddr,
    u: Upgrader,
    unauthenticated: Option<AnonSlot>,
    tls: Tls,
) {
    let handshake = tls.acceptor().accept(stream);
    let handshake = tokio::time::timeout(u.limits.handshake_timeout, handshake);
    let done = tokio::select! {
        _ = anonymous::evicted(unauthenticated.as_ref()) => {
            return tracing::debug!(%peer, "chat TLS handshake evicted");
        }
        done = handshake => done,
    };
    match done {
        Ok(Ok(s)) => upgrade(s, peer, u, unauthenticated).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "chat TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "chat TLS handshake timed out"),
    }
}

/// The unauthenticated slot an in-band-login socket holds until it logs
/// in; `Err` refuses the socket (it is dropped). A gated port needs none:
/// its sockets are authenticated at the handshake.
fn admit(edge: &Edge, peer: SocketAddr) -> Result<Option<AnonSlot>, ()> {
    if edge.config.chat_require_token {
        return Ok(None);
    }
    match edge.unauthenticated.try_acquire(peer.ip()) {
        Ok(admission) => {
            if let Some(victim) = admission.evicted_from {
                bump(&edge.metrics.unauthenticated_evicted);
                tracing::debug!(%peer, %victim, "anonymous socket evicted for a fair share");
            }
            Ok(Some(admission.slot))
        }
        Err(hit) => {
            edge.refused(hit);
            // Anyone can trigger this at will: a bounded number of lines a
            // second, the refusals themselves are counted in /metrics.
            static BUDGET: sotto_core::untrusted::LogBudget =
                sotto_core::untrusted::LogBudget::new(10);
            if let Some(suppressed) = BUDGET.allow() {
                tracing::warn!(%peer, limit = hit.as_str(), suppressed, "chat connection refused: unauthenticated limit");
            }
            Err(())
        }
    }
}

async fn upgrade<S>(stream: S, peer: SocketAddr, u: Upgrader, unauthenticated: Option<AnonSlot>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if u.edge.config.chat_require_token {
        Box::pin(gated(stream, peer, u)).await;
    } else {
        open(stream, peer, u.hub, u.edge, u.limits, unauthenticated).await;
    }
}

/// The open port: tungstenite's own handshake, any path.
///
/// The handshake is boxed and the connection's future built in a match
/// arm, so that neither the handshake's state nor the WebSocket stream
/// (both moved on by then) keeps room in the task while the connection
/// lives: a task is as large as the largest state its future can be in.
async fn open<S>(
    stream: S,
    peer: SocketAddr,
    hub: Arc<Hub>,
    edge: Edge,
    limits: WsLimits,
    unauthenticated: Option<AnonSlot>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = Box::pin(handshake(stream, peer, &limits, unauthenticated.as_ref()));
    let connection = match handshake.await {
        Some(ws) => {
            let start = Start::Compat { unauthenticated };
            connection::run(ws, peer, hub, edge, limits, start)
        }
        None => return,
    };
    connection.await;
}

/// tungstenite's server handshake under the deadline; None (logged) if
/// it failed, timed out or its slot was taken meanwhile.
async fn handshake<S>(
    stream: S,
    peer: SocketAddr,
    limits: &WsLimits,
    unauthenticated: Option<&AnonSlot>,
) -> Option<WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = Some(connection::ws_config(limits));
    let handshake = tokio_tungstenite::accept_async_with_config(stream, config);
    let handshake = tokio::time::timeout(limits.handshake_timeout, handshake);
    // Evicted before it could even say hello: nobody to tell.
    let done = tokio::select! {
        _ = anonymous::evicted(unauthenticated) => {
            tracing::debug!(%peer, "WebSocket handshake evicted");
            return None;
        }
        done = handshake => done,
    };
    match done {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "WebSocket handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "WebSocket handshake timed out");
            None
        }
    }
}

/// The gated port: hyper reads the upgrade request so the credential can
/// be checked (asynchronously, against the store) before any 101.
async fn gated<S>(stream: S, peer: SocketAddr, upgrader: Upgrader)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = upgrader.limits.handshake_timeout;
    let service = service_fn(move |req| {
        let u = upgrader.clone();
        async move { Ok::<_, std::convert::Infallible>(u.upgrade(peer, req, Kind::Compat).await) }
    });
    // Refusals say `Connection: close`; the deadline bounds the rest.
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    match tokio::time::timeout(timeout, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "chat handshake failed"),
        Err(_) => tracing::debug!(%peer, "chat handshake timed out"),
    }
}
