//! Direct messages: live delivery, durable storage, and replay.
//!
//! Compat messages between compat users take a fast path: a map look-up
//! and a non-blocking push, nothing stored (as in QMessageServer). A
//! message is stored when it must be: its recipient is offline, or has a
//! native session (which shows ids and history), or it was sent with the
//! native protocol (acknowledged only once durable).
//!
//! Storing takes the recipient's stripe lock and re-checks who is online;
//! coming online takes the same lock, replays what is stored, then
//! attaches. So a message is either stored before the replay reads it or
//! finds the user online after it: nothing falls between, and stored
//! messages always precede live ones.

use super::event::{Event, Failure, Relayed, Shared, UserList};
use super::{Hub, Live, Protocol};
use crate::auth::UserId;
use crate::auth::throttle::retry_after_secs;
use crate::hub::conn::{ConnId, Outbound};
use crate::ports::{Inserted, NewMessage, StoredMessage, UserProfile};
use crate::untrusted::LogBudget;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 256;
/// Stored messages are replayed in batches of this many.
const REPLAY_BATCH: u32 = 256;
/// How long a replay waits for room in the recipient's queue.
const REPLAY_PATIENCE: Duration = Duration::from_secs(10);

/// A fixed set of async locks, one chosen per user by hash: bounded memory
/// without per-user lock bookkeeping, at the price of rare false sharing.
pub(super) struct Stripes {
    locks: Box<[Mutex<()>]>,
    hasher: RandomState,
}

impl Stripes {
    pub(super) fn new() -> Stripes {
        Stripes {
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }

    pub(super) async fn lock(&self, user: &UserId) -> MutexGuard<'_, ()> {
        let i = (self.hasher.hash_one(user) as usize) % self.locks.len();
        self.locks[i].lock().await
    }
}

/// A message the hub accepted: stored, or relayed live (compat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Accepted {
    /// The stored message's id; 0 for a compat relay, which has none.
    pub(super) seq: i64,
    /// Whether a live connection of the recipient got it.
    pub(super) delivered: bool,
    /// The sender had already sent this `client_id`: nothing new stored.
    pub(super) duplicate: bool,
}

impl Accepted {
    const RELAYED: Accepted = Accepted {
        seq: 0,
        delivered: true,
        duplicate: false,
    };
}

/// A message on its way in.
pub(super) struct Outgoing<'a> {
    pub(super) sender: &'a UserId,
    pub(super) target: &'a UserId,
    pub(super) body: &'a str,
    /// Native sends carry one; a repeat of it is answered, not stored.
    pub(super) client_id: Option<&'a str>,
    /// The native connection it came from, which is not echoed the message.
    pub(super) origin: Option<ConnId>,
}

impl Hub {
    /// Routes a compat Message: relayed live when every connection of the
    /// target speaks compat, stored otherwise. Sender and body are moved
    /// into the relayed event, not copied.
    pub(super) async fn deliver_compat(
        &self,
        sender: UserId,
        target: &UserId,
        body: String,
    ) -> Result<Accepted, Failure> {
        self.admit_send(&sender, &body)?;
        let started = Instant::now();
        let relayed = Box::new(Relayed { sender, body });
        let result = self.route_compat(relayed, target).await;
        self.count(started, result.as_ref().is_ok_and(|a| a.delivered));
        result
    }

    async fn route_compat(
        &self,
        relayed: Box<Relayed>,
        target: &UserId,
    ) -> Result<Accepted, Failure> {
        let Err(relayed) = self.relay(target, relayed) else {
            return Ok(Accepted::RELAYED);
        };
        let _turn = self.stripes.lock(target).await;
        let Err(relayed) = self.relay(target, relayed) else {
            return Ok(Accepted::RELAYED);
        };
        let outgoing = Outgoing {
            sender: &relayed.sender,
            target,
            body: &relayed.body,
            client_id: None,
            origin: None,
        };
        self.store_and_fan_out(outgoing).await
    }

