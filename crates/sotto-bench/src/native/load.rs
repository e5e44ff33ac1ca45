//! The native message exchange: every user's connection gets a reader as
//! soon as it is open (the server talks from the first frame) and a
//! writer when the load starts; the first S users send.

use super::reader::{ReadStats, Reader, Retry};
use super::writer::{self, Controls, SendPlan, WriteStats};
use crate::client::Ws;
use crate::load::{Clock, LoadSpec};
use crate::send::{Pace, Sink};
use crate::stats::{Latency, Ledger, Sample};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// When a connection confirms what it received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConfirmPolicy {
    pub every: Duration,
    /// Positioned frames after which to confirm at once (1: each frame).
    pub frames: u64,
}

/// Running totals, read while draining and for the rates.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    pub receipts: AtomicU64,
    /// Acks that said `stored`: each should be followed by a receipt.
    pub receipts_expected: AtomicU64,
    pub given_up: AtomicU64,
    pub last_ack_ns: AtomicU64,
    pub last_delivery_ns: AtomicU64,
    pub last_receipt_ns: AtomicU64,
}

/// One sender's freed slots (acks and refusals), which its window is
/// measured against.
#[derive(Default)]
pub(crate) struct Slots {
    pub freed: AtomicU64,
    pub wake: Notify,
}

/// What every reader and writer shares.
pub(crate) struct Shared {
    pub run: u32,
    pub clock: Clock,
    /// Which (sender, seq) got an ack, and which reached the recipient.
    pub acked: Ledger,
    pub received: Ledger,
    pub slots: Vec<Slots>,
    pub counts: Counts,
    pub confirm: ConfirmPolicy,
    pub max_retries: u32,
}

impl Shared {
    pub fn new(senders: usize, capacity: u64, confirm: ConfirmPolicy, max_retries: u32) -> Shared {
        Shared {
            run: rand::random(),
            clock: Clock::new(),
            acked: Ledger::new(senders, capacity),
            received: Ledger::new(senders, capacity),
            slots: (0..senders).map(|_| Slots::default()).collect(),
            counts: Counts::default(),
            confirm,
            max_retries,
        }
    }

    pub fn free_slot(&self, sender: usize) {
        if let Some(s) = self.slots.get(sender) {
            s.freed.fetch_add(1, Ordering::Release);
            s.wake.notify_one();
        }
    }
}

/// A connection whose reader runs and whose writer waits for the load.
pub(crate) struct Conn {
    sink: Sink,
    confirm: watch::Receiver<u64>,
    retry: mpsc::Receiver<Retry>,
    reader: JoinHandle<ReadStats>,
}

/// Retries one connection may have queued; more are given up.
const RETRY_QUEUE: usize = 1024;

/// Starts reading `ws`, the connection of user `index` whose id is `me`.
pub(crate) fn open(
    ws: Ws,
    me: String,
    index: usize,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) -> Conn {
    let (sink, stream) = ws.split();
    let (confirm_tx, confirm) = watch::channel(0);
    let (retry_tx, retry) = mpsc::channel(RETRY_QUEUE);
    let reader = Reader::new(me, index, shared.clone(), confirm_tx, retry_tx);
    Conn {
        sink,
        confirm,
        retry,
        reader: tokio::spawn(reader.run(stream, stop.clone())),
    }
}

/// Longest wait for answers once sending stopped, however much still moves.
const MAX_DRAIN: Duration = Duration::from_secs(30);

/// A load in progress.
pub(crate) struct Running {
    shared: Arc<Shared>,
    stop_sending: CancellationToken,
    stop: CancellationToken,
    readers: Vec<JoinHandle<ReadStats>>,
    writers: Vec<JoinHandle<WriteStats>>,
    started_ns: u64,
}

