//! Direct messages: live delivery, the offline queue, and its replay.
//!
//! The fast path (recipient online) is a map look-up and a non-blocking
//! queue push. Only when the recipient is offline does a sender take the
//! recipient's stripe lock, re-check, and store. Coming online takes the same
//! lock, replays the store, then registers; so a message either is stored
//! before the replay reads it, or finds the user online after it. Nothing
//! falls between, and stored messages always precede live ones.

use super::{Hub, Session, now_ms};
use crate::auth::{Token, UserId};
use crate::hub::conn::{Outbound, TextFrame};
use crate::protocol::compat::{Event, Response, UserEntry};
use crate::store::UserProfile;
use serde_json::value::RawValue;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Stored,
    UnknownUser,
    QueueFull,
    Failed,
}

impl Hub {
    /// Message (action 3). As in QMessageServer the sender gets no reply on
    /// success; failures get `{valid:false, error}` (no `event`, so the
    /// example client does not mistake it for a forced logout).
    pub(super) async fn message(
        &self,
        out: &Outbound,
        session: &Session,
        raw_token: &str,
        target: &str,
        body: &str,
    ) {
        let Some(sender) = self.sender_of(session, raw_token).await else {
            return self.reply_error(out, Some(Event::InvalidUser), "Invalid or expired token.");
        };
        let Some(target) = UserId::parse(target) else {
            return self.reply_error(out, None, "Unknown target user.");
        };
        let error = match self.deliver(&sender, &target, body).await {
            Outcome::Delivered | Outcome::Stored => return,
            Outcome::UnknownUser => "Unknown target user.",
            Outcome::QueueFull => "Recipient's offline queue is full.",
            Outcome::Failed => "Message could not be stored, please retry.",
        };
        self.reply_error(out, None, error);
    }

    /// Who a Message request speaks for. The connection's own token is
    /// checked without touching the store; any other valid token also works
    /// (as in QMessageServer) but costs a look-up.
    async fn sender_of(&self, session: &Session, raw: &str) -> Option<UserId> {
        if let Session::Authenticated { user, token } = session
            && token.as_str() == raw
        {
            return Some(user.clone());
        }
        Token::parse(raw)?;
        self.valid_session(raw).await.map(|(_, p, _)| p.id)
    }

    async fn deliver(&self, sender: &UserId, target: &UserId, body: &str) -> Outcome {
        let frame = message_frame(sender, body);
        if let Some(to) = self.online_outbound(target) {
            if to.push(frame.clone()).is_ok() {
                return Outcome::Delivered;
            }
            // The recipient was too slow and is being closed: keep the
            // message for its next login instead of dropping it.
            self.unbind_if(target, to.id());
        }
        let _turn = self.stripes.lock(target).await;
        if let Some(to) = self.online_outbound(target) {
            if to.push(frame).is_ok() {
                return Outcome::Delivered;
            }
            self.unbind_if(target, to.id());
        }
        self.store_for_later(sender, target, body).await
    }

    async fn store_for_later(&self, sender: &UserId, target: &UserId, body: &str) -> Outcome {
        match self.store.user_exists(target).await {
            Ok(true) => {}
            Ok(false) => return Outcome::UnknownUser,
            Err(e) => {
                tracing::error!(error = %e, "cannot look up recipient");
                return Outcome::Failed;
            }
        }
        let max = self.config.offline_queue_max;
        match self
            .store
            .enqueue_pending(target, sender, body, max, now_ms())
            .await
        {
            Ok(true) => Outcome::Stored,
            Ok(false) => {
                tracing::warn!(to = %target, "offline queue full, message refused");
                Outcome::QueueFull
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store message for offline user");
                Outcome::Failed
            }
        }
    }

    /// Replays `user`'s stored messages into `out`, oldest first, deleting
    /// each batch once queued. The caller holds the user's stripe lock.
    /// Returns false if the connection went away (what was not queued stays
    /// stored for next time).
    pub(super) async fn replay_pending(&self, out: &Outbound, user: &UserId) -> bool {
        loop {
            let batch = match self.store.pending(user, REPLAY_BATCH).await {
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
                let frame = message_frame(&m.sender, &m.body);
                if out.push_wait(frame, REPLAY_PATIENCE).await.is_err() {
                    break;
                }
                queued.push(m.id);
            }
            let complete = queued.len() == batch.len();
            if let Err(e) = self.store.remove_pending(&queued).await {
                tracing::error!(error = %e, "cannot delete replayed messages");
                return false;
            }
            if !complete {
                return false;
            }
        }
    }

    /// The compat `users` list: online users (at most `user_list_max`), plus
    /// `also` if given and not already listed. Encoded once, spliced into
    /// responses as raw JSON.
    pub(super) fn user_list_json(&self, also: Option<&Arc<UserProfile>>) -> Box<RawValue> {
        let max = self.config.user_list_max;
        let mut profiles: Vec<Arc<UserProfile>> = Vec::new();
        if let Some(p) = also {
            profiles.push(p.clone());
        }
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

fn message_frame(sender: &UserId, body: &str) -> TextFrame {
    TextFrame::from(
        Response {
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
