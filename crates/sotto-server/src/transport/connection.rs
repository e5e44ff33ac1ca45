//! One WebSocket connection, whichever port and protocol: two tasks. The
//! reader decodes frames and hands requests to the hub; the writer drains
//! the connection's bounded outbound queue into the socket, batching
//! whatever is ready into one flush. Keeping them apart means a request
//! that waits (a login hashing a password, a replay of stored messages)
//! never stops frames from going out.

use super::Edge;
use super::anonymous::{self, AnonSlot};
use super::encode::{self, Encoder};
use futures_util::StreamExt;
use futures_util::stream::{SplitSink, SplitStream};
use sotto_core::auth::accounts::ValidSession;
use sotto_core::auth::throttle::retry_after_secs;
use sotto_core::hub::{CloseReason, Event, Failure, Hub, Outbound, QueueLimit, Session};
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
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Per-connection limits, the same on both ports.
#[derive(Debug, Clone)]
pub struct WsLimits {
    /// Largest accepted message (and frame), in bytes.
    pub max_message: usize,
    /// Events queued for one connection before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// Bytes queued for one connection (the sum of the events'
    /// [`Event::weight`](sotto_core::hub::Event::weight)) before it counts
    /// as a slow consumer: what bounds the memory a client that stops
    /// reading can pin.
    pub outbound_bytes: usize,
    /// Longest one write to the socket may take (an event's frames, a
    /// flush, a ping). A peer whose socket takes nothing for this long
    /// is not reading: the connection is closed as a slow consumer.
    pub write_timeout: Duration,
    /// Time allowed for the HTTP upgrade after the TCP accept.
    pub handshake_timeout: Duration,
    /// After this long without a frame from the peer, send a ping; after
    /// twice this long, drop the connection. Catches peers that vanished
    /// without closing, which would otherwise keep their session alive.
    pub heartbeat: Duration,
}

/// Largest frame written; longer messages are fragmented (see
/// [`writer`]'s `feed`).
const FRAGMENT: usize = 4096;

/// How a connection starts.
pub enum Start {
    /// QMessageServer's protocol: logs in in-band. Holds an unauthenticated
    /// slot until it does, and is closed if it has not by the deadline or
    /// if a newcomer takes the slot (see `anonymous`).
    Compat { unauthenticated: Option<AnonSlot> },
    /// sotto's protocol on `/ws`, authorized at the handshake, resuming
    /// after the inbox position it gave (if any).
    Native(ValidSession, Option<i64>),
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
///
/// A plain function that sets the connection up (queue, writer task) at
/// once and returns the reading part as a future: an idle connection's
/// task is that future for its whole life, and an `async fn` would keep
/// room in it for its arguments (the whole WebSocket stream, the start)
/// and for every future built in its body, the writer's included, even
/// once they are moved away. What the future keeps is only what reading
/// needs.
pub fn run<S>(
    ws: WebSocketStream<S>,
    peer: SocketAddr,
    hub: Arc<Hub>,
    edge: Edge,
    limits: WsLimits,
    start: Start,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let queue = QueueLimit {
        events: limits.outbound_queue,
        bytes: limits.outbound_bytes,
    };
    let (out, rx) = sotto_core::hub::conn::outbound(queue, hub.shutdown_token());
    tracing::debug!(%peer, conn = %out.id(), "connection open");
    let (sink, stream) = ws.split();
    let heartbeat = Heartbeat {
        after: limits.heartbeat,
        ping: Arc::new(Notify::new()),
    };
    let encoder: Encoder = match start {
        Start::Compat { .. } => encode::compat::encode,
        Start::Native(..) => encode::native::encode,
    };
    let writer = writer::Writer {
        encoder,
        ping: heartbeat.ping.clone(),
        deadline: limits.write_timeout,
    };
    let writer = tokio::spawn(writer::write_loop(sink, rx, writer));
    // Boxed: a native start carries a session (~120 bytes) that is used
    // once, and would otherwise stay in the future.
    let start = Box::new(start);
    async move {
        let mut session = Session::Anonymous;
        let (native, mut unauthenticated) = match *start {
            Start::Compat { unauthenticated } => (false, unauthenticated),
            Start::Native(valid, after) => {
                // Boxed in a statement of its own: a temporary lives to the
                // end of its statement, so one in the statement of an
                // `.await` would take room in the task for its whole life.
                let connect = Box::pin(hub.connect_native(&out, &mut session, valid, after));
                connect.await;
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
        let gone = Box::pin(hub.disconnected(&out, session));
        gone.await;
        let _ = writer.await;
        tracing::debug!(%peer, conn = %out.id(), "connection closed");
    }
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
                name = %Untrusted::new(&c.name),
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

mod writer;

#[cfg(test)]
mod tests;