/// Starts the writers: users `0..spec.senders` send, everyone confirms.
/// `stop` must be the token the readers were opened with; with `nodes`
/// above 1, user i is on node i % nodes and sends to other nodes only.
pub(crate) fn start(
    conns: Vec<Conn>,
    targets: Vec<String>,
    nodes: usize,
    spec: &LoadSpec,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Running {
    let senders = shared.slots.len();
    let targets = Arc::new(targets);
    let stop_sending = CancellationToken::new();
    let started_ns = shared.clock.now_ns();
    let start = shared.clock.at(started_ns);
    let pace = if spec.rate > 0.0 {
        Pace::Every(Duration::from_secs_f64(senders as f64 / spec.rate))
    } else {
        Pace::FlatOut {
            window: spec.window,
        }
    };
    let mut readers = Vec::with_capacity(conns.len());
    let mut writers = Vec::with_capacity(conns.len());
    for (i, c) in conns.into_iter().enumerate() {
        let plan = (i < senders).then(|| SendPlan {
            index: i,
            targets: targets.clone(),
            nodes,
            pace: pace.offset_for(i, senders),
            window: spec.window,
            payload: spec.payload,
            start,
            end: start + spec.duration,
        });
        let controls = Controls {
            confirm: c.confirm,
            retry: c.retry,
            stop_sending: stop_sending.clone(),
            stop: stop.clone(),
        };
        let task = writer::run(c.sink, plan, shared.clone(), controls);
        writers.push(tokio::spawn(task));
        readers.push(c.reader);
    }
    Running {
        shared,
        stop_sending,
        stop,
        readers,
        writers,
        started_ns,
    }
}

impl Running {
    /// Stops new sends (they stop by themselves at the end of the
    /// duration), then waits until everything sent is answered, acked
    /// messages delivered and their receipts in, or nothing moved for
    /// `drain`, and at most [`MAX_DRAIN`]: an open-loop rate above what
    /// the server sustains leaves a backlog it may take minutes to work off.
    pub async fn drain(&self, duration: Duration, drain: Duration) {
        let end = Instant::now() + duration;
        tokio::select! {
            _ = tokio::time::sleep_until(end.into()) => {}
            _ = self.stop.cancelled() => {}
        }
        self.stop_sending.cancel();
        let c = &self.shared.counts;
        let progress = || {
            let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
            (
                n(&c.sent),
                n(&c.acked) + n(&c.given_up),
                n(&c.delivered),
                n(&c.receipts),
            )
        };
        let mut last = progress();
        let mut since = Instant::now();
        let give_up = since + MAX_DRAIN;
        while Instant::now() < give_up {
            let now = progress();
            let (sent, answered, delivered, receipts) = now;
            let expected = c.receipts_expected.load(Ordering::Relaxed);
            if answered >= sent && delivered >= sent && receipts >= expected {
                return;
            }
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= drain {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops every task and sums up.
    pub async fn close(self) -> NativeResult {
        self.stop.cancel();
        let mut r = NativeResult {
            started_ns: self.started_ns,
            ..NativeResult::default()
        };
        // Readers first: they stop at once, and must be gone before the
        // writers close the sockets and the server answers.
        for t in self.readers {
            if let Ok(s) = t.await {
                r.add_read(s);
            }
        }
        for w in self.writers {
            if let Ok(s) = w.await {
                r.add_write(s);
            }
        }
        r.send_lag = Latency::of_values(std::mem::take(&mut r.lag_ns));
        let (shared, c) = (&self.shared, &self.shared.counts);
        r.acked = c.acked.load(Ordering::Relaxed);
        r.delivered = c.delivered.load(Ordering::Relaxed);
        r.receipts = c.receipts.load(Ordering::Relaxed);
        r.receipts_expected = c.receipts_expected.load(Ordering::Relaxed);
        r.last_ack_ns = c.last_ack_ns.load(Ordering::Relaxed);
        r.last_delivery_ns = c.last_delivery_ns.load(Ordering::Relaxed);
        r.last_receipt_ns = c.last_receipt_ns.load(Ordering::Relaxed);
        r.lost = shared.acked.count_missing_from(&shared.received);
        r.delivered_unacked = shared.received.count_missing_from(&shared.acked);
        r
    }
}

/// What a native load came to.
#[derive(Debug, Default)]
pub struct NativeResult {
    /// Distinct messages sent, and sends made again after a refusal.
    pub sent: u64,
    pub resent: u64,
    pub acked: u64,
    pub duplicate_acks: u64,
    /// Distinct messages that reached their recipient.
    pub delivered: u64,
    /// Messages a recipient connection received more than once.
    pub duplicates: u64,
    pub receipts: u64,
    pub receipts_expected: u64,
    pub unmatched_receipts: u64,
    /// Acked, but not received by the end of the drain.
    pub lost: u64,
    /// Received, but never acked.
    pub delivered_unacked: u64,
    pub given_up: u64,
    pub confirms: u64,
    pub pos_gaps: u64,
    pub stale: u64,
    pub corrupt: u64,
    pub malformed: u64,
    pub echoes: u64,
    pub errors: BTreeMap<String, u64>,
    pub dropped_connections: u64,
    pub first_drop: Option<String>,
    pub capped_senders: usize,
    pub acks: Vec<Sample>,
    pub deliveries: Vec<Sample>,
    pub receipt_samples: Vec<Sample>,
    pub send_lag: Latency,
    lag_ns: Vec<u64>,
    pub started_ns: u64,
    pub sending_ended_ns: u64,
    pub last_ack_ns: u64,
    pub last_delivery_ns: u64,
    pub last_receipt_ns: u64,
}

impl NativeResult {
    fn add_write(&mut self, s: WriteStats) {
        self.sent += s.sent;
        self.resent += s.resent;
        self.confirms += s.confirms;
        self.capped_senders += usize::from(s.capped);
        self.sending_ended_ns = self.sending_ended_ns.max(s.ended_ns);
        self.lag_ns.extend(s.lag_ns);
        if let Some(e) = s.error {
            self.first_drop.get_or_insert(e);
        }
    }

    fn add_read(&mut self, s: ReadStats) {
        self.duplicate_acks += s.duplicate_acks;
        self.duplicates += s.duplicates;
        self.stale += s.stale;
        self.corrupt += s.corrupt;
        self.malformed += s.malformed;
        self.echoes += s.echoes;
        self.pos_gaps += s.pos_gaps;
        self.unmatched_receipts += s.unmatched_receipts;
        self.given_up += s.given_up;
        for (code, n) in s.errors {
            *self.errors.entry(code).or_default() += n;
        }
        if let Some(d) = s.dropped {
            self.dropped_connections += 1;
            self.first_drop.get_or_insert(d);
        }
        self.acks.extend(s.acks);
        self.deliveries.extend(s.deliveries);
        self.receipt_samples.extend(s.receipts);
    }

    /// `n` events per second from the first send to `last_ns`.
    pub(crate) fn per_sec(&self, n: u64, last_ns: u64) -> f64 {
        let span = last_ns.saturating_sub(self.started_ns) as f64 / 1e9;
        if span > 0.0 { n as f64 / span } else { 0.0 }
    }
}
