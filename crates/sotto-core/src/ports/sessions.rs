//! Login sessions as stored: only the token's hash, never the token.

use super::{StoreError, UserProfile};
use crate::auth::{TokenHash, UserId};
use async_trait::async_trait;

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

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(
        &self,
        user: &UserId,
        session: &SessionRecord,
        kind: SessionKind,
    ) -> Result<(), StoreError>;
    /// The session and its user, whether or not it has expired: the caller
    /// decides expiry, with its own clock. `Ok(None)` means the store
    /// answered and there is no such session; a store that cannot answer
    /// must return an error, never `None` (that would log the user out).
    async fn session(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(SessionRecord, UserProfile)>, StoreError>;
    /// Marks sessions as used at `now`; unknown hashes are ignored.
    async fn touch_sessions(&self, hashes: &[TokenHash], now: i64) -> Result<(), StoreError>;
    /// Whether a session was deleted.
    async fn delete_session(&self, hash: &TokenHash) -> Result<bool, StoreError>;
    /// Deletes every session of `user` of this `kind` except `keep`;
    /// returns the ones that went, so their live connections can be closed.
    async fn delete_other_sessions(
        &self,
        user: &UserId,
        keep: &TokenHash,
        kind: SessionKind,
    ) -> Result<Vec<TokenHash>, StoreError>;
    /// Deletes sessions last used before `idle_before` or created before
    /// `created_before`; returns how many went. Sessions with a live
    /// connection are touched before this runs, so they count as in use.
    async fn delete_expired_sessions(
        &self,
        idle_before: i64,
        created_before: i64,
    ) -> Result<u64, StoreError>;
}
