//! The [`DeviceStore`] port: rare writes through the writer pool, each
//! binding decided inside one `BEGIN IMMEDIATE` transaction (it reads
//! before it writes; a deferred transaction could not upgrade its lock if
//! the message writer committed in between).

use crate::SqliteStore;
use crate::error::{Unique, classify, unique_violation};
use async_trait::async_trait;
use sotto_core::auth::{TokenHash, UserId};
use sotto_core::ports::{Bound, Device, DeviceId, DeviceStore, StoreError};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Row};

const COLUMNS: &str = "d.id, d.public_key, d.name, d.created_at";

fn device_from(r: &SqliteRow) -> Result<Device, sqlx::Error> {
    Ok(Device {
        id: DeviceId::from_trusted(r.try_get("id")?),
        public_key: r.try_get("public_key")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
    })
}

fn hashes_from(rows: &[SqliteRow]) -> Result<Vec<TokenHash>, StoreError> {
    rows.iter()
        .map(|r| {
            let bytes: Vec<u8> = r.try_get("token_hash").map_err(classify)?;
            TokenHash::from_slice(&bytes)
                .ok_or_else(|| StoreError::internal("a stored token hash is not 32 bytes"))
        })
        .collect()
}

/// The device with `id`, or `user`'s device with `key` (`id` None).
async fn find(
    conn: &mut SqliteConnection,
    user: &UserId,
    id: Option<&str>,
    key: &str,
) -> Result<Option<Device>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM devices d WHERE d.user_id = ? AND (d.id = ? OR (? IS NULL AND d.public_key = ?))"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user.as_str())
        .bind(id)
        .bind(id)
        .bind(key)
        .fetch_all(conn)
        .await
        .map_err(classify)?;
    rows.first().map(device_from).transpose().map_err(classify)
}

/// The steps of [`DeviceStore::bind_device`] inside its transaction.
async fn bind(
    conn: &mut SqliteConnection,
    user: &UserId,
    session: &TokenHash,
    device: &Device,
    max: u32,
) -> Result<Bound, StoreError> {
    let owner = sqlx::query("SELECT device_id FROM sessions WHERE token_hash = ? AND user_id = ?")
        .bind(session.as_bytes())
        .bind(user.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(classify)?;
    let Some(row) = owner.first() else {
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
    let found = find(conn, user, None, &device.public_key).await?;
    let chosen = match found {
        Some(d) => Bound::Rebound(d),
        None => {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = ?")
                .bind(user.as_str())
                .fetch_all(&mut *conn)
                .await
                .map_err(classify)?
                .into_iter()
                .next()
                .unwrap_or(0);
            if count >= i64::from(max) {
                return Ok(Bound::TooMany);
            }
            insert(conn, user, device).await?;
            Bound::Created(device.clone())
        }
    };
    let id = match &chosen {
        Bound::Created(d) | Bound::Rebound(d) => d.id.as_str(),
        _ => return Ok(chosen),
    };
    sqlx::query("UPDATE sessions SET device_id = ? WHERE token_hash = ?")
        .bind(id)
        .bind(session.as_bytes())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    Ok(chosen)
}

async fn insert(conn: &mut SqliteConnection, user: &UserId, d: &Device) -> Result<(), StoreError> {
    let done = sqlx::query(
        "INSERT INTO devices (id, user_id, public_key, name, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(d.id.as_str())
    .bind(user.as_str())
    .bind(&d.public_key)
    .bind(&d.name)
    .bind(d.created_at)
    .execute(conn)
    .await;
    match done {
        Ok(_) => Ok(()),
        // The key was looked up first, in this transaction: the only
        // unique index left to hit is the id.
        Err(e) => match unique_violation(&e) {
            Some(Unique::PrimaryKey) => Err(StoreError::IdTaken),
            _ => Err(classify(e)),
        },
    }
}

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn bind_device(
        &self,
        user: &UserId,
        session: &TokenHash,
        device: &Device,
        max: u32,
    ) -> Result<Bound, StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
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
        let mut all = Vec::new();
        // SQLite caps bound parameters; a directory page is far below.
        for chunk in users.chunks(500) {
            let mut q = QueryBuilder::new(format!(
                "SELECT d.user_id, {COLUMNS} FROM devices d WHERE d.user_id IN ("
            ));
            let mut list = q.separated(", ");
            for u in chunk {
                list.push_bind(u.as_str());
            }
            q.push(") ORDER BY d.user_id, d.created_at, d.id");
            let rows = q.build().fetch_all(&self.reader).await.map_err(classify)?;
            for r in &rows {
                let user = UserId::from_trusted(r.try_get("user_id").map_err(classify)?);
                all.push((user, device_from(r).map_err(classify)?));
            }
        }
        // In the order the users were asked for.
        let rank = |u: &UserId| users.iter().position(|x| x == u);
        all.sort_by_key(|(u, _)| rank(u));
        Ok(all)
    }

    async fn session_device(&self, session: &TokenHash) -> Result<Option<Device>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions s JOIN devices d ON d.id = s.device_id WHERE s.token_hash = ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(session.as_bytes())
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.first().map(device_from).transpose().map_err(classify)
    }

    async fn delete_device(
        &self,
        user: &UserId,
        id: &DeviceId,
    ) -> Result<Option<Vec<TokenHash>>, StoreError> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        // A session holds only a device of its own user, so nothing goes
        // here when the device is someone else's.
        let rows = sqlx::query(
            "DELETE FROM sessions WHERE device_id = ? AND user_id = ? RETURNING token_hash",
        )
        .bind(id.as_str())
        .bind(user.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        let done = sqlx::query("DELETE FROM devices WHERE id = ? AND user_id = ?")
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
        let mut tx = self.writer.begin().await.map_err(classify)?;
        // fetch_all: RETURNING commits only when the statement runs out.
        let rows = sqlx::query("DELETE FROM sessions WHERE user_id = ? RETURNING token_hash")
            .bind(user.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        sqlx::query("DELETE FROM devices WHERE user_id = ?")
            .bind(user.as_str())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        hashes_from(&rows)
    }
}
