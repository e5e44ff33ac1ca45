//! One sender: direct messages on a schedule or flat out, each written to
//! the socket on its own as a chat client would (no batching of frames).
//!
//! Flat out is closed-loop: a sender keeps at most `window` messages in
//! flight. The compat protocol has no acknowledgements, so nothing slows an
//! open-loop sender down but its socket, and the server reads requests far
//! faster than it can deliver them: a run without a window measures how
//! the server sheds an overload (queues fill, slow consumers are closed,
//! messages go to offline storage), not how fast it delivers.

use super::load::{LoadResult, Shared};
use super::messages::{Body, message_request};
use super::stats::Latency;
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::client::Ws;

pub type Sink = SplitSink<Ws, Message>;

/// How long a sender may take to push out what it buffered at the end.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// When a sender sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pace {
    /// As fast as deliveries allow, with at most `window` in flight (0:
    /// as fast as the socket takes them).
    FlatOut { window: u64 },
    /// One message per interval, the first `offset` after the start.
    Every(Duration),
    Scheduled {
        interval: Duration,
        offset: Duration,
    },
}

impl Pace {
    /// Staggers rated senders evenly over one interval, so the total rate
    /// is smooth rather than S messages at once every interval.
    pub(crate) fn offset_for(self, index: usize, senders: usize) -> Pace {
        match self {
            Pace::Every(interval) => Pace::Scheduled {
                interval,
                offset: interval.mul_f64(index as f64 / senders.max(1) as f64),
            },
            other => other,
        }
    }

    /// When message `seq` is due, or None when flat out.
    pub(crate) fn due(self, start: Instant, seq: u64) -> Option<Instant> {
        match self {
            Pace::FlatOut { .. } => None,
            Pace::Every(interval) => Some(start + interval.mul_f64(seq as f64)),
            Pace::Scheduled { interval, offset } => {
                Some(start + offset + interval.mul_f64(seq as f64))
            }
        }
    }
}

/// What one sender does.
pub(crate) struct SenderPlan {
    pub index: usize,
    pub token: String,
    /// Every user's id, in user order.
    pub targets: Arc<Vec<String>>,
    pub pace: Pace,
    pub payload: usize,
    pub start: Instant,
    pub end: Instant,
}

impl SenderPlan {
    fn target(&self, seq: u64) -> &str {
        target_of(&self.targets, self.index, seq)
    }
}

/// Whom sender `index` sends its message `seq`: everyone else in turn.
pub(crate) fn target_of(targets: &[String], index: usize, seq: u64) -> &str {
    let users = targets.len().max(2);
    let step = 1 + (seq % (users as u64 - 1)) as usize;
    targets
        .get((index + step) % users)
        .map_or("", String::as_str)
}

/// Whom sender `index` sends its message `seq` when the users are spread
/// over `nodes` nodes, user i on node i % nodes: with one node
/// [`target_of`]; with more, everyone on another node than the sender in
/// turn, so that every message crosses nodes. "" when nobody is on another
/// node.
pub(crate) fn cross_node_target_of(
    targets: &[String],
    index: usize,
    seq: u64,
    nodes: usize,
) -> &str {
    if nodes < 2 {
        return target_of(targets, index, seq);
    }
    let users = targets.len();
    let mine = index % nodes;
    // Users 0..users on the sender's node: mine, mine + nodes, ...
    let on_mine = (users + nodes - 1 - mine) / nodes;
    let others = users.saturating_sub(on_mine);
    if others == 0 {
        return "";
    }
    // The k-th of the others in ascending order: each block of `nodes`
    // consecutive users holds nodes - 1 of them, the sender's slot skipped.
    // Senders start at different k so they do not all hit user 0 first.
    let k = ((seq + index as u64) % others as u64) as usize;
    let (block, r) = (k / (nodes - 1), k % (nodes - 1));
    let slot = if r < mine { r } else { r + 1 };
    targets.get(block * nodes + slot).map_or("", String::as_str)
}

#[derive(Debug, Default)]
pub(crate) struct SendStats {
    pub sent: u64,
    /// Sent its whole share of --max-messages.
    pub capped: bool,
    /// Nanoseconds each rated message left after it was due.
    pub lag_ns: Vec<u64>,
    pub ended_ns: u64,
    pub error: Option<String>,
}

/// Sends until the plan's end, `stop`, or the ledger's capacity.
pub async fn run(
    mut sink: Sink,
    plan: SenderPlan,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> SendStats {
    let mut stats = SendStats::default();
    let capacity = shared.ledger.capacity();
    for seq in 0..capacity {
        let due = plan.pace.due(plan.start, seq);
        if stop.is_cancelled() || due.unwrap_or_else(Instant::now) >= plan.end {
            break;
        }
        if !wait_for_turn(&plan, &shared, seq, due, &stop).await {
            break;
        }
        if let Some(due) = due {
            let lag = Instant::now().saturating_duration_since(due);
            stats
                .lag_ns
                .push(u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX));
        }
        match send_one(&mut sink, &plan, &shared, seq, &stop).await {
            Ok(true) => stats.sent += 1,
            Ok(false) => break,
            Err(e) => {
                stats.error = Some(format!("send failed: {e}"));
                break;
            }
        }
    }
    stats.capped = stats.sent == capacity;
    let _ = tokio::time::timeout(FINAL_FLUSH, sink.flush()).await;
    stats.ended_ns = shared.clock.now_ns();
    stats
}

