//! The HTTP (and HTTPS) listener loop: hyper, driven by hand rather than
//! through `axum::serve`, because a serious server needs what that helper
//! does not offer: a deadline for request headers (a client that opens a
//! socket and sends nothing is dropped, not kept; the same timer bounds
//! the idle time between keep-alive requests), deadlines for request
//! bodies and for responses the client does not take (`deadline.rs`), a
//! deadline for the TLS handshake, connection counting per address, HSTS
//! on HTTPS, and the plain-HTTP port answering with redirects when HTTPS
//! is on.

use super::Edge;
use super::deadline::{Disarm, StallGuard, TimedBody};
use super::listener::{Counted, Peer};
use super::tls::Tls;
use crate::config::HttpDeadlines;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use sotto_proto::web::valid_host;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

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
        let deadlines = edge.config.http;
        tasks.spawn(connection(
            stream,
            peer,
            serve.clone(),
            deadlines,
            shutdown.clone(),
        ));
    }
}

/// Serves one connection. Its connection slot lives in `stream`, so it is
/// given back when the socket closes: here, or in the WebSocket task that
/// takes the socket over after an upgrade.
async fn connection(
    stream: Counted,
    peer: SocketAddr,
    serve: Serve,
    deadlines: HttpDeadlines,
    shutdown: CancellationToken,
) {
    let end = End {
        peer,
        deadlines,
        shutdown,
    };
    match serve {
        Serve::App { app, tls: None } => http(stream, app, false, end).await,
        Serve::App {
            app,
            tls: Some(tls),
        } => {
            let handshake = tls.acceptor().accept(stream);
            match tokio::time::timeout(deadlines.header, handshake).await {
                Ok(Ok(s)) => http(s, app, true, end).await,
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
            let io = StallGuard::new(stream, deadlines.write_stall);
            drive(io, svc, end).await;
        }
    }
}

/// What every connection's driver needs besides the socket and service.
struct End {
    peer: SocketAddr,
    deadlines: HttpDeadlines,
    shutdown: CancellationToken,
}

async fn http<S>(io: S, app: Router, secure: bool, end: End)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = StallGuard::new(io, end.deadlines.write_stall);
    let disarm = io.disarm_handle();
    let (peer, body_limit) = (end.peer, end.deadlines.body);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        // hyper calls this as soon as the headers are in: the body's
        // deadline counts from here.
        let mut req = req.map(|body| TimedBody::new(body, body_limit));
        req.extensions_mut().insert(ConnectInfo(Peer(peer)));
        let app = app.clone();
        let disarm = disarm.clone();
        async move {
            let res = app.oneshot(req).await?;
            Ok::<_, Infallible>(finish(res, secure, &disarm))
        }
    });
    drive(io, svc, end).await;
}

/// Connection-level touches on every response: HSTS over TLS; a 408 (the
/// body did not arrive in time) closes the connection, whose client has
/// shown it does not send, rather than wait for the rest of its body; a
/// 101 hands the socket to the WebSocket, which has its own rules for a
/// peer that does not read, so the response deadline stops applying.
fn finish(mut res: Response<Body>, secure: bool, disarm: &Disarm) -> Response<Body> {
    let headers = res.headers_mut();
    if secure {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    match res.status() {
        StatusCode::REQUEST_TIMEOUT => {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        StatusCode::SWITCHING_PROTOCOLS => disarm.disarm(),
        _ => {}
    }
    res
}

/// Serves one connection with a header deadline (which also bounds the
/// idle time between keep-alive requests: hyper starts it whenever it
/// waits for a request head); at shutdown, lets the request in flight
/// finish (bounded), then closes.
async fn drive<S, Svc>(io: S, svc: Svc, end: End)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    Svc::Future: Send + 'static,
{
    let End {
        peer,
        deadlines,
        shutdown,
    } = end;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.header)
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
