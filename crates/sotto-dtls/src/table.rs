//! The session table: who is connected, which limits hold, and which timer
//! fires next. Pure bookkeeping with time passed in, so the limits and
//! expiry rules are tested without sockets or OpenSSL.
//!
//! An established entry may also carry one *pending* handshake: a verified
//! ClientHello from the same address (a device that restarted, or a
//! spoofer). It counts as a handshake in progress and has its own deadline;
//! the entry stays established until the new handshake completes
//! ([`promote_pending`](Table::promote_pending)).

use super::bridge::DeviceSessionId;
use super::config::Limits;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// OpenSSL's retransmission timer for the session's last flight.
    Retransmit,
    /// The handshake deadline.
    Handshake,
    /// The idle timeout of an established session.
    Idle,
    /// The deadline of a pending handshake beside an established session.
    PendingHandshake,
}

/// Which limit turned a peer away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Sessions,
    Handshakes,
    PerIp,
}

pub struct Entry<T> {
    pub id: DeviceSessionId,
    pub peer: SocketAddr,
    pub handshaking: bool,
    pub last_seen: Instant,
    /// The retransmission timer of whichever handshake runs: the entry's
    /// own, or the pending one beside an established session.
    retransmit_at: Option<Instant>,
    /// Deadline of the pending handshake, if one runs.
    pending_until: Option<Instant>,
    pub value: T,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Instant,
    id: DeviceSessionId,
    kind: TimerKind,
    peer: SocketAddr,
}

pub struct Table<T> {
    entries: HashMap<SocketAddr, Entry<T>>,
    by_id: HashMap<DeviceSessionId, SocketAddr>,
    per_ip: HashMap<IpAddr, usize>,
    /// Entries still handshaking.
    handshaking: usize,
    /// Pending handshakes beside established entries.
    pending: usize,
    limits: Limits,
    next_id: u64,
    /// Soonest first; entries for sessions that moved on are skipped when
    /// popped (lazy deletion keeps every update O(log n)).
    timers: BinaryHeap<Reverse<Timer>>,
}

impl<T> Table<T> {
    pub fn new(limits: Limits) -> Table<T> {
        Table {
            entries: HashMap::new(),
            by_id: HashMap::new(),
            per_ip: HashMap::new(),
            handshaking: 0,
            pending: 0,
            limits,
            next_id: 1,
            timers: BinaryHeap::new(),
        }
    }

    /// Whether a new session from `peer` fits every limit.
    pub fn admit(&self, peer: SocketAddr) -> Result<(), Refusal> {
        if self.entries.len() >= self.limits.max_sessions {
            return Err(Refusal::Sessions);
        }
        self.admit_handshake()?;
        if self.per_ip.get(&peer.ip()).copied().unwrap_or(0) >= self.limits.max_per_ip {
            return Err(Refusal::PerIp);
        }
        Ok(())
    }

    /// Whether one more handshake (new or pending) fits.
    pub(crate) fn admit_handshake(&self) -> Result<(), Refusal> {
        if self.handshaking + self.pending >= self.limits.max_handshakes {
            return Err(Refusal::Handshakes);
        }
        Ok(())
    }

    /// Adds a handshaking session (the caller checked [`admit`](Self::admit)).
    pub fn insert(&mut self, peer: SocketAddr, value: T, now: Instant) -> DeviceSessionId {
        let id = DeviceSessionId(self.next_id);
        self.next_id += 1;
        if let Some(old) = self.remove(peer) {
            drop(old);
        }
        self.entries.insert(
            peer,
            Entry {
                id,
                peer,
                handshaking: true,
                last_seen: now,
                retransmit_at: None,
                pending_until: None,
                value,
            },
        );
        self.by_id.insert(id, peer);
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        self.handshaking += 1;
        self.push(
            now + self.limits.handshake_timeout,
            id,
            TimerKind::Handshake,
            peer,
        );
        id
    }

