//! The embedded store: one SQLite file, zero set-up, implementing every
//! sotto-core port.
//!
//! SQLite allows one writer at a time; several pooled writers would just
//! take turns at "database is locked". So message writes go through one
//! thread that commits them in batches ([`writer`]), the rare other writes
//! through a pool of one connection, and reads through a small pool of
//! their own, in WAL mode so readers never wait for a writer. A busy timeout covers other processes
//! (a backup, the sqlite3 shell) holding the lock briefly.
//!
//! Queries read every row they select (`fetch_all`, never `fetch_optional`):
//! sqlx leaves a statement that was not stepped to its end un-reset until
//! the connection's next query, and an un-reset statement keeps its read
//! transaction open, pinning the WAL: neither the checkpointer nor the
//! writer could then rewind it, and it grew by gigabytes under load.
//!
//! Errors are sorted into [`StoreError`] kinds in [`error`], by SQLite's
//! result codes: a locked, missing or unwritable file is `Unavailable`
//! (the server answers 503 and nobody is logged out), a corrupt one
//! `Internal`.

mod devices;
mod directory;
mod error;
mod file;
mod messages;
mod psk;
mod sessions;
mod users;
mod writer;

use async_trait::async_trait;
pub use psk::SqlitePskStore;
use sotto_core::ports::{Lifecycle, StoreError};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
pub use writer::WriterStats;

const READERS: u32 = 4;

/// Knobs of the embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// The message writer's page cache, in MiB: the pages every message
    /// touches (users, the newest inbox and index pages) stay in memory
    /// instead of being read back from the OS. Costs that much RSS once
    /// the database is that large.
    pub cache_mib: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { cache_mib: 32 }
    }
}

pub struct SqliteStore {
    /// Accounts, sessions, keys and retention: rare writes.
    writer: SqlitePool,
    reader: SqlitePool,
    /// Messages, confirmations and receipts: the group-commit writer.
    messages: writer::Writer,
}

impl SqliteStore {
    /// Opens (creating if missing) the database named by `url`, which is a
    /// `sqlite:` URL or a plain file path, and applies the embedded
    /// migrations.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(url, Tuning::default()).await
    }

    /// [`open`](Self::open) with explicit tuning.
    pub async fn open_with(url: &str, tuning: Tuning) -> Result<SqliteStore, StoreError> {
        let cannot_open = |e| error::classify(e).context(format!("cannot open database {url}"));
        let options = connect_options(url)?;
        file::create_private(options.get_filename());
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(cannot_open)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| error::migration(e).context(format!("cannot migrate database {url}")))?;
        let messages = writer::Writer::start(options.get_filename(), tuning.cache_mib)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.create_if_missing(false))
            .await
            .map_err(cannot_open)?;
        Ok(SqliteStore {
            writer,
            reader,
            messages,
        })
    }

    /// Commits and writes of the message writer so far.
    pub fn writer_stats(&self) -> &WriterStats {
        self.messages.stats()
    }

    /// The device keys kept in the same file, through the same writer.
    pub fn psks(&self) -> SqlitePskStore {
        SqlitePskStore::new(self.writer.clone())
    }
}

/// How every pool on the database file connects (the chat store's and the
/// DTLS key store's): WAL, foreign keys, a busy timeout.
pub(crate) fn connect_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    let base = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::internal(e).context(format!("bad database URL {url}")))?
    } else {
        SqliteConnectOptions::new().filename(Path::new(url))
    };
    Ok(base
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: every commit is on disk before it is answered, so what was
        // acknowledged survives a power loss (NORMAL under WAL survives only
        // a crash of the process). See docs/DEPLOY.md.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5)))
}

#[async_trait]
impl Lifecycle for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map(|_| ())
            .map_err(error::classify)
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}
