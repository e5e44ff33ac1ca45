//! Connection counting at the edge: how many sockets one address holds,
//! and how many exist in all. A slot is taken before any per-connection
//! work starts and given back when the slot is dropped, however the
//! connection ends, so a count can never leak.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    PerIp,
    Total,
}

impl LimitHit {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitHit::PerIp => "per_ip",
            LimitHit::Total => "total",
        }
    }
}

/// Counts held slots per address and in total. IPv6 addresses are counted
/// per /64, since anyone with one address usually has the whole prefix.
#[derive(Debug)]
pub struct IpCounts {
    per_ip: u32,
    total: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    by_ip: HashMap<IpAddr, u32>,
    total: usize,
}

/// One held slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct IpSlot {
    owner: Arc<IpCounts>,
    key: IpAddr,
}

impl IpCounts {
    /// `per_ip` 0 means no per-address limit.
    pub fn new(per_ip: u32, total: usize) -> Arc<IpCounts> {
        Arc::new(IpCounts {
            per_ip: if per_ip == 0 { u32::MAX } else { per_ip },
            total,
            held: Mutex::new(Held::default()),
        })
    }

    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<IpSlot, LimitHit> {
        let key = prefix(ip);
        let mut held = self.lock();
        if held.total >= self.total {
            return Err(LimitHit::Total);
        }
        let n = held.by_ip.entry(key).or_insert(0);
        if *n >= self.per_ip {
            return Err(LimitHit::PerIp);
        }
        *n += 1;
        held.total += 1;
        Ok(IpSlot {
            owner: self.clone(),
            key,
        })
    }

    /// Slots held right now.
    pub fn held(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // Only counters live here; after a panic elsewhere they are still
        // consistent, so keep counting.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut held = self.owner.lock();
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_ip.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.by_ip.remove(&self.key);
            }
        }
    }
}

/// The key an address is counted under: IPv4 as is, IPv6 per /64, the
/// same key the login limits use.
pub(crate) use sotto_core::auth::throttle::address_key as prefix;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_limits_hold_and_slots_come_back() {
        let counts = IpCounts::new(2, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = counts.try_acquire(a).unwrap();
        let _s2 = counts.try_acquire(a).unwrap();
        assert_eq!(counts.try_acquire(a).unwrap_err(), LimitHit::PerIp);
        let _s3 = counts.try_acquire(b).unwrap();
        assert_eq!(counts.try_acquire(b).unwrap_err(), LimitHit::Total);
        drop(s1);
        assert_eq!(counts.held(), 2);
        assert!(counts.try_acquire(a).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let counts = IpCounts::new(1, 10);
        let _s = counts.try_acquire("2001:db8::1".parse().unwrap()).unwrap();
        assert!(counts.try_acquire("2001:db8::2".parse().unwrap()).is_err());
        assert!(
            counts
                .try_acquire("2001:db8:0:1::1".parse().unwrap())
                .is_ok()
        );
    }
}
