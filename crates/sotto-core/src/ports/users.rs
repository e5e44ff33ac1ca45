//! Accounts as stored.

use super::StoreError;
use crate::auth::{UserId, UserName};
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

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Adds a user. Names are unique by [`UserName::key`] (letter case does
    /// not count): [`StoreError::NameTaken`]; a colliding random id is
    /// [`StoreError::IdTaken`]. The store decides both, so concurrent
    /// registrations cannot both win.
    async fn create_user(&self, user: &UserRecord, now: i64) -> Result<(), StoreError>;
    /// Looks a user up by name, in any letter case.
    async fn user_by_name(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError>;
    async fn user_exists(&self, id: &UserId) -> Result<bool, StoreError>;
    async fn user_by_id(&self, id: &UserId) -> Result<Option<UserProfile>, StoreError>;
    /// Replaces the key; an unknown id is not an error.
    async fn set_public_key(&self, id: &UserId, key: &str) -> Result<(), StoreError>;
    /// Replaces the password hash (a login re-hashed it at today's costs);
    /// an unknown id is not an error.
    async fn set_password_hash(&self, id: &UserId, hash: &str) -> Result<(), StoreError>;
    /// All users ordered by name key, at most `limit`.
    async fn list_users(&self, limit: u32) -> Result<Vec<UserProfile>, StoreError>;
}