    pub fn get_mut(&mut self, peer: &SocketAddr) -> Option<&mut Entry<T>> {
        self.entries.get_mut(peer)
    }

    pub(crate) fn peer_of(&self, id: DeviceSessionId) -> Option<SocketAddr> {
        self.by_id.get(&id).copied()
    }

    /// The handshake finished: the idle clock starts.
    pub(crate) fn mark_established(&mut self, peer: &SocketAddr, now: Instant) {
        let idle = self.limits.idle_timeout;
        let Some(e) = self.entries.get_mut(peer) else {
            return;
        };
        if !e.handshaking {
            return;
        }
        e.handshaking = false;
        e.retransmit_at = None;
        e.last_seen = now;
        let id = e.id;
        self.handshaking -= 1;
        self.push(now + idle, id, TimerKind::Idle, *peer);
    }

    /// Arms (or re-arms) the retransmission timer; `None` disarms it.
    pub(crate) fn set_retransmit(&mut self, peer: &SocketAddr, at: Option<Instant>) {
        let Some(e) = self.entries.get_mut(peer) else {
            return;
        };
        // OpenSSL's deadline is fixed; "now + time left" only jitters by
        // microseconds. Re-arming for that would let a chatty peer grow the
        // heap by one stale entry per datagram.
        let close = |a: Instant, b: Instant| {
            a.max(b).duration_since(a.min(b)) < std::time::Duration::from_millis(2)
        };
        match (e.retransmit_at, at) {
            (Some(old), Some(new)) if close(old, new) => return,
            (None, None) => return,
            _ => {}
        }
        e.retransmit_at = at;
        let id = e.id;
        if let Some(at) = at {
            self.push(at, id, TimerKind::Retransmit, *peer);
        }
    }

    /// Starts (or restarts) the deadline of a pending handshake beside the
    /// established session at `peer`; false if there is no such session.
    /// The caller checked [`admit_handshake`](Self::admit_handshake) unless
    /// one was already pending (it replaces that one).
    pub(crate) fn start_pending(&mut self, peer: &SocketAddr, now: Instant) -> bool {
        let at = now + self.limits.handshake_timeout;
        let Some(e) = self.entries.get_mut(peer) else {
            return false;
        };
        if e.handshaking {
            return false;
        }
        if e.pending_until.replace(at).is_none() {
            self.pending += 1;
        }
        e.retransmit_at = None;
        let id = e.id;
        self.push(at, id, TimerKind::PendingHandshake, *peer);
        true
    }

    /// The pending handshake at `peer` failed or timed out.
    pub(crate) fn end_pending(&mut self, peer: &SocketAddr) {
        let Some(e) = self.entries.get_mut(peer) else {
            return;
        };
        if e.pending_until.take().is_some() {
            self.pending -= 1;
            e.retransmit_at = None;
        }
    }

    /// The pending handshake at `peer` completed: the entry becomes that
    /// new session, with a new id and a fresh idle clock. Returns the old
    /// id (its timers are stale from now on).
    pub(crate) fn promote_pending(
        &mut self,
        peer: &SocketAddr,
        now: Instant,
    ) -> Option<DeviceSessionId> {
        let id = DeviceSessionId(self.next_id);
        let idle = self.limits.idle_timeout;
        let e = self.entries.get_mut(peer)?;
        e.pending_until.take()?;
        self.next_id += 1;
        self.pending -= 1;
        let old = std::mem::replace(&mut e.id, id);
        e.retransmit_at = None;
        e.last_seen = now;
        self.by_id.remove(&old);
        self.by_id.insert(id, *peer);
        self.push(now + idle, id, TimerKind::Idle, *peer);
        Some(old)
    }

    pub(crate) fn has_pending(&self, peer: &SocketAddr) -> bool {
        self.entries
            .get(peer)
            .is_some_and(|e| e.pending_until.is_some())
    }

