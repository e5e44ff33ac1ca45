//! Counting what arrived and how late: a latency summary over HDR
//! histograms, and a ledger that tells lost, delivered and duplicated
//! messages apart by (sender, sequence number).

use hdrhistogram::Histogram;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One delivered message: when it was sent and how long it took, both in
/// nanoseconds on the bench's monotonic clock. Kept raw so a scenario can
/// cut the run into windows (before, during and after a login storm)
/// after the fact.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub sent_ns: u64,
    pub latency_ns: u64,
}

impl Sample {
    /// A message sent at `sent_ns` that got somewhere at `at_ns`.
    pub fn since(sent_ns: u64, at_ns: u64) -> Sample {
        Sample {
            sent_ns,
            latency_ns: at_ns.saturating_sub(sent_ns),
        }
    }
}

/// Latency percentiles of a set of samples.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub count: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Latency {
    /// Summarizes the latencies of `samples` whose send time passes `keep`.
    pub fn of(samples: &[Sample], keep: impl Fn(&Sample) -> bool) -> Latency {
        Latency::of_values(samples.iter().filter(|s| keep(s)).map(|s| s.latency_ns))
    }

    /// Summarizes plain nanosecond values (login times, sender lag).
    pub(crate) fn of_values(values: impl IntoIterator<Item = u64>) -> Latency {
        // 1 µs to 10 min at three significant digits: 0.1% resolution, a
        // few hundred KiB. The bounds are valid constants, so creation does
        // not fail; if it did, the summary would be empty, not a panic.
        let Ok(mut h) = Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3) else {
            return Latency::default();
        };
        for v in values {
            h.saturating_record(v.max(1_000));
        }
        if h.is_empty() {
            return Latency::default();
        }
        let q = |q: f64| Duration::from_nanos(h.value_at_quantile(q));
        Latency {
            count: h.len(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: Duration::from_nanos(h.max()),
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return write!(f, "no samples");
        }
        write!(
            f,
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {} (n={})",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.count
        )
    }
}

/// Milliseconds with enough digits for sub-millisecond figures.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Which (sender, sequence) pairs arrived, as one bit each. Receivers run
/// on different tasks, so the bits are atomics; a set bit seen again is a
/// duplicate. Capacity is fixed up front, which is also what bounds how
/// many messages a sender may send.
pub(crate) struct Ledger {
    per_sender: Vec<Box<[AtomicU64]>>,
    capacity: u64,
}

/// What marking a message found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    First,
    Duplicate,
    /// A sender or sequence number the bench never sent: a corrupt body.
    Unknown,
}

impl Ledger {
    pub fn new(senders: usize, capacity: u64) -> Ledger {
        let words = usize::try_from(capacity.div_ceil(64)).unwrap_or(usize::MAX);
        let per_sender = (0..senders)
            .map(|_| (0..words).map(|_| AtomicU64::new(0)).collect())
            .collect();
        Ledger {
            per_sender,
            capacity,
        }
    }

    /// Messages one sender may send at most.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// How many messages are marked here and not in `other`: acked but
    /// never received, say. Both must have the same shape.
    pub fn count_missing_from(&self, other: &Ledger) -> u64 {
        let words = |l: &Ledger| -> Vec<u64> {
            l.per_sender
                .iter()
                .flat_map(|b| b.iter().map(|w| w.load(Ordering::Relaxed)))
                .collect()
        };
        let (mine, theirs) = (words(self), words(other));
        mine.iter()
            .zip(theirs.iter().chain(std::iter::repeat(&0)))
            .map(|(m, t)| u64::from((m & !t).count_ones()))
            .sum()
    }

    pub fn mark(&self, sender: usize, seq: u64) -> Mark {
        let Some(bits) = self.per_sender.get(sender) else {
            return Mark::Unknown;
        };
        let Some(word) = usize::try_from(seq / 64).ok().and_then(|w| bits.get(w)) else {
            return Mark::Unknown;
        };
        let bit = 1u64 << (seq % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            Mark::First
        } else {
            Mark::Duplicate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_tells_first_from_duplicate_and_unknown() {
        let l = Ledger::new(2, 100);
        assert_eq!(l.mark(0, 5), Mark::First);
        assert_eq!(l.mark(1, 5), Mark::First);
        assert_eq!(l.mark(0, 5), Mark::Duplicate);
        assert_eq!(l.mark(2, 0), Mark::Unknown);
        assert_eq!(l.mark(0, 1000), Mark::Unknown);
    }

    #[test]
    fn ledgers_count_what_the_other_misses() {
        let (acked, received) = (Ledger::new(2, 100), Ledger::new(2, 100));
        for (sender, seq) in [(0, 1), (0, 70), (1, 3)] {
            acked.mark(sender, seq);
        }
        received.mark(0, 70);
        received.mark(1, 9);
        assert_eq!(acked.count_missing_from(&received), 2);
        assert_eq!(received.count_missing_from(&acked), 1);
    }

    #[test]
    fn latency_percentiles_come_from_the_kept_samples() {
        let samples: Vec<Sample> = (1..=100)
            .map(|i| Sample {
                sent_ns: i,
                latency_ns: i * 1_000_000,
            })
            .collect();
        let all = Latency::of(&samples, |_| true);
        assert_eq!(all.count, 100);
        assert!((all.p50.as_secs_f64() - 0.050).abs() < 0.001);
        assert!((all.max.as_secs_f64() - 0.100).abs() < 0.001);
        let late = Latency::of(&samples, |s| s.sent_ns > 90);
        assert_eq!(late.count, 10);
        assert!(late.p50 >= Duration::from_millis(91));
    }
}
