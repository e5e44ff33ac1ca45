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
    /// Stored acks waiting for their receipt: recipient → id → sent_ns.
    /// Receipts are cumulative: one for id N covers every earlier id to
    /// that recipient.
    awaiting: HashMap<u64, std::collections::BTreeMap<i64, u64>>,
    /// The highest receipt per recipient that came before some of its acks:
    /// recipient → (id, arrival).
    early: HashMap<u64, (i64, u64)>,
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
                // Stop first: at the end the writers close their sockets,
                // and what the server answers to that is not a drop.
                biased;
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
                    self.dropped(format!("closed by the server: {f:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.dropped(format!("connection failed: {e}"));
                    break;
                }
                None => {
                    self.dropped("connection ended".to_owned());
                    break;
                }
            }
        }
        // Acks whose receipt never came.
        self.stats.unmatched_receipts +=
            self.awaiting.values().map(|w| w.len() as u64).sum::<u64>();
        self.stats
    }

    /// Notes why the connection ended early, and when (on the bench's
    /// clock: the load starts a settle time after the last socket opened).
    fn dropped(&mut self, why: String) {
        let at = self.shared.clock.now_ns() as f64 / 1e9;
        self.stats.dropped = Some(format!(
            "user {}: {why}, {at:.1} s after setup began",
            self.index
        ));
    }

    fn take(&mut self, text: &str) {
        let pos = match frames::classify(text) {
            Frame::Ack {
                client_id,
                id,
                to,
                stored,
                pos,
            } => {
                self.ack(&client_id, id, &to, stored);
                pos
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
        let Some(to) = frames::pack_id(to) else {
            return;
        };
        match self.early.get(&to) {
            Some(&(up_to, at)) if id <= up_to => self.receipt_sample(c.sent_ns, at),
            _ => {
                self.awaiting.entry(to).or_default().insert(id, c.sent_ns);
            }
        }
    }

    fn receipt(&mut self, with: &str, id: i64) {
        let now = self.shared.clock.now_ns();
        let Some(with) = frames::pack_id(with) else {
            self.stats.unmatched_receipts += 1;
            return;
        };
        let covered: Vec<u64> = match self.awaiting.get_mut(&with) {
            Some(waiting) => {
                let later = waiting.split_off(&(id + 1));
                std::mem::replace(waiting, later).into_values().collect()
            }
            None => Vec::new(),
        };
        for sent_ns in covered {
            self.receipt_sample(sent_ns, now);
        }
        let early = self.early.entry(with).or_insert((id, now));
        if id >= early.0 {
            *early = (id, now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::load::ConfirmPolicy;

    fn reader(frames: u64) -> (Reader, watch::Receiver<u64>, mpsc::Receiver<Retry>) {
        let confirm = ConfirmPolicy {
            every: Duration::from_millis(5),
            frames,
        };
        let shared = Arc::new(Shared::new(2, 100, confirm, 1));
        let (ctx, crx) = watch::channel(0);
        let (rtx, rrx) = mpsc::channel(4);
        (Reader::new("me0001".into(), 0, shared, ctx, rtx), crx, rrx)
    }

    fn id(r: &Reader, seq: u64) -> String {
        ClientId {
            run: r.shared.run,
            sender: 0,
            seq,
            sent_ns: 1,
        }
        .encode()
    }

    /// The new protocol: a stored ack, then the receipt (positioned, so
    /// confirmed once the batch is full); a receipt before its ack still
    /// counts.
    #[test]
    fn stored_acks_meet_their_receipts_and_positions_are_confirmed() {
        let (mut r, mut confirms, _) = reader(2);
        let ack = |cid: &str, id: u64| {
            format!(
                r#"{{"type":"ack","client_id":"{cid}","id":{id},"to":"yo0002","status":"stored"}}"#
            )
        };
        r.take(&ack(&id(&r, 0), 1));
        r.take(r#"{"type":"delivered","with":"yo0002","id":1,"pos":1}"#);
        assert!(
            !confirms.has_changed().unwrap(),
            "one frame is no full batch"
        );
        r.take(r#"{"type":"delivered","with":"yo0002","id":2,"pos":2}"#);
        assert!(confirms.has_changed().unwrap());
        assert_eq!(*confirms.borrow_and_update(), 2);
        r.take(&ack(&id(&r, 1), 2));
        let c = &r.shared.counts;
        assert_eq!(c.acked.load(Ordering::Relaxed), 2);
        assert_eq!(c.receipts_expected.load(Ordering::Relaxed), 2);
        assert_eq!(c.receipts.load(Ordering::Relaxed), 2);
        assert_eq!(r.shared.slots[0].freed.load(Ordering::Relaxed), 2);
        r.take(&ack(&id(&r, 1), 2));
        assert_eq!(r.stats.duplicate_acks, 1);
        assert_eq!(r.stats.pos_gaps, 0);
    }

    /// An ack with a position stands in for the sender's own copy: it
    /// is a positioned frame like the others, so no gap is counted
    /// around it and it is confirmed.
    #[test]
    fn acks_with_positions_count_as_positioned_frames() {
        let (mut r, mut confirms, _) = reader(2);
        let cid = id(&r, 0);
        r.take(r#"{"type":"delivered","with":"yo0002","id":1,"pos":1}"#);
        r.take(&format!(
            r#"{{"type":"ack","client_id":"{cid}","id":1,"to":"yo0002","status":"stored","pos":2}}"#
        ));
        r.take(r#"{"type":"delivered","with":"yo0002","id":1,"pos":3}"#);
        assert_eq!(r.stats.pos_gaps, 0);
        assert!(confirms.has_changed().unwrap());
        assert_eq!(*confirms.borrow_and_update(), 2);
    }

    /// The old protocol: a delivered ack expects no receipt, and a
    /// message without a position is not confirmed.
    #[test]
    fn old_frames_are_counted_without_confirms() {
        let (mut r, confirms, _) = reader(1);
        let cid = id(&r, 0);
        r.take(&format!(
            r#"{{"type":"ack","client_id":"{cid}","id":1,"to":"yo0002","status":"delivered"}}"#
        ));
        let body = crate::messages::Body {
            run: r.shared.run,
            sender: 1,
            seq: 0,
            sent_ns: 1,
        }
        .encode(0);
        let m = format!(
            r#"{{"type":"message","id":1,"from":"yo0002","to":"me0001","body":"{body}","sent_at":1}}"#
        );
        r.take(&m);
        r.take(&m);
        assert_eq!(r.shared.counts.receipts_expected.load(Ordering::Relaxed), 0);
        assert_eq!(r.shared.counts.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(r.stats.duplicates, 1);
        assert!(!confirms.has_changed().unwrap());
    }

    /// A rate-limited send frees its slot and is retried, up to the limit.
    #[test]
    fn refused_sends_are_retried_then_given_up() {
        let (mut r, _, mut retries) = reader(64);
        let cid = id(&r, 5);
        let e = format!(
            r#"{{"type":"error","code":"rate_limited","message":"m","ref":"{cid}","retry_after":1}}"#
        );
        r.take(&e);
        assert_eq!(retries.try_recv().unwrap().id.seq, 5);
        r.take(&e);
        assert!(retries.try_recv().is_err());
        assert_eq!(r.stats.given_up, 1);
        assert_eq!(r.stats.errors.get("rate_limited"), Some(&2));
        assert_eq!(r.shared.slots[0].freed.load(Ordering::Relaxed), 2);
    }
}
