//! Which store a database URL names: PostgreSQL for `postgres://` and
//! `postgresql://` URLs (several nodes sharing one database), the embedded
//! SQLite file for anything else (a path or a `sqlite:` URL). The rest of
//! the server sees only the ports, so either backend fits behind them.

use sotto_core::ports::{Store, StoreError};
use sotto_core::psk::PskStore;
use sotto_store_postgres::PostgresStore;
use sotto_store_sqlite::SqliteStore;
use std::sync::Arc;

/// The chat store and the device keys, both in the one database.
/// `cache_mib` tunes the SQLite writer and is ignored for PostgreSQL;
/// `pool_size` sizes PostgreSQL's pool and is ignored for SQLite.
pub async fn open_store(
    url: &str,
    cache_mib: u32,
    pool_size: u32,
) -> Result<(Arc<dyn Store>, Arc<dyn PskStore>), StoreError> {
    if sotto_store_postgres::is_postgres_url(url) {
        let tuning = sotto_store_postgres::Tuning {
            max_connections: pool_size,
        };
        let store = PostgresStore::open_with(url, tuning).await?;
        let psks = Arc::new(store.psks());
        return Ok((Arc::new(store), psks));
    }
    let tuning = sotto_store_sqlite::Tuning { cache_mib };
    let store = SqliteStore::open_with(url, tuning).await?;
    let psks = Arc::new(store.psks());
    Ok((Arc::new(store), psks))
}

#[cfg(test)]
mod tests {
    /// `postgres:` without `//` is not a PostgreSQL URL sqlx accepts; it
    /// stays a (strange) SQLite path rather than a half-parsed URL.
    #[test]
    fn urls_choose_the_backend() {
        use sotto_store_postgres::is_postgres_url;
        assert!(is_postgres_url("postgres://db/sotto"));
        assert!(is_postgres_url("postgresql://u@db:5432/sotto"));
        assert!(!is_postgres_url("sotto.db"));
        assert!(!is_postgres_url("sqlite:sotto.db"));
    }
}
