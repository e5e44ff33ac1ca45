//! The shared store: every sotto-core port on PostgreSQL, so several
//! `sotto serve` nodes can share one database.
//!
//! Same tables and the same behaviour as the SQLite store (checked by the
//! shared contract suite), with what several writers on several machines
//! need on top:
//! - Message ids and inbox positions come from counter rows updated inside
//!   the write (`UPDATE … RETURNING`), whose row locks last until commit:
//!   two nodes writing for one user take turns, and a user's positions
//!   commit, and so become visible, in order. See [`writer`] for how the
//!   locks are ordered so batches on two nodes do not deadlock.
//! - Message writes are queued and committed in batches by one task per
//!   node (group commit), as on SQLite; everything else goes straight
//!   through a connection pool.
//! - Errors are sorted by SQLSTATE ([`error`]): an unreachable server or a
//!   broken connection is `Unavailable` (the server answers 503 and nobody
//!   is logged out), a schema or constraint problem `Internal`.
//!
//! Durability is PostgreSQL's: with the default `synchronous_commit = on`
//! a commit is flushed to the WAL before any write of the batch is
//! answered.

mod devices;
mod directory;
mod error;
mod messages;
mod psk;
mod reads;
mod sessions;
mod users;
mod writer;
mod writes;

#[cfg(feature = "testing")]
pub mod testing;

use async_trait::async_trait;
pub use psk::PostgresPskStore;
use sotto_core::ports::{Lifecycle, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;
pub use writer::WriterStats;

/// How long a query waits for a pooled connection (or for a new one to
/// connect) before the store reports itself unavailable: an outage must
/// turn into errors quickly, not into requests hanging for sqlx's default
/// of 30 s.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `close` waits for queued writes to commit.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// Server-side bounds on every connection. A statement that runs longer
/// than `statement_timeout` is cancelled (retention lifts it for itself).
/// `idle_in_transaction_session_timeout` matters with several nodes: a
/// node that stops talking in the middle of a batch (partitioned away,
/// frozen) would otherwise keep its users' inbox rows locked, and every
/// other node writing for them waiting, until TCP gave up, possibly hours
/// later; the writer never pauses inside a transaction, so 10 s is ample.
const SESSION_SETTINGS: [(&str, &str); 2] = [
    ("statement_timeout", "30s"),
    ("idle_in_transaction_session_timeout", "10s"),
];

/// Knobs of the PostgreSQL store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Connections for reads and the rare writes (accounts, sessions,
    /// keys), per node; the message writer has one more of its own.
    /// Every node opens this many at most, so N nodes need N × (this + 1)
    /// below the server's `max_connections`.
    pub max_connections: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { max_connections: 8 }
    }
}

pub struct PostgresStore {
    /// Reads, accounts, sessions, keys and retention.
    pool: PgPool,
    /// Messages, confirmations and receipts: the group-commit writer.
    messages: writer::Writer,
    /// Inbox pages, read a group at a time through `pool`.
    reader: reads::Reader,
}

/// Whether `url` names a PostgreSQL database (`postgres://` or
/// `postgresql://`), for choosing the backend.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((creds, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// `url` with its database (the path) replaced by `db`: for tools that
/// create a database through an administrative URL and then use it.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let host_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..host_end])
}

impl PostgresStore {
    /// Connects to the database named by `url` (`postgres://…`) and
    /// applies the embedded migrations. Several nodes may do this at once:
    /// sqlx serialises migrations with an advisory lock.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_with(url, Tuning::default()).await
    }

    /// [`open`](Self::open) with explicit tuning.
    pub async fn open_with(url: &str, tuning: Tuning) -> Result<PostgresStore, StoreError> {
        let shown = redact(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::internal(e).context(format!("bad database URL {shown}")))?
            .application_name("sotto")
            .options(SESSION_SETTINGS);
        let cannot_open = |e| error::classify(e).context(format!("cannot open database {shown}"));
        let pool = pool_options(tuning.max_connections.max(1))
            .connect_with(options.clone())
            .await
            .map_err(cannot_open)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| error::migration(e).context(format!("cannot migrate database {shown}")))?;
        let writer_pool = pool_options(1)
            .connect_with(options)
            .await
            .map_err(cannot_open)?;
        // Half the pool at most, so logins and the rest are not starved.
        let in_flight = (tuning.max_connections as usize / 2).clamp(1, reads::IN_FLIGHT);
        Ok(PostgresStore {
            reader: reads::Reader::start(pool.clone(), in_flight),
            pool,
            messages: writer::Writer::start(writer_pool),
        })
    }

    /// Commits, writes and retried batches of the message writer so far.
    pub fn writer_stats(&self) -> &WriterStats {
        self.messages.stats()
    }

    /// The device keys kept in the same database.
    pub fn psks(&self) -> PostgresPskStore {
        PostgresPskStore::new(self.pool.clone())
    }
}

fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A connection the server dropped (restart, fail-over) is found
        // out before use rather than failing the query.
        .test_before_acquire(true)
}

#[async_trait]
impl Lifecycle for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(error::classify)
    }

    /// Commits what is queued (for a bounded time), then closes both
    /// pools; later calls fail as unavailable (`PoolClosed`).
    async fn close(&self) {
        if tokio::time::timeout(CLOSE_FLUSH, self.messages.close())
            .await
            .is_err()
        {
            tracing::warn!("queued message writes did not commit before shutdown");
        }
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        assert!(is_postgres_url("postgresql://db/x"));
        assert!(!is_postgres_url("sqlite:x.db"));
    }
}
