//! The chat port's unauthenticated sockets, shared fairly between client
//! addresses.
//!
//! Every in-band-login socket holds a slot from accept until it logs in,
//! at most `per_ip` per address (IPv6 per /64) and `total` in all. Counting
//! alone is first come, first served: 64 addresses reopening 32 sockets
//! each the moment the login deadline closes them keep every slot taken,
//! and a real user's socket is dropped at accept (issue 13, finding 8:
//! 1 of 70 logins got through in 35 s). So when the pool is full, a
//! newcomer whose address holds **fewer** slots than the address holding
//! the most takes that address's oldest slot: the victim is closed with
//! 1008, like a socket that missed its login deadline. A newcomer from an
//! address that already holds as many as anyone is refused, as before.
//!
//! What this guarantees: after an eviction the newcomer's address holds no
//! more than the victim's, so shares only move towards equal. An address
//! holding no slot always gets one. A socket is taken only from an address
//! holding the most, oldest first, so a user's single socket is at risk
//! only when no address holds more than one and every older socket went
//! first: crowding logins out again takes as many addresses as there are
//! slots, reopening sockets faster than a login completes. Reconnecting
//! harder from a few addresses does not help: an evicted address comes
//! back below the top share and so takes from the largest holder, one of
//! its own kind.
//!
//! Finding the largest holder scans the addresses holding slots (at most
//! `total`), only when the pool is full, under a mutex never held across
//! an `.await`.

use super::limits::{LimitHit, prefix};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The pool of unauthenticated slots.
#[derive(Debug)]
pub struct Anonymous {
    per_ip: usize,
    total: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// Per address: its slots by age (the id grows with every admission),
    /// each with the token that evicts it.
    by_ip: HashMap<IpAddr, BTreeMap<u64, CancellationToken>>,
    total: usize,
    next_id: u64,
}

/// One held slot. Dropping it gives the slot back; [`AnonSlot::evicted`]
/// completes when a newcomer took it, and the socket should then close.
#[derive(Debug)]
pub struct AnonSlot {
    owner: Arc<Anonymous>,
    key: IpAddr,
    id: u64,
    evicted: CancellationToken,
}

/// A slot granted, and the address whose oldest socket made room for it.
#[derive(Debug)]
pub struct Admission {
    pub slot: AnonSlot,
    pub evicted_from: Option<IpAddr>,
}

impl Anonymous {
    /// `per_ip` 0 means no per-address limit (the fair share still holds).
    pub fn new(per_ip: u32, total: usize) -> Arc<Anonymous> {
        let per_ip = usize::try_from(per_ip).unwrap_or(usize::MAX);
        Arc::new(Anonymous {
            per_ip: if per_ip == 0 { usize::MAX } else { per_ip },
            total: total.max(1),
            held: Mutex::new(Held::default()),
        })
    }

    /// A slot for a socket from `ip`, taking the oldest slot of the largest
    /// holder if the pool is full and `ip` holds fewer than it.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, LimitHit> {
        let key = prefix(ip);
        let (slot, evicted) = {
            let mut held = self.lock();
            let mine = held.count(&key);
            if mine >= self.per_ip {
                return Err(LimitHit::PerIp);
            }
            let mut evicted = None;
            if held.total >= self.total {
                evicted = Some(held.evict_from_largest(mine).ok_or(LimitHit::Total)?);
            }
            (held.insert(self, key), evicted)
        };
        // Cancelled outside the lock: it wakes the victim's task.
        let evicted_from = evicted.map(|(ip, token)| {
            token.cancel();
            ip
        });
        Ok(Admission { slot, evicted_from })
    }

    /// Slots held right now.
    pub fn held(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // Only counters and tokens live here; after a panic elsewhere they
        // are still consistent, so keep counting.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Held {
    fn count(&self, key: &IpAddr) -> usize {
        self.by_ip.get(key).map_or(0, BTreeMap::len)
    }

    /// Removes the oldest slot of the address holding the most, if it holds
    /// more than `mine`; among equals, the address with the oldest slot.
    fn evict_from_largest(&mut self, mine: usize) -> Option<(IpAddr, CancellationToken)> {
        let (victim, _) = self
            .by_ip
            .iter()
            .filter(|(_, slots)| slots.len() > mine)
            .filter_map(|(ip, slots)| Some((*ip, (slots.len(), *slots.keys().next()?))))
            .max_by(|(_, (n1, oldest1)), (_, (n2, oldest2))| {
                n1.cmp(n2).then(oldest2.cmp(oldest1))
            })?;
        let token = self.remove_first(victim)?;
        Some((victim, token))
    }

    fn remove_first(&mut self, key: IpAddr) -> Option<CancellationToken> {
        let slots = self.by_ip.get_mut(&key)?;
        let (_, token) = slots.pop_first()?;
        if slots.is_empty() {
            self.by_ip.remove(&key);
        }
        self.total = self.total.saturating_sub(1);
        Some(token)
    }

    fn insert(&mut self, owner: &Arc<Anonymous>, key: IpAddr) -> AnonSlot {
        let id = self.next_id;
        self.next_id += 1;
        let evicted = CancellationToken::new();
        self.by_ip
            .entry(key)
            .or_default()
            .insert(id, evicted.clone());
        self.total += 1;
        AnonSlot {
            owner: owner.clone(),
            key,
            id,
            evicted,
        }
    }
}

