//! What the hub knows of a connection: an id, a bounded outbound queue and
//! a way to close it. A WebSocket, a DTLS device or a peer on another node
//! all look like this, which is what keeps the hub transport-agnostic.

use super::event::Event;
use crate::auth::{Token, UserId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::sync::mpsc::error::TryRecvError;
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
    /// The store could not be read to bring the connection up to date; the
    /// client reconnects and resumes from its last position.
    Unavailable,
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
            CloseReason::Unavailable => "database unavailable, reconnect",
        }
    }
}

/// Why an event could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is full (of events or of bytes); the connection has been
    /// closed as a slow consumer.
    Full,
    /// The connection is already gone.
    Closed,
}

/// How much one connection's queue may hold before the connection counts
/// as a slow consumer.
///
/// Counting events alone is not enough: a thousand 60 KiB messages are
/// 60 MiB pinned by a client that merely stopped reading. The byte count
/// is the sum of [`Event::weight`] of the events waiting; an event is
/// charged when queued and released when the writer takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimit {
    /// Events waiting, at most.
    pub events: usize,
    /// Bytes waiting: an event is refused once this many are reached, so
    /// a queue holds at most this plus one event (one event larger than
    /// the limit, a history page say, still passes an emptier queue).
    pub bytes: usize,
}

/// An event count alone, with no byte limit: for queues whose reader
/// never waits on a peer (a device session's, which hands each message on
/// at once).
impl From<usize> for QueueLimit {
    fn from(events: usize) -> QueueLimit {
        QueueLimit {
            events,
            bytes: usize::MAX,
        }
    }
}

/// The hub's handle on one connection. Cheap to clone; the queue counts
/// its handles, and the receiver sees the end once the last is dropped.
#[derive(Debug)]
pub struct Outbound {
    id: ConnId,
    closer: Arc<Closer>,
}

impl Clone for Outbound {
    fn clone(&self) -> Outbound {
        self.closer.senders.fetch_add(1, Ordering::Relaxed);
        Outbound {
            id: self.id,
            closer: self.closer.clone(),
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if self.closer.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.closer.ready.notify_one();
        }
    }
}

/// What both ends of a queue share: the events, the close signal and the
/// bytes held.
///
/// The events wait in a plain `VecDeque` behind a lock rather than in a
/// tokio channel: a channel allocates its first block of 32 slots (and
/// its cache-padded state) up front, ~1.5 KiB per connection whether it
/// ever carries anything. An idle connection's deque holds no allocation
/// at all: the writer drops its buffer whenever it finds it empty and
/// goes to sleep (see [`OutboundReceiver::recv`]).
struct Closer {
    /// The events waiting, oldest first.
    events: Mutex<VecDeque<Event>>,
    /// Events the queue may hold.
    max_events: usize,
    /// Woken for every event queued, and when the last sender goes.
    ready: Notify,
    /// Live [`Outbound`] handles.
    senders: AtomicUsize,
    /// The [`OutboundReceiver`] is gone: nothing will be taken any more.
    receiver_gone: AtomicBool,
    token: CancellationToken,
    reason: OnceLock<CloseReason>,
    /// Sum of the weights of the events in the channel.
    queued: AtomicUsize,
    max_bytes: usize,
    /// Told the highest inbox position the writer has written to the
    /// socket (set by the hub for protocols without confirmations).
    /// Replaced when the same socket logs in as someone else.
    on_written: std::sync::Mutex<Option<WrittenHook>>,
}

/// See [`Outbound::on_written`].
pub type WrittenHook = Arc<dyn Fn(i64) + Send + Sync>;

impl std::fmt::Debug for Closer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closer")
            .field("reason", &self.reason)
            .field("queued", &self.queued)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// The transport's end: events to encode and write, and the close signal.
/// Events are taken through [`recv`](Self::recv) and
/// [`try_recv`](Self::try_recv), which release their bytes.
pub struct OutboundReceiver {
    closer: Arc<Closer>,
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.closer.receiver_gone.store(true, Ordering::Release);
    }
}

