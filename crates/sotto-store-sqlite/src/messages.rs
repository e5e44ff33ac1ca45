//! The [`MessageStore`] port: history, the undelivered queue, receipts,
//! retention.

use crate::SqliteStore;
use crate::error::classify as map_err;
use async_trait::async_trait;
use sotto_core::auth::UserId;
use sotto_core::ports::{
    Inserted, MessageStore, NewMessage, StoreError, StoredMessage, conversation,
};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{QueryBuilder, Row};

const COLUMNS: &str = "id, seq, sender, recipient, body, client_id, sent_at, delivered_at, read_at";

fn from_row(r: &SqliteRow) -> Result<StoredMessage, sqlx::Error> {
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

fn rows(rows: Vec<SqliteRow>) -> Result<Vec<StoredMessage>, StoreError> {
    rows.iter()
        .map(from_row)
        .collect::<Result<_, _>>()
        .map_err(map_err)
}

async fn insert(
    db: &SqlitePool,
    m: &NewMessage<'_>,
    max_undelivered: u32,
) -> Result<Inserted, StoreError> {
    if let Some(existing) = by_client_id(db, m).await? {
        return Ok(Inserted::Duplicate(existing));
    }
    let conv = conversation(m.sender, m.recipient);
    // One statement: the next seq of the conversation, and the cap on
    // undelivered messages, decided atomically (the pool has one writer).
    let sql = format!(
        "INSERT INTO messages (conversation, seq, sender, recipient, body, client_id, sent_at, delivered_at)
         SELECT ?1, COALESCE((SELECT MAX(seq) FROM messages WHERE conversation = ?1), 0) + 1,
                ?2, ?3, ?4, ?5, ?6, ?7
         WHERE ?7 IS NOT NULL
            OR (SELECT COUNT(*) FROM messages WHERE recipient = ?3 AND delivered_at IS NULL) < ?8
         RETURNING {COLUMNS}"
    );
    // `fetch_all`, not `fetch_optional`: with RETURNING, SQLite hands the
    // row out at the first step and commits only when the statement runs
    // to its end. Stopping after the row left the commit to the statement's
    // reset, whose error (SQLITE_FULL on a full disk) was lost: messages
    // were acknowledged that were never stored.
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&conv)
        .bind(m.sender.as_str())
        .bind(m.recipient.as_str())
        .bind(m.body)
        .bind(m.client_id)
        .bind(m.sent_at)
        .bind(m.delivered_at)
        .bind(max_undelivered)
        .fetch_all(db)
        .await
        .map_err(map_err)?;
    match rows.pop() {
        Some(r) => Ok(Inserted::Stored(from_row(&r).map_err(map_err)?)),
        None => Ok(Inserted::QueueFull),
    }
}

async fn by_client_id(
    db: &SqlitePool,
    m: &NewMessage<'_>,
) -> Result<Option<StoredMessage>, StoreError> {
    let Some(client_id) = m.client_id else {
        return Ok(None);
    };
    let sql = format!("SELECT {COLUMNS} FROM messages WHERE sender = ? AND client_id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(m.sender.as_str())
        .bind(client_id)
        .fetch_optional(db)
        .await
        .map_err(map_err)?;
    row.map(|r| from_row(&r)).transpose().map_err(map_err)
}

async fn undelivered(
    db: &SqlitePool,
    to: &UserId,
    limit: u32,
) -> Result<Vec<StoredMessage>, StoreError> {
    // Through the writer: a message committed a moment ago must be seen.
    let sql = format!(
        "SELECT {COLUMNS} FROM messages WHERE recipient = ? AND delivered_at IS NULL ORDER BY id LIMIT ?"
    );
    let found = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to.as_str())
        .bind(limit)
        .fetch_all(db)
        .await
        .map_err(map_err)?;
    rows(found)
}

async fn mark_delivered(db: &SqlitePool, ids: &[i64], now: i64) -> Result<(), StoreError> {
    for chunk in ids.chunks(500) {
        let mut q = QueryBuilder::new("UPDATE messages SET delivered_at = ");
        q.push_bind(now).push(" WHERE id IN (");
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        q.push(")");
        q.build().execute(db).await.map_err(map_err)?;
    }
    Ok(())
}

async fn history(
    db: &SqlitePool,
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
        .fetch_all(db)
        .await
        .map_err(map_err)?;
    rows(found)
}

async fn mark_read(
    db: &SqlitePool,
    reader: &UserId,
    from: &UserId,
    up_to: i64,
    now: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE messages SET read_at = ?1, delivered_at = COALESCE(delivered_at, ?1)
         WHERE conversation = ?2 AND recipient = ?3 AND seq <= ?4 AND read_at IS NULL",
    )
    .bind(now)
    .bind(conversation(reader, from))
    .bind(reader.as_str())
    .bind(up_to)
    .execute(db)
    .await
    .map_err(map_err)?;
    Ok(done.rows_affected())
}

async fn delete_before(db: &SqlitePool, before: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM messages WHERE sent_at < ?")
        .bind(before)
        .execute(db)
        .await
        .map_err(map_err)?;
    Ok(done.rows_affected())
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_message(
        &self,
        message: &NewMessage<'_>,
        max_undelivered: u32,
    ) -> Result<Inserted, StoreError> {
        insert(&self.writer, message, max_undelivered).await
    }

    async fn undelivered(&self, to: &UserId, limit: u32) -> Result<Vec<StoredMessage>, StoreError> {
        undelivered(&self.writer, to, limit).await
    }

    async fn mark_delivered(&self, rows: &[i64], now: i64) -> Result<(), StoreError> {
        mark_delivered(&self.writer, rows, now).await
    }

    async fn mark_undelivered(&self, row: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE messages SET delivered_at = NULL WHERE id = ?")
            .bind(row)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn requeue(
        &self,
        sender: &UserId,
        recipient: &UserId,
        seq: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE messages SET delivered_at = NULL
             WHERE conversation = ? AND seq = ? AND sender = ? AND recipient = ?",
        )
        .bind(conversation(sender, recipient))
        .bind(seq)
        .bind(sender.as_str())
        .bind(recipient.as_str())
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn history(
        &self,
        a: &UserId,
        b: &UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        history(&self.reader, a, b, before, limit).await
    }

    async fn mark_read(
        &self,
        reader: &UserId,
        from: &UserId,
        up_to: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        mark_read(&self.writer, reader, from, up_to, now).await
    }

    async fn delete_messages_before(&self, before: i64) -> Result<u64, StoreError> {
        delete_before(&self.writer, before).await
    }
}
