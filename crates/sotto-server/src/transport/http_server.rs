//! The HTTP (and HTTPS) listener loop: hyper, driven by hand rather than
//! through `axum::serve`, because a serious server needs what that helper
//! does not offer: a deadline for request headers (a client that opens a
//! socket and sends nothing is dropped, not kept), a deadline for the TLS
//! handshake, connection counting per address, HSTS on HTTPS, and the
//! plain-HTTP port answering with redirects when HTTPS is on.

use super::Edge;
use super::http::valid_host;
use super::listener::{Counted, Peer};
use super::tls::Tls;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Time allowed for a request's headers to arrive, and for a TLS
/// handshake to finish.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// HSTS on every HTTPS response: a year.
const HSTS: &str = "max-age=31536000";

/// What a listener serves.
#[derive(Clone)]
pub enum Serve {
    /// The application (files, API, `/ws`); `tls` makes it HTTPS.
    App { app: Router, tls: Option<Tls> },
    /// Plain HTTP while HTTPS is on: a 301 to the same path on HTTPS.
    Redirect {
        https_port: u16,
        fallback_host: String,
    },
}

/// Accepts until `shutdown`, one task per connection on `tasks`.
pub async fn run(
    listener: TcpListener,
    edge: Edge,
    serve: Serve,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = super::listener::accept(&listener, &edge, "http") => a,
        };
        tasks.spawn(connection(stream, peer, serve.clone(), shutdown.clone()));
    }
}

/// Serves one connection. Its connection slot lives in `stream`, so it is
/// given back when the socket closes: here, or in the WebSocket task that
/// takes the socket over after an upgrade.
async fn connection(stream: Counted, peer: SocketAddr, serve: Serve, shutdown: CancellationToken) {
    match serve {
        Serve::App { app, tls: None } => http(stream, peer, app, false, shutdown).await,
        Serve::App {
            app,
            tls: Some(tls),
        } => {
            let handshake = tls.acceptor().accept(stream);
            match tokio::time::timeout(HEADER_TIMEOUT, handshake).await {
                Ok(Ok(s)) => http(s, peer, app, true, shutdown).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        Serve::Redirect {
            https_port,
            fallback_host,
        } => {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let res = redirect(&req, https_port, &fallback_host);
                async move { Ok::<_, Infallible>(res) }
            });
            drive(stream, peer, svc, shutdown).await;
        }
    }
}

async fn http<S>(io: S, peer: SocketAddr, app: Router, secure: bool, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(Peer(peer)));
        let app = app.clone();
        async move {
            let mut res = app.oneshot(req).await?;
            if secure {
                res.headers_mut().insert(
                    header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static(HSTS),
                );
            }
            Ok::<_, Infallible>(res)
        }
    });
    drive(io, peer, svc, shutdown).await;
}

/// Serves one connection with a header deadline; at shutdown, lets the
/// request in flight finish (bounded), then closes.
async fn drive<S, Svc>(io: S, peer: SocketAddr, svc: Svc, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    Svc::Future: Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(DRAIN, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// `301` to the same path on HTTPS; the host comes from a validated Host
/// header, else the configured address.
fn redirect<B>(req: &Request<B>, https_port: u16, fallback_host: &str) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(valid_host)
        .unwrap_or_else(|| fallback_host.to_owned());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let location = format!("https://{host}{port}{path}");
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::MOVED_PERMANENTLY;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            res.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *res.status_mut() = StatusCode::BAD_REQUEST,
    }
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}
