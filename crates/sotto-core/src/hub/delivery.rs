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

use super::{Hub, Live, Protocol};
use crate::auth::UserId;
use crate::hub::conn::{ConnId, Outbound, TextFrame};
use crate::ports::{Inserted, NewMessage, StoredMessage, UserProfile};
use serde_json::value::RawValue;
use sotto_proto::compat::{self, Event, UserEntry};
use sotto_proto::native::{MessageView, ServerFrame};
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

/// What happened to a direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Pushed to a live connection of the recipient (compat fast path).
    Delivered,
    /// Stored; `live` tells whether a recipient connection got it too.
    Stored,
    UnknownUser,
    QueueFull,
    Failed,
}

/// A native send's result.
pub(super) enum Sent {
    /// Durable; `delivered` if a live recipient connection got it.
    New {
        message: StoredMessage,
        delivered: bool,
    },
    /// The sender already sent this `client_id`.
    Duplicate(StoredMessage),
    Refused(Outcome),
}

impl Hub {
    /// Routes a compat Message.
    pub(super) async fn deliver_compat(
        &self,
        sender: &UserId,
        target: &UserId,
        body: &str,
    ) -> Outcome {
        let started = Instant::now();
        let outcome = self.route_compat(sender, target, body).await;
        self.count(started, outcome == Outcome::Delivered);
        outcome
    }

