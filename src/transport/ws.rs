//! The compat chat port: QMessageServer's WebSocket endpoint.
//!
//! Any request path upgrades, as in QMessageServer. Each connection is two
//! tasks: the reader decodes frames and hands requests to the hub; the
//! writer drains the connection's bounded outbound queue into the socket,
//! batching whatever is ready into one flush. Keeping them apart means a
//! request that waits (a login hashing a password, a replay of stored
//! messages) never stops frames from going out.

use crate::hub::{CloseReason, Hub, Outbound, OutboundReceiver, Session, TextFrame};
use crate::protocol::compat;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes, error::CapacityError};
use tokio_util::task::TaskTracker;

/// Per-connection limits of the chat port.
#[derive(Debug, Clone)]
pub struct WsLimits {
    /// Largest accepted message (and frame), in bytes.
    pub max_message: usize,
    /// Frames queued for one connection before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// Time allowed for the HTTP upgrade after the TCP accept.
    pub handshake_timeout: Duration,
    /// Open connections on this port at most; more are refused at accept.
    pub max_connections: usize,
    /// After this long without a frame from the peer, send a ping; after
    /// twice this long, drop the connection. Catches peers that vanished
    /// without closing, which would otherwise keep their session alive.
    pub heartbeat: Duration,
}

/// How long a closing connection may take to flush and say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;
type Stream = SplitStream<WebSocketStream<TcpStream>>;

/// Accepts connections until the hub's shutdown token is cancelled.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, limits: WsLimits, tasks: TaskTracker) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shutdown = hub.shutdown_token().clone();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // Usually EMFILE: back off instead of spinning on the error.
                tracing::error!(error = %e, "chat port accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "chat port full, refusing connection");
            continue;
        };
        let (hub, limits, t) = (hub.clone(), limits.clone(), tasks.clone());
        tasks.spawn(async move {
            connection(stream, peer, hub, limits, t).await;
            drop(slot);
        });
    }
}

fn ws_config(limits: &WsLimits) -> WebSocketConfig {
    WebSocketConfig::default()
        // tungstenite keeps a read buffer of this capacity per connection
        // (128 KiB by default): most of an idle connection's memory.
        .read_buffer_size(4096)
        // Frames are gathered up to this size before a write syscall; the
        // writer flushes after each batch anyway. tungstenite's write buffer
        // keeps the capacity of the largest batch, so keep this modest.
        .write_buffer_size(8192)
        .max_write_buffer_size(limits.max_message.saturating_mul(4).max(1 << 20))
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message))
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    hub: Arc<Hub>,
    limits: WsLimits,
    tasks: TaskTracker,
) {
    let _ = stream.set_nodelay(true);
    let config = Some(ws_config(&limits));
    let handshake = tokio_tungstenite::accept_async_with_config(stream, config);
    let ws = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "WebSocket handshake failed"),
        Err(_) => return tracing::debug!(%peer, "WebSocket handshake timed out"),
    };
    let (out, rx) = crate::hub::conn::outbound(limits.outbound_queue, hub.shutdown_token());
    tracing::debug!(%peer, conn = ?out.id(), "chat connection open");
    let (sink, stream) = ws.split();
    let heartbeat = Heartbeat {
        after: limits.heartbeat,
        ping: Arc::new(Notify::new()),
    };
    let writer = tasks.spawn(write_loop(sink, rx, heartbeat.ping.clone()));
    let mut session = Session::Anonymous;
    read_loop(stream, &out, &mut session, &hub, peer, heartbeat).await;
    out.close(CloseReason::PeerGone);
    hub.disconnected(&out, session).await;
    let _ = writer.await;
    tracing::debug!(%peer, conn = ?out.id(), "chat connection closed");
}

async fn read_loop(
    mut stream: Stream,
    out: &Outbound,
    session: &mut Session,
    hub: &Hub,
    peer: SocketAddr,
    heartbeat: Heartbeat,
) {
    let mut pinged = false;
    loop {
        let next = tokio::select! {
            _ = out.closed() => return,
            n = tokio::time::timeout(heartbeat.after, stream.next()) => n,
        };
        let Ok(next) = next else {
            if pinged {
                tracing::debug!(%peer, "no answer to ping, dropping connection");
                return;
            }
            pinged = true;
            heartbeat.ping.notify_one();
            continue;
        };
        pinged = false;
        let message = match next {
            None | Some(Ok(Message::Close(_))) => return,
            Some(Ok(m)) => m,
            Some(Err(WsError::Capacity(e))) => {
                tracing::warn!(%peer, error = %e, "oversized message, closing");
                return out.close(close_reason_for_capacity(&e));
            }
            Some(Err(e)) => {
                tracing::debug!(%peer, error = %e, "chat read error");
                return;
            }
        };
        handle_message(message, out, session, hub, peer).await;
    }
}

