//! The [`DeviceStore`] port. Every change to a user's devices first locks
//! the user's row (`FOR NO KEY UPDATE`, which logins creating sessions do
//! not wait for), so the checks of a binding (this key already there? the
//! limit reached?) and the deletions are decided one at a time per user,
//! whichever node runs them.

use crate::PostgresStore;
use crate::error::{classify, unique_violation, utf8};
use async_trait::async_trait;
use sotto_core::auth::{TokenHash, UserId};
use sotto_core::ports::{Bound, Device, DeviceId, DeviceStore, StoreError};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

const COLUMNS: &str = "d.id, d.public_key, d.name, d.created_at";

fn device_from(r: &PgRow) -> Result<Device, sqlx::Error> {
    Ok(Device {
        id: DeviceId::from_trusted(r.try_get("id")?),
        public_key: utf8(r.try_get("public_key")?)?,
        name: utf8(r.try_get("name")?)?,
        created_at: r.try_get("created_at")?,
    })
}

fn hashes_from(rows: &[PgRow]) -> Result<Vec<TokenHash>, StoreError> {
    rows.iter()
        .map(|r| {
            let bytes: Vec<u8> = r.try_get("token_hash").map_err(classify)?;
            TokenHash::from_slice(&bytes)
                .ok_or_else(|| StoreError::internal("a stored token hash is not 32 bytes"))
        })
        .collect()
}

/// Locks `user`'s row until the transaction ends; false if no such user.
async fn lock_user(conn: &mut PgConnection, user: &UserId) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
        .bind(user.as_str())
        .fetch_optional(conn)
        .await
        .map_err(classify)?;
    Ok(row.is_some())
}

/// `user`'s device with this id, or (with `id` None) with this key.
async fn find(
    conn: &mut PgConnection,
    user: &UserId,
    id: Option<&str>,
    key: &str,
) -> Result<Option<Device>, StoreError> {
    let sql = match id {
        Some(_) => format!("SELECT {COLUMNS} FROM devices d WHERE d.user_id = $1 AND d.id = $2"),
        None => {
            format!("SELECT {COLUMNS} FROM devices d WHERE d.user_id = $1 AND d.public_key = $2")
        }
    };
    let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user.as_str());
    let q = match id {
        Some(id) => q.bind(id.to_owned()),
        None => q.bind(key.as_bytes().to_vec()),
    };
    let row = q.fetch_optional(conn).await.map_err(classify)?;
    row.as_ref().map(device_from).transpose().map_err(classify)
}

/// The steps of [`DeviceStore::bind_device`] inside its transaction,
/// after the user's row is locked.
async fn bind(
    conn: &mut PgConnection,
    user: &UserId,
    session: &TokenHash,
    device: &Device,
    max: u32,
) -> Result<Bound, StoreError> {
    let owner = sqlx::query(
        "SELECT device_id FROM sessions WHERE token_hash = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(session.as_bytes())
    .bind(user.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(classify)?;
    let Some(row) = owner else {
        return Ok(Bound::NoSession);
    };
    let current: Option<String> = row.try_get("device_id").map_err(classify)?;
    if let Some(current) = current
        && let Some(d) = find(conn, user, Some(&current), "").await?
    {
        return Ok(match d.public_key == device.public_key {
            true => Bound::Rebound(d),
            false => Bound::SessionHasDevice(d),
        });
    }
    let chosen = match find(conn, user, None, &device.public_key).await? {
        Some(d) => Bound::Rebound(d),
        None => {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_one(&mut *conn)
                .await
                .map_err(classify)?;
            if count >= i64::from(max) {
                return Ok(Bound::TooMany);
            }
            insert(conn, user, device).await?;
            Bound::Created(device.clone())
        }
    };
    let (Bound::Created(d) | Bound::Rebound(d)) = &chosen else {
        return Ok(chosen);
    };
    sqlx::query("UPDATE sessions SET device_id = $1 WHERE token_hash = $2")
        .bind(d.id.as_str())
        .bind(session.as_bytes())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    Ok(chosen)
}

async fn insert(conn: &mut PgConnection, user: &UserId, d: &Device) -> Result<(), StoreError> {
    let done = sqlx::query(
        "INSERT INTO devices (id, user_id, public_key, name, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(d.id.as_str())
    .bind(user.as_str())
    .bind(d.public_key.as_bytes())
    .bind(d.name.as_bytes())
    .bind(d.created_at)
    .execute(conn)
    .await;
    match done {
        Ok(_) => Ok(()),
        // The key was looked up under the user's lock: only the id is left
        // to collide.
        Err(e) => match unique_violation(&e).as_deref() {
            Some("devices_pkey") => Err(StoreError::IdTaken),
            _ => Err(classify(e)),
        },
    }
}

#[async_trait]
impl DeviceStore for PostgresStore {
    async fn bind_device(
        &self,
        user: &UserId,
        session: &TokenHash,
        device: &Device,
        max: u32,
    ) -> Result<Bound, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        if !lock_user(&mut tx, user).await? {
            return Ok(Bound::NoSession);
        }
        let bound = bind(&mut tx, user, session, device, max).await?;
        tx.commit().await.map_err(classify)?;
        Ok(bound)
    }

    async fn devices(&self, user: &UserId) -> Result<Vec<Device>, StoreError> {
        Ok(self
            .devices_of(std::slice::from_ref(user))
            .await?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    async fn devices_of(&self, users: &[UserId]) -> Result<Vec<(UserId, Device)>, StoreError> {
        let ids: Vec<&str> = users.iter().map(UserId::as_str).collect();
        // `ord` keeps the order the users were asked for.
        let sql = format!(
            "SELECT d.user_id, {COLUMNS} FROM unnest($1::text[]) WITH ORDINALITY AS u(id, ord)
             JOIN devices d ON d.user_id = u.id
             ORDER BY u.ord, d.created_at, d.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let user = UserId::from_trusted(r.try_get("user_id")?);
                Ok((user, device_from(r)?))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(classify)
    }

    async fn session_device(&self, session: &TokenHash) -> Result<Option<Device>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions s JOIN devices d ON d.id = s.device_id WHERE s.token_hash = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(session.as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(device_from).transpose().map_err(classify)
    }

    async fn delete_device(
        &self,
        user: &UserId,
        id: &DeviceId,
    ) -> Result<Option<Vec<TokenHash>>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        if !lock_user(&mut tx, user).await? {
            return Ok(None);
        }
        let rows = sqlx::query(
            "DELETE FROM sessions WHERE device_id = $1 AND user_id = $2 RETURNING token_hash",
        )
        .bind(id.as_str())
        .bind(user.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        let done = sqlx::query("DELETE FROM devices WHERE id = $1 AND user_id = $2")
            .bind(id.as_str())
            .bind(user.as_str())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        tx.commit().await.map_err(classify)?;
        Ok(Some(hashes_from(&rows)?))
    }

    async fn delete_sessions_and_devices(
        &self,
        user: &UserId,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        if !lock_user(&mut tx, user).await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("DELETE FROM sessions WHERE user_id = $1 RETURNING token_hash")
            .bind(user.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1")
            .bind(user.as_str())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        hashes_from(&rows)
    }
}
