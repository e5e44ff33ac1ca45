//! The one source of "now" for the core.
//!
//! Session times must survive restarts, so they are unix milliseconds. But
//! reading `SystemTime` directly would make every expiry, idle and
//! retention rule untestable without real sleeps. A [`Clock`] reads the
//! wall clock once, when it is made, and from then on advances with
//! tokio's clock: in a test under `#[tokio::test(start_paused = true)]`,
//! `tokio::time::advance` moves it, and an hour of idling takes no time.
//!
//! In production this means "now" follows the monotonic clock from start
//! up: a wall-clock step (a VM resumed, an administrator's `date -s`) does
//! not move session expiry until the next restart, which is what expiry
//! wants anyway.

use std::time::Duration;
use tokio::time::Instant;

/// Unix milliseconds that advance with tokio's clock. Cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: i64,
    base: Instant,
}

impl Clock {
    /// Anchored at the current wall-clock time.
    pub fn system() -> Clock {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Clock::starting_at(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// Anchored at `unix_ms`: for tests that want fixed times.
    pub(crate) fn starting_at(unix_ms: i64) -> Clock {
        Clock {
            base_ms: unix_ms,
            base: Instant::now(),
        }
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> i64 {
        self.base_ms.saturating_add(millis(self.base.elapsed()))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

/// A duration in whole milliseconds, saturating (durations come from
/// options and may be huge).
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let clock = Clock::starting_at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms(), 1_000 + 3_600_000);
    }

    #[test]
    fn system_clock_is_near_the_wall_clock() {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        assert!((Clock::system().now_ms() - wall).abs() < 5_000);
    }

    #[test]
    fn millis_saturates() {
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }
}
