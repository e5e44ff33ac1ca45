//! Peer-supplied text in the log, and how much of the log one peer gets.
//!
//! A PSK identity (or a device's plaintext) is whatever the peer sent: a
//! newline in it would start a forged log line, an ANSI escape would
//! rewrite the operator's terminal, and 128 bytes of it per datagram would
//! let a flood fill the disk. So such text goes through [`Untrusted`]
//! (from `sotto_core::untrusted`: escaped like `str::escape_debug`,
//! truncated), and warnings that any
//! stranger can trigger go through a [`Throttle`].

use std::time::Duration;
use tokio::time::Instant;

pub use sotto_core::untrusted::Untrusted;

/// At most one line per period for one kind of warning, however many
/// peers trigger it. One throttle per kind, not per address: a map of
/// addresses would itself grow with a spoofed flood.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if a line may be logged at `now` (`n` lines were left out
    /// since the last one, for the line to say so); `None` to stay quiet.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_admits_one_line_per_period_and_counts_the_rest() {
        let start = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(1));
        assert_eq!(t.admit(start), Some(0));
        for ms in [1, 200, 999] {
            assert_eq!(t.admit(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(t.admit(start + Duration::from_secs(1)), Some(3));
        assert_eq!(t.admit(start + Duration::from_millis(1500)), None);
        assert_eq!(t.admit(start + Duration::from_secs(3)), Some(1));
    }
}
