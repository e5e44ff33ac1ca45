//! Per-user send limits: how many messages, and how many body bytes, one
//! user may send, whatever the protocol (compat, native, device).
//!
//! Without them any registered user can fill the disk: 2,000 sends of
//! 60 KiB to oneself over `/ws` were all stored, 123 MB in 3 s, kept for
//! the history retention (issue 13, finding 5); the offline queue cap
//! only bounds what waits for one recipient. A send over a limit is
//! refused before any work (no store write, no routing) with the time to
//! wait, and the connection stays open: the sender is told, its receivers
//! notice nothing.
//!
//! Both limits are GCRA limiters (governor) keyed by the sender's id: a
//! burst, then a steady rate. The check is one hash-map look-up and an
//! atomic update per limit, so the compat relay path stays cheap. The
//! maps hold a key per recent sender; the hub's sweeper forgets senders
//! whose allowance is full again.

use crate::auth::UserId;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::time::Duration;

/// Per-user send limits; `None` turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendLimits {
    /// Messages per second one user may send, on average (default 20).
    pub per_second: Option<NonZeroU32>,
    /// Messages one user may send at once before `per_second` applies
    /// (default 100).
    pub burst: NonZeroU32,
    /// Body bytes one user may send per minute, also allowed at once
    /// (default 16 MiB). A message larger than this uses the whole minute.
    pub bytes_per_minute: Option<NonZeroU32>,
}

impl SendLimits {
    /// No limits at all.
    pub const OFF: SendLimits = SendLimits {
        per_second: None,
        burst: NonZeroU32::MIN,
        bytes_per_minute: None,
    };
}

impl Default for SendLimits {
    /// Above anything a person types or pastes (20 messages a second after
    /// 100 at once; 16 MiB a minute), far below what fills a disk: a
    /// flooding user stores at most ~23 GB a day instead of ~3.5 TB, and
    /// the history retention bounds how many days are kept.
    fn default() -> Self {
        SendLimits {
            per_second: NonZeroU32::new(20),
            burst: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            bytes_per_minute: NonZeroU32::new(16 * 1024 * 1024),
        }
    }
}

/// The limiters themselves.
pub(super) struct Senders {
    messages: Option<DefaultKeyedRateLimiter<UserId>>,
    bytes: Option<Bytes>,
}

struct Bytes {
    limiter: DefaultKeyedRateLimiter<UserId>,
    per_minute: NonZeroU32,
}

impl Senders {
    pub(super) fn new(limits: SendLimits) -> Senders {
        let messages = limits.per_second.map(|n| {
            DefaultKeyedRateLimiter::keyed(Quota::per_second(n).allow_burst(limits.burst))
        });
        let bytes = limits.bytes_per_minute.map(|n| Bytes {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)),
            per_minute: n,
        });
        Senders { messages, bytes }
    }

    /// One message of `len` body bytes from `user`; `Err` carries how long
    /// to wait before the same message would pass.
    pub(super) fn admit(&self, user: &UserId, len: usize) -> Result<(), Duration> {
        if let Some(l) = &self.messages {
            l.check_key(user)
                .map_err(|n| n.wait_time_from(l.clock().now()))?;
        }
        if let Some(b) = &self.bytes {
            b.admit(user, len)?;
        }
        Ok(())
    }

    /// Forgets senders whose allowance is full again, so the maps follow
    /// recent senders only.
    pub(super) fn forget_idle(&self) {
        if let Some(l) = &self.messages {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(b) = &self.bytes {
            b.limiter.retain_recent();
            b.limiter.shrink_to_fit();
        }
    }
}

impl Bytes {
    fn admit(&self, user: &UserId, len: usize) -> Result<(), Duration> {
        // An empty body costs nothing; one over the minute's budget costs
        // the whole budget rather than being refused for ever.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let Some(n) = NonZeroU32::new(len.min(self.per_minute.get())) else {
            return Ok(());
        };
        let l = &self.limiter;
        match l.check_key_n(user, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(l.clock().now())),
            // Cannot happen (n is at most the burst); wait a minute if so.
            Err(_) => Err(Duration::from_secs(60)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn limits(per_second: u32, burst: u32, bytes: u32) -> SendLimits {
        SendLimits {
            per_second: NonZeroU32::new(per_second),
            burst: NonZeroU32::new(burst).unwrap(),
            bytes_per_minute: NonZeroU32::new(bytes),
        }
    }

    #[test]
    fn a_burst_then_refused_with_a_wait_per_user() {
        let s = Senders::new(limits(2, 3, 0));
        let (a, b) = (user("aaaaaa"), user("bbbbbb"));
        for _ in 0..3 {
            assert!(s.admit(&a, 10).is_ok());
        }
        let wait = s.admit(&a, 10).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        assert!(
            s.admit(&b, 10).is_ok(),
            "another user has their own allowance"
        );
    }

    #[test]
    fn bytes_per_minute_bound_large_messages() {
        let s = Senders::new(limits(0, 1, 100_000));
        let a = user("aaaaaa");
        assert!(s.admit(&a, 60_000).is_ok());
        let wait = s.admit(&a, 60_000).unwrap_err();
        assert!(wait > Duration::from_secs(10) && wait <= Duration::from_secs(60));
        assert!(s.admit(&a, 30_000).is_ok(), "smaller ones still fit");
        assert!(s.admit(&a, 0).is_ok(), "an empty body costs nothing");
    }

    #[test]
    fn a_message_over_the_minute_budget_costs_the_whole_minute() {
        let s = Senders::new(limits(0, 1, 1000));
        let a = user("aaaaaa");
        assert!(s.admit(&a, 5000).is_ok());
        assert!(s.admit(&a, 1).is_err());
    }

    #[test]
    fn off_means_unlimited() {
        let s = Senders::new(SendLimits::OFF);
        let a = user("aaaaaa");
        for _ in 0..10_000 {
            assert!(s.admit(&a, 60_000).is_ok());
        }
        s.forget_idle();
    }
}