/// Waits until message `seq` may go: its due time when rated, room in
/// the window when flat out. False if the run stops meanwhile.
async fn wait_for_turn(
    plan: &SenderPlan,
    shared: &Shared,
    seq: u64,
    due: Option<Instant>,
    stop: &CancellationToken,
) -> bool {
    if let Some(due) = due {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep_until(due.into()) => {}
        }
    }
    match plan.pace {
        Pace::FlatOut { window } => wait_for_room(shared, plan.index, seq, window, stop).await,
        _ => true,
    }
}

/// Writes message `seq`; Ok(false) if the run stopped before the socket
/// took it. feed() either takes the frame or, if cancelled, never had it,
/// so a sent count made from this is exact.
async fn send_one(
    sink: &mut Sink,
    plan: &SenderPlan,
    shared: &Shared,
    seq: u64,
    stop: &CancellationToken,
) -> Result<bool, tokio_tungstenite::tungstenite::Error> {
    let body = Body {
        run: shared.run,
        sender: plan.index,
        seq,
        sent_ns: shared.clock.now_ns(),
    }
    .encode(plan.payload);
    let frame = Message::text(message_request(&plan.token, plan.target(seq), &body));
    tokio::select! {
        r = sink.feed(frame) => r?,
        _ = stop.cancelled() => return Ok(false),
    }
    shared.sent.fetch_add(1, Ordering::Relaxed);
    // A split sink holds the last frame fed to it until the next feed or
    // flush: without this, every message would wait for the next. If the
    // run stops first, the final flush in `run` sends it.
    tokio::select! {
        r = sink.flush() => r?,
        _ = stop.cancelled() => {}
    }
    Ok(true)
}

/// Waits until fewer than `window` of this sender's messages are in
/// flight; false if the run stops meanwhile. Rechecks every 100 ms, so a
/// lost message shrinks the window rather than stalling the sender.
async fn wait_for_room(
    shared: &Shared,
    index: usize,
    sent: u64,
    window: u64,
    stop: &CancellationToken,
) -> bool {
    let Some(gauge) = shared.gauges.get(index) else {
        return true;
    };
    while window > 0 && sent.saturating_sub(gauge.delivered.load(Ordering::Acquire)) >= window {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = gauge.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    true
}

/// Adds the senders' figures to a load result.
pub(crate) fn merge_into(result: &mut LoadResult, sends: Vec<SendStats>) {
    result.sent = sends.iter().map(|s| s.sent).sum();
    result.capped_senders = sends.iter().filter(|s| s.capped).count();
    result.sending_ended_ns = sends.iter().map(|s| s.ended_ns).max().unwrap_or(0);
    if result.first_drop.is_none() {
        result.first_drop = sends.iter().find_map(|s| s.error.clone());
    }
    result.send_lag = Latency::of_values(sends.into_iter().flat_map(|s| s.lag_ns));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_node_recipients_are_everyone_on_other_nodes() {
        for users in [2usize, 5, 6, 7, 1000] {
            let targets: Vec<String> = (0..users).map(|i| i.to_string()).collect();
            for nodes in [2usize, 3] {
                for index in [0, 1, users / 2, users - 1] {
                    let got: std::collections::BTreeSet<usize> = (0..2 * users as u64)
                        .map(|seq| cross_node_target_of(&targets, index, seq, nodes))
                        .filter_map(|t| t.parse().ok())
                        .collect();
                    let want = (0..users).filter(|j| j % nodes != index % nodes).collect();
                    assert_eq!(got, want, "users {users}, nodes {nodes}, sender {index}");
                }
            }
            assert_eq!(
                cross_node_target_of(&targets, 1, 7, 1),
                target_of(&targets, 1, 7)
            );
        }
    }

    #[test]
    fn targets_rotate_over_everyone_else() {
        let plan = SenderPlan {
            index: 1,
            token: String::new(),
            targets: Arc::new(vec!["a".into(), "b".into(), "c".into()]),
            pace: Pace::FlatOut { window: 0 },
            payload: 0,
            start: Instant::now(),
            end: Instant::now(),
        };
        let seen: Vec<&str> = (0..4).map(|k| plan.target(k)).collect();
        assert_eq!(seen, ["c", "a", "c", "a"]);
    }

    #[test]
    fn rated_senders_are_staggered() {
        let start = Instant::now();
        let p = Pace::Every(Duration::from_millis(100)).offset_for(1, 4);
        assert_eq!(p.due(start, 0), Some(start + Duration::from_millis(25)));
        assert_eq!(p.due(start, 2), Some(start + Duration::from_millis(225)));
        assert_eq!(Pace::FlatOut { window: 0 }.due(start, 5), None);
    }
}
