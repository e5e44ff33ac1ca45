//! Direct messages: one path for every message, whatever its protocols.
//!
//! 1. **Admit**: the per-user send limits (a map look-up, before anything
//!    is stored).
//! 2. **Write**: the message goes to the store's write queue
//!    ([`MessageStore::submit`]), which commits many writes in one
//!    transaction; the store assigns the conversation's next id and the
//!    next inbox position of recipient and sender inside that write, so
//!    order needs no lock here and holds with several nodes on one
//!    database.
//! 3. **Complete**: one dispatcher task takes the results in commit order
//!    and fans each new inbox entry out to the connections of its user
//!    (see `feed`), then answers the sender (a native `ack`, a device's
//!    id, a compat error if any).
//!
//! The read loops of the senders never wait for a commit: they wait only
//! for room in the write queue, which is what slows a sender down when the
//! store cannot keep up.
//!
//! [`MessageStore::submit`]: crate::ports::MessageStore::submit

use super::Hub;
use super::event::{Ack, ErrorReply, Event, Failure, Listed, UserList};
use crate::auth::UserId;
use crate::auth::throttle::retry_after_secs;
use crate::hub::conn::Outbound;
use crate::ports::{Entry, InboxItem, NewMessage, Pending, Sent, StoreError, Write, Written};
use crate::ports::{StoredMessage, UserProfile};
use crate::untrusted::LogBudget;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Writes whose commit the dispatcher has not handled yet, at most.
const IN_FLIGHT: usize = 8192;

/// What to do once a write is committed.
pub(super) enum After {
    /// Ack the native connection that sent it.
    NativeSend {
        out: Outbound,
        client_id: String,
        to: UserId,
    },
    /// Tell the compat connection that sent it, if it failed.
    CompatSend { out: Outbound },
    /// Hand the message id (or the failure) to a device's send.
    DeviceSend {
        reply: oneshot::Sender<Result<i64, Failure>>,
    },
    /// Fan the receipts out; nobody waits for the answer.
    Confirm,
    /// Fan the receipt out; tell the reader if it was not recorded.
    Read { out: Outbound },
}

/// A submitted write on its way to the dispatcher.
pub(super) struct Submitted {
    pending: Pending,
    after: After,
    started: Instant,
}

/// The order in which writes enter the store's queue is the order the
/// dispatcher handles them: both are done under one lock, held only for
/// two queue insertions.
pub(super) struct WriteQueue {
    order: Mutex<()>,
    tx: mpsc::Sender<Submitted>,
}

impl WriteQueue {
    pub(super) fn new() -> (WriteQueue, mpsc::Receiver<Submitted>) {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let queue = WriteQueue {
            order: Mutex::new(()),
            tx,
        };
        (queue, rx)
    }
}

/// A message on its way in.
pub(super) struct Outgoing {
    pub(super) sender: UserId,
    pub(super) target: UserId,
    pub(super) body: String,
    /// Native sends carry one; a repeat of it to the same recipient is
    /// answered, not stored.
    pub(super) client_id: Option<String>,
}

impl Hub {
    /// Admits and submits a message; `after` says whom to answer. A
    /// refused message is answered at once.
    pub(super) async fn send(&self, o: Outgoing, after: After) {
        if let Err(failure) = self.admit_send(&o.sender, &o.body) {
            return self.fail(after, failure);
        }
        let write = Write::Send {
            message: NewMessage {
                sender: o.sender,
                recipient: o.target,
                body: o.body,
                client_id: o.client_id,
                sent_at: self.now_ms(),
            },
            max_pending: self.config.offline_queue_max,
        };
        self.submit(write, after).await;
    }

    /// Puts a write in the store's queue and its follow-up in the
    /// dispatcher's, in the same order.
    pub(super) async fn submit(&self, write: Write, after: After) {
        let started = Instant::now();
        let _turn = self.writes.order.lock().await;
        let pending = match self.store.submit(write).await {
            Ok(p) => p,
            Err(e) => return self.failed(e, after),
        };
        let submitted = Submitted {
            pending,
            after,
            started,
        };
        if let Err(mpsc::error::SendError(s)) = self.writes.tx.send(submitted).await {
            // Only at shutdown: the dispatcher is gone.
            self.fail(s.after, Failure::Unavailable);
        }
    }

