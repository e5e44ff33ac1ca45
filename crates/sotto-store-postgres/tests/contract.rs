//! The store contract (sotto-core's `ports::contract`) on the real
//! PostgreSQL, one fresh database per check; skipped with a printed reason
//! when PostgreSQL cannot be reached, failed under SOTTO_REQUIRE_SERVICES=1.

use sotto_core::ports::contract::Fixture;
use sotto_store_postgres::PostgresStore;
use sotto_store_postgres::testing::TestDatabase;
use std::sync::Arc;

/// A store on a fresh database, or None when the check is skipped.
async fn fixture() -> Option<Fixture> {
    let db = TestDatabase::create("the PostgreSQL store contract").await?;
    let store = match PostgresStore::open(&db.url).await {
        Ok(s) => s,
        Err(e) => panic!("cannot open the test database: {e}"),
    };
    let psks = Arc::new(store.psks());
    Some(Fixture {
        store: Arc::new(store),
        psks,
        keep: Box::new(db),
    })
}

mod contract {
    sotto_core::store_contract!(super::fixture);
}
