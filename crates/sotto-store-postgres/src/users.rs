//! The [`UserStore`] port.

use crate::PostgresStore;
use crate::error::{classify, unique_violation, utf8};
use async_trait::async_trait;
use sotto_core::auth::{UserId, UserName};
use sotto_core::ports::{StoreError, UserProfile, UserRecord, UserStore};
use sqlx::Row;
use sqlx::postgres::PgRow;

pub(crate) fn profile_from(row: &PgRow) -> Result<UserProfile, sqlx::Error> {
    Ok(UserProfile {
        id: UserId::from_trusted(row.try_get("id")?),
        name: UserName::from_trusted(row.try_get("name")?),
        public_key: utf8(row.try_get("public_key")?)?,
    })
}

#[async_trait]
impl UserStore for PostgresStore {
    /// One statement; the `users_get_an_inbox` trigger adds the user's
    /// inbox counter row in the same transaction.
    async fn create_user(&self, user: &UserRecord, now: i64) -> Result<(), StoreError> {
        let p = &user.profile;
        let result = sqlx::query(
            "INSERT INTO users (id, name, name_key, password_hash, public_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(p.id.as_str())
        .bind(p.name.as_str())
        .bind(p.name.key())
        .bind(&user.password_hash)
        .bind(p.public_key.as_bytes())
        .bind(now)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            // The migration names both unique constraints of `users`.
            Err(e) => match unique_violation(&e).as_deref() {
                Some("users_pkey") => Err(StoreError::IdTaken),
                Some(_) => Err(StoreError::NameTaken),
                None => Err(classify(e)),
            },
        }
    }

    async fn user_by_name(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, public_key, password_hash FROM users WHERE name_key = $1",
        )
        .bind(name.key())
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
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
        let row = sqlx::query("SELECT 1 FROM users WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        Ok(row.is_some())
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<UserProfile>, StoreError> {
        let row = sqlx::query("SELECT id, name, public_key FROM users WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.map(|r| profile_from(&r)).transpose().map_err(classify)
    }

    async fn set_public_key(&self, id: &UserId, key: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET public_key = $1 WHERE id = $2")
            .bind(key.as_bytes())
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn set_password_hash(&self, id: &UserId, hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn list_users(&self, limit: u32) -> Result<Vec<UserProfile>, StoreError> {
        let rows = sqlx::query("SELECT id, name, public_key FROM users ORDER BY name_key LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(profile_from)
            .collect::<Result<_, _>>()
            .map_err(classify)
    }
}
