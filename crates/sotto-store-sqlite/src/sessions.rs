//! The [`SessionStore`] port.

use crate::SqliteStore;
use crate::error::classify;
use crate::users::profile_from;
use async_trait::async_trait;
use sotto_core::auth::{TokenHash, UserId};
use sotto_core::ports::{SessionKind, SessionRecord, SessionStore, StoreError, UserProfile};
use sqlx::{QueryBuilder, Row};

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        user: &UserId,
        s: &SessionRecord,
        kind: SessionKind,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, last_used_at, kind)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(s.token_hash.as_bytes())
        .bind(user.as_str())
        .bind(s.created_at)
        .bind(s.last_used_at)
        .bind(kind.as_str())
        .execute(&self.writer)
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
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
        )
        .bind(hash.as_bytes())
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?
        .into_iter()
        .next();
        let Some(r) = row else { return Ok(None) };
        let session = SessionRecord {
            token_hash: *hash,
            created_at: r.try_get("created_at").map_err(classify)?,
            last_used_at: r.try_get("last_used_at").map_err(classify)?,
        };
        Ok(Some((session, profile_from(&r).map_err(classify)?)))
    }

    async fn touch_sessions(&self, hashes: &[TokenHash], now: i64) -> Result<(), StoreError> {
        // SQLite caps bound parameters (32766); chunk well below it.
        for chunk in hashes.chunks(500) {
            let mut q = QueryBuilder::new("UPDATE sessions SET last_used_at = ");
            q.push_bind(now).push(" WHERE token_hash IN (");
            let mut list = q.separated(", ");
            for h in chunk {
                list.push_bind(h.as_bytes().to_vec());
            }
            q.push(")");
            q.build().execute(&self.writer).await.map_err(classify)?;
        }
        Ok(())
    }

    async fn delete_session(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(hash.as_bytes())
            .execute(&self.writer)
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
        // fetch_all: RETURNING commits only when the statement runs out.
        let rows = sqlx::query(
            "DELETE FROM sessions WHERE user_id = ? AND token_hash <> ? AND kind = ?
             RETURNING token_hash",
        )
        .bind(user.as_str())
        .bind(keep.as_bytes())
        .bind(kind.as_str())
        .fetch_all(&self.writer)
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
        let done = sqlx::query("DELETE FROM sessions WHERE last_used_at < ? OR created_at < ?")
            .bind(idle_before)
            .bind(created_before)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }
}