impl AnonSlot {
    /// Completes once a newcomer has taken this slot.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.evicted.cancelled()
    }
}

impl Drop for AnonSlot {
    fn drop(&mut self) {
        let mut held = self.owner.lock();
        let Some(slots) = held.by_ip.get_mut(&self.key) else {
            return;
        };
        // An evicted slot was already removed (and counted) by its evictor.
        if slots.remove(&self.id).is_none() {
            return;
        }
        if slots.is_empty() {
            held.by_ip.remove(&self.key);
        }
        held.total = held.total.saturating_sub(1);
    }
}

/// Completes when `slot` is evicted; never for a socket without one.
pub(crate) async fn evicted(slot: Option<&AnonSlot>) {
    match slot {
        Some(s) => s.evicted().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn take(pool: &Arc<Anonymous>, a: &str) -> Result<Admission, LimitHit> {
        pool.try_acquire(ip(a))
    }

    fn is_evicted(slot: &AnonSlot) -> bool {
        slot.evicted.is_cancelled()
    }

    #[test]
    fn per_ip_and_total_limits_hold_and_slots_come_back() {
        let pool = Anonymous::new(2, 3);
        let s1 = take(&pool, "10.0.0.1").unwrap().slot;
        let _s2 = take(&pool, "10.0.0.1").unwrap().slot;
        assert_eq!(take(&pool, "10.0.0.1").unwrap_err(), LimitHit::PerIp);
        let _s3 = take(&pool, "10.0.0.2").unwrap().slot;
        assert_eq!(pool.held(), 3);
        drop(s1);
        assert_eq!(pool.held(), 2);
        assert!(take(&pool, "10.0.0.1").is_ok());
    }

    #[test]
    fn a_newcomer_evicts_the_oldest_socket_of_the_largest_holder() {
        let pool = Anonymous::new(10, 4);
        let a: Vec<_> = (0..3).map(|_| take(&pool, "10.0.0.1").unwrap()).collect();
        let b = take(&pool, "10.0.0.2").unwrap().slot;
        let c = take(&pool, "10.0.0.3").unwrap();
        assert_eq!(c.evicted_from, Some(ip("10.0.0.1")));
        assert!(is_evicted(&a[0].slot), "the oldest of the largest holder");
        assert!(!is_evicted(&a[1].slot) && !is_evicted(&b));
        assert_eq!(pool.held(), 4, "the count moved, it did not grow");
        // Dropping the evicted slot later does not give back a second slot.
        drop(a);
        assert_eq!(pool.held(), 2);
    }

    #[test]
    fn the_largest_holder_is_refused_when_full() {
        let pool = Anonymous::new(10, 3);
        let _a: Vec<_> = (0..2).map(|_| take(&pool, "10.0.0.1").unwrap()).collect();
        let b = take(&pool, "10.0.0.2").unwrap().slot;
        // 10.0.0.2 holds 1, 10.0.0.1 holds 2: b's address may take one more.
        let b2 = take(&pool, "10.0.0.2").unwrap();
        assert_eq!(b2.evicted_from, Some(ip("10.0.0.1")));
        // Now 10.0.0.1 holds 1 and 10.0.0.2 holds 2: the largest holder's
        // own newcomers are refused, not given another's slot.
        assert_eq!(take(&pool, "10.0.0.2").unwrap_err(), LimitHit::Total);
        assert!(!is_evicted(&b));
    }

    #[test]
    fn equal_shares_are_never_evicted_by_each_other() {
        let pool = Anonymous::new(10, 4);
        let _a: Vec<_> = (0..2).map(|_| take(&pool, "10.0.0.1").unwrap()).collect();
        let _b: Vec<_> = (0..2).map(|_| take(&pool, "10.0.0.2").unwrap()).collect();
        assert_eq!(take(&pool, "10.0.0.1").unwrap_err(), LimitHit::Total);
        // A third address holding nothing still gets in.
        assert!(take(&pool, "10.0.0.3").is_ok());
    }

    #[test]
    fn one_socket_per_address_is_safe_from_a_many_socket_address() {
        let pool = Anonymous::new(100, 8);
        let legit = take(&pool, "192.0.2.7").unwrap().slot;
        let mut attacker = Vec::new();
        for _ in 0..50 {
            match take(&pool, "10.0.0.1") {
                Ok(a) => attacker.push(a),
                Err(hit) => assert_eq!(hit, LimitHit::Total),
            }
        }
        assert!(!is_evicted(&legit));
        assert_eq!(pool.held(), 8);
    }

    #[tokio::test]
    async fn eviction_wakes_the_socket() {
        let pool = Anonymous::new(10, 1);
        let a = take(&pool, "10.0.0.1").unwrap().slot;
        let _b = take(&pool, "10.0.0.2");
        tokio::time::timeout(std::time::Duration::from_secs(1), evicted(Some(&a)))
            .await
            .expect("evicted");
    }

    #[test]
    fn ipv6_counts_per_64() {
        let pool = Anonymous::new(1, 10);
        let _s = take(&pool, "2001:db8::1").unwrap();
        assert!(take(&pool, "2001:db8::2").is_err());
        assert!(take(&pool, "2001:db8:0:1::1").is_ok());
    }
}
