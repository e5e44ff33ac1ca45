//! What the hub knows of a connection: an id, a bounded outbound queue and
//! a way to close it. A WebSocket, a DTLS device or a peer on another node
//! all look like this, which is what keeps the hub transport-agnostic.

use super::event::Event;
use crate::auth::{Token, UserId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A connection id unique across every node sharing a database: the
/// node's id (drawn once per process, see [`node_id`]) and a counter. It
/// tells a user's old socket from its new one, and names the connection
/// in logs as `NODE-SEQ` in hex and decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    node: u64,
    seq: u64,
}

impl ConnId {
    pub fn next() -> ConnId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId {
            node: node_id(),
            seq: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{}", self.node, self.seq)
    }
}

static NODE_ID: OnceLock<u64> = OnceLock::new();

/// This process's node id: a random 64-bit value drawn on first use.
/// Random rather than configured so that two nodes started from one
/// config file still differ.
pub(crate) fn node_id() -> u64 {
    *NODE_ID.get_or_init(rand::random::<u64>)
}

/// Why the hub closed a connection; the transport maps it to a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The same user logged in or authorized on another connection.
    Replaced,
    /// The session's token was logged out.
    LoggedOut,
    /// The session reached its absolute lifetime.
    SessionExpired,
    /// The outbound queue stayed full: the peer does not read fast enough.
    SlowConsumer,
    /// An unauthenticated connection did not log in in time, or broke the
    /// protocol badly enough to be dropped.
    Policy,
    /// An unauthenticated chat-port socket did not log in in time.
    LoginTimeout,
    /// The server is shutting down.
    Shutdown,
    /// The peer sent a message over the size limit (set by the transport).
    MessageTooBig,
    /// The peer closed or the socket broke (set by the transport); there is
    /// nobody left to send a close frame to.
    PeerGone,
}

impl CloseReason {
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Replaced => "logged in elsewhere",
            CloseReason::LoggedOut => "logged out",
            CloseReason::SessionExpired => "session expired",
            CloseReason::SlowConsumer => "too slow to receive",
            CloseReason::Policy => "policy violation",
            CloseReason::LoginTimeout => "log in or authorize first",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::PeerGone => "connection ended",
        }
    }
}

/// Why an event could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is full; the connection has been closed as a slow consumer.
    Full,
    /// The connection is already gone.
    Closed,
}

/// The hub's handle on one connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbound {
    id: ConnId,
    tx: mpsc::Sender<Event>,
    closer: Arc<Closer>,
}

#[derive(Debug)]
struct Closer {
    token: CancellationToken,
    reason: OnceLock<CloseReason>,
}

/// The transport's end: events to encode and write, and the close signal.
pub struct OutboundReceiver {
    pub events: mpsc::Receiver<Event>,
    closer: Arc<Closer>,
}

impl OutboundReceiver {
    /// Cancelled when the hub (or shutdown) closes the connection; a clone,
    /// so it can be awaited while `events` is borrowed.
    pub fn close_signal(&self) -> CancellationToken {
        self.closer.token.clone()
    }

    /// Closes from the transport's side; the first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        self.closer.close(reason);
    }

    /// Why the connection was closed, once it was.
    pub fn reason(&self) -> Option<CloseReason> {
        self.closer.reason.get().copied()
    }
}

impl Closer {
    /// The first reason wins. A token already cancelled without a reason
    /// was cancelled by server shutdown: that stays the reason, so a reader
    /// noticing the close afterwards cannot turn it into "peer gone" and
    /// suppress the 1001 close frame.
    fn close(&self, reason: CloseReason) {
        let reason = if self.token.is_cancelled() {
            CloseReason::Shutdown
        } else {
            reason
        };
        let _ = self.reason.set(reason);
        self.token.cancel();
    }
}

/// A connection's queue of `capacity` events. `shutdown` is the server's
/// token: cancelling it closes every connection with [`CloseReason::Shutdown`].
pub fn outbound(capacity: usize, shutdown: &CancellationToken) -> (Outbound, OutboundReceiver) {
    let (tx, events) = mpsc::channel(capacity.max(1));
    let closer = Arc::new(Closer {
        token: shutdown.child_token(),
        reason: OnceLock::new(),
    });
    let out = Outbound {
        id: ConnId::next(),
        tx,
        closer: closer.clone(),
    };
    (out, OutboundReceiver { events, closer })
}

impl Outbound {
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Queues an event without waiting. A full queue means the peer is not
    /// keeping up; rather than grow memory, the connection is closed.
    pub fn push(&self, event: Event) -> Result<(), PushError> {
        self.offer(event).map_err(|(e, _)| e)
    }

    /// [`push`](Self::push) that hands the event back when it was not
    /// queued, for a sender with another way to deliver it (the compat
    /// relay falls back to storing the message).
    pub fn offer(&self, event: Event) -> Result<(), (PushError, Event)> {
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(event)) => {
                tracing::warn!(conn = %self.id, "outbound queue full, closing slow consumer");
                self.close(CloseReason::SlowConsumer);
                Err((PushError::Full, event))
            }
            Err(mpsc::error::TrySendError::Closed(event)) => Err((PushError::Closed, event)),
        }
    }

    /// Queues an event, waiting up to `patience` for room. Used where the
    /// sender can afford to wait (replaying stored messages) and dropping
    /// would lose data.
    pub(crate) async fn push_wait(
        &self,
        event: Event,
        patience: Duration,
    ) -> Result<(), PushError> {
        match tokio::time::timeout(patience, self.tx.send(event)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(PushError::Closed),
            Err(_) => {
                self.close(CloseReason::SlowConsumer);
                Err(PushError::Full)
            }
        }
    }

    /// Closes the connection; the first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        self.closer.close(reason);
    }

    /// Resolves when the connection is closed, by anyone.
    pub async fn closed(&self) {
        self.closer.token.cancelled().await
    }

    pub fn is_closed(&self) -> bool {
        self.closer.token.is_cancelled() || self.tx.is_closed()
    }
}

/// A connection's authentication state, owned by its transport task. A
/// connection is either anonymous or speaks for exactly one user with the
/// token it proved; there is no half-state.
#[derive(Debug, Clone, Default)]
pub enum Session {
    #[default]
    Anonymous,
    Authenticated {
        user: UserId,
        token: Token,
    },
}

impl Session {
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Session::Anonymous => None,
            Session::Authenticated { user, .. } => Some(user),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_carry_the_node_and_print_compactly() {
        let (a, b) = (ConnId::next(), ConnId::next());
        assert_ne!(a, b);
        assert_eq!(a.node, node_id());
        assert_eq!(a.node, b.node);
        let shown = a.to_string();
        assert_eq!(shown, format!("{:016x}-{}", a.node, a.seq));
    }

    #[tokio::test]
    async fn full_queue_closes_as_slow_consumer() {
        let root = CancellationToken::new();
        let (out, rx) = outbound(1, &root);
        assert_eq!(out.push(Event::Authorized), Ok(()));
        assert_eq!(out.push(Event::Authorized), Err(PushError::Full));
        assert_eq!(rx.reason(), Some(CloseReason::SlowConsumer));
        rx.close_signal().cancelled().await;
    }

    #[tokio::test]
    async fn shutdown_closes_every_connection() {
        let root = CancellationToken::new();
        let (out, rx) = outbound(4, &root);
        root.cancel();
        rx.close_signal().cancelled().await;
        assert!(out.is_closed());
        // No reason was set by the hub: the transport reads that as shutdown.
        assert_eq!(rx.reason(), None);
    }
}
