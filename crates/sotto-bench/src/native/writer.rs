//! The write half of one native connection: new sends (flat out with at
//! most `window` awaiting their ack, or on a schedule), retries of
//! refused sends, and the confirms its reader asks for.
//!
//! Every user has a writer, senders or not: recipients must confirm what
//! they receive. Each frame is written and flushed on its own, as a chat
//! client would.

use super::frames::{self, ClientId};
use super::load::Shared;
use super::reader::Retry;
use crate::send::{Pace, Sink, cross_node_target_of};
use futures_util::SinkExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// What a sending writer sends.
pub(crate) struct SendPlan {
    pub index: usize,
    /// Every user's id, in user order.
    pub targets: Arc<Vec<String>>,
    /// Nodes the users are spread over (user i on node i % nodes): with
    /// more than one, recipients are on another node than the sender.
    pub nodes: usize,
    pub pace: Pace,
    /// Flat out: sends awaiting their ack at most (0: no limit).
    pub window: u64,
    pub payload: usize,
    pub start: Instant,
    pub end: Instant,
}

/// How a writer is told what to do and when to stop.
pub(crate) struct Controls {
    pub confirm: watch::Receiver<u64>,
    pub retry: mpsc::Receiver<Retry>,
    /// Ends new sends and retries; confirms go on.
    pub stop_sending: CancellationToken,
    pub stop: CancellationToken,
}

#[derive(Debug, Default)]
pub(crate) struct WriteStats {
    /// Distinct messages sent.
    pub sent: u64,
    pub resent: u64,
    pub confirms: u64,
    /// Sent its whole share of --max-messages.
    pub capped: bool,
    /// Nanoseconds each rated send left after it was due.
    pub lag_ns: Vec<u64>,
    pub ended_ns: u64,
    pub error: Option<String>,
}

/// Writes until `stop`; sends only with a plan.
pub(crate) async fn run(
    mut sink: Sink,
    plan: Option<SendPlan>,
    shared: Arc<Shared>,
    mut c: Controls,
) -> WriteStats {
    let mut stats = WriteStats::default();
    let capacity = shared.acked.capacity();
    let mut sending = plan.is_some();
    let mut retries: VecDeque<Retry> = VecDeque::new();
    // Sends made (new and retried); the reader counts the freed ones.
    let mut issued = 0u64;
    loop {
        let retry_due = retries.front().map(|r| r.not_before);
        let retrying = retry_due.is_some() && !c.stop_sending.is_cancelled();
        let r = tokio::select! {
            biased;
            _ = c.stop.cancelled() => break,
            changed = c.confirm.changed() => {
                if changed.is_err() {
                    break;
                }
                let up_to = *c.confirm.borrow_and_update();
                stats.confirms += 1;
                write(&mut sink, frames::confirm_request(up_to)).await
            }
            Some(r) = c.retry.recv() => {
                retries.push_back(r);
                Ok(())
            }
            _ = tokio::time::sleep_until(retry_due.unwrap_or_else(tokio::time::Instant::now)), if retrying => {
                let Some(r) = retries.pop_front() else { continue };
                let Some(plan) = plan.as_ref() else { continue };
                issued += 1;
                stats.resent += 1;
                write(&mut sink, send_frame(plan, r.id)).await
            }
            go = turn(plan.as_ref(), &shared, issued, stats.sent, &c.stop_sending), if sending => {
                let Some(plan) = plan.as_ref().filter(|_| go) else {
                    sending = false;
                    stats.ended_ns = shared.clock.now_ns();
                    continue;
                };
                if let Some(due) = plan.pace.due(plan.start, stats.sent) {
                    let lag = Instant::now().saturating_duration_since(due);
                    stats.lag_ns.push(u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX));
                }
                let id = ClientId {
                    run: shared.run,
                    sender: plan.index,
                    seq: stats.sent,
                    sent_ns: shared.clock.now_ns(),
                };
                issued += 1;
                stats.sent += 1;
                shared.counts.sent.fetch_add(1, Ordering::Relaxed);
                if stats.sent == capacity {
                    stats.capped = true;
                    sending = false;
                    stats.ended_ns = shared.clock.now_ns();
                }
                write(&mut sink, send_frame(plan, id)).await
            }
        };
        if let Err(e) = r {
            stats.error = Some(format!("write failed: {e}"));
            break;
        }
    }
    if sending {
        stats.ended_ns = shared.clock.now_ns();
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    stats
}

fn send_frame(plan: &SendPlan, id: ClientId) -> String {
    let body = id.body().encode(plan.payload);
    let to = cross_node_target_of(&plan.targets, plan.index, id.seq, plan.nodes);
    frames::send_request(to, &body, &id.encode())
}

async fn write(sink: &mut Sink, text: String) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    sink.send(Message::text(text)).await
}

/// Waits until message `seq` may go: its due time when rated, room in
/// the window when flat out. False when sending is over. Dropped and made
/// again whenever another branch of the writer's loop wins, so it holds
/// nothing that must not be lost.
async fn turn(
    plan: Option<&SendPlan>,
    shared: &Shared,
    issued: u64,
    seq: u64,
    stop: &CancellationToken,
) -> bool {
    let Some(plan) = plan else { return false };
    let due = plan.pace.due(plan.start, seq);
    let at = due.unwrap_or_else(Instant::now);
    if stop.is_cancelled() || at >= plan.end {
        return false;
    }
    if let Some(due) = due {
        return tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep_until(due.into()) => true,
        };
    }
    let Some(slots) = shared.slots.get(plan.index) else {
        return true;
    };
    // Rechecked every 100 ms as well, so a lost ack shrinks the window
    // rather than stalling the sender for good.
    while plan.window > 0
        && issued.saturating_sub(slots.freed.load(Ordering::Acquire)) >= plan.window
    {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep_until(plan.end.into()) => return false,
            _ = slots.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    true
}
