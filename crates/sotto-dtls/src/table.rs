//! The session table: who is connected, which limits hold, and which timer
//! fires next. Pure bookkeeping with time passed in, so the limits and
//! expiry rules are tested without sockets or OpenSSL.

use super::bridge::DeviceSessionId;
use super::config::Limits;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// OpenSSL's retransmission timer for the session's last flight.
    Retransmit,
    /// The handshake deadline.
    Handshake,
    /// The idle timeout of an established session.
    Idle,
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
    retransmit_at: Option<Instant>,
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
    handshaking: usize,
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
        if self.handshaking >= self.limits.max_handshakes {
            return Err(Refusal::Handshakes);
        }
        if self.per_ip.get(&peer.ip()).copied().unwrap_or(0) >= self.limits.max_per_ip {
            return Err(Refusal::PerIp);
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

    pub fn peer_of(&self, id: DeviceSessionId) -> Option<SocketAddr> {
        self.by_id.get(&id).copied()
    }

    /// The handshake finished: the idle clock starts.
    pub fn mark_established(&mut self, peer: &SocketAddr, now: Instant) {
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
    pub fn set_retransmit(&mut self, peer: &SocketAddr, at: Option<Instant>) {
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

    pub fn remove(&mut self, peer: SocketAddr) -> Option<Entry<T>> {
        let e = self.entries.remove(&peer)?;
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
    pub fn next_due(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(t)| t.at)
    }

    /// Pops the next timer that is due and still means something.
    pub fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, TimerKind)> {
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

    pub fn handshaking(&self) -> usize {
        self.handshaking
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
}
