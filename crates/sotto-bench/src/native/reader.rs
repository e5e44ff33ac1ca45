//! The read half of one native connection: counts acks, messages and
//! receipts, frees the writer's slots, and decides when to confirm.
//!
//! Confirms are batched (at most every `--confirm-ms`, or after
//! `--confirm-frames` positioned frames, whichever comes first) so the
//! server can commit many positions at once; the reader only decides, its
//! writer sends the latest position when it gets to it.

use super::frames::{self, ClientId, Frame};
use super::load::Shared;
use crate::recv::Stream;
use crate::stats::{Mark, Sample};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// A send to make again after `rate_limited` or `queue_full`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub id: ClientId,
    pub not_before: Instant,
}

/// Wait before retrying a refused send that named no `retry_after`.
const RETRY_WAIT: Duration = Duration::from_millis(50);

/// Distinct error codes kept; the rest are counted under "other" (codes
/// come from the server, so their number is not ours to trust).
const MAX_CODES: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct ReadStats {
    pub acks: Vec<Sample>,
    pub deliveries: Vec<Sample>,
    pub receipts: Vec<Sample>,
    pub duplicate_acks: u64,
    pub duplicates: u64,
    /// Messages of an earlier run, replayed from storage.
    pub stale: u64,
    /// Acks, messages or receipts naming nothing this run sent.
    pub corrupt: u64,
    pub malformed: u64,
    /// Copies of the user's own sends (its other sockets' share).
    pub echoes: u64,
    /// Positioned frames whose `pos` was not the last one plus 1.
    pub pos_gaps: u64,
    /// Receipts for which no stored ack arrived.
    pub unmatched_receipts: u64,
    pub errors: BTreeMap<String, u64>,
    /// Sends refused for good (out of retries, or a final error).
    pub given_up: u64,
    pub dropped: Option<String>,
}

/// The read half's state.
pub(crate) struct Reader {
    me: String,
    index: usize,
    shared: Arc<Shared>,
    confirm: watch::Sender<u64>,
    retry: mpsc::Sender<Retry>,
    stats: ReadStats,
    /// Stored acks waiting for their receipt: (recipient, id) → sent_ns.
    awaiting: HashMap<(u64, i64), u64>,
    /// Receipts that came before their ack: (recipient, id) → arrival.
    early: HashMap<(u64, i64), u64>,
    /// Tries per refused message.
    attempts: HashMap<u64, u32>,
    last_pos: u64,
    unconfirmed: u64,
    confirm_by: Option<Instant>,
}

impl Reader {
    pub fn new(
        me: String,
        index: usize,
        shared: Arc<Shared>,
        confirm: watch::Sender<u64>,
        retry: mpsc::Sender<Retry>,
    ) -> Reader {
        Reader {
            me,
            index,
            shared,
            confirm,
            retry,
            stats: ReadStats::default(),
            awaiting: HashMap::new(),
            early: HashMap::new(),
            attempts: HashMap::new(),
            last_pos: 0,
            unconfirmed: 0,
            confirm_by: None,
        }
    }

    /// Reads until `stop` or the connection ends.
    pub async fn run(mut self, mut stream: Stream, stop: CancellationToken) -> ReadStats {
        loop {
            let deadline = self.confirm_by;
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.send_confirm();
                    continue;
                }
                n = stream.next() => n,
            };
            match next {
                Some(Ok(Message::Text(t))) => self.take(t.as_str()),
                Some(Ok(Message::Close(f))) => {
                    self.stats.dropped = Some(format!("closed by the server: {f:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.stats.dropped = Some(format!("connection failed: {e}"));
                    break;
                }
                None => {
                    self.stats.dropped = Some("connection ended".to_owned());
                    break;
                }
            }
        }
        self.stats.unmatched_receipts += self.early.len() as u64;
        self.stats
    }

    fn take(&mut self, text: &str) {
        let pos = match frames::classify(text) {
            Frame::Ack {
                client_id,
                id,
                to,
                stored,
            } => {
                self.ack(&client_id, id, &to, stored);
                None
            }
            Frame::Message {
                from,
                to,
                body,
                pos,
            } => {
                if from == self.me && to != self.me {
                    self.stats.echoes += 1;
                } else {
                    self.message(&body);
                }
                pos
            }
            Frame::Delivered { with, id, pos } => {
                self.receipt(&with, id);
                pos
            }
            Frame::Error {
                code,
                reference,
                retry_after,
            } => {
                self.error(&code, reference.as_deref(), retry_after);
                None
            }
            Frame::Other { pos } => pos,
            Frame::Malformed => {
                self.stats.malformed += 1;
                None
            }
        };
        if let Some(p) = pos {
            self.positioned(p);
        }
    }

    /// A client id of this run from this connection's sender, if it is one.
    fn ours(&self, client_id: &str) -> Option<ClientId> {
        ClientId::decode(client_id).filter(|c| c.run == self.shared.run && c.sender == self.index)
    }

