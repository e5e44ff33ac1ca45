//! The [`SessionStore`] port.

use crate::PostgresStore;
use crate::error::classify;
use crate::users::profile_from;
use async_trait::async_trait;
use sotto_core::auth::{TokenHash, UserId};
use sotto_core::ports::{SessionKind, SessionRecord, SessionStore, StoreError, UserProfile};
use sqlx::Row;

/// Hashes per `touch_sessions` statement: one array parameter each, kept
/// small enough that a node touching every live session does not hold
/// thousands of row locks in one statement.
const TOUCH_CHUNK: usize = 1000;

#[async_trait]
impl SessionStore for PostgresStore {
    async fn create_session(
        &self,
        user: &UserId,
        s: &SessionRecord,
        kind: SessionKind,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, last_used_at, kind)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(s.token_hash.as_bytes())
        .bind(user.as_str())
        .bind(s.created_at)
        .bind(s.last_used_at)
        .bind(kind.as_str())
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn session(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(SessionRecord, UserProfile)>, StoreError> {
        let row = sqlx::query(
            "SELECT s.created_at, s.last_used_at, u.id, u.name, u.public_key
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
        )
        .bind(hash.as_bytes())
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        let Some(r) = row else { return Ok(None) };
        let session = SessionRecord {
            token_hash: *hash,
            created_at: r.try_get("created_at").map_err(classify)?,
            last_used_at: r.try_get("last_used_at").map_err(classify)?,
        };
        Ok(Some((session, profile_from(&r).map_err(classify)?)))
    }

    async fn touch_sessions(&self, hashes: &[TokenHash], now: i64) -> Result<(), StoreError> {
        for chunk in hashes.chunks(TOUCH_CHUNK) {
            let list: Vec<Vec<u8>> = chunk.iter().map(|h| h.as_bytes().to_vec()).collect();
            // Rows locked in hash order: two nodes touching the same
            // sessions (one token used on both) cannot deadlock.
            sqlx::query(
                "UPDATE sessions SET last_used_at = $1 WHERE token_hash IN
                   (SELECT token_hash FROM sessions WHERE token_hash = ANY($2)
                    ORDER BY token_hash FOR UPDATE)",
            )
            .bind(now)
            .bind(list)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        }
        Ok(())
    }

    async fn delete_session(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(hash.as_bytes())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_other_sessions(
        &self,
        user: &UserId,
        keep: &TokenHash,
        kind: SessionKind,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let rows = sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2 AND kind = $3
             RETURNING token_hash",
        )
        .bind(user.as_str())
        .bind(keep.as_bytes())
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let bytes: Vec<u8> = r.try_get("token_hash").map_err(classify)?;
                let hash = <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| StoreError::internal("a stored token hash is not 32 bytes"))?;
                Ok(TokenHash(hash))
            })
            .collect()
    }

    async fn delete_expired_sessions(
        &self,
        idle_before: i64,
        created_before: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE last_used_at < $1 OR created_at < $2")
            .bind(idle_before)
            .bind(created_before)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }
}
