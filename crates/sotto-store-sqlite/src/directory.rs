//! The [`DirectoryStore`] port: reads for a contact list, each one
//! statement on the reader pool, answered from indexes.

use crate::SqliteStore;
use crate::error::classify;
use crate::messages::from_row;
use crate::users::profile_from;
use async_trait::async_trait;
use sotto_core::auth::{UserId, UserName};
use sotto_core::ports::{
    ConversationSummary, DirectoryStore, StoreError, UNREAD_WINDOW, UserProfile,
};
use sqlx::Row;

/// Sorts after every character a name key may hold (they are ASCII
/// letters, digits, `_`, `-` and `.`), so `[prefix, prefix + END)` is
/// exactly the keys that start with `prefix`: a range on the unique
/// `name_key` index, with no LIKE pattern characters to escape.
const END: char = '\u{7f}';

/// The user's peers (primary key prefix of `peers`), each conversation's
/// newest message (`MAX(seq)` on the `(conversation, seq)` index), the
/// `limit` most recent of those; then, for those only, the unread count
/// over the newest [`UNREAD_WINDOW`] ids of the conversation (ids are
/// consecutive at the top: retention deletes only the oldest), a range
/// on the same index.
const CONVERSATIONS: &str = "
SELECT t.*, u.name AS name,
  (SELECT COUNT(*) FROM messages w
    WHERE w.conversation = t.conversation AND w.seq > t.seq - ?
      AND w.sender = t.peer AND w.recipient = ? AND w.read_at IS NULL) AS unread
FROM (
  SELECT p.peer, p.conversation,
    m.id, m.seq, m.sender, m.recipient, m.body, m.client_id, m.sent_at, m.delivered_at, m.read_at
  FROM peers p JOIN messages m
    ON m.conversation = p.conversation
   AND m.seq = (SELECT MAX(seq) FROM messages WHERE conversation = p.conversation)
  WHERE p.user_id = ?
  ORDER BY m.id DESC LIMIT ?
) t JOIN users u ON u.id = t.peer
ORDER BY t.id DESC";

#[async_trait]
impl DirectoryStore for SqliteStore {
    async fn users_by_prefix(
        &self,
        prefix_key: &str,
        limit: u32,
    ) -> Result<Vec<UserProfile>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, public_key FROM users
             WHERE name_key >= ? AND name_key < ? ORDER BY name_key LIMIT ?",
        )
        .bind(prefix_key)
        .bind(format!("{prefix_key}{END}"))
        .bind(limit)
        .fetch_all(&self.reader)
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
            .bind(i64::from(UNREAD_WINDOW))
            .bind(user.as_str())
            .bind(user.as_str())
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        let summary = |r: &sqlx::sqlite::SqliteRow| -> Result<ConversationSummary, sqlx::Error> {
            let unread: i64 = r.try_get("unread")?;
            Ok(ConversationSummary {
                with: UserId::from_trusted(r.try_get("peer")?),
                name: UserName::from_trusted(r.try_get("name")?),
                last: from_row(r)?,
                unread: u32::try_from(unread).unwrap_or(u32::MAX),
            })
        };
        rows.iter()
            .map(summary)
            .collect::<Result<_, _>>()
            .map_err(classify)
    }
}
