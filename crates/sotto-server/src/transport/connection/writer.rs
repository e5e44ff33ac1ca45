//! A connection's writer: drains the outbound queue into the socket,
//! batching whatever is ready into one flush.
//!
//! A peer that stops reading is the writer's whole difficulty. Once the
//! socket buffers are full every write waits, and a writer that waits for
//! ever holds the task, the socket and everything queued behind it long
//! after the hub gave up on the connection. So every write is bounded
//! twice: by the write timeout (a write that makes no progress for that
//! long closes the connection as a slow consumer), and by the close
//! signal (a connection closed while its writer is blocked gets
//! [`CLOSE_GRACE`] to finish the write, then is dropped without a goodbye
//! the peer would not read anyway).

use super::{FRAGMENT, Sink};
use crate::transport::encode::Encoder;
use bytes::Bytes;
use futures_util::SinkExt;
use sotto_core::hub::{CloseReason, Event, OutboundReceiver};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

/// How long a closing connection may take to finish its write, and then
/// to flush and say goodbye.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the writer needs besides the socket and the queue.
pub(super) struct Writer {
    pub encoder: Encoder,
    /// The reader asks for a ping through this (the writer owns the sink).
    pub ping: Arc<Notify>,
    /// Longest one write (an event's frames, a flush, a ping) may take.
    pub deadline: Duration,
}

/// Why writing stopped before the queue was drained.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// The socket broke.
    Failed,
    /// A write did not complete in time: the peer is not reading.
    Stuck,
}

/// The bounds every write runs under.
struct Bound {
    closed: CancellationToken,
    deadline: Duration,
}

impl Bound {
    /// Runs one write for at most the deadline; if the connection is
    /// closed meanwhile, for at most [`CLOSE_GRACE`] more. A write that
    /// runs out of time is dropped half-done: the socket goes with it.
    ///
    /// The deadline is per write, not per batch, so it measures progress:
    /// a peer on a slow link that keeps reading is never cut off, however
    /// long its batch takes.
    async fn step<F>(&self, write: F) -> Result<(), Stop>
    where
        F: Future<Output = Result<(), WsError>>,
    {
        tokio::pin!(write);
        let result = tokio::select! {
            biased;
            r = tokio::time::timeout(self.deadline, &mut write) => r,
            _ = self.closed.cancelled() => tokio::time::timeout(CLOSE_GRACE, &mut write).await,
        };
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Failed),
            Err(_) => Err(Stop::Stuck),
        }
    }
}

/// Drains the queue into the socket, encoding each event with the
/// writer's encoder (shared events are encoded once for all connections
/// of a protocol), until the connection closes.
pub(super) async fn write_loop<S>(mut sink: Sink<S>, mut rx: OutboundReceiver, w: Writer)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bound = Bound {
        closed: rx.close_signal(),
        deadline: w.deadline,
    };
    loop {
        // `None`: a ping was asked for.
        let next = tokio::select! {
            biased;
            _ = bound.closed.cancelled() => break,
            _ = w.ping.notified() => None,
            e = rx.recv() => match e {
                Some(e) => Some(e),
                None => break,
            },
        };
        // Each write is boxed, in a statement of its own: while idle the
        // task then holds only this loop's own state, not room for the
        // largest write it ever makes (a batch's futures are ~1 KB).
        let written = match next {
            None => {
                let ping = Box::pin(bound.step(sink.send(Message::Ping(Default::default()))));
                ping.await
            }
            Some(e) => {
                let batch = Box::pin(write_batch(&mut sink, &mut rx, w.encoder, e, &bound));
                batch.await
            }
        };
        match written {
            Ok(()) => {}
            Err(Stop::Failed) => return rx.close(CloseReason::PeerGone),
            Err(Stop::Stuck) => return give_up(&rx),
        }
    }
    let reason = rx.reason().unwrap_or(CloseReason::Shutdown);
    if reason == CloseReason::PeerGone {
        return;
    }
    let goodbye = Box::pin(say_goodbye(&mut sink, &mut rx, w.encoder, reason));
    let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
}

/// Ends a connection whose writes stopped moving: closed as a slow
/// consumer (unless something else closed it first), and no goodbye,
/// which would wait on the same full socket.
fn give_up(rx: &OutboundReceiver) {
    if rx.reason().is_none() {
        tracing::info!(
            queued_bytes = rx.queued_bytes(),
            "write deadline passed, closing slow consumer"
        );
    }
    rx.close(CloseReason::SlowConsumer);
}

/// Writes `first` and everything else already queued, then flushes once.
/// Stops taking events once the connection is closed: what is left is for
/// the goodbye, which has its own bound.
async fn write_batch<S>(
    sink: &mut Sink<S>,
    rx: &mut OutboundReceiver,
    encoder: Encoder,
    first: Event,
    bound: &Bound,
) -> Result<(), Stop>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut written = inbox_pos(&first);
    bound.step(feed_event(sink, encoder, &first)).await?;
    while !bound.closed.is_cancelled() {
        let Ok(e) = rx.try_recv() else { break };
        bound.step(feed_event(sink, encoder, &e)).await?;
        written = inbox_pos(&e).or(written);
    }
    if bound.closed.is_cancelled() {
        return Ok(());
    }
    bound.step(sink.flush()).await?;
    // Flushed: for compat peers, which cannot confirm, this is delivery.
    if let Some(pos) = written {
        rx.written(pos);
    }
    Ok(())
}

/// The inbox position an event carries, if it is an inbox entry.
fn inbox_pos(event: &Event) -> Option<i64> {
    match event {
        Event::Inbox(item) => Some(item.pos),
        _ => None,
    }
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
    while let Ok(e) = rx.try_recv() {
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
        CloseReason::Unavailable => CloseCode::Error,
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