impl OutboundReceiver {
    /// The next event, waiting for one; `None` once every sender is gone.
    /// Before it waits, the empty queue gives its buffer back, so that
    /// an idle connection holds none.
    pub async fn recv(&mut self) -> Option<Event> {
        let closer = &*self.closer;
        loop {
            // Every push stores a wake-up if nobody waits yet, so one
            // queued between the look below and the wait is not missed.
            let ready = closer.ready.notified();
            match closer.take() {
                Ok(event) => return Some(event),
                // The last sender may have queued something on its way
                // out: `take` looks at the queue before the count.
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            closer.shrink_idle();
            ready.await;
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Event, TryRecvError> {
        self.closer.take()
    }

    /// Bytes waiting in the queue (the sum of their [`Event::weight`]).
    pub fn queued_bytes(&self) -> usize {
        self.closer.queued.load(Ordering::Relaxed)
    }

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

    /// The transport wrote (and flushed) inbox entries up to `pos` to the
    /// peer: for protocols whose clients cannot confirm, that is delivery.
    pub fn written(&self, pos: i64) {
        let hook = self
            .closer
            .on_written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(pos);
        }
    }
}

impl Closer {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Event>> {
        // Nothing panics while holding it; a poisoned queue is still whole.
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `event` if the queue has fewer than `max_events` and a
    /// receiver; wakes the receiver.
    fn enqueue(&self, event: Event) -> Result<(), (PushError, Event)> {
        if self.receiver_gone.load(Ordering::Acquire) {
            return Err((PushError::Closed, event));
        }
        {
            let mut q = self.queue();
            if q.len() >= self.max_events {
                return Err((PushError::Full, event));
            }
            q.push_back(event);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Takes the oldest event, releasing its bytes. Disconnected: empty,
    /// and no sender is left to queue more.
    fn take(&self) -> Result<Event, TryRecvError> {
        let event = self.queue().pop_front();
        match event {
            Some(event) => {
                self.release(&event);
                Ok(event)
            }
            None if self.senders.load(Ordering::Acquire) == 0 => {
                // A sender's last push happens before its count drops.
                match self.queue().pop_front() {
                    Some(event) => {
                        self.release(&event);
                        Ok(event)
                    }
                    None => Err(TryRecvError::Disconnected),
                }
            }
            None => Err(TryRecvError::Empty),
        }
    }

    /// Free slots for events.
    fn free_events(&self) -> usize {
        self.max_events.saturating_sub(self.queue().len())
    }

    /// Drops the buffer of an empty queue: called by a receiver about to
    /// wait, which makes an idle connection's queue cost no heap.
    fn shrink_idle(&self) {
        let mut q = self.queue();
        if q.is_empty() && q.capacity() > 0 {
            *q = VecDeque::new();
        }
    }

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

    /// Charges `weight` bytes to the queue unless it already holds its
    /// limit: one atomic add on the way in (and one subtraction when the
    /// writer takes the event), no lock.
    fn charge(&self, weight: usize) -> bool {
        self.charge_below(weight, self.max_bytes)
    }

    /// Charges `weight` unless the queue already holds `limit` bytes.
    fn charge_below(&self, weight: usize, limit: usize) -> bool {
        let before = self.queued.fetch_add(weight, Ordering::Relaxed);
        if before < limit {
            return true;
        }
        self.release_bytes(weight);
        false
    }

    /// The bytes inbox entries may fill: all but a quarter, which is kept
    /// for the replies to the client's own requests (acks, errors). A
    /// client that reads, however far behind its inbox, then never finds
    /// its queue too full for an answer and is never dropped for it; one
    /// that does not read fills the reserve too and is.
    fn inbox_bytes(&self) -> usize {
        self.max_bytes - self.max_bytes / 4
    }

    /// [`charge`](Self::charge) against [`inbox_bytes`](Self::inbox_bytes).
    fn charge_inbox(&self, weight: usize) -> bool {
        self.charge_below(weight, self.inbox_bytes())
    }

    fn has_inbox_room(&self) -> bool {
        self.queued.load(Ordering::Relaxed) < self.inbox_bytes()
    }

    fn release(&self, event: &Event) {
        self.release_bytes(event.weight());
    }

    fn release_bytes(&self, weight: usize) {
        self.queued.fetch_sub(weight, Ordering::Relaxed);
    }
}

/// A connection's queue, bounded by `limit` (an event count converts to
/// a limit without a byte bound). `shutdown` is the server's token:
/// cancelling it closes every connection with [`CloseReason::Shutdown`].
pub fn outbound(
    limit: impl Into<QueueLimit>,
    shutdown: &CancellationToken,
) -> (Outbound, OutboundReceiver) {
    let limit = limit.into();
    let closer = Arc::new(Closer {
        events: Mutex::new(VecDeque::new()),
        max_events: limit.events.max(1),
        ready: Notify::new(),
        senders: AtomicUsize::new(1),
        receiver_gone: AtomicBool::new(false),
        token: shutdown.child_token(),
        reason: OnceLock::new(),
        queued: AtomicUsize::new(0),
        max_bytes: limit.bytes.max(1),
        on_written: std::sync::Mutex::new(None),
    });
    let out = Outbound {
        id: ConnId::next(),
        closer: closer.clone(),
    };
    (out, OutboundReceiver { closer })
}

impl Outbound {
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Queues an event without waiting. A full queue (of events or of
    /// bytes) means the peer is not keeping up; rather than grow memory,
    /// the connection is closed.
    pub fn push(&self, event: Event) -> Result<(), PushError> {
        self.offer(event).map_err(|(e, _)| e)
    }

    /// [`push`](Self::push) that hands the event back when it was not
    /// queued, for a sender with another way to deliver it (the compat
    /// relay falls back to storing the message).
    pub fn offer(&self, event: Event) -> Result<(), (PushError, Event)> {
        let weight = event.weight();
        if !self.closer.charge(weight) {
            return Err((self.slow("bytes"), event));
        }
        match self.closer.enqueue(event) {
            Ok(()) => Ok(()),
            Err((PushError::Full, event)) => {
                self.closer.release_bytes(weight);
                Err((self.slow("events"), event))
            }
            Err((e, event)) => {
                self.closer.release_bytes(weight);
                Err((e, event))
            }
        }
    }

    /// Queues an event if there is room, without closing the connection
    /// when there is not: for a caller with another way to deliver it
    /// (inbox entries, which wait in the store). It leaves the reserve of
    /// [`Closer::inbox_bytes`] and [`Outbound::inbox_events_free`] to the
    /// replies.
    pub fn try_push(&self, event: Event) -> Result<(), PushError> {
        if !self.inbox_events_free() {
            return Err(PushError::Full);
        }
        let weight = event.weight();
        if !self.closer.charge_inbox(weight) {
            return Err(PushError::Full);
        }
        match self.closer.enqueue(event) {
            Ok(()) => Ok(()),
            Err((e, _)) => {
                self.closer.release_bytes(weight);
                Err(e)
            }
        }
    }

    /// Sets what the transport's [`OutboundReceiver::written`] calls.
    pub fn on_written(&self, hook: WrittenHook) {
        *self
            .closer
            .on_written
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Closes a connection whose queue is over its limit of `what`.
    fn slow(&self, what: &'static str) -> PushError {
        if !self.is_closed() {
            tracing::warn!(conn = %self.id, limit = what, "outbound queue full, closing slow consumer");
        }
        self.close(CloseReason::SlowConsumer);
        PushError::Full
    }

    /// Whether the channel has more free slots than the quarter kept for
    /// replies (see [`Closer::inbox_bytes`]).
    fn inbox_events_free(&self) -> bool {
        self.closer.free_events() > self.closer.max_events / 4
    }

    /// Queues an inbox entry, waiting up to `patience` for room (events
    /// and bytes, leaving the replies' reserve free). Used where the
    /// sender can afford to wait (replaying stored messages) and dropping
    /// would lose data.
    pub(crate) async fn push_wait(
        &self,
        event: Event,
        patience: Duration,
    ) -> Result<(), PushError> {
        let deadline = tokio::time::Instant::now() + patience;
        self.room_for_inbox(deadline).await?;
        let weight = event.weight();
        // Charged unconditionally: the room was there a moment ago, and
        // the overshoot is this one event at most. Past the reserve, the
        // queue's whole length is there for it.
        self.closer.queued.fetch_add(weight, Ordering::Relaxed);
        match self.closer.enqueue(event) {
            Ok(()) => Ok(()),
            Err((e, _)) => {
                self.closer.release_bytes(weight);
                Err(match e {
                    PushError::Full => self.slow("events"),
                    PushError::Closed => PushError::Closed,
                })
            }
        }
    }

    /// Waits until the queue has room for inbox entries (below its limits
    /// less the replies' reserve). The writer
    /// does not signal released bytes (that would cost every event a
    /// wake-up check), so this polls: only a replay waits here, and
    /// only behind a peer that is reading slowly.
    async fn room_for_inbox(&self, deadline: tokio::time::Instant) -> Result<(), PushError> {
        const POLL: Duration = Duration::from_millis(5);
        while !self.closer.has_inbox_room() || !self.inbox_events_free() {
            if self.is_closed() {
                return Err(PushError::Closed);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.slow("bytes"));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
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
        self.closer.token.is_cancelled() || self.closer.receiver_gone.load(Ordering::Acquire)
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
mod tests;
