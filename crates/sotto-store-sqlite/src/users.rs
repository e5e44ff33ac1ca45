//! The [`UserStore`] port.

use crate::SqliteStore;
use crate::error::{Unique, classify, unique_violation};
use async_trait::async_trait;
use sotto_core::auth::{UserId, UserName};
use sotto_core::ports::{StoreError, UserProfile, UserRecord, UserStore};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

pub(crate) fn profile_from(row: &SqliteRow) -> Result<UserProfile, sqlx::Error> {
    Ok(UserProfile {
        id: UserId::from_trusted(row.try_get("id")?),
        name: UserName::from_trusted(row.try_get("name")?),
        public_key: row.try_get("public_key")?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
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
            // `id` is the primary key; `name_key` is the table's only other
            // unique index.
            Err(e) => match unique_violation(&e) {
                Some(Unique::PrimaryKey) => Err(StoreError::IdTaken),
                Some(Unique::Other) => Err(StoreError::NameTaken),
                None => Err(classify(e)),
            },
        }
    }

    async fn user_by_name(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError> {
        let row =
            sqlx::query("SELECT id, name, public_key, password_hash FROM users WHERE name_key = ?")
                .bind(name.key())
                .fetch_all(&self.reader)
                .await
                .map_err(classify)?
                .into_iter()
                .next();
        row.map(|r| {
            Ok(UserRecord {
                profile: profile_from(&r)?,
                password_hash: r.try_get("password_hash")?,
            })
        })
        .transpose()
        .map_err(classify)
    }

    async fn user_exists(&self, id: &UserId) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM users WHERE id = ?")
            .bind(id.as_str())
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?
            .into_iter()
            .next();
        Ok(row.is_some())
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<UserProfile>, StoreError> {
        let row = sqlx::query("SELECT id, name, public_key FROM users WHERE id = ?")
            .bind(id.as_str())
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?
            .into_iter()
            .next();
        row.map(|r| profile_from(&r)).transpose().map_err(classify)
    }

    async fn set_public_key(&self, id: &UserId, key: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET public_key = ? WHERE id = ?")
            .bind(key)
            .bind(id.as_str())
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn set_password_hash(&self, id: &UserId, hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(id.as_str())
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn list_users(&self, limit: u32) -> Result<Vec<UserProfile>, StoreError> {
        let rows = sqlx::query("SELECT id, name, public_key FROM users ORDER BY name_key LIMIT ?")
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(profile_from)
            .collect::<Result<_, _>>()
            .map_err(classify)
    }
}
