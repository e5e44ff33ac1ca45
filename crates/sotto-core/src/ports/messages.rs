//! Messages: history, the one queue of undelivered messages (both
//! protocols), receipts and retention.

use super::StoreError;
use crate::auth::UserId;
use async_trait::async_trait;

/// A direct message to store.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub sender: &'a UserId,
    pub recipient: &'a UserId,
    pub body: &'a str,
    /// The sender's id for this message, for deduplicating resends.
    pub client_id: Option<&'a str>,
    pub sent_at: i64,
    /// Set when the recipient is online as the message is stored.
    pub delivered_at: Option<i64>,
}

/// A stored message; `seq` is its id within the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The store's own handle for the message (global order of arrival),
    /// used to mark delivery. Opaque to clients.
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

/// What became of a message handed to [`MessageStore::insert_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    Stored(StoredMessage),
    /// The sender already sent this `client_id`; here is the first copy.
    Duplicate(StoredMessage),
    /// The recipient already has the maximum of undelivered messages.
    QueueFull,
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
    /// Stores a message durably, assigning the next `seq` of its
    /// conversation in the same write (so concurrent writers, even on
    /// other nodes, never hand out one `seq` twice). A `client_id` the
    /// sender already used returns the first copy. Refuses (storing
    /// nothing) when it would not be delivered now and the recipient
    /// already has `max_undelivered` waiting.
    async fn insert_message(
        &self,
        message: &NewMessage<'_>,
        max_undelivered: u32,
    ) -> Result<Inserted, StoreError>;
    /// The oldest `limit` undelivered messages for `to`, in arrival order.
    /// Must see a message whose insert has returned (read your writes).
    async fn undelivered(&self, to: &UserId, limit: u32) -> Result<Vec<StoredMessage>, StoreError>;
    async fn mark_delivered(&self, rows: &[i64], now: i64) -> Result<(), StoreError>;
    /// Puts a message back in the queue (its live delivery failed).
    async fn mark_undelivered(&self, row: i64) -> Result<(), StoreError>;
    /// The same, by conversation and id: for transports that only carry
    /// the message's public id (DTLS devices).
    async fn requeue(
        &self,
        sender: &UserId,
        recipient: &UserId,
        seq: i64,
    ) -> Result<(), StoreError>;
    /// A page of the conversation of `a` and `b`, newest first, with `seq`
    /// below `before` if given.
    async fn history(
        &self,
        a: &UserId,
        b: &UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// Marks messages from `from` to `reader` with `seq <= up_to` as read
    /// (and delivered, if they were not); returns how many changed.
    async fn mark_read(
        &self,
        reader: &UserId,
        from: &UserId,
        up_to: i64,
        now: i64,
    ) -> Result<u64, StoreError>;
    /// Retention: deletes messages sent before `before`.
    async fn delete_messages_before(&self, before: i64) -> Result<u64, StoreError>;
}
