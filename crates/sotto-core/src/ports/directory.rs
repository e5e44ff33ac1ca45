//! What a client's contact list reads: users by name prefix, and the
//! caller's conversations with their last message and unread count.
//!
//! Both are reads of a single page, bounded by `limit`; implementations
//! must answer them from indexes, never by scanning every user or every
//! message (a contact list is loaded on every page load).

use super::{StoreError, StoredMessage, UserProfile};
use crate::auth::{UserId, UserName};
use async_trait::async_trait;

/// Unread messages are counted among this many newest messages of a
/// conversation (both directions), so that counting stays bounded however
/// long a conversation is: a client shows "500+" at most.
pub const UNREAD_WINDOW: u32 = 500;

/// One of a user's conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    pub with: UserId,
    pub name: UserName,
    /// The newest message, either direction.
    pub last: StoredMessage,
    /// Messages from `with` to the user not yet read by the user, among
    /// the newest [`UNREAD_WINDOW`] of the conversation.
    pub unread: u32,
}

#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Users whose [`UserName::key`] starts with `prefix_key` (already
    /// ASCII-lowercased by the caller), ordered by name key, at most
    /// `limit`.
    async fn users_by_prefix(
        &self,
        prefix_key: &str,
        limit: u32,
    ) -> Result<Vec<UserProfile>, StoreError>;
    /// The conversations of `user` that still hold a message (retention
    /// may have emptied some), the most recent last message first, at
    /// most `limit`. A conversation with oneself is listed too.
    async fn conversations(
        &self,
        user: &UserId,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, StoreError>;
}