    async fn route_compat(&self, sender: &UserId, target: &UserId, body: &str) -> Outcome {
        let frame = compat_frame(sender, body);
        if self.push_compat_only(target, &frame) {
            return Outcome::Delivered;
        }
        let _turn = self.stripes.lock(target).await;
        if self.push_compat_only(target, &frame) {
            return Outcome::Delivered;
        }
        match self
            .store_and_fan_out(sender, target, body, None, None)
            .await
        {
            Sent::New {
                delivered: true, ..
            } => Outcome::Delivered,
            Sent::New { .. } | Sent::Duplicate(_) => Outcome::Stored,
            Sent::Refused(o) => o,
        }
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

    /// Routes a native `send`: durable first, then fanned out.
    pub(super) async fn deliver_native(
        &self,
        origin: ConnId,
        sender: &UserId,
        target: &UserId,
        body: &str,
        client_id: &str,
    ) -> Sent {
        let started = Instant::now();
        let _turn = self.stripes.lock(target).await;
        let sent = self
            .store_and_fan_out(sender, target, body, Some(client_id), Some(origin))
            .await;
        if !matches!(sent, Sent::Duplicate(_)) {
            self.count(
                started,
                matches!(
                    sent,
                    Sent::New {
                        delivered: true,
                        ..
                    }
                ),
            );
        }
        sent
    }

    /// The fast path: if every live connection of `target` speaks compat,
    /// push to them and report whether any took it. False when the target
    /// is offline, has a native connection, or every push failed.
    fn push_compat_only(&self, target: &UserId, frame: &TextFrame) -> bool {
        let conns = self.conns_of(target);
        if conns.is_empty() || conns.iter().any(|l| l.protocol != Protocol::Compat) {
            return false;
        }
        let mut any = false;
        for l in conns {
            any |= self.push_or_detach(target, &l, frame.clone());
        }
        any
    }

    /// Stores the message (the caller holds `target`'s stripe lock) and
    /// pushes it to the recipient's connections and the sender's other
    /// native ones.
    pub(super) async fn store_and_fan_out(
        &self,
        sender: &UserId,
        target: &UserId,
        body: &str,
        client_id: Option<&str>,
        origin: Option<ConnId>,
    ) -> Sent {
        let online = !self.conns_of(target).is_empty();
        if !online {
            match self.store.user_exists(target).await {
                Ok(true) => {}
                Ok(false) => return Sent::Refused(Outcome::UnknownUser),
                Err(e) => {
                    tracing::error!(error = %e, "cannot look up recipient");
                    return Sent::Refused(Outcome::Failed);
                }
            }
        }
        let now = self.now_ms();
        let new = NewMessage {
            sender,
            recipient: target,
            body,
            client_id,
            sent_at: now,
            delivered_at: online.then_some(now),
        };
        let message = match self
            .store
            .insert_message(&new, self.config.offline_queue_max)
            .await
        {
            Ok(Inserted::Stored(m)) => {
                self.metrics.messages_stored.fetch_add(1, Ordering::Relaxed);
                m
            }
            Ok(Inserted::Duplicate(m)) => return Sent::Duplicate(m),
            Ok(Inserted::QueueFull) => {
                tracing::warn!(to = %target, "offline queue full, message refused");
                return Sent::Refused(Outcome::QueueFull);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store message");
                return Sent::Refused(Outcome::Failed);
            }
        };
        let delivered = self.fan_out(&message, origin);
        if online && !delivered {
            // Every recipient connection failed as we pushed: keep it queued.
            if let Err(e) = self.store.mark_undelivered(message.row).await {
                tracing::error!(error = %e, "cannot requeue message");
            }
        }
        Sent::New { message, delivered }
    }

    /// Pushes a stored message to every connection of its recipient and to
    /// the sender's native connections other than `origin`. Returns whether
    /// a recipient connection took it.
    fn fan_out(&self, m: &StoredMessage, origin: Option<ConnId>) -> bool {
        let mut frames = Frames::new(m);
        let mut delivered = false;
        for l in self.conns_of(&m.recipient) {
            let frame = frames.get(l.protocol);
            delivered |= self.push_or_detach(&m.recipient, &l, frame);
        }
        if m.sender != m.recipient {
            for l in self.conns_of(&m.sender) {
                if l.protocol == Protocol::Native && Some(l.out.id()) != origin {
                    let frame = frames.get(Protocol::Native);
                    self.push_or_detach(&m.sender, &l, frame);
                }
            }
        }
        delivered
    }

    fn push_or_detach(&self, user: &UserId, l: &Live, frame: TextFrame) -> bool {
        if l.out.push(frame).is_ok() {
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
    pub(super) async fn replay_undelivered(
        &self,
        out: &Outbound,
        protocol: Protocol,
        user: &UserId,
    ) -> bool {
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
            let mut queued = Vec::with_capacity(batch.len());
            for m in &batch {
                let frame = Frames::new(m).get(protocol);
                if out.push_wait(frame, REPLAY_PATIENCE).await.is_err() {
                    break;
                }
                queued.push(m.row);
            }
            let complete = queued.len() == batch.len();
            if let Err(e) = self.store.mark_delivered(&queued, self.now_ms()).await {
                tracing::error!(error = %e, "cannot mark replayed messages delivered");
                return false;
            }
            for m in batch.iter().take(queued.len()) {
                self.tell_delivered(m);
            }
            let n = u64::try_from(queued.len()).unwrap_or(u64::MAX);
            self.metrics
                .messages_delivered
                .fetch_add(n, Ordering::Relaxed);
            if !complete {
                return false;
            }
        }
    }

    /// A `delivered` receipt to the sender's native connections.
    fn tell_delivered(&self, m: &StoredMessage) {
        let frame = ServerFrame::Delivered {
            with: m.recipient.as_str(),
            id: m.seq,
        };
        let frame = TextFrame::from(frame.encode());
        for l in self.conns_of(&m.sender) {
            if l.protocol == Protocol::Native {
                self.push_or_detach(&m.sender, &l, frame.clone());
            }
        }
    }

    /// The compat `users` list: online users (at most `user_list_max`), plus
    /// `also` if given and not already listed. Encoded once, spliced into
    /// responses as raw JSON.
    pub(super) fn user_list_json(&self, also: Option<&Arc<UserProfile>>) -> Box<RawValue> {
        let max = self.config.user_list_max;
        let mut profiles: Vec<Arc<UserProfile>> = also.into_iter().cloned().collect();
        {
            let map = self.online_map();
            let others = map
                .values()
                .filter(|o| also.is_none_or(|p| p.id != o.profile.id))
                .map(|o| o.profile.clone());
            profiles.extend(others.take(max.saturating_sub(profiles.len())));
        }
        profiles.truncate(max);
        encode_user_list(&profiles)
    }
}

/// A stored message encoded for each protocol at most once.
struct Frames<'a> {
    message: &'a StoredMessage,
    compat: Option<TextFrame>,
    native: Option<TextFrame>,
    device: Option<TextFrame>,
}

impl<'a> Frames<'a> {
    fn new(message: &'a StoredMessage) -> Frames<'a> {
        Frames {
            message,
            compat: None,
            native: None,
            device: None,
        }
    }

    fn get(&mut self, protocol: Protocol) -> TextFrame {
        let m = self.message;
        let slot = match protocol {
            Protocol::Compat => &mut self.compat,
            Protocol::Native => &mut self.native,
            Protocol::Device => &mut self.device,
        };
        slot.get_or_insert_with(|| match protocol {
            Protocol::Compat => compat_frame(&m.sender, &m.body),
            Protocol::Native => TextFrame::from(ServerFrame::Message(message_view(m)).encode()),
            Protocol::Device => TextFrame::from(
                serde_json::json!({"id": m.seq, "from": m.sender.as_str(), "body": m.body})
                    .to_string(),
            ),
        })
        .clone()
    }
}

pub(super) fn message_view(m: &StoredMessage) -> MessageView<'_> {
    MessageView {
        id: m.seq,
        from: m.sender.as_str(),
        to: m.recipient.as_str(),
        body: &m.body,
        sent_at: m.sent_at,
        client_id: m.client_id.as_deref(),
        delivered: m.delivered_at.is_some(),
        read: m.read_at.is_some(),
    }
}

fn compat_frame(sender: &UserId, body: &str) -> TextFrame {
    TextFrame::from(
        compat::Response {
            valid: true,
            event: Some(Event::Message),
            sender: Some(sender.as_str()),
            message: Some(body),
            ..Default::default()
        }
        .encode(),
    )
}

pub(super) fn encode_user_list(profiles: &[Arc<UserProfile>]) -> Box<RawValue> {
    let entries: Vec<UserEntry<'_>> = profiles
        .iter()
        .map(|p| UserEntry {
            id: p.id.as_str(),
            name: p.name.as_str(),
            public_key: &p.public_key,
        })
        .collect();
    serde_json::value::to_raw_value(&entries).unwrap_or_else(|_| RawValue::NULL.to_owned())
}
