//! One receiver: reads everything the server sends a bench user, marks
//! each message in the ledger and keeps its latency.

use super::client::Ws;
use super::load::{LoadResult, Shared};
use super::messages::{Body, Reply, classify};
use super::send::Sink;
use super::stats::{Mark, Sample};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

pub(crate) type Stream = SplitStream<Ws>;

#[derive(Debug, Default)]
pub(crate) struct RecvStats {
    pub samples: Vec<Sample>,
    pub duplicates: u64,
    pub corrupt: u64,
    pub stale: u64,
    pub refused: u64,
    pub first_refusal: Option<String>,
    pub presence: u64,
    /// Why the connection ended before `stop`, if it did.
    pub dropped: Option<String>,
    pub last_delivery_ns: u64,
}

/// Reads until `stop`. `sink` is the write half of users that do not
/// send, held so the connection stays whole until the end.
pub async fn run(
    mut stream: Stream,
    sink: Option<Sink>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> RecvStats {
    let mut stats = RecvStats::default();
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            n = stream.next() => n,
        };
        match next {
            Some(Ok(Message::Text(t))) => stats.take(t.as_str(), &shared),
            Some(Ok(Message::Close(f))) => {
                stats.dropped = Some(format!("closed by the server: {f:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                stats.dropped = Some(format!("connection failed: {e}"));
                break;
            }
            None => {
                stats.dropped = Some("connection ended".to_owned());
                break;
            }
        }
    }
    if let Some(mut sink) = sink {
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }
    stats
}

impl RecvStats {
    fn take(&mut self, text: &str, shared: &Shared) {
        match classify(text, "") {
            Reply::Message(body) => self.message(&body, shared),
            Reply::Presence => self.presence += 1,
            Reply::Refused(e) => {
                self.refused += 1;
                self.first_refusal.get_or_insert(e);
            }
            _ => self.corrupt += 1,
        }
    }

    fn message(&mut self, body: &str, shared: &Shared) {
        let now = shared.clock.now_ns();
        let Some(b) = Body::decode(body) else {
            self.corrupt += 1;
            return;
        };
        if b.run != shared.run {
            self.stale += 1;
            return;
        }
        match shared.ledger.mark(b.sender, b.seq) {
            Mark::First => {
                self.samples.push(Sample {
                    sent_ns: b.sent_ns,
                    latency_ns: now.saturating_sub(b.sent_ns),
                });
                self.last_delivery_ns = now;
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(g) = shared.gauges.get(b.sender) {
                    g.delivered.fetch_add(1, Ordering::Release);
                    g.wake.notify_one();
                }
            }
            Mark::Duplicate => self.duplicates += 1,
            Mark::Unknown => self.corrupt += 1,
        }
    }
}

/// Combines every receiver's figures into one load result.
pub fn merge(receives: Vec<RecvStats>) -> LoadResult {
    let mut r = LoadResult::default();
    for s in receives {
        r.duplicates += s.duplicates;
        r.corrupt += s.corrupt;
        r.stale += s.stale;
        r.refused += s.refused;
        r.presence_frames += s.presence;
        r.last_delivery_ns = r.last_delivery_ns.max(s.last_delivery_ns);
        if r.first_refusal.is_none() {
            r.first_refusal = s.first_refusal;
        }
        if let Some(d) = s.dropped {
            r.dropped_connections += 1;
            r.first_drop.get_or_insert(d);
        }
        r.samples.extend(s.samples);
    }
    r
}