    /// The per-user send limits (see `send_limit`), checked before any
    /// routing or storing, so a refused flood costs a map look-up each.
    pub(super) fn admit_send(&self, sender: &UserId, body: &str) -> Result<(), Failure> {
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

    /// Handles committed writes in commit order until shutdown.
    pub(super) async fn dispatch(self: Arc<Hub>, mut rx: mpsc::Receiver<Submitted>) {
        loop {
            let next = tokio::select! {
                biased;
                s = rx.recv() => s,
                _ = self.shutdown.cancelled() => None,
            };
            let Some(s) = next else { return };
            let result = match s.pending.await {
                Ok(result) => result,
                Err(_) => Err(StoreError::unavailable("the store's writer stopped")),
            };
            match result {
                Ok(written) => self.complete(written, s.after, s.started),
                Err(e) => self.failed(e, s.after),
            }
        }
    }

    fn complete(&self, written: Written, after: After, started: Instant) {
        match written {
            Written::Sent(sent) => self.sent(sent, after, started),
            Written::Confirmed {
                receipts,
                delivered,
                ..
            } => {
                for r in receipts {
                    self.fan_out(&r.user, r.item, None);
                }
                self.metrics
                    .messages_delivered
                    .fetch_add(delivered, Ordering::Relaxed);
            }
            Written::Read(receipt) => {
                if let Some(r) = receipt {
                    self.fan_out(&r.user, r.item, None);
                }
            }
        }
    }

    fn sent(&self, sent: Sent, after: After, started: Instant) {
        match sent {
            Sent::Stored {
                message,
                recipient_pos,
                sender_pos,
            } => self.stored(message, recipient_pos, sender_pos, after, started),
            Sent::Duplicate(first) => self.answer_duplicate(&first, after),
            Sent::QueueFull => {
                static BUDGET: LogBudget = LogBudget::new(10);
                if let Some(suppressed) = BUDGET.allow() {
                    tracing::warn!(suppressed, "recipient's queue full, message refused");
                }
                self.fail(after, Failure::QueueFull)
            }
            Sent::UnknownRecipient => self.fail(after, Failure::UnknownUser),
        }
    }

    /// A new message: into the recipient's connections, then the sender's
    /// (where the sending connection gets its ack in place of its copy).
    fn stored(
        &self,
        m: Arc<StoredMessage>,
        recipient_pos: i64,
        sender_pos: Option<i64>,
        after: After,
        started: Instant,
    ) {
        let metrics = &self.metrics;
        metrics.messages_stored.fetch_add(1, Ordering::Relaxed);
        metrics.messages_routed.fetch_add(1, Ordering::Relaxed);
        metrics.route_latency.observe(started.elapsed());
        let to_recipient = InboxItem {
            pos: recipient_pos,
            entry: Entry::Message(m.clone()),
        };
        self.fan_out(&m.recipient, to_recipient, None);
        let (out, client_id, to) = match after {
            After::NativeSend { out, client_id, to } => (out, client_id, to),
            After::DeviceSend { reply } => {
                let _ = reply.send(Ok(m.seq));
                return self.fan_out_copy(&m, sender_pos);
            }
            _ => return self.fan_out_copy(&m, sender_pos),
        };
        let ack = |pos| Ack {
            client_id: client_id.clone(),
            id: m.seq,
            to: to.clone(),
            delivered: false,
            pos,
        };
        let stand_in = Event::Ack(Box::new(ack(sender_pos)));
        let stood_in = match sender_pos {
            Some(pos) => self.fan_out(
                &m.sender,
                InboxItem {
                    pos,
                    entry: Entry::Message(m.clone()),
                },
                Some((&out, stand_in)),
            ),
            None => false,
        };
        if !stood_in {
            self.reply(&out, Event::Ack(Box::new(ack(None))));
        }
    }

    /// The sender's copy of a message, to all of the sender's connections.
    fn fan_out_copy(&self, m: &Arc<StoredMessage>, sender_pos: Option<i64>) {
        if let Some(pos) = sender_pos {
            let copy = InboxItem {
                pos,
                entry: Entry::Message(m.clone()),
            };
            self.fan_out(&m.sender, copy, None);
        }
    }

    /// A resend: answered with the first copy, nothing stored or fanned.
    fn answer_duplicate(&self, first: &StoredMessage, after: After) {
        match after {
            After::NativeSend { out, client_id, to } => {
                let ack = Ack {
                    client_id,
                    id: first.seq,
                    to,
                    delivered: first.delivered_at.is_some(),
                    pos: None,
                };
                self.reply(&out, Event::Ack(Box::new(ack)));
            }
            After::DeviceSend { reply } => {
                let _ = reply.send(Ok(first.seq));
            }
            _ => {}
        }
    }

    fn failed(&self, e: StoreError, after: After) {
        static BUDGET: LogBudget = LogBudget::new(10);
        if let Some(suppressed) = BUDGET.allow() {
            tracing::error!(error = %e, suppressed, "store write failed");
        }
        let failure = match after {
            After::Read { .. } => Failure::ReceiptNotRecorded,
            _ => Failure::NotStored,
        };
        self.fail(after, failure);
    }

    /// Tells whoever waits on `after` that it failed.
    pub(super) fn fail(&self, after: After, failure: Failure) {
        match after {
            After::NativeSend { out, client_id, .. } => {
                let reply = ErrorReply {
                    failure,
                    reference: Some(client_id),
                };
                self.reply(&out, Event::Error(Box::new(reply)));
            }
            After::CompatSend { out } | After::Read { out } => {
                self.reply(&out, Event::error(failure))
            }
            After::DeviceSend { reply } => {
                let _ = reply.send(Err(failure));
            }
            After::Confirm => {}
        }
    }

    /// A session of `user` has processed their inbox up to `up_to`.
    pub(super) async fn confirm(&self, user: UserId, up_to: i64) {
        let write = Write::Confirm {
            user,
            up_to,
            now: self.now_ms(),
        };
        self.submit(write, After::Confirm).await;
    }

    /// The online users (at most `user_list_max`), `first` leading if
    /// given and `except` left out.
    pub(super) fn user_list(
        &self,
        first: Option<&Arc<UserProfile>>,
        except: Option<&UserId>,
    ) -> UserList {
        let max = self.config.user_list_max;
        let mut profiles: Vec<Listed> = first.into_iter().cloned().map(Listed::from).collect();
        {
            let map = self.online_map();
            let others = map
                .values()
                .filter(|o| first.is_none_or(|p| p.id != o.profile.id))
                .filter(|o| except != Some(&o.profile.id))
                .map(super::OnlineUser::listed);
            profiles.extend(others.take(max.saturating_sub(profiles.len())));
        }
        if profiles.len() < max {
            let remote = self.remote_profiles().into_iter();
            let remote = remote.filter(|p| first.is_none_or(|f| f.id != p.id));
            let remote = remote.filter(|p| except != Some(&p.id));
            profiles.extend(remote.take(max - profiles.len()).map(Listed::from));
        }
        profiles.truncate(max);
        UserList(profiles)
    }
}
