//! Durable PSKs: the [`PskStore`] port on the shared database, so every
//! node's DTLS key ring follows the same keys.

use crate::error::psk as query_failed;
use async_trait::async_trait;
use sotto_core::psk::{
    PskChange, PskEntry, PskIdentity, PskKey, PskListing, PskStore, PskStoreError,
};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};

/// The [`PskStore`] on the chat database; made by
/// [`PostgresStore::psks`](crate::PostgresStore::psks).
pub struct PostgresPskStore {
    pool: PgPool,
}

impl PostgresPskStore {
    pub(crate) fn new(pool: PgPool) -> PostgresPskStore {
        PostgresPskStore { pool }
    }
}

/// The next change number, from the `psk_revs` counter row: its lock is
/// held until the change commits, so changes commit in `rev` order and a
/// node following "rev > last" cannot skip one (see the migration).
async fn next_rev(c: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("UPDATE psk_revs SET head = head + 1 RETURNING head")
        .fetch_one(c)
        .await
}

#[async_trait]
impl PskStore for PostgresPskStore {
    async fn add_psk(
        &self,
        identity: &PskIdentity,
        key: &PskKey,
        user_id: Option<&str>,
        now: i64,
    ) -> Result<(), PskStoreError> {
        let mut tx = self.pool.begin().await.map_err(query_failed)?;
        let rev = next_rev(&mut tx).await.map_err(query_failed)?;
        let done = sqlx::query(
            "INSERT INTO psk_identities (identity, psk, user_id, created_at, revoked_at, rev)
             VALUES ($1, $2, $3, $4, NULL, $5)
             ON CONFLICT (identity) DO UPDATE SET
                psk = EXCLUDED.psk, user_id = EXCLUDED.user_id,
                created_at = EXCLUDED.created_at, revoked_at = NULL, rev = EXCLUDED.rev
             WHERE psk_identities.revoked_at IS NOT NULL",
        )
        .bind(identity.as_str())
        .bind(key.as_bytes())
        .bind(user_id)
        .bind(now)
        .bind(rev)
        .execute(&mut *tx)
        .await
        .map_err(query_failed)?;
        if done.rows_affected() == 0 {
            // Dropping `tx` rolls the counter back too.
            return Err(PskStoreError::IdentityTaken(identity.to_string()));
        }
        tx.commit().await.map_err(query_failed)
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
        let mut tx = self.pool.begin().await.map_err(query_failed)?;
        let rev = next_rev(&mut tx).await.map_err(query_failed)?;
        let done = sqlx::query(
            "UPDATE psk_identities SET psk = NULL, revoked_at = $1, rev = $2
             WHERE identity = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(rev)
        .bind(identity.as_str())
        .execute(&mut *tx)
        .await
        .map_err(query_failed)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        tx.commit().await.map_err(query_failed)?;
        Ok(true)
    }

    async fn psk_changes(&self, after: i64, limit: u32) -> Result<Vec<PskChange>, PskStoreError> {
        let rows = sqlx::query(
            "SELECT identity, psk, user_id, rev FROM psk_identities
             WHERE rev > $1 ORDER BY rev LIMIT $2",
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
            // skipped rather than trusted; escaped, as it is untrusted.
            let Ok(identity) = PskIdentity::parse(&raw) else {
                tracing::warn!(identity = %raw.escape_debug(), "ignoring a malformed PSK identity in the database");
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
