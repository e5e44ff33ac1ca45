//! Durable state behind one small trait: accounts, sessions, and messages
//! waiting for offline users.
//!
//! The hub depends only on [`Store`]; SQLite is the embedded implementation
//! and PostgreSQL is meant to follow as a second one without touching the
//! hub. Times are unix milliseconds, passed in by the caller, so the store
//! holds no clock and expiry logic stays testable.

pub mod sqlite;

use crate::auth::{TokenHash, UserId, UserName};
use async_trait::async_trait;

pub use sqlite::SqliteStore;

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

/// A message waiting for its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    pub id: i64,
    pub sender: UserId,
    pub body: String,
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
    async fn set_public_key(&self, id: &UserId, key: &str) -> Result<(), StoreError>;

    async fn create_session(
        &self,
        user: &UserId,
        session: &SessionRecord,
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
    /// Deletes every session of `user` except `keep`; returns how many went.
    async fn delete_other_sessions(
        &self,
        user: &UserId,
        keep: &TokenHash,
    ) -> Result<u64, StoreError>;
    /// Deletes sessions last used before `idle_before` or created before
    /// `created_before`; returns how many went. Sessions with a live
    /// connection are touched before this runs, so they count as in use.
    async fn delete_expired_sessions(
        &self,
        idle_before: i64,
        created_before: i64,
    ) -> Result<u64, StoreError>;

    /// Queues a message for an offline user. Returns false, storing nothing,
    /// when the recipient already has `max_pending` messages waiting.
    async fn enqueue_pending(
        &self,
        to: &UserId,
        from: &UserId,
        body: &str,
        max_pending: u32,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// The oldest `limit` messages waiting for `to`, oldest first.
    async fn pending(&self, to: &UserId, limit: u32) -> Result<Vec<PendingMessage>, StoreError>;
    async fn remove_pending(&self, ids: &[i64]) -> Result<(), StoreError>;

    /// Flushes and closes; called once at shutdown.
    async fn close(&self);
}
