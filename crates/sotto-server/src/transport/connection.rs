//! One WebSocket connection, whichever port and protocol: two tasks. The
//! reader decodes frames and hands requests to the hub; the writer drains
//! the connection's bounded outbound queue into the socket, batching
//! whatever is ready into one flush. Keeping them apart means a request
//! that waits (a login hashing a password, a replay of stored messages)
//! never stops frames from going out.

use super::Edge;
use super::anonymous::{self, AnonSlot};
use super::encode::{self, Encoder};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sotto_core::auth::accounts::ValidSession;
use sotto_core::auth::throttle::retry_after_secs;
use sotto_core::hub::{CloseReason, Event, Failure, Hub, Outbound, OutboundReceiver, Session};
use sotto_core::metrics::bump;
use sotto_core::untrusted::{LogBudget, Untrusted};
use sotto_proto::compat::{self, Request};
use sotto_proto::native;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

/// Per-connection limits, the same on both ports.
#[derive(Debug, Clone)]
pub struct WsLimits {
    /// Largest accepted message (and frame), in bytes.
    pub max_message: usize,
    /// Events queued for one connection before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// Time allowed for the HTTP upgrade after the TCP accept.
    pub handshake_timeout: Duration,
    /// After this long without a frame from the peer, send a ping; after
    /// twice this long, drop the connection. Catches peers that vanished
    /// without closing, which would otherwise keep their session alive.
    pub heartbeat: Duration,
}

/// Largest frame written; longer messages are fragmented (see [`feed`]).
const FRAGMENT: usize = 4096;

/// How long a closing connection may take to flush and say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How a connection starts.
pub enum Start {
    /// QMessageServer's protocol: logs in in-band. Holds an unauthenticated
    /// slot until it does, and is closed if it has not by the deadline or
    /// if a newcomer takes the slot (see `anonymous`).
    Compat { unauthenticated: Option<AnonSlot> },
    /// sotto's protocol on `/ws`, authorized at the handshake.
    Native(ValidSession),
}

pub(crate) fn ws_config(limits: &WsLimits) -> WebSocketConfig {
    WebSocketConfig::default()
        // tungstenite keeps a read buffer of this capacity per connection
        // (128 KiB by default): most of an idle connection's memory.
        .read_buffer_size(2048)
        // Frames are gathered up to this size before a write syscall; the
        // writer flushes after each batch anyway. tungstenite's write buffer
        // keeps the capacity of the largest batch, so keep this modest.
        .write_buffer_size(FRAGMENT)
        .max_write_buffer_size(limits.max_message.saturating_mul(4).max(1 << 20))
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message))
}

/// What the reader needs besides the socket.
struct Ctx<'a> {
    out: &'a Outbound,
    hub: &'a Hub,
    edge: &'a Edge,
    peer: SocketAddr,
    native: bool,
}

/// Runs a connection to its end. The caller spawns it on the server's
/// task tracker, so shutdown waits for its goodbye.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    peer: SocketAddr,
    hub: Arc<Hub>,
    edge: Edge,
    limits: WsLimits,
    start: Start,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (out, rx) = sotto_core::hub::conn::outbound(limits.outbound_queue, hub.shutdown_token());
    tracing::debug!(%peer, conn = %out.id(), "connection open");
    let (sink, stream) = ws.split();
    let heartbeat = Heartbeat {
        after: limits.heartbeat,
        ping: Arc::new(Notify::new()),
    };
    let encoder: Encoder = match start {
        Start::Compat { .. } => encode::compat::encode,
        Start::Native(_) => encode::native::encode,
    };
    let writer = tokio::spawn(write_loop(sink, rx, encoder, heartbeat.ping.clone()));
    let mut session = Session::Anonymous;
    let (native, mut unauthenticated) = match start {
        Start::Compat { unauthenticated } => (false, unauthenticated),
        Start::Native(valid) => {
            Box::pin(hub.connect_native(&out, &mut session, valid)).await;
            (true, None)
        }
    };
    let ctx = Ctx {
        out: &out,
        hub: &hub,
        edge: &edge,
        peer,
        native,
    };
    read_loop(stream, &ctx, &mut session, &mut unauthenticated, heartbeat).await;
    out.close(CloseReason::PeerGone);
    hub.disconnected(&out, session).await;
    let _ = writer.await;
    tracing::debug!(%peer, conn = %out.id(), "connection closed");
}

