//! The broker port: how nodes sharing one database tell each other what
//! happened.
//!
//! The database is the truth; the broker only announces. Every
//! announcement is a hint that something in the store changed (or that a
//! socket somewhere must close), so losing one costs latency, never data:
//! a node that missed "user U has entries up to P" finds them at the next
//! announcement for U or at its periodic check of the store's heads.
//! That is what lets the NATS implementation use core NATS, which
//! delivers at most once.
//!
//! Two implementations: [`LocalBroker`] (the default: one node, nothing
//! crosses) here, and NATS in `sotto-broker-nats`. Each hub has a node id
//! of its own and ignores announcements carrying it.

pub mod wire;

use crate::auth::{TokenHash, UserId};
use crate::ports::UserProfile;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// A node's id: random per hub, so two nodes started from one config
/// file (or two hubs in one test process) still differ.
pub type NodeId = u64;

/// What one node tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// User `user` has new inbox entries up to position `up_to`.
    Inbox { user: UserId, up_to: i64 },
    /// These users came online on the sending node.
    Online { users: Vec<Arc<UserProfile>> },
    /// Part `part` of the list of every user online on the sending node,
    /// the answer to a [`Hello`](Self::Hello): once the `last` part is in,
    /// it replaces what the receiver knew of that node.
    Snapshot {
        part: u32,
        last: bool,
        users: Vec<Arc<UserProfile>>,
    },
    /// These users' last connection on the sending node went.
    Offline { users: Vec<UserId> },
    /// The sending node is alive and has `users` users online, whose ids
    /// make [`digest`]: a receiver whose view of the node differs (an
    /// announcement was lost) asks it for a snapshot.
    Alive { users: u64, digest: u64 },
    /// The sending node has just (re)joined (`to` is None; every node
    /// answers with a [`Snapshot`](Self::Snapshot) and checks its users'
    /// inboxes), or wants node `to`'s snapshot.
    Hello { to: Option<NodeId> },
    /// A session was revoked: close every socket opened with it.
    Revoked { session: TokenHash },
    /// A user's public key changed (the new profile).
    KeyChanged { profile: Arc<UserProfile> },
    /// A user's device set changed: re-read it from the store.
    DevicesChanged { user: UserId },
    /// `user` logged in on the sending node's compat port: close their
    /// compat socket anywhere else (QMessageServer allows one).
    CloseCompat { user: UserId },
}

/// An announcement with the node that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub node: NodeId,
    pub announcement: Announcement,
}

/// An order-free digest of a set of user ids (XOR of their FNV-1a
/// hashes): the same on every node and every build, and cheap to keep up
/// to date one id at a time.
pub fn digest_of<'a>(ids: impl IntoIterator<Item = &'a UserId>) -> u64 {
    ids.into_iter().fold(0, |d, id| d ^ id_hash(id))
}

/// FNV-1a of a user id.
pub fn id_hash(id: &UserId) -> u64 {
    id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What the hub receives from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Another node's announcement.
    Announcement(Envelope),
    /// The link to the other nodes is back after a loss: whatever was
    /// announced meanwhile is gone, so the hub catches its users up from
    /// the store and says hello again.
    Reconnected,
}

/// Whether the broker can reach the other nodes, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerState {
    /// Single node: there is nobody to reach.
    Local,
    Connected,
    /// Why not, in one line.
    Disconnected(String),
}

/// Counters every implementation keeps, for `/metrics`.
#[derive(Debug, Default)]
pub struct BrokerStats {
    pub published: AtomicU64,
    pub received: AtomicU64,
    /// Not sent (disconnected, or the outgoing queue full) or not decoded.
    pub dropped: AtomicU64,
}

impl BrokerStats {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (published, received, dropped)
    pub fn read(&self) -> (u64, u64, u64) {
        (
            self.published.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// The broker port.
pub trait Broker: Send + Sync + 'static {
    /// Queues an announcement for the other nodes. Never waits: an
    /// announcement that cannot go out at once is dropped and counted
    /// (the store has what it announces).
    fn publish(&self, envelope: Envelope);
    /// The other nodes' announcements. Called once, by the hub; later
    /// calls get a receiver that never yields.
    fn subscribe(&self) -> mpsc::Receiver<Incoming>;
    fn state(&self) -> BrokerState;
    fn stats(&self) -> &BrokerStats;
}

/// One node on its own: nothing is sent, nothing arrives.
#[derive(Debug, Default)]
pub struct LocalBroker {
    stats: BrokerStats,
}

impl Broker for LocalBroker {
    fn publish(&self, _envelope: Envelope) {}

    fn subscribe(&self) -> mpsc::Receiver<Incoming> {
        // The sender is dropped at once: the receiver ends immediately.
        mpsc::channel(1).1
    }

    fn state(&self) -> BrokerState {
        BrokerState::Local
    }

    fn stats(&self) -> &BrokerStats {
        &self.stats
    }
}
