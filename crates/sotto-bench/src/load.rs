//! The message exchange every traffic scenario runs: each online user gets
//! a receiver task, the first S users also a sender task, and a shared
//! ledger tells what arrived.
//!
//! Sender i's k-th message goes to user (i + 1 + k mod (N − 1)) mod N, so
//! traffic spreads over every user and nobody messages itself.

use super::recv::{self, RecvStats};
use super::send::{self, Pace, SendStats, SenderPlan};
use super::setup::Online;
use super::stats::{Latency, Ledger, Sample};
use anyhow::bail;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What to send.
#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    /// Users that send; the first `senders` of those online.
    pub senders: usize,
    /// Messages per second over all senders; 0 sends flat out.
    pub rate: f64,
    /// How long senders send at most.
    pub duration: Duration,
    /// Message bodies are padded to this many bytes.
    pub payload: usize,
    /// Flat out only: messages one sender may have in flight (sent, not
    /// yet received); 0 for no limit.
    pub window: u64,
    /// Messages sent at most over all senders: bounds every run, and the
    /// memory of the ledger and the samples.
    pub max_messages: u64,
}

/// The bench's monotonic clock, shared by senders and receivers.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `ns` nanoseconds after the clock started.
    pub fn at(&self, ns: u64) -> Instant {
        self.start + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// State every sender and receiver task shares.
pub struct Shared {
    /// Random id in every body of this run.
    pub run: u32,
    pub clock: Clock,
    pub ledger: Ledger,
    /// Per sender: its messages delivered so far, and a wake-up for a
    /// sender waiting for room in its window.
    pub gauges: Vec<Gauge>,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
}

/// One sender's delivered count, which its window is measured against.
#[derive(Default)]
pub(crate) struct Gauge {
    pub delivered: AtomicU64,
    pub wake: Notify,
}

/// A load in progress.
pub struct Running {
    shared: Arc<Shared>,
    stop_sending: CancellationToken,
    stop_receiving: CancellationToken,
    senders: Vec<JoinHandle<SendStats>>,
    receivers: Vec<JoinHandle<RecvStats>>,
    sends: Vec<SendStats>,
    started_ns: u64,
}

/// What a load came to.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub sent: u64,
    /// Distinct messages that arrived.
    pub delivered: u64,
    pub duplicates: u64,
    /// Bodies the bench did not send (corrupted on the way).
    pub corrupt: u64,
    /// Messages of an earlier run, stored for an offline user and
    /// replayed now.
    pub stale: u64,
    /// `valid:false` answers, with the first one's text.
    pub refused: u64,
    pub first_refusal: Option<String>,
    /// Connections that ended before the bench closed them, and why the first did.
    pub dropped_connections: u64,
    pub first_drop: Option<String>,
    pub presence_frames: u64,
    /// Senders that reached their share of --max-messages before time.
    pub capped_senders: usize,
    pub samples: Vec<Sample>,
    /// How late rated sends left compared to their schedule.
    pub send_lag: Latency,
    pub started_ns: u64,
    /// When the last sender stopped.
    pub sending_ended_ns: u64,
    pub last_delivery_ns: u64,
}

impl LoadResult {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.delivered)
    }

    /// Delivered messages per second, from the first send to the last
    /// delivery.
    pub(crate) fn delivered_per_sec(&self) -> f64 {
        let span = self.last_delivery_ns.saturating_sub(self.started_ns) as f64 / 1e9;
        if span > 0.0 {
            self.delivered as f64 / span
        } else {
            0.0
        }
    }

    pub(crate) fn sent_per_sec(&self) -> f64 {
        let span = self.sending_ended_ns.saturating_sub(self.started_ns) as f64 / 1e9;
        if span > 0.0 {
            self.sent as f64 / span
        } else {
            0.0
        }
    }
}

