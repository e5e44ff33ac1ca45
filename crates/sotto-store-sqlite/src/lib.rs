//! The embedded store: one SQLite file, zero set-up.
//!
//! SQLite allows one writer at a time; several pooled writers would just
//! take turns at "database is locked". So writes go through a pool of one
//! connection and reads through a small pool of their own, in WAL mode so
//! readers never wait for the writer. A busy timeout covers other processes
//! (a backup, the sqlite3 shell) holding the lock briefly.

mod file;
mod messages;
mod psk;

use async_trait::async_trait;
pub use psk::SqlitePskStore;
use sotto_core::auth::{TokenHash, UserId, UserName};
use sotto_core::ports::{
    Inserted, NewMessage, SessionKind, SessionRecord, Store, StoreError, StoredMessage,
    UserProfile, UserRecord,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

const READERS: u32 = 4;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database named by `url`, which is a
    /// `sqlite:` URL or a plain file path, and applies the embedded
    /// migrations.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = connect_options(url)?;
        file::create_private(options.get_filename());
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| db_error(&format!("cannot open database {url}"), e))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| StoreError::Database(format!("cannot migrate database {url}: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.create_if_missing(false))
            .await
            .map_err(|e| db_error(&format!("cannot open database {url}"), e))?;
        Ok(SqliteStore { writer, reader })
    }

    /// The device keys kept in the same file, through the same writer.
    pub fn psks(&self) -> SqlitePskStore {
        SqlitePskStore::new(self.writer.clone())
    }
}

/// How every pool on the database file connects (the chat store's and the
/// DTLS key store's): WAL, foreign keys, a busy timeout.
pub fn connect_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    let base = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad database URL {url}: {e}")))?
    } else {
        SqliteConnectOptions::new().filename(Path::new(url))
    };
    Ok(base
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL under WAL survives a process crash; only an OS crash or power
        // loss can drop the last transactions. See docs/DEPLOY.md.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5)))
}

fn db_error(context: &str, e: sqlx::Error) -> StoreError {
    StoreError::Database(format!("{context}: {e}"))
}

fn map_err(e: sqlx::Error) -> StoreError {
    db_error("query failed", e)
}