async fn handle_message(
    message: Message,
    out: &Outbound,
    session: &mut Session,
    hub: &Hub,
    peer: SocketAddr,
) {
    match message {
        Message::Text(text) => match compat::parse_request(&text) {
            // Boxed: a login's future (Argon2 hand-off, store queries) is
            // large, and inline it would be part of every idle connection's
            // task; boxed it exists only while a request is handled.
            Ok(request) => Box::pin(hub.handle_compat(out, session, request)).await,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "rejected request");
                reply_error(out, &e.to_string());
            }
        },
        Message::Binary(_) => {
            tracing::warn!(%peer, "rejected binary frame");
            reply_error(out, "Binary frames are not supported; send JSON text.");
        }
        // Pings are answered by tungstenite itself; any frame, pongs
        // included, already counted as a sign of life.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => {}
    }
}

/// The reader asks the writer (which owns the sink) to send a ping.
#[derive(Clone)]
struct Heartbeat {
    after: Duration,
    ping: Arc<Notify>,
}

fn close_reason_for_capacity(_: &CapacityError) -> CloseReason {
    CloseReason::MessageTooBig
}

fn reply_error(out: &Outbound, error: &str) {
    let _ = out.push(TextFrame::from(compat::error_response(None, error)));
}

async fn write_loop(mut sink: Sink, mut rx: OutboundReceiver, ping: Arc<Notify>) {
    let closed = rx.close_signal();
    loop {
        let frame = tokio::select! {
            biased;
            _ = closed.cancelled() => break,
            _ = ping.notified() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    rx.close(CloseReason::PeerGone);
                    return;
                }
                continue;
            }
            f = rx.frames.recv() => f,
        };
        let Some(frame) = frame else { break };
        if write_batch(&mut sink, &mut rx, frame).await.is_err() {
            rx.close(CloseReason::PeerGone);
            return;
        }
    }
    let reason = rx.reason().unwrap_or(CloseReason::Shutdown);
    if reason == CloseReason::PeerGone {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, say_goodbye(&mut sink, &mut rx, reason)).await;
}

/// Writes `first` and everything else already queued, then flushes once.
async fn write_batch(
    sink: &mut Sink,
    rx: &mut OutboundReceiver,
    first: TextFrame,
) -> Result<(), WsError> {
    sink.feed(to_message(first)).await?;
    while let Ok(f) = rx.frames.try_recv() {
        sink.feed(to_message(f)).await?;
    }
    sink.flush().await
}

/// Sends what is still queued (the response that explains the close, a
/// replay in progress at shutdown), then a close frame with the reason.
async fn say_goodbye(sink: &mut Sink, rx: &mut OutboundReceiver, reason: CloseReason) {
    while let Ok(f) = rx.frames.try_recv() {
        if sink.feed(to_message(f)).await.is_err() {
            return;
        }
    }
    let frame = CloseFrame {
        code: close_code(reason),
        reason: Utf8Bytes::from_static(reason.text()),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

fn close_code(reason: CloseReason) -> CloseCode {
    match reason {
        CloseReason::Replaced | CloseReason::LoggedOut => CloseCode::Normal,
        CloseReason::SessionExpired | CloseReason::Policy => CloseCode::Policy,
        CloseReason::SlowConsumer => CloseCode::Again,
        CloseReason::Shutdown => CloseCode::Away,
        CloseReason::MessageTooBig => CloseCode::Size,
        CloseReason::PeerGone => CloseCode::Normal,
    }
}

fn to_message(frame: TextFrame) -> Message {
    // TextFrame is built from a String, so this conversion cannot fail; the
    // fallback keeps a would-be bug from becoming a panic.
    Utf8Bytes::try_from(frame.bytes().clone())
        .map(Message::Text)
        .unwrap_or_else(|_| Message::text(r#"{"valid":false,"error":"Internal error."}"#))
}