    /// The per-user send limits (see `send_limit`), checked before any
    /// routing or storing, so a refused flood costs a map look-up each.
    fn admit_send(&self, sender: &UserId, body: &str) -> Result<(), Failure> {
        let Err(wait) = self.senders.admit(sender, body.len()) else {
            return Ok(());
        };
        crate::metrics::bump(&self.metrics.sends_rate_limited);
        // A flooding sender triggers this at will: bounded lines.
        static BUDGET: LogBudget = LogBudget::new(10);
        if let Some(suppressed) = BUDGET.allow() {
            tracing::warn!(user = %sender, suppressed, "send refused: per-user send limit");
        }
        Err(Failure::SendLimited {
            retry_after_secs: retry_after_secs(wait),
        })
    }

    /// Counts a routed message and how long routing took.
    pub(super) fn count(&self, started: Instant, delivered: bool) {
        let m = &self.metrics;
        m.messages_routed.fetch_add(1, Ordering::Relaxed);
        if delivered {
            m.messages_delivered.fetch_add(1, Ordering::Relaxed);
        }
        m.route_latency.observe(started.elapsed());
    }

    /// Routes a native or device send: durable first, then fanned out. A
    /// repeated `client_id` is not counted again.
    pub(super) async fn deliver_stored(&self, outgoing: Outgoing<'_>) -> Result<Accepted, Failure> {
        self.admit_send(outgoing.sender, outgoing.body)?;
        let started = Instant::now();
        let _turn = self.stripes.lock(outgoing.target).await;
        let result = self.store_and_fan_out(outgoing).await;
        match result {
            Ok(a) if a.duplicate => {}
            Ok(a) => self.count(started, a.delivered),
            Err(_) => self.count(started, false),
        }
        result
    }

    /// The fast path: if every live connection of `target` speaks compat
    /// (there is at most one), push the message to them. It comes back as
    /// `Err` when the target is offline, has another connection, or no
    /// push succeeded, so the caller can store it instead.
    fn relay(&self, target: &UserId, relayed: Box<Relayed>) -> Result<(), Box<Relayed>> {
        let conns = self.conns_of(target);
        let Some((last, others)) = conns.split_last() else {
            return Err(relayed);
        };
        if conns.iter().any(|l| l.protocol != Protocol::Compat) {
            return Err(relayed);
        }
        let mut any = false;
        for l in others {
            any |= self.push_or_detach(target, l, Event::Relayed(relayed.clone()));
        }
        let Err((_, event)) = last.out.offer(Event::Relayed(relayed)) else {
            return Ok(());
        };
        // Too slow (it is being closed) or already gone.
        self.detach(target, last.out.id());
        match event {
            Event::Relayed(relayed) if !any => Err(relayed),
            _ => Ok(()),
        }
    }

    /// Stores the message (the caller holds the target's stripe lock) and
    /// pushes it to the recipient's connections and the sender's other
    /// native ones.
    async fn store_and_fan_out(&self, o: Outgoing<'_>) -> Result<Accepted, Failure> {
        let online = !self.conns_of(o.target).is_empty();
        if !online {
            self.check_recipient(o.target).await?;
        }
        let now = self.now_ms();
        let new = NewMessage {
            sender: o.sender,
            recipient: o.target,
            body: o.body,
            client_id: o.client_id,
            sent_at: now,
            delivered_at: online.then_some(now),
        };
        let message = match self
            .store
            .insert_message(&new, self.config.offline_queue_max)
            .await
        {
            Ok(Inserted::Stored(m)) => m,
            Ok(Inserted::Duplicate(m)) => {
                let delivered = m.delivered_at.is_some();
                return Ok(Accepted {
                    seq: m.seq,
                    delivered,
                    duplicate: true,
                });
            }
            Ok(Inserted::QueueFull) => {
                tracing::warn!(to = %o.target, "offline queue full, message refused");
                return Err(Failure::QueueFull);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store message");
                return Err(Failure::NotStored);
            }
        };
        self.metrics.messages_stored.fetch_add(1, Ordering::Relaxed);
        Ok(self.fan_out_stored(message, online, o.origin).await)
    }

