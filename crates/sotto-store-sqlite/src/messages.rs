//! The [`MessageStore`] port: writes through the group-commit writer
//! ([`crate::writer`]), reads (inboxes, history) through the reader pool,
//! which sees every committed write.

use crate::SqliteStore;
use crate::error::classify as map_err;
use async_trait::async_trait;
use sotto_core::auth::UserId;
use sotto_core::ports::{
    Entry, InboxItem, InboxState, MessageStore, Pending, StoreError, StoredMessage, Write,
    conversation,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use std::sync::Arc;

const COLUMNS: &str = "id, seq, sender, recipient, body, client_id, sent_at, delivered_at, read_at";

pub(crate) fn from_row(r: &SqliteRow) -> Result<StoredMessage, sqlx::Error> {
    Ok(StoredMessage {
        row: r.try_get("id")?,
        seq: r.try_get("seq")?,
        sender: UserId::from_trusted(r.try_get("sender")?),
        recipient: UserId::from_trusted(r.try_get("recipient")?),
        body: r.try_get("body")?,
        client_id: r.try_get("client_id")?,
        sent_at: r.try_get("sent_at")?,
        delivered_at: r.try_get("delivered_at")?,
        read_at: r.try_get("read_at")?,
    })
}

/// One inbox row joined with its message; None for a receipt whose
/// message is gone (retention).
fn item_from(r: &SqliteRow) -> Result<Option<InboxItem>, sqlx::Error> {
    let pos: i64 = r.try_get("pos")?;
    let kind: i64 = r.try_get("kind")?;
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
impl MessageStore for SqliteStore {
    async fn submit(&self, write: Write) -> Result<Pending, StoreError> {
        self.messages.submit(write).await
    }

    async fn inbox_state(&self, user: &UserId) -> Result<InboxState, StoreError> {
        let row = sqlx::query("SELECT head, confirmed FROM inboxes WHERE user_id = ?")
            .bind(user.as_str())
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?
            .into_iter()
            .next();
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
        let rows = sqlx::query(
            "SELECT i.pos, i.kind, i.peer, i.up_to,
                    m.id, m.seq, m.sender, m.recipient, m.body, m.client_id,
                    m.sent_at, m.delivered_at, m.read_at
             FROM inbox i LEFT JOIN messages m ON m.id = i.message
             WHERE i.user_id = ? AND i.pos > ? ORDER BY i.pos LIMIT ?",
        )
        .bind(user.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(item) = item_from(r).map_err(map_err)? {
                items.push(item);
            }
        }
        Ok(items)
    }

    async fn history(
        &self,
        a: &UserId,
        b: &UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(conversation(a, b))
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        found
            .iter()
            .map(from_row)
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }

    /// Deletes old inbox entries and messages, then recounts what each
    /// user has pending: a message deleted unconfirmed no longer counts
    /// against the cap. Both deletes scan their table: retention is rare,
    /// and a time index would cost every message a write.
    async fn delete_messages_before(&self, before: i64) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        sqlx::query("DELETE FROM inbox WHERE created_at < ?")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let done = sqlx::query("DELETE FROM messages WHERE sent_at < ?")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() > 0 {
            sqlx::query(
                "UPDATE inboxes SET pending =
                   (SELECT COUNT(*) FROM inbox i JOIN messages m ON m.id = i.message
                    WHERE i.user_id = inboxes.user_id AND i.kind = 0 AND m.delivered_at IS NULL)
                 WHERE pending > 0",
            )
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected())
    }
}