/// Starts sending and receiving on `online` (at least two users).
pub fn start(online: Vec<Online>, spec: &LoadSpec, clock: Clock) -> anyhow::Result<Running> {
    let users = online.len();
    if users < 2 {
        bail!("a message load needs at least two users");
    }
    let senders = spec.senders.clamp(1, users);
    let per_sender_cap = per_sender_capacity(spec, senders);
    let shared = Arc::new(Shared {
        run: rand::random(),
        clock,
        ledger: Ledger::new(senders, per_sender_cap),
        gauges: (0..senders).map(|_| Gauge::default()).collect(),
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
    });
    let targets: Arc<Vec<String>> = Arc::new(online.iter().map(|o| o.user.id.clone()).collect());
    let stop_sending = CancellationToken::new();
    let stop_receiving = CancellationToken::new();
    let started_ns = shared.clock.now_ns();
    let start = shared.clock.at(started_ns);
    let end = start + spec.duration;
    let pace = pace(spec, senders);
    let mut sender_tasks = Vec::with_capacity(senders);
    let mut receiver_tasks = Vec::with_capacity(users);
    for (i, o) in online.into_iter().enumerate() {
        let (sink, stream) = o.ws.split();
        let keep_sink = if i < senders {
            let plan = SenderPlan {
                index: i,
                token: o.user.token,
                targets: targets.clone(),
                pace: pace.offset_for(i, senders),
                payload: spec.payload,
                start,
                end,
            };
            let task = send::run(sink, plan, shared.clone(), stop_sending.clone());
            sender_tasks.push(tokio::spawn(task));
            None
        } else {
            Some(sink)
        };
        let task = recv::run(stream, keep_sink, shared.clone(), stop_receiving.clone());
        receiver_tasks.push(tokio::spawn(task));
    }
    Ok(Running {
        shared,
        stop_sending,
        stop_receiving,
        senders: sender_tasks,
        receivers: receiver_tasks,
        sends: Vec::new(),
        started_ns,
    })
}

/// Each sender's share of `max_messages`, and no more than a rated sender
/// can send in `duration` (the ledger keeps one bit per possible message).
pub(crate) fn per_sender_capacity(spec: &LoadSpec, senders: usize) -> u64 {
    let share = (spec.max_messages / senders as u64).max(1);
    if spec.rate > 0.0 {
        let scheduled = spec.rate / senders as f64 * spec.duration.as_secs_f64();
        share.min(scheduled.ceil() as u64 + 2)
    } else {
        share
    }
}

fn pace(spec: &LoadSpec, senders: usize) -> Pace {
    if spec.rate > 0.0 {
        Pace::Every(Duration::from_secs_f64(senders as f64 / spec.rate))
    } else {
        Pace::FlatOut {
            window: spec.window,
        }
    }
}

impl Running {
    /// Stops the senders (they have stopped by themselves if the duration
    /// is over), then waits for the messages in flight: until every sent
    /// message arrived or nothing arrived for `drain`. Connections stay
    /// open, so the server's counters can be read before [`Running::close`]
    /// makes it handle a wave of disconnects.
    /// Distinct messages delivered so far.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    pub async fn drain(&mut self, drain: Duration) {
        self.stop_sending.cancel();
        for s in self.senders.drain(..) {
            if let Ok(stats) = s.await {
                self.sends.push(stats);
            }
        }
        wait_for_deliveries(&self.shared, drain).await;
    }

    /// Stops the receivers, closes the connections and sums up.
    pub async fn close(mut self) -> LoadResult {
        self.stop_receiving.cancel();
        let mut receives = Vec::with_capacity(self.receivers.len());
        for r in self.receivers {
            if let Ok(stats) = r.await {
                receives.push(stats);
            }
        }
        let mut result = recv::merge(receives);
        result.started_ns = self.started_ns;
        send::merge_into(&mut result, std::mem::take(&mut self.sends));
        result.delivered = self.shared.delivered.load(Ordering::Relaxed);
        result
    }
}

async fn wait_for_deliveries(shared: &Shared, drain: Duration) {
    let mut last = shared.delivered.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered >= shared.sent.load(Ordering::Relaxed) {
            return;
        }
        if delivered != last {
            last = delivered;
            since = Instant::now();
        } else if since.elapsed() >= drain {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
