//! Durable PSKs: the [`PskStore`] port on the chat database file.

use async_trait::async_trait;
use sotto_core::psk::{
    PskChange, PskEntry, PskIdentity, PskKey, PskListing, PskStore, PskStoreError,
};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

/// The [`PskStore`] on the chat database; made by [`SqliteStore::psks`](crate::SqliteStore::psks).
pub struct SqlitePskStore {
    pool: SqlitePool,
}

impl SqlitePskStore {
    /// Shares the chat store's writer pool: one writer per file, and the
    /// migrations have run once already.
    pub(crate) fn new(pool: SqlitePool) -> SqlitePskStore {
        SqlitePskStore { pool }
    }
}

use crate::error::psk as query_failed;

/// The next change number; runs inside the single writer's statement, so
/// numbers are strictly increasing.
const NEXT_REV: &str = "(SELECT COALESCE(MAX(rev), 0) + 1 FROM psk_identities)";

#[async_trait]
impl PskStore for SqlitePskStore {
    async fn add_psk(
        &self,
        identity: &PskIdentity,
        key: &PskKey,
        user_id: Option<&str>,
        now: i64,
    ) -> Result<(), PskStoreError> {
        let sql = format!(
            "INSERT INTO psk_identities (identity, psk, user_id, created_at, revoked_at, rev)
             VALUES (?, ?, ?, ?, NULL, {NEXT_REV})
             ON CONFLICT(identity) DO UPDATE SET
                psk = excluded.psk, user_id = excluded.user_id,
                created_at = excluded.created_at, revoked_at = NULL, rev = excluded.rev
             WHERE psk_identities.revoked_at IS NOT NULL"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(identity.as_str())
            .bind(key.as_bytes())
            .bind(user_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(query_failed)?;
        if done.rows_affected() == 0 {
            return Err(PskStoreError::IdentityTaken(identity.to_string()));
        }
        Ok(())
    }

    async fn list_psks(&self) -> Result<Vec<PskListing>, PskStoreError> {
        let rows = sqlx::query(
            "SELECT identity, user_id, created_at, revoked_at FROM psk_identities
             ORDER BY created_at, identity",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_failed)?;
        rows.iter()
            .map(|r| {
                Ok(PskListing {
                    identity: r.try_get("identity")?,
                    user_id: r.try_get("user_id")?,
                    created_at: r.try_get("created_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_failed)
    }

    async fn revoke_psk(&self, identity: &PskIdentity, now: i64) -> Result<bool, PskStoreError> {
        let sql = format!(
            "UPDATE psk_identities SET psk = NULL, revoked_at = ?, rev = {NEXT_REV}
             WHERE identity = ? AND revoked_at IS NULL"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(identity.as_str())
            .execute(&self.pool)
            .await
            .map_err(query_failed)?;
        Ok(done.rows_affected() > 0)
    }

    async fn psk_changes(&self, after: i64, limit: u32) -> Result<Vec<PskChange>, PskStoreError> {
        let rows = sqlx::query(
            "SELECT identity, psk, user_id, rev FROM psk_identities
             WHERE rev > ? ORDER BY rev LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_failed)?;
        let mut changes = Vec::with_capacity(rows.len());
        for r in &rows {
            let raw: String = r.try_get("identity").map_err(query_failed)?;
            let psk: Option<Vec<u8>> = r.try_get("psk").map_err(query_failed)?;
            let user_id: Option<String> = r.try_get("user_id").map_err(query_failed)?;
            let rev: i64 = r.try_get("rev").map_err(query_failed)?;
            // A row the CLI could not have written (edited by hand) is
            // skipped rather than trusted.
            let Ok(identity) = PskIdentity::parse(&raw) else {
                tracing::warn!(identity = %raw, "ignoring a malformed PSK identity in the database");
                continue;
            };
            let entry = psk
                .and_then(|k| PskKey::from_bytes(k).ok())
                .map(|key| PskEntry {
                    identity: identity.clone(),
                    key,
                    user_id,
                });
            changes.push(PskChange {
                rev,
                identity,
                entry,
            });
        }
        Ok(changes)
    }
}
