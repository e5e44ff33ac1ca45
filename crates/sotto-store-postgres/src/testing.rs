//! A throwaway database per test, on the PostgreSQL the tests are pointed
//! at (`SOTTO_TEST_POSTGRES`, default [`DEFAULT_URL`]): created with a
//! unique name, dropped when the [`TestDatabase`] is dropped.
//!
//! When the server cannot be reached, [`TestDatabase::create`] prints why
//! and returns `None`, so the test skips; under `SOTTO_REQUIRE_SERVICES=1`
//! (CI) it panics instead, so a missing database cannot pass as green.

use crate::with_database;
use sqlx::{Connection, PgConnection};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The local test server: trust authentication, database `test`.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// How long to try reaching the server before skipping.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// A database that exists until this is dropped.
pub struct TestDatabase {
    /// Where the test's store connects.
    pub url: String,
    name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("SOTTO_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn required() -> bool {
    std::env::var("SOTTO_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A name no other test (in this process or another) is using.
fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("sotto_test_{}_{n}_{nanos}", std::process::id())
}

async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(CONNECT_WAIT, PgConnection::connect(url)).await {
        Ok(done) => done,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// Drops test databases whose test process is gone (killed before its
/// `Drop` ran), so they do not pile up on a developer's server. The name
/// carries the pid; a pid that is alive (even reused) keeps its database.
async fn sweep_leftovers(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'sotto\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name
            .strip_prefix("sotto_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let quoted = name.replace('"', "\"\"");
        let sql = format!("DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *admin)
            .await;
    }
}

impl TestDatabase {
    /// A fresh, empty database, or None (with the reason printed) when
    /// PostgreSQL is not there and not required. `what` names the test in
    /// the message.
    pub async fn create(what: &str) -> Option<TestDatabase> {
        let admin_url = admin_url();
        let mut admin = match connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                let why = format!(
                    "PostgreSQL at {} is not reachable ({e})",
                    crate::redact(&admin_url)
                );
                assert!(
                    !required(),
                    "{what}: {why}, and SOTTO_REQUIRE_SERVICES=1 requires it"
                );
                eprintln!("skipped {what}: {why}; set SOTTO_TEST_POSTGRES to point at one");
                return None;
            }
        };
        sweep_leftovers(&mut admin).await;
        let name = unique_name();
        let create = format!("CREATE DATABASE {name}");
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
        {
            panic!("{what}: cannot create test database {name}: {e}");
        }
        let _ = admin.close().await;
        Some(TestDatabase {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        })
    }
}

impl TestDatabase {
    /// Takes charge of an existing database, on the server the tests are
    /// pointed at, that something under test created and kept (a bench
    /// run's `--keep-state`): it is dropped when this is, even when the
    /// test fails first.
    pub fn adopt(name: &str) -> TestDatabase {
        let admin_url = admin_url();
        TestDatabase {
            url: with_database(&admin_url, name),
            name: name.to_owned(),
            admin_url,
        }
    }

    /// Ends every connection to the database from the server side, as a
    /// PostgreSQL restart or a fail-over would; returns how many ended.
    pub async fn terminate_connections(&self) -> u64 {
        let mut admin = connect(&self.admin_url).await.expect("admin connection");
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_all(&mut admin)
        .await
        .expect("terminate");
        let _ = admin.close().await;
        ended.into_iter().filter(|e| *e).count() as u64
    }
}

impl Drop for TestDatabase {
    /// Drops the database, ending any connection still open to it. Runs on
    /// a thread of its own: `Drop` cannot await, and the test's runtime may
    /// be the current-thread one that is dropping this.
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = connect(&admin_url).await.map_err(|e| e.to_string())?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = dropped.map_err(|_| "panicked".to_owned()) {
            eprintln!("cannot drop test database {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_is_replaced_in_the_url() {
        use crate::with_database;
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
