//! The statements of each message write, inside the writer's transaction
//! (see [`crate::writer`] for the batch, the lock order and the retries).
//! The same steps as the SQLite writer, so both stores answer alike.

use crate::messages::from_row;
use sotto_core::auth::UserId;
use sotto_core::ports::Written;
use sotto_core::ports::{
    Addressed, Entry, InboxItem, NewMessage, Sent, StoredMessage, conversation,
};
use sqlx::PgConnection;
use std::sync::Arc;

/// Inbox entry kinds, as stored (see the migration).
const KIND_RECEIVED: i32 = 0;
const KIND_DELIVERED: i32 = 1;
const KIND_READ: i32 = 2;
const KIND_OWN_COPY: i32 = 3;

/// The first copy of a resend.
const RESEND: &str =
    "SELECT id, seq, sender, recipient, body, client_id, sent_at, delivered_at, read_at
     FROM messages WHERE sender = $1 AND recipient = $2 AND client_id = $3";

pub(crate) async fn send(
    c: &mut PgConnection,
    m: &NewMessage,
    max_pending: u32,
) -> Result<Sent, sqlx::Error> {
    if let Some(client_id) = &m.client_id {
        let first = sqlx::query(RESEND)
            .bind(m.sender.as_str())
            .bind(m.recipient.as_str())
            .bind(client_id.as_bytes())
            .fetch_optional(&mut *c)
            .await?;
        if let Some(first) = first {
            return Ok(Sent::Duplicate(from_row(&first)?));
        }
    }
    // One statement takes the recipient's next position and counts the
    // message as pending, unless the recipient is at the cap (or unknown).
    let recipient_pos: Option<i64> = sqlx::query_scalar(
        "UPDATE inboxes SET head = head + 1, pending = pending + 1
         WHERE user_id = $1 AND pending < $2 RETURNING head",
    )
    .bind(m.recipient.as_str())
    .bind(i64::from(max_pending))
    .fetch_optional(&mut *c)
    .await?;
    let Some(recipient_pos) = recipient_pos else {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
            .bind(m.recipient.as_str())
            .fetch_one(&mut *c)
            .await?;
        return Ok(match exists {
            true => Sent::QueueFull,
            false => Sent::UnknownRecipient,
        });
    };
    // The conversation's next id and the message, in one round trip.
    let (row, seq): (i64, i64) = sqlx::query_as(
        "WITH c AS (
            INSERT INTO conversations (key, head) VALUES ($1, 1)
            ON CONFLICT (key) DO UPDATE SET head = conversations.head + 1 RETURNING head)
         INSERT INTO messages (conversation, seq, sender, recipient, body, client_id, sent_at)
         SELECT $1, head, $2, $3, $4, $5, $6 FROM c RETURNING id, seq",
    )
    .bind(conversation(&m.sender, &m.recipient))
    .bind(m.sender.as_str())
    .bind(m.recipient.as_str())
    .bind(m.body.as_bytes())
    .bind(m.client_id.as_ref().map(String::as_bytes))
    .bind(m.sent_at)
    .fetch_one(&mut *c)
    .await?;
    let received = NewEntry::message(KIND_RECEIVED, row, m.sent_at);
    insert_entry(c, &m.recipient, recipient_pos, &received).await?;
    let sender_pos = match m.sender != m.recipient {
        true => {
            let copy = NewEntry::message(KIND_OWN_COPY, row, m.sent_at);
            append(c, &m.sender, &copy).await?
        }
        false => None,
    };
    let stored = StoredMessage {
        row,
        seq,
        sender: m.sender.clone(),
        recipient: m.recipient.clone(),
        body: m.body.clone(),
        client_id: m.client_id.clone(),
        sent_at: m.sent_at,
        delivered_at: None,
        read_at: None,
    };
    Ok(Sent::Stored {
        message: Arc::new(stored),
        recipient_pos,
        sender_pos,
    })
}

/// An inbox row to append.
struct NewEntry<'a> {
    kind: i32,
    message: Option<i64>,
    peer: Option<&'a str>,
    up_to: Option<i64>,
    at: i64,
}

impl NewEntry<'_> {
    fn message(kind: i32, row: i64, at: i64) -> NewEntry<'static> {
        NewEntry {
            kind,
            message: Some(row),
            peer: None,
            up_to: None,
            at,
        }
    }

    fn receipt(kind: i32, peer: &UserId, up_to: i64, at: i64) -> NewEntry<'_> {
        NewEntry {
            kind,
            message: None,
            peer: Some(peer.as_str()),
            up_to: Some(up_to),
            at,
        }
    }
}

/// Appends an entry to `user`'s inbox at its next position, taken from
/// the counter row in the same statement; None if the user does not exist.
async fn append(
    c: &mut PgConnection,
    user: &UserId,
    e: &NewEntry<'_>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH h AS (UPDATE inboxes SET head = head + 1 WHERE user_id = $1 RETURNING head)
         INSERT INTO inbox (user_id, pos, kind, message, peer, up_to, created_at)
         SELECT $1, head, $2, $3, $4, $5, $6 FROM h RETURNING pos",
    )
    .bind(user.as_str())
    .bind(e.kind)
    .bind(e.message)
    .bind(e.peer)
    .bind(e.up_to)
    .bind(e.at)
    .fetch_optional(&mut *c)
    .await
}