async fn read_loop<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    ctx: &Ctx<'_>,
    session: &mut Session,
    unauthenticated: &mut Option<AnonSlot>,
    heartbeat: Heartbeat,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // One timer for the connection's life, not a new one per frame.
    let login_by = tokio::time::sleep(ctx.edge.config.login_deadline);
    tokio::pin!(login_by);
    let mut pinged = false;
    loop {
        let anonymous = matches!(session, Session::Anonymous);
        let next = tokio::select! {
            _ = ctx.out.closed() => return,
            _ = &mut login_by, if anonymous && !ctx.native => {
                bump(&ctx.edge.metrics.login_deadline_closed);
                tracing::info!(peer = %ctx.peer, "closing socket that did not log in in time");
                return ctx.out.close(CloseReason::LoginTimeout);
            }
            // Its slot went to a socket from an address holding fewer: the
            // same 1008 as the deadline, since the cure (log in sooner) is too.
            _ = anonymous::evicted(unauthenticated.as_ref()), if anonymous => {
                tracing::debug!(peer = %ctx.peer, "closing anonymous socket: slot taken for a fair share");
                return ctx.out.close(CloseReason::LoginTimeout);
            }
            n = tokio::time::timeout(heartbeat.after, stream.next()) => n,
        };
        let Ok(next) = next else {
            if pinged {
                tracing::debug!(peer = %ctx.peer, "no answer to ping, dropping connection");
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
                tracing::warn!(peer = %ctx.peer, error = %e, "oversized message, closing");
                return ctx.out.close(CloseReason::MessageTooBig);
            }
            Some(Err(e)) => {
                tracing::debug!(peer = %ctx.peer, error = %e, "read error");
                return;
            }
        };
        if ctx.native {
            handle_native(message, ctx, session).await;
        } else {
            handle_compat(message, ctx, session).await;
        }
        if !matches!(session, Session::Anonymous) {
            // Logged in: no longer counts against the unauthenticated caps.
            unauthenticated.take();
        }
    }
}

async fn handle_compat(message: Message, ctx: &Ctx<'_>, session: &mut Session) {
    match message {
        Message::Text(text) => match compat::parse_request(&text) {
            Ok(request) => {
                if let Err(wait) = throttle(ctx, &request) {
                    let retry_after_secs = retry_after_secs(wait);
                    return push(ctx.out, Failure::Throttled { retry_after_secs });
                }
                // Boxed: a login's future (Argon2 hand-off, store queries)
                // is large, and inline it would be part of every idle
                // connection's task; boxed it exists only while handled.
                Box::pin(ctx.hub.handle_compat(ctx.out, session, request)).await
            }
            Err(e) => {
                tracing::warn!(peer = %ctx.peer, error = %e, "rejected request");
                push(ctx.out, Failure::BadRequest(e.to_string()));
            }
        },
        Message::Binary(_) => {
            tracing::warn!(peer = %ctx.peer, "rejected binary frame");
            push(ctx.out, Failure::BinaryFrame);
        }
        // Pings are answered by tungstenite itself; any frame, pongs
        // included, already counted as a sign of life.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => {}
    }
}

/// Login and Register count against the attempt limits.
fn throttle(ctx: &Ctx<'_>, request: &Request) -> Result<(), Duration> {
    let (Request::Login(c) | Request::Register(c)) = request else {
        return Ok(());
    };
    bump(&ctx.edge.metrics.login_attempts);
    let result = ctx.edge.throttle.attempt(ctx.peer.ip(), &c.name);
    if result.is_err() {
        bump(&ctx.edge.metrics.rate_limited);
        // Peers trigger this at will: the name is escaped and cut, and the
        // lines are bounded per second however many attempts arrive.
        static BUDGET: LogBudget = LogBudget::new(20);
        if let Some(suppressed) = BUDGET.allow() {
            tracing::warn!(
                peer = %ctx.peer,
                name = %Untrusted(&c.name),
                suppressed,
                "login attempt rate-limited"
            );
        }
    }
    result
}

