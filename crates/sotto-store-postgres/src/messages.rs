//! The [`MessageStore`] port: writes through the group-commit writer
//! ([`crate::writer`]), reads (inboxes, history) and retention through the
//! pool. A read sees every write whose [`Pending`] has resolved: the
//! writer answers only after the commit, and every query takes a fresh
//! snapshot (READ COMMITTED).

use crate::PostgresStore;
use crate::error::{classify as map_err, lost_race, utf8};
use async_trait::async_trait;
use sotto_core::auth::UserId;
use sotto_core::ports::{
    Entry, InboxItem, InboxState, MessageStore, Pending, StoreError, StoredMessage, Write,
    conversation,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use std::sync::Arc;

/// Tries of a retention transaction that lost a deadlock to the writers.
const RETENTION_TRIES: u32 = 3;

pub(crate) fn from_row(r: &PgRow) -> Result<StoredMessage, sqlx::Error> {
    Ok(StoredMessage {
        row: r.try_get("id")?,
        seq: r.try_get("seq")?,
        sender: UserId::from_trusted(r.try_get("sender")?),
        recipient: UserId::from_trusted(r.try_get("recipient")?),
        body: utf8(r.try_get("body")?)?,
        client_id: r
            .try_get::<Option<Vec<u8>>, _>("client_id")?
            .map(utf8)
            .transpose()?,
        sent_at: r.try_get("sent_at")?,
        delivered_at: r.try_get("delivered_at")?,
        read_at: r.try_get("read_at")?,
    })
}

/// One inbox row joined with its message; None for a message entry whose
/// message is gone (retention).
pub(crate) fn item_from(r: &PgRow) -> Result<Option<InboxItem>, sqlx::Error> {
    let pos: i64 = r.try_get("pos")?;
    let kind: i32 = r.try_get("kind")?;
    let has_message = r.try_get::<Option<i64>, _>("id")?.is_some();
    let peer = || -> Result<(UserId, i64), sqlx::Error> {
        let with = r.try_get::<Option<String>, _>("peer")?.unwrap_or_default();
        let up_to = r.try_get::<Option<i64>, _>("up_to")?.unwrap_or(0);
        Ok((UserId::from_trusted(with), up_to))
    };
    let entry = match kind {
        0 | 3 if has_message => Entry::Message(Arc::new(from_row(r)?)),
        1 => {
            let (with, id) = peer()?;
            Entry::Delivered { with, id }
        }
        2 => {
            let (with, up_to) = peer()?;
            Entry::Read { with, up_to }
        }
        _ => return Ok(None),
    };
    Ok(Some(InboxItem { pos, entry }))
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn submit(&self, write: Write) -> Result<Pending, StoreError> {
        self.messages.submit(write).await
    }

    async fn inbox_state(&self, user: &UserId) -> Result<InboxState, StoreError> {
        let row = sqlx::query("SELECT head, confirmed FROM inboxes WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        let Some(r) = row else {
            return Ok(InboxState::default());
        };
        Ok(InboxState {
            head: r.try_get(0).map_err(map_err)?,
            confirmed: r.try_get(1).map_err(map_err)?,
        })
    }

    async fn inbox(
        &self,
        user: &UserId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<InboxItem>, StoreError> {
        self.reader.inbox(user, after, limit).await
    }

    async fn history(
        &self,
        a: &UserId,
        b: &UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let found = sqlx::query(
            "SELECT id, seq, sender, recipient, body, client_id, sent_at, delivered_at, read_at
             FROM messages WHERE conversation = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(conversation(a, b))
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        found
            .iter()
            .map(from_row)
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }

    /// Deletes old inbox entries and messages, then recounts what each
    /// user has pending (a message deleted unconfirmed no longer counts
    /// against the cap). The deletes lock message rows a writer may be
    /// marking delivered while it holds inbox rows the recount needs: such
    /// a deadlock is broken by the server and the loser retried.
    async fn delete_messages_before(&self, before: i64) -> Result<u64, StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match retention(&self.pool, before).await {
                Err(e) if lost_race(&e) && tries < RETENTION_TRIES => {
                    tracing::info!(error = %e, "retention lost a race with the writers; retrying");
                }
                done => return done.map_err(map_err),
            }
        }
    }
}

async fn retention(pool: &sqlx::PgPool, before: i64) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Deleting months of messages may take longer than the usual bound.
    sqlx::query("SET LOCAL statement_timeout = '15min'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM inbox WHERE created_at < $1")
        .bind(before)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM messages WHERE sent_at < $1")
        .bind(before)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() > 0 {
        // The counter rows in the writers' lock order first (see
        // writer.rs), then the recount under those locks.
        sqlx::query("SELECT 1 FROM inboxes WHERE pending > 0 ORDER BY user_id FOR UPDATE")
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE inboxes SET pending =
               (SELECT COUNT(*) FROM inbox i JOIN messages m ON m.id = i.message
                WHERE i.user_id = inboxes.user_id AND i.kind = 0 AND m.delivered_at IS NULL)
             WHERE pending > 0",
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(done.rows_affected())
}