    fn ack(&mut self, client_id: &str, id: i64, to: &str, stored: bool) {
        let now = self.shared.clock.now_ns();
        let Some(c) = self.ours(client_id) else {
            self.stats.corrupt += 1;
            return;
        };
        match self.shared.acked.mark(c.sender, c.seq) {
            Mark::First => {}
            Mark::Duplicate => {
                self.stats.duplicate_acks += 1;
                return;
            }
            Mark::Unknown => {
                self.stats.corrupt += 1;
                return;
            }
        }
        self.stats.acks.push(Sample::since(c.sent_ns, now));
        let counts = &self.shared.counts;
        counts.acked.fetch_add(1, Ordering::Relaxed);
        counts.last_ack_ns.fetch_max(now, Ordering::Relaxed);
        self.shared.free_slot(self.index);
        if !stored {
            return;
        }
        counts.receipts_expected.fetch_add(1, Ordering::Relaxed);
        let Some(key) = frames::pack_id(to).map(|t| (t, id)) else {
            return;
        };
        match self.early.remove(&key) {
            Some(at) => self.receipt_sample(c.sent_ns, at),
            None => {
                self.awaiting.insert(key, c.sent_ns);
            }
        }
    }

    fn receipt(&mut self, with: &str, id: i64) {
        let now = self.shared.clock.now_ns();
        let Some(key) = frames::pack_id(with).map(|w| (w, id)) else {
            self.stats.unmatched_receipts += 1;
            return;
        };
        match self.awaiting.remove(&key) {
            Some(sent_ns) => self.receipt_sample(sent_ns, now),
            None => {
                self.early.insert(key, now);
            }
        }
    }

    fn receipt_sample(&mut self, sent_ns: u64, at: u64) {
        self.stats.receipts.push(Sample::since(sent_ns, at));
        let counts = &self.shared.counts;
        counts.receipts.fetch_add(1, Ordering::Relaxed);
        counts.last_receipt_ns.fetch_max(at, Ordering::Relaxed);
    }

    fn message(&mut self, body: &str) {
        let now = self.shared.clock.now_ns();
        let Some(b) = crate::messages::Body::decode(body) else {
            self.stats.corrupt += 1;
            return;
        };
        if b.run != self.shared.run {
            self.stats.stale += 1;
            return;
        }
        match self.shared.received.mark(b.sender, b.seq) {
            Mark::First => {
                self.stats.deliveries.push(Sample::since(b.sent_ns, now));
                let counts = &self.shared.counts;
                counts.delivered.fetch_add(1, Ordering::Relaxed);
                counts.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
            }
            Mark::Duplicate => self.stats.duplicates += 1,
            Mark::Unknown => self.stats.corrupt += 1,
        }
    }

    fn error(&mut self, code: &str, reference: Option<&str>, retry_after: Option<u64>) {
        let key = if self.stats.errors.len() < MAX_CODES || self.stats.errors.contains_key(code) {
            code.chars()
                .take(32)
                .flat_map(char::escape_default)
                .collect()
        } else {
            "other".to_owned()
        };
        *self.stats.errors.entry(key).or_default() += 1;
        let Some(c) = reference.and_then(|r| self.ours(r)) else {
            return;
        };
        // A refused send holds no slot: the window is for messages the
        // server is working on.
        self.shared.free_slot(self.index);
        let retryable = code == "rate_limited" || code == "queue_full";
        let tries = self.attempts.entry(c.seq).or_default();
        *tries += 1;
        if retryable && *tries <= self.shared.max_retries {
            let wait = retry_after.map_or(RETRY_WAIT, |s| Duration::from_secs(s.min(10)));
            let retry = Retry {
                id: c,
                not_before: Instant::now() + wait,
            };
            if self.retry.try_send(retry).is_ok() {
                return;
            }
        }
        self.stats.given_up += 1;
        self.shared.counts.given_up.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes a positioned frame and confirms when the batch is full; a
    /// batch that does not fill is confirmed by the deadline in `run`.
    fn positioned(&mut self, pos: u64) {
        if self.last_pos != 0 && pos != self.last_pos + 1 {
            self.stats.pos_gaps += 1;
        }
        self.last_pos = self.last_pos.max(pos);
        self.unconfirmed += 1;
        let policy = self.shared.confirm;
        if self.unconfirmed >= policy.frames {
            self.send_confirm();
        } else if self.confirm_by.is_none() {
            self.confirm_by = Some(Instant::now() + policy.every);
        }
    }

    fn send_confirm(&mut self) {
        self.unconfirmed = 0;
        self.confirm_by = None;
        // The writer sends the latest value; if it has stopped, there is
        // nobody to confirm to.
        let _ = self.confirm.send(self.last_pos);
    }
}
