//! Durable state behind one small trait: accounts, sessions, and messages
//! waiting for offline users.
//!
//! The hub depends only on [`Store`]; SQLite is the embedded implementation
//! and PostgreSQL is meant to follow as a second one without touching the
//! hub. Times are unix milliseconds, passed in by the caller, so the store
//! holds no clock and expiry logic stays testable.

use crate::auth::{TokenHash, UserId, UserName};
use async_trait::async_trait;

/// A user as the hub needs to know them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub id: UserId,
    pub name: UserName,
    pub public_key: String,
}

/// A user row including the password hash, for login only.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub profile: UserProfile,
    pub password_hash: String,
}

/// A session as stored; the token itself is never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    pub token_hash: TokenHash,
    pub created_at: i64,
    pub last_used_at: i64,
}

/// Which login made a session. A compat login replaces the user's other
/// compat sessions (QMessageServer keeps one token per user); browser
/// sessions from the HTTP API live side by side, one per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Compat,
    Api,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Compat => "compat",
            SessionKind::Api => "api",
        }
    }
}

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
    /// Row id: the global order, used to mark delivery.
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

/// What became of a message handed to [`Store::insert_message`].
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Registration hit the unique name.
    #[error("user name already exists")]
    NameTaken,
    /// A random user id collided; the caller draws another.
    #[error("user id already exists")]
    IdTaken,
    #[error("{0}")]
    Database(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_user(&self, user: &UserRecord, now: i64) -> Result<(), StoreError>;
    async fn user_by_name(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError>;
    async fn user_exists(&self, id: &UserId) -> Result<bool, StoreError>;
    async fn user_by_id(&self, id: &UserId) -> Result<Option<UserProfile>, StoreError>;
    async fn set_public_key(&self, id: &UserId, key: &str) -> Result<(), StoreError>;

    async fn create_session(
        &self,
        user: &UserId,
        session: &SessionRecord,
        kind: SessionKind,
    ) -> Result<(), StoreError>;
    /// The session and its user, whether or not it has expired: the caller
    /// decides expiry, with its own clock.
    async fn session(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(SessionRecord, UserProfile)>, StoreError>;
    /// Marks sessions as used at `now`; unknown hashes are ignored.
    async fn touch_sessions(&self, hashes: &[TokenHash], now: i64) -> Result<(), StoreError>;
    async fn delete_session(&self, hash: &TokenHash) -> Result<bool, StoreError>;
    /// Deletes every session of `user` of this `kind` except `keep`;
    /// returns how many went.
    async fn delete_other_sessions(
        &self,
        user: &UserId,
        keep: &TokenHash,
        kind: SessionKind,
    ) -> Result<u64, StoreError>;
    /// Deletes sessions last used before `idle_before` or created before
    /// `created_before`; returns how many went. Sessions with a live
    /// connection are touched before this runs, so they count as in use.
    async fn delete_expired_sessions(
        &self,
        idle_before: i64,
        created_before: i64,
    ) -> Result<u64, StoreError>;

    /// All users, by name, at most `limit`.
    async fn list_users(&self, limit: u32) -> Result<Vec<UserProfile>, StoreError>;

    /// Stores a message durably, assigning the next `seq` of its
    /// conversation. Refuses (storing nothing) when it would not be
    /// delivered now and the recipient already has `max_undelivered`
    /// waiting.
    async fn insert_message(
        &self,
        message: &NewMessage<'_>,
        max_undelivered: u32,
    ) -> Result<Inserted, StoreError>;
    /// The oldest `limit` undelivered messages for `to`, oldest first.
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
    /// Marks messages from `from` to `reader` with `seq <= up_to` as read.
    async fn mark_read(
        &self,
        reader: &UserId,
        from: &UserId,
        up_to: i64,
        now: i64,
    ) -> Result<u64, StoreError>;
    /// Retention: deletes messages sent before `before`.
    async fn delete_messages_before(&self, before: i64) -> Result<u64, StoreError>;

    /// Answers when the store can serve queries (`/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Flushes and closes; called once at shutdown.
    async fn close(&self);
}