    /// An offline recipient must at least exist.
    async fn check_recipient(&self, target: &UserId) -> Result<(), Failure> {
        match self.store.user_exists(target).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failure::UnknownUser),
            Err(e) => {
                tracing::error!(error = %e, "cannot look up recipient");
                Err(Failure::NotStored)
            }
        }
    }

    /// Fans a freshly stored message out; if the recipient was online but
    /// every push failed, it goes back to the queue for their next
    /// connection.
    async fn fan_out_stored(
        &self,
        message: StoredMessage,
        online: bool,
        origin: Option<ConnId>,
    ) -> Accepted {
        let (row, seq) = (message.row, message.seq);
        let delivered = self.fan_out(&Shared::new(message), origin);
        if online
            && !delivered
            && let Err(e) = self.store.mark_undelivered(row).await
        {
            tracing::error!(error = %e, "cannot requeue message");
        }
        Accepted {
            seq,
            delivered,
            duplicate: false,
        }
    }

    /// Pushes a stored message to every connection of its recipient and to
    /// the sender's native connections other than `origin`, all sharing
    /// one value (and so one encoding per protocol). Returns whether a
    /// recipient connection took it.
    fn fan_out(&self, m: &Arc<Shared<StoredMessage>>, origin: Option<ConnId>) -> bool {
        let mut delivered = false;
        for l in self.conns_of(&m.recipient) {
            delivered |= self.push_or_detach(&m.recipient, &l, Event::Message(m.clone()));
        }
        if m.sender != m.recipient {
            for l in self.conns_of(&m.sender) {
                if l.protocol == Protocol::Native && Some(l.out.id()) != origin {
                    self.push_or_detach(&m.sender, &l, Event::Message(m.clone()));
                }
            }
        }
        delivered
    }

    fn push_or_detach(&self, user: &UserId, l: &Live, event: Event) -> bool {
        if l.out.push(event).is_ok() {
            return true;
        }
        // Too slow (it is being closed) or already gone.
        self.detach(user, l.out.id());
        false
    }

    /// Replays `user`'s undelivered messages into `out`, oldest first,
    /// marking each batch delivered once queued and telling the senders.
    /// The caller holds the user's stripe lock. Returns false if the
    /// connection went away (what was not queued stays for next time).
    pub(super) async fn replay_undelivered(&self, out: &Outbound, user: &UserId) -> bool {
        loop {
            let batch = match self.store.undelivered(user, REPLAY_BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read stored messages");
                    return true;
                }
            };
            if batch.is_empty() {
                return true;
            }
            let total = batch.len();
            let mut queued = Vec::with_capacity(total);
            for m in batch {
                let m = Shared::new(m);
                if out
                    .push_wait(Event::Message(m.clone()), REPLAY_PATIENCE)
                    .await
                    .is_err()
                {
                    break;
                }
                queued.push(m);
            }
            if !self.replayed(&queued).await {
                return false;
            }
            if queued.len() < total {
                return false;
            }
        }
    }

    /// Marks a replayed batch delivered and tells the senders; false if
    /// the store refused.
    async fn replayed(&self, queued: &[Arc<Shared<StoredMessage>>]) -> bool {
        let rows: Vec<i64> = queued.iter().map(|m| m.row).collect();
        if let Err(e) = self.store.mark_delivered(&rows, self.now_ms()).await {
            tracing::error!(error = %e, "cannot mark replayed messages delivered");
            return false;
        }
        for m in queued {
            self.tell_delivered(m);
        }
        let n = u64::try_from(queued.len()).unwrap_or(u64::MAX);
        self.metrics
            .messages_delivered
            .fetch_add(n, Ordering::Relaxed);
        true
    }

    /// A `delivered` receipt to the sender's native connections.
    fn tell_delivered(&self, m: &Arc<Shared<StoredMessage>>) {
        for l in self.conns_of(&m.sender) {
            if l.protocol == Protocol::Native {
                self.push_or_detach(&m.sender, &l, Event::Delivered(m.clone()));
            }
        }
    }

    /// The online users (at most `user_list_max`), `first` leading if
    /// given and `except` left out.
    pub(super) fn user_list(
        &self,
        first: Option<&Arc<UserProfile>>,
        except: Option<&UserId>,
    ) -> UserList {
        let max = self.config.user_list_max;
        let mut profiles: Vec<Arc<UserProfile>> = first.into_iter().cloned().collect();
        {
            let map = self.online_map();
            let others = map
                .values()
                .filter(|o| first.is_none_or(|p| p.id != o.profile.id))
                .filter(|o| except != Some(&o.profile.id))
                .map(|o| o.profile.clone());
            profiles.extend(others.take(max.saturating_sub(profiles.len())));
        }
        profiles.truncate(max);
        UserList(profiles)
    }
}