async fn insert_entry(
    c: &mut PgConnection,
    user: &UserId,
    pos: i64,
    e: &NewEntry<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO inbox (user_id, pos, kind, message, peer, up_to, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(user.as_str())
    .bind(pos)
    .bind(e.kind)
    .bind(e.message)
    .bind(e.peer)
    .bind(e.up_to)
    .bind(e.at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

fn confirmed(confirmed: i64) -> Written {
    Written::Confirmed {
        confirmed,
        delivered: 0,
        receipts: Vec::new(),
    }
}

pub(crate) async fn confirm(
    c: &mut PgConnection,
    user: &UserId,
    up_to: i64,
    now: i64,
) -> Result<Written, sqlx::Error> {
    let state: Option<(i64, i64)> =
        sqlx::query_as("SELECT head, confirmed FROM inboxes WHERE user_id = $1 FOR UPDATE")
            .bind(user.as_str())
            .fetch_optional(&mut *c)
            .await?;
    let Some((head, done)) = state else {
        return Ok(confirmed(0));
    };
    let to = up_to.min(head);
    if to <= done {
        return Ok(confirmed(done));
    }
    sqlx::query("UPDATE inboxes SET confirmed = $2 WHERE user_id = $1")
        .bind(user.as_str())
        .bind(to)
        .execute(&mut *c)
        .await?;
    // Per sender, the newest newly delivered id: receipts are cumulative,
    // so a batch of confirmations costs one receipt per sender.
    let per_sender: Vec<(String, i64)> = sqlx::query_as(
        "SELECT m.sender, MAX(m.seq) FROM inbox i JOIN messages m ON m.id = i.message
         WHERE i.user_id = $1 AND i.pos > $2 AND i.pos <= $3 AND i.kind = 0
           AND m.delivered_at IS NULL
         GROUP BY m.sender ORDER BY m.sender",
    )
    .bind(user.as_str())
    .bind(done)
    .bind(to)
    .fetch_all(&mut *c)
    .await?;
    let delivered = sqlx::query(
        "UPDATE messages SET delivered_at = $4 WHERE delivered_at IS NULL AND id IN
           (SELECT message FROM inbox WHERE user_id = $1 AND pos > $2 AND pos <= $3 AND kind = 0)",
    )
    .bind(user.as_str())
    .bind(done)
    .bind(to)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected();
    let mut receipts = Vec::new();
    for (sender, up_to) in per_sender {
        let sender = UserId::from_trusted(sender);
        if sender == *user {
            continue;
        }
        let entry = NewEntry::receipt(KIND_DELIVERED, user, up_to, now);
        if let Some(pos) = append(c, &sender, &entry).await? {
            let entry = Entry::Delivered {
                with: user.clone(),
                id: up_to,
            };
            receipts.push(Addressed {
                user: sender,
                item: InboxItem { pos, entry },
            });
        }
    }
    release_pending(c, user, delivered).await?;
    Ok(Written::Confirmed {
        confirmed: to,
        delivered,
        receipts,
    })
}

async fn release_pending(c: &mut PgConnection, user: &UserId, n: u64) -> Result<(), sqlx::Error> {
    if n > 0 {
        sqlx::query("UPDATE inboxes SET pending = GREATEST(pending - $2, 0) WHERE user_id = $1")
            .bind(user.as_str())
            .bind(i64::try_from(n).unwrap_or(i64::MAX))
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

pub(crate) async fn read(
    c: &mut PgConnection,
    reader: &UserId,
    from: &UserId,
    up_to: i64,
    now: i64,
) -> Result<Option<Addressed>, sqlx::Error> {
    let conv = conversation(reader, from);
    let newest: Option<i64> = sqlx::query_scalar(
        "SELECT seq FROM messages WHERE conversation = $1 AND recipient = $2 AND sender = $3
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(&conv)
    .bind(reader.as_str())
    .bind(from.as_str())
    .fetch_optional(&mut *c)
    .await?;
    let Some(newest) = newest else {
        return Ok(None);
    };
    let up_to = up_to.min(newest);
    let undelivered: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages WHERE conversation = $1 AND recipient = $2
           AND sender = $3 AND seq <= $4 AND delivered_at IS NULL",
    )
    .bind(&conv)
    .bind(reader.as_str())
    .bind(from.as_str())
    .bind(up_to)
    .fetch_one(&mut *c)
    .await?;
    let changed = sqlx::query(
        "UPDATE messages SET read_at = $5, delivered_at = COALESCE(delivered_at, $5)
         WHERE conversation = $1 AND recipient = $2 AND sender = $3 AND seq <= $4
           AND read_at IS NULL",
    )
    .bind(&conv)
    .bind(reader.as_str())
    .bind(from.as_str())
    .bind(up_to)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected();
    release_pending(c, reader, u64::try_from(undelivered).unwrap_or(0)).await?;
    if changed == 0 || reader == from {
        return Ok(None);
    }
    let entry = NewEntry::receipt(KIND_READ, reader, up_to, now);
    let Some(pos) = append(c, from, &entry).await? else {
        return Ok(None);
    };
    let entry = Entry::Read {
        with: reader.clone(),
        up_to,
    };
    Ok(Some(Addressed {
        user: from.clone(),
        item: InboxItem { pos, entry },
    }))
}
