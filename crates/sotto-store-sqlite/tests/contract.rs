//! The store contract (sotto-core's `ports::contract`) on a real SQLite
//! file, plus the error kinds only a real file can produce.

use sotto_core::ports::StoreError;
use sotto_core::ports::contract::Fixture;
use sotto_store_sqlite::SqliteStore;
use std::sync::Arc;

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("contract.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let psks = Arc::new(store.psks());
    Fixture {
        store: Arc::new(store),
        psks,
        keep: Box::new(dir),
    }
}

mod contract {
    sotto_core::store_contract!(super::fixture);
}

/// A file that is not a database is corrupt, not an outage: retrying will
/// not help, and the message names the file.
#[tokio::test]
async fn a_file_that_is_not_a_database_is_internal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(path.to_str().unwrap())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
    assert!(err.to_string().contains("garbage.db"), "{err}");
}

/// A folder that does not exist cannot be opened: retryable (it may be a
/// volume that is not mounted yet).
#[tokio::test]
async fn a_database_that_cannot_be_opened_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("x.db");
    let err = SqliteStore::open(path.to_str().unwrap())
        .await
        .err()
        .unwrap();
    assert!(err.is_retryable(), "{err:?}");
}
