//! The [`DirectoryStore`] port: reads for a contact list, each one
//! statement on the pool, answered from indexes.

use crate::PostgresStore;
use crate::error::classify;
use crate::messages::from_row;
use crate::users::profile_from;
use async_trait::async_trait;
use sotto_core::auth::{UserId, UserName};
use sotto_core::ports::{
    ConversationSummary, DirectoryStore, StoreError, UNREAD_WINDOW, UserProfile,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

/// Sorts after every character a name key may hold (ASCII letters,
/// digits, `_`, `-`, `.`), so `[prefix, prefix + END)` under the "C"
/// collation is exactly the keys that start with `prefix`: a range on the
/// unique `name_key` index, with no LIKE pattern characters to escape.
const END: char = '\u{7f}';

/// The user's peers (primary key prefix of `peers`), each conversation's
/// newest message (a backward step on the `(conversation, seq)` index),
/// the `limit` most recent; then, for those only, the unread count over
/// the newest [`UNREAD_WINDOW`] ids of the conversation (ids are
/// consecutive at the top: retention deletes only the oldest).
const CONVERSATIONS: &str = "
SELECT t.*, u.name AS name,
  (SELECT COUNT(*) FROM messages w
    WHERE w.conversation = t.conversation AND w.seq > t.seq - $2
      AND w.sender = t.peer AND w.recipient = $1 AND w.read_at IS NULL) AS unread
FROM (
  SELECT p.peer, p.conversation, m.*
  FROM peers p
  CROSS JOIN LATERAL (
    SELECT id, seq, sender, recipient, body, client_id, sent_at, delivered_at, read_at
    FROM messages WHERE conversation = p.conversation ORDER BY seq DESC LIMIT 1
  ) m
  WHERE p.user_id = $1
  ORDER BY m.id DESC LIMIT $3
) t JOIN users u ON u.id = t.peer
ORDER BY t.id DESC";

fn summary(r: &PgRow) -> Result<ConversationSummary, sqlx::Error> {
    let unread: i64 = r.try_get("unread")?;
    Ok(ConversationSummary {
        with: UserId::from_trusted(r.try_get("peer")?),
        name: UserName::from_trusted(r.try_get("name")?),
        last: from_row(r)?,
        unread: u32::try_from(unread).unwrap_or(u32::MAX),
    })
}

#[async_trait]
impl DirectoryStore for PostgresStore {
    async fn users_by_prefix(
        &self,
        prefix_key: &str,
        limit: u32,
    ) -> Result<Vec<UserProfile>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, public_key FROM users
             WHERE name_key >= $1 AND name_key < $2 ORDER BY name_key LIMIT $3",
        )
        .bind(prefix_key)
        .bind(format!("{prefix_key}{END}"))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(profile_from)
            .collect::<Result<_, _>>()
            .map_err(classify)
    }

    async fn conversations(
        &self,
        user: &UserId,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let rows = sqlx::query(CONVERSATIONS)
            .bind(user.as_str())
            .bind(i64::from(UNREAD_WINDOW))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(summary)
            .collect::<Result<_, _>>()
            .map_err(classify)
    }
}