fn profile_from(row: &SqliteRow) -> Result<UserProfile, sqlx::Error> {
    Ok(UserProfile {
        id: UserId::from_trusted(row.try_get("id")?),
        name: UserName::from_trusted(row.try_get("name")?),
        public_key: row.try_get("public_key")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: &UserRecord, now: i64) -> Result<(), StoreError> {
        let p = &user.profile;
        let result = sqlx::query(
            "INSERT INTO users (id, name, name_key, password_hash, public_key, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(p.id.as_str())
        .bind(p.name.as_str())
        .bind(p.name.key())
        .bind(&user.password_hash)
        .bind(&p.public_key)
        .bind(now)
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                if e.message().contains("name_key") {
                    Err(StoreError::NameTaken)
                } else {
                    Err(StoreError::IdTaken)
                }
            }
            Err(e) => Err(map_err(e)),
        }
    }

    async fn user_by_name(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError> {
        let row =
            sqlx::query("SELECT id, name, public_key, password_hash FROM users WHERE name_key = ?")
                .bind(name.key())
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        row.map(|r| {
            Ok(UserRecord {
                profile: profile_from(&r)?,
                password_hash: r.try_get("password_hash")?,
            })
        })
        .transpose()
        .map_err(map_err)
    }

    async fn user_exists(&self, id: &UserId) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM users WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(row.is_some())
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<UserProfile>, StoreError> {
        let row = sqlx::query("SELECT id, name, public_key FROM users WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.map(|r| profile_from(&r)).transpose().map_err(map_err)
    }

    async fn set_public_key(&self, id: &UserId, key: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET public_key = ? WHERE id = ?")
            .bind(key)
            .bind(id.as_str())
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(())
    }

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
        .map_err(map_err)?;
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
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        let Some(r) = row else { return Ok(None) };
        let session = SessionRecord {
            token_hash: *hash,
            created_at: r.try_get("created_at").map_err(map_err)?,
            last_used_at: r.try_get("last_used_at").map_err(map_err)?,
        };
        Ok(Some((session, profile_from(&r).map_err(map_err)?)))
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
            q.build().execute(&self.writer).await.map_err(map_err)?;
        }
        Ok(())
    }

    async fn delete_session(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(hash.as_bytes())
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_other_sessions(
        &self,
        user: &UserId,
        keep: &TokenHash,
        kind: SessionKind,
    ) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM sessions WHERE user_id = ? AND token_hash <> ? AND kind = ?")
                .bind(user.as_str())
                .bind(keep.as_bytes())
                .bind(kind.as_str())
                .execute(&self.writer)
                .await
                .map_err(map_err)?;
        Ok(done.rows_affected())
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
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn list_users(&self, limit: u32) -> Result<Vec<UserProfile>, StoreError> {
        let rows = sqlx::query("SELECT id, name, public_key FROM users ORDER BY name_key LIMIT ?")
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(profile_from)
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }

    async fn insert_message(
        &self,
        message: &NewMessage<'_>,
        max_undelivered: u32,
    ) -> Result<Inserted, StoreError> {
        messages::insert(&self.writer, message, max_undelivered).await
    }

    async fn undelivered(&self, to: &UserId, limit: u32) -> Result<Vec<StoredMessage>, StoreError> {
        messages::undelivered(&self.writer, to, limit).await
    }

    async fn mark_delivered(&self, rows: &[i64], now: i64) -> Result<(), StoreError> {
        messages::mark_delivered(&self.writer, rows, now).await
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
        .bind(sotto_core::ports::conversation(sender, recipient))
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
        messages::history(&self.reader, a, b, before, limit).await
    }

    async fn mark_read(
        &self,
        reader: &UserId,
        from: &UserId,
        up_to: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        messages::mark_read(&self.writer, reader, from, up_to, now).await
    }

    async fn delete_messages_before(&self, before: i64) -> Result<u64, StoreError> {
        messages::delete_before(&self.writer, before).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        (dir, store)
    }

    fn user(id: &str, name: &str) -> UserRecord {
        UserRecord {
            profile: UserProfile {
                id: UserId::parse(id).unwrap(),
                name: UserName::parse(name).unwrap(),
                public_key: String::new(),
            },
            password_hash: "h".into(),
        }
    }

    #[tokio::test]
    async fn names_are_unique_case_insensitively() {
        let (_d, s) = temp_store().await;
        s.create_user(&user("aaaaaa", "Alice"), 0).await.unwrap();
        assert!(matches!(
            s.create_user(&user("bbbbbb", "aLICE"), 0).await,
            Err(StoreError::NameTaken)
        ));
        assert!(matches!(
            s.create_user(&user("aaaaaa", "Bob"), 0).await,
            Err(StoreError::IdTaken)
        ));
        let found = s
            .user_by_name(&UserName::parse("ALICE").unwrap())
            .await
            .unwrap();
        assert_eq!(found.unwrap().profile.name.as_str(), "Alice");
    }

    #[tokio::test]
    async fn sessions_expire_by_idle_and_age() {
        let (_d, s) = temp_store().await;
        s.create_user(&user("aaaaaa", "a"), 0).await.unwrap();
        let id = UserId::parse("aaaaaa").unwrap();
        let old = SessionRecord {
            token_hash: TokenHash([1; 32]),
            created_at: 0,
            last_used_at: 0,
        };
        let fresh = SessionRecord {
            token_hash: TokenHash([2; 32]),
            created_at: 0,
            last_used_at: 0,
        };
        s.create_session(&id, &old, SessionKind::Compat)
            .await
            .unwrap();
        s.create_session(&id, &fresh, SessionKind::Api)
            .await
            .unwrap();
        s.touch_sessions(&[fresh.token_hash], 100).await.unwrap();
        assert_eq!(s.delete_expired_sessions(50, -1).await.unwrap(), 1);
        assert!(s.session(&old.token_hash).await.unwrap().is_none());
        let (rec, prof) = s.session(&fresh.token_hash).await.unwrap().unwrap();
        assert_eq!(rec.last_used_at, 100);
        assert_eq!(prof.id, id);
    }

    fn msg<'a>(from: &'a UserId, to: &'a UserId, body: &'a str, cid: &'a str) -> NewMessage<'a> {
        NewMessage {
            sender: from,
            recipient: to,
            body,
            client_id: Some(cid),
            sent_at: 10,
            delivered_at: None,
        }
    }

    #[tokio::test]
    async fn messages_get_per_conversation_ids_dedupe_and_page() {
        let (_d, s) = temp_store().await;
        for (id, name) in [("aaaaaa", "a"), ("bbbbbb", "b"), ("cccccc", "c")] {
            s.create_user(&user(id, name), 0).await.unwrap();
        }
        let [a, b, c] = ["aaaaaa", "bbbbbb", "cccccc"].map(|i| UserId::parse(i).unwrap());
        let mut seqs = Vec::new();
        for i in 0..5 {
            let cid = format!("m{i}");
            let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            match s
                .insert_message(&msg(from, to, "x", &cid), 100)
                .await
                .unwrap()
            {
                Inserted::Stored(m) => seqs.push(m.seq),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5], "one sequence per conversation");
        match s
            .insert_message(&msg(&a, &c, "x", "m0"), 100)
            .await
            .unwrap()
        {
            Inserted::Duplicate(m) => assert_eq!((m.seq, m.recipient.as_str()), (1, "bbbbbb")),
            other => panic!("a resent client_id is a duplicate, got {other:?}"),
        }
        match s
            .insert_message(&msg(&b, &c, "x", "m0"), 100)
            .await
            .unwrap()
        {
            Inserted::Stored(m) => assert_eq!(m.seq, 1, "client ids are per sender"),
            other => panic!("{other:?}"),
        }
        let page = s.history(&b, &a, None, 2).await.unwrap();
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [5, 4]);
        let page = s.history(&a, &b, Some(4), 10).await.unwrap();
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 2, 1]);
        assert_eq!(s.undelivered(&b, 10).await.unwrap().len(), 3);
        assert_eq!(s.mark_read(&b, &a, 3, 50).await.unwrap(), 2);
        assert_eq!(s.delete_messages_before(11).await.unwrap(), 6);
    }

    #[tokio::test]
    async fn the_offline_cap_counts_undelivered_only() {
        let (_d, s) = temp_store().await;
        for (id, name) in [("aaaaaa", "a"), ("bbbbbb", "b")] {
            s.create_user(&user(id, name), 0).await.unwrap();
        }
        let [a, b] = ["aaaaaa", "bbbbbb"].map(|i| UserId::parse(i).unwrap());
        for cid in ["1", "2"] {
            assert!(matches!(
                s.insert_message(&msg(&a, &b, "x", cid), 2).await.unwrap(),
                Inserted::Stored(_)
            ));
        }
        assert!(matches!(
            s.insert_message(&msg(&a, &b, "x", "3"), 2).await.unwrap(),
            Inserted::QueueFull
        ));
        let rows: Vec<i64> = s
            .undelivered(&b, 10)
            .await
            .unwrap()
            .iter()
            .map(|m| m.row)
            .collect();
        s.mark_delivered(&rows, 20).await.unwrap();
        assert!(matches!(
            s.insert_message(&msg(&a, &b, "x", "3"), 2).await.unwrap(),
            Inserted::Stored(_)
        ));
    }
}