async fn handle_native(message: Message, ctx: &Ctx<'_>, session: &mut Session) {
    match message {
        Message::Text(text) => match native::parse(&text) {
            Ok(frame) => Box::pin(ctx.hub.handle_native(ctx.out, session, frame)).await,
            Err(e) => {
                tracing::debug!(peer = %ctx.peer, error = %e.message, "rejected frame");
                // Every parse error is a `bad_request` (its only code).
                push(ctx.out, Failure::BadRequest(e.message));
            }
        },
        Message::Binary(_) => push(ctx.out, Failure::BinaryFrame),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => {}
    }
}

/// Answers a frame the edge itself refused; the writer encodes it in the
/// connection's protocol like any hub event.
fn push(out: &Outbound, failure: Failure) {
    let _ = out.push(Event::error(failure));
}

/// The reader asks the writer (which owns the sink) to send a ping.
#[derive(Clone)]
struct Heartbeat {
    after: Duration,
    ping: Arc<Notify>,
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// Drains the queue into the socket, encoding each event with `encoder`
/// (shared events are encoded once for all connections of a protocol).
async fn write_loop<S>(
    mut sink: Sink<S>,
    mut rx: OutboundReceiver,
    encoder: Encoder,
    ping: Arc<Notify>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let closed = rx.close_signal();
    loop {
        let event = tokio::select! {
            biased;
            _ = closed.cancelled() => break,
            _ = ping.notified() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    rx.close(CloseReason::PeerGone);
                    return;
                }
                continue;
            }
            e = rx.events.recv() => e,
        };
        let Some(event) = event else { break };
        if write_batch(&mut sink, &mut rx, encoder, event)
            .await
            .is_err()
        {
            rx.close(CloseReason::PeerGone);
            return;
        }
    }
    let reason = rx.reason().unwrap_or(CloseReason::Shutdown);
    if reason == CloseReason::PeerGone {
        return;
    }
    let goodbye = say_goodbye(&mut sink, &mut rx, encoder, reason);
    let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
}

/// Writes `first` and everything else already queued, then flushes once.
async fn write_batch<S>(
    sink: &mut Sink<S>,
    rx: &mut OutboundReceiver,
    encoder: Encoder,
    first: Event,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    feed_event(sink, encoder, &first).await?;
    while let Ok(e) = rx.events.try_recv() {
        feed_event(sink, encoder, &e).await?;
    }
    sink.flush().await
}

/// Encodes and queues one event; one the protocol has no frame for is
/// skipped.
async fn feed_event<S>(sink: &mut Sink<S>, encoder: Encoder, event: &Event) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match encoder(event) {
        Some(bytes) => feed(sink, bytes).await,
        None => Ok(()),
    }
}

/// Sends what is still queued (the response that explains the close, a
/// replay in progress at shutdown), then a close frame with the reason.
async fn say_goodbye<S>(
    sink: &mut Sink<S>,
    rx: &mut OutboundReceiver,
    encoder: Encoder,
    reason: CloseReason,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Ok(e) = rx.events.try_recv() {
        if feed_event(sink, encoder, &e).await.is_err() {
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
        CloseReason::SessionExpired | CloseReason::Policy | CloseReason::LoginTimeout => {
            CloseCode::Policy
        }
        CloseReason::SlowConsumer => CloseCode::Again,
        CloseReason::Shutdown => CloseCode::Away,
        CloseReason::MessageTooBig => CloseCode::Size,
        CloseReason::PeerGone => CloseCode::Normal,
    }
}

/// Queues one text message; a large one goes out as fragments of at most
/// [`FRAGMENT`] bytes. tungstenite's write buffer keeps the capacity of
/// the largest frame it ever held, so one 90 KB user list would otherwise
/// cost every connection 90 KB for the rest of its life.
async fn feed<S>(sink: &mut Sink<S>, bytes: Bytes) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if bytes.len() <= FRAGMENT {
        return sink.feed(to_message(bytes)).await;
    }
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + FRAGMENT).min(bytes.len());
        let opcode = if start == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let part = Frame::message(bytes.slice(start..end), opcode, end == bytes.len());
        sink.feed(Message::Frame(part)).await?;
        start = end;
    }
    Ok(())
}

fn to_message(bytes: Bytes) -> Message {
    // Every encoder builds its bytes from a String, so this conversion
    // cannot fail; the fallback keeps a would-be bug from becoming a panic.
    Utf8Bytes::try_from(bytes)
        .map(Message::Text)
        .unwrap_or_else(|_| Message::text(r#"{"valid":false,"error":"Internal error."}"#))
}

#[cfg(test)]
mod tests;