    pub fn remove(&mut self, peer: SocketAddr) -> Option<Entry<T>> {
        let e = self.entries.remove(&peer)?;
        if e.pending_until.is_some() {
            self.pending -= 1;
        }
        self.by_id.remove(&e.id);
        if let Some(n) = self.per_ip.get_mut(&peer.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&peer.ip());
            }
        }
        if e.handshaking {
            self.handshaking -= 1;
        }
        Some(e)
    }

    /// The soonest timer, possibly one that turns out to be stale.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(t)| t.at)
    }

    /// Pops the next timer that is due and still means something.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, TimerKind)> {
        let idle = self.limits.idle_timeout;
        while self.timers.peek().is_some_and(|Reverse(t)| t.at <= now) {
            let Reverse(t) = self.timers.pop()?;
            let Some(e) = self.entries.get_mut(&t.peer) else {
                continue;
            };
            if e.id != t.id {
                continue;
            }
            match t.kind {
                TimerKind::Handshake if e.handshaking => return Some((t.peer, t.kind)),
                TimerKind::PendingHandshake if e.pending_until == Some(t.at) => {
                    return Some((t.peer, t.kind));
                }
                TimerKind::Retransmit if e.retransmit_at == Some(t.at) => {
                    e.retransmit_at = None;
                    return Some((t.peer, t.kind));
                }
                TimerKind::Idle if !e.handshaking => {
                    let expires = e.last_seen + idle;
                    if expires <= now {
                        return Some((t.peer, t.kind));
                    }
                    self.push(expires, t.id, TimerKind::Idle, t.peer);
                }
                _ => {}
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Handshakes in progress, pending ones included.
    pub fn handshaking(&self) -> usize {
        self.handshaking + self.pending
    }

    /// Established sessions (with or without a pending handshake).
    pub fn established(&self) -> usize {
        self.entries.len() - self.handshaking
    }

    pub fn peers(&self) -> Vec<SocketAddr> {
        self.entries.keys().copied().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry<T>> {
        self.entries.values()
    }

    fn push(&mut self, at: Instant, id: DeviceSessionId, kind: TimerKind, peer: SocketAddr) {
        self.timers.push(Reverse(Timer { at, id, kind, peer }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits {
            max_sessions: 3,
            max_handshakes: 2,
            max_per_ip: 2,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limits_hold_and_free_up() {
        let now = Instant::now();
        let mut t: Table<()> = Table::new(limits());
        let a = peer("10.0.0.1:1");
        t.insert(a, (), now);
        t.insert(peer("10.0.0.1:2"), (), now);
        assert_eq!(t.admit(peer("10.0.0.2:1")), Err(Refusal::Handshakes));
        t.mark_established(&a, now);
        assert_eq!(t.admit(peer("10.0.0.1:3")), Err(Refusal::PerIp));
        t.insert(peer("10.0.0.2:1"), (), now);
        t.mark_established(&peer("10.0.0.2:1"), now);
        assert_eq!(t.admit(peer("10.0.0.3:1")), Err(Refusal::Sessions));
        t.remove(a);
        assert_eq!(t.admit(peer("10.0.0.3:1")), Ok(()));
        assert_eq!((t.len(), t.handshaking()), (2, 1));
    }

    #[test]
    fn handshake_deadline_fires_only_while_handshaking() {
        let now = Instant::now();
        let mut t: Table<()> = Table::new(limits());
        let (a, b) = (peer("[::1]:1"), peer("[::1]:2"));
        t.insert(a, (), now);
        t.insert(b, (), now);
        t.mark_established(&b, now);
        assert_eq!(t.pop_due(now + Duration::from_secs(9)), None);
        let later = now + Duration::from_secs(10);
        assert_eq!(t.pop_due(later), Some((a, TimerKind::Handshake)));
        assert_eq!(t.pop_due(later), None);
    }

    #[test]
    fn idle_timer_follows_activity() {
        let now = Instant::now();
        let mut t: Table<()> = Table::new(limits());
        let a = peer("127.0.0.1:5");
        t.insert(a, (), now);
        t.mark_established(&a, now);
        t.get_mut(&a).unwrap().last_seen = now + Duration::from_secs(30);
        assert_eq!(t.pop_due(now + Duration::from_secs(60)), None);
        assert_eq!(
            t.pop_due(now + Duration::from_secs(90)),
            Some((a, TimerKind::Idle))
        );
    }

    #[test]
    fn retransmit_timer_can_be_rearmed_and_stale_ones_are_skipped() {
        let now = Instant::now();
        let mut t: Table<()> = Table::new(limits());
        let a = peer("127.0.0.1:5");
        t.insert(a, (), now);
        t.set_retransmit(&a, Some(now + Duration::from_secs(1)));
        t.set_retransmit(&a, Some(now + Duration::from_secs(2)));
        assert_eq!(t.pop_due(now + Duration::from_secs(1)), None);
        assert_eq!(
            t.pop_due(now + Duration::from_secs(2)),
            Some((a, TimerKind::Retransmit))
        );
        // A session replaced at the same address does not inherit timers.
        t.set_retransmit(&a, Some(now + Duration::from_secs(3)));
        t.remove(a);
        t.insert(a, (), now);
        assert_eq!(t.pop_due(now + Duration::from_secs(3)), None);
    }

    #[test]
    fn a_pending_handshake_counts_times_out_and_leaves_the_session() {
        let now = Instant::now();
        let mut t: Table<()> = Table::new(limits());
        let (a, b) = (peer("10.0.0.1:1"), peer("10.0.0.2:1"));
        t.insert(a, (), now);
        assert!(
            !t.start_pending(&a, now),
            "only beside an established session"
        );
        t.mark_established(&a, now);
        t.insert(b, (), now);
        assert!(t.start_pending(&a, now));
        assert!(t.has_pending(&a));
        assert_eq!((t.handshaking(), t.established()), (2, 1));
        assert_eq!(t.admit_handshake(), Err(Refusal::Handshakes));
        // Restarting it (a newer hello replaced it) counts it once.
        t.start_pending(&a, now + Duration::from_secs(1));
        assert_eq!(t.handshaking(), 2);
        let due = t.pop_due(now + Duration::from_secs(10));
        assert_eq!(due, Some((b, TimerKind::Handshake)));
        assert_eq!(t.pop_due(now + Duration::from_secs(10)), None);
        assert_eq!(
            t.pop_due(now + Duration::from_secs(11)),
            Some((a, TimerKind::PendingHandshake))
        );
        t.end_pending(&a);
        t.remove(b);
        assert_eq!((t.handshaking(), t.established(), t.len()), (0, 1, 1));
        assert!(!t.has_pending(&a));
    }

    #[test]
    fn a_promoted_handshake_takes_a_new_id_and_idle_clock() {
        let now = Instant::now();
        let mut t: Table<()> = Table::new(limits());
        let a = peer("10.0.0.1:1");
        let first = t.insert(a, (), now);
        t.mark_established(&a, now);
        t.start_pending(&a, now + Duration::from_secs(50));
        let later = now + Duration::from_secs(55);
        assert_eq!(t.promote_pending(&a, later), Some(first));
        assert_eq!(t.promote_pending(&a, later), None);
        assert_eq!(t.peer_of(first), None);
        let second = t.get_mut(&a).unwrap().id;
        assert_ne!(second, first);
        assert_eq!(t.peer_of(second), Some(a));
        assert_eq!((t.handshaking(), t.established()), (0, 1));
        // Neither the old idle timer nor the pending deadline fires.
        assert_eq!(t.pop_due(now + Duration::from_secs(110)), None);
        assert_eq!(
            t.pop_due(later + Duration::from_secs(60)),
            Some((a, TimerKind::Idle))
        );
    }
}
