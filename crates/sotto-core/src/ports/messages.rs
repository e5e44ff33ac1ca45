//! Messages: every user's inbox, history, receipts and retention.
//!
//! Every message, whatever protocol sent it, takes one path: it is written
//! (with the conversation's next id and the next position of each party's
//! inbox assigned inside that write), and only then delivered. A user's
//! **inbox** is the ordered log of what their sessions must see: messages
//! to them, copies of what they sent (for their other devices), and
//! receipts. A session reads it from a position; a client *confirms* up to
//! a position, and only that makes a message delivered.
//!
//! Writes go through a queue ([`MessageStore::submit`]) so an
//! implementation can commit many of them in one transaction (group
//! commit). They are committed in the order they were submitted and their
//! results resolve in that order.

use super::StoreError;
use crate::auth::UserId;
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A direct message to store. Owned: it travels to a writer thread.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub sender: UserId,
    pub recipient: UserId,
    pub body: String,
    /// The sender's id for this message, for deduplicating resends to the
    /// same recipient.
    pub client_id: Option<String>,
    pub sent_at: i64,
}

/// A stored message; `seq` is its id within the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The store's own handle for the message. Opaque to clients.
    pub row: i64,
    pub seq: i64,
    pub sender: UserId,
    pub recipient: UserId,
    pub body: String,
    pub client_id: Option<String>,
    pub sent_at: i64,
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
}

/// One entry of a user's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A message to this user, or (when its sender is this user) the copy
    /// of one they sent, for their other sessions.
    Message(Arc<StoredMessage>),
    /// A session of `with` confirmed this user's messages to them up to
    /// id `id` (and so every earlier one: a conversation's messages reach
    /// the recipient's inbox in id order).
    Delivered { with: UserId, id: i64 },
    /// `with` read this user's messages up to id `up_to`.
    Read { with: UserId, up_to: i64 },
}

/// An inbox entry at its position: positions of one user's inbox start at
/// 1 and grow by one per entry, in commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    pub pos: i64,
    pub entry: Entry,
}

impl InboxItem {
    /// Whether this is a message to `user` (not a copy of one they sent):
    /// the only kind that counts as undelivered until confirmed.
    pub fn is_message_to(&self, user: &UserId) -> bool {
        matches!(&self.entry, Entry::Message(m) if m.recipient == *user)
    }
}

/// An inbox item and whose inbox it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    pub user: UserId,
    pub item: InboxItem,
}

/// A write for the store's queue.
#[derive(Debug, Clone)]
pub enum Write {
    /// Store a message unless it is a resend, its recipient does not
    /// exist, or the recipient already has `max_pending` unconfirmed.
    Send {
        message: NewMessage,
        max_pending: u32,
    },
    /// A session of `user` processed their inbox up to `up_to` (clamped
    /// to the inbox's head; lower than what was confirmed is a no-op).
    Confirm { user: UserId, up_to: i64, now: i64 },
    /// `reader` read their messages from `from` up to id `up_to` (clamped
    /// to the newest message from `from` to `reader`).
    Read {
        reader: UserId,
        from: UserId,
        up_to: i64,
        now: i64,
    },
}

/// What became of a [`Write::Send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Stored and entered in the recipient's inbox and (for a message to
    /// someone else) the sender's.
    Stored {
        message: Arc<StoredMessage>,
        recipient_pos: i64,
        /// The sender's copy; None for a message to oneself.
        sender_pos: Option<i64>,
    },
    /// The sender already sent this `client_id` to this recipient: the
    /// first copy, nothing new stored.
    Duplicate(StoredMessage),
    /// The recipient already has the maximum of unconfirmed messages.
    QueueFull,
    UnknownRecipient,
}

/// What a committed write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Sent(Sent),
    /// How far the user's inbox is now confirmed, how many messages that
    /// delivered, and the new receipts (one `delivered` entry per sender).
    Confirmed {
        confirmed: i64,
        delivered: u64,
        receipts: Vec<Addressed>,
    },
    /// The `read` entry for the sender, if anything was newly read.
    Read(Option<Addressed>),
}

/// Resolves when a submitted write is committed (or failed).
pub type Pending = oneshot::Receiver<Result<Written, StoreError>>;

/// Where a user's inbox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InboxState {
    /// The last position written.
    pub head: i64,
    /// The highest position some session confirmed.
    pub confirmed: i64,
}

/// The conversation key of two users: both directions share it.
pub fn conversation(a: &UserId, b: &UserId) -> String {
    if a <= b {
        format!("{a}:{b}")
    } else {
        format!("{b}:{a}")
    }
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Queues a write, waiting only for room in the queue. Writes commit
    /// in submission order, durably (across power loss where the backend
    /// can promise it) before the returned [`Pending`] resolves.
    async fn submit(&self, write: Write) -> Result<Pending, StoreError>;
    /// Where `user`'s inbox stands.
    async fn inbox_state(&self, user: &UserId) -> Result<InboxState, StoreError>;
    /// Up to `limit` entries of `user`'s inbox after position `after`, in
    /// order. Sees every write whose [`Pending`] has resolved.
    async fn inbox(
        &self,
        user: &UserId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<InboxItem>, StoreError>;
    /// A page of the conversation of `a` and `b`, newest first, with `seq`
    /// below `before` if given.
    async fn history(
        &self,
        a: &UserId,
        b: &UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// Retention: deletes messages (and inbox entries) from before `before`.
    async fn delete_messages_before(&self, before: i64) -> Result<u64, StoreError>;
}

/// Submits `write` and waits for its commit: for callers that have nothing
/// else to do meanwhile (tests, tools).
pub async fn write_now(store: &dyn MessageStore, write: Write) -> Result<Written, StoreError> {
    let pending = store.submit(write).await?;
    pending
        .await
        .map_err(|_| StoreError::unavailable("the store's writer stopped"))?
}
