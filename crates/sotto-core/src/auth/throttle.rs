//! Login and registration attempt limits, per client address and per
//! account name, so that guessing passwords is slow from one address and
//! slow against one account from many addresses. Both are GCRA limiters
//! (governor): a burst of `n` attempts, then one every `60/n` seconds.
//!
//! The per-name limit lets anyone delay a victim's logins for a minute;
//! that is the usual trade against letting a botnet guess one password at
//! full speed, and it is short.

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// Name keys are cut to this many bytes: names are limited far below it,
/// and an attacker's junk names must not make keys large.
const NAME_KEY_MAX: usize = 64;

/// Attempts per minute allowed; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    pub per_ip_per_minute: Option<NonZeroU32>,
    pub per_name_per_minute: Option<NonZeroU32>,
}

pub struct Throttle {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_name: Option<DefaultKeyedRateLimiter<String>>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Throttle {
        Throttle {
            per_ip: config
                .per_ip_per_minute
                .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n))),
            per_name: config
                .per_name_per_minute
                .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    /// One attempt from `ip` for `name`; `Err` carries how long to wait.
    /// The address is checked first so that one address hammering many
    /// names does not also use up those names' allowances.
    pub fn attempt(&self, ip: IpAddr, name: &str) -> Result<(), Duration> {
        if let Some(l) = &self.per_ip {
            l.check_key(&address_key(ip))
                .map_err(|n| n.wait_time_from(l.clock().now()))?;
        }
        if let Some(l) = &self.per_name {
            l.check_key(&name_key(name))
                .map_err(|n| n.wait_time_from(l.clock().now()))?;
        }
        Ok(())
    }

    /// Forgets keys whose allowance is full again; run now and then so the
    /// maps hold only recent attackers.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_name {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The key one client is counted under: its IPv4 address, or the /64 of
/// its IPv6 address, since anyone with one IPv6 address usually holds the
/// whole prefix and could otherwise rotate through 2^64 allowances. The
/// connection caps count by the same key.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

fn name_key(name: &str) -> String {
    let mut end = name.len().min(NAME_KEY_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_lowercase()
}

/// Whole seconds to put in `Retry-After`: at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(v)
    }

    #[test]
    fn limits_per_ip_and_per_name() {
        let t = Throttle::new(ThrottleConfig {
            per_ip_per_minute: n(3),
            per_name_per_minute: n(2),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(t.attempt(a, "Alice").is_ok());
        assert!(t.attempt(b, "alice").is_ok());
        let wait = t.attempt(b, "ALICE").unwrap_err();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(30));
        assert!(t.attempt(a, "bob").is_ok());
        assert!(t.attempt(a, "carol").is_ok());
        assert!(t.attempt(a, "dave").is_err(), "a's three attempts are used");
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let t = Throttle::new(ThrottleConfig {
            per_ip_per_minute: n(2),
            per_name_per_minute: None,
        });
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        let other: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert!(t.attempt(a, "x").is_ok());
        assert!(t.attempt(b, "y").is_ok());
        assert!(t.attempt(b, "z").is_err(), "same /64, third attempt");
        assert!(t.attempt(other, "x").is_ok(), "another /64");
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn unlimited_when_off() {
        let t = Throttle::new(ThrottleConfig {
            per_ip_per_minute: None,
            per_name_per_minute: None,
        });
        for _ in 0..1000 {
            assert!(t.attempt("10.0.0.1".parse().unwrap(), "a").is_ok());
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(20)), 20);
    }
}
