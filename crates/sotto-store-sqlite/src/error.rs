//! sqlx errors sorted into [`StoreError`] kinds, by SQLite's result codes
//! rather than message text (which changes between SQLite versions and
//! names constraints only in passing).

use sotto_core::ports::StoreError;
use sotto_core::psk::PskStoreError;

// Primary result codes (the low byte of an extended code).
// https://www.sqlite.org/rescode.html
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_NOMEM: i32 = 7;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_PROTOCOL: i32 = 15;
// Extended codes of the two unique-index violations.
const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;

/// Which unique index a write collided with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unique {
    PrimaryKey,
    Other,
}

/// The extended result code of a database error (sqlx turns extended
/// codes on for every connection).
fn result_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        sqlx::Error::Database(db) => db.code()?.parse().ok(),
        _ => None,
    }
}

/// Whether `e` is a unique violation, and of which index.
pub(crate) fn unique_violation(e: &sqlx::Error) -> Option<Unique> {
    match result_code(e)? {
        SQLITE_CONSTRAINT_PRIMARYKEY => Some(Unique::PrimaryKey),
        SQLITE_CONSTRAINT_UNIQUE => Some(Unique::Other),
        _ => None,
    }
}

/// Whether retrying later may succeed: the file could not be opened,
/// locked, read or written, or the pool is gone or exhausted. Corruption
/// (`SQLITE_CORRUPT`, `SQLITE_NOTADB`) and constraint or schema errors are
/// not: the same request would fail again.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => result_code(e).is_some_and(is_transient_code),
        _ => false,
    }
}

/// Whether an (extended) SQLite result code says the file could not be
/// opened, locked, read or written right now: retrying later may succeed.
fn is_transient_code(code: i32) -> bool {
    matches!(
        code & 0xff,
        SQLITE_BUSY
            | SQLITE_LOCKED
            | SQLITE_NOMEM
            | SQLITE_READONLY
            | SQLITE_IOERR
            | SQLITE_FULL
            | SQLITE_CANTOPEN
            | SQLITE_PROTOCOL
    )
}

/// The kind of a failed query, keeping the sqlx error as the cause.
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    if is_transient(&e) {
        StoreError::unavailable(e)
    } else {
        StoreError::internal(e)
    }
}

/// The same sorting for the message writer's connection (rusqlite).
pub(crate) fn classify_rusqlite(e: rusqlite::Error) -> StoreError {
    let transient = match &e {
        rusqlite::Error::SqliteFailure(f, _) => is_transient_code(f.extended_code),
        _ => false,
    };
    if transient {
        StoreError::unavailable(e)
    } else {
        StoreError::internal(e)
    }
}

/// A failed migration: the inner query error decides, anything else (a
/// changed or missing migration) is internal.
pub(crate) fn migration(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => classify(e),
        other => StoreError::internal(other),
    }
}

/// The same sorting for the key store.
pub(crate) fn psk(e: sqlx::Error) -> PskStoreError {
    PskStoreError::from(classify(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_io_failures_are_retryable() {
        assert!(classify(sqlx::Error::PoolClosed).is_retryable());
        assert!(classify(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(classify(sqlx::Error::Io(std::io::Error::other("gone"))).is_retryable());
        assert!(!classify(sqlx::Error::RowNotFound).is_retryable());
        assert!(!classify(sqlx::Error::ColumnNotFound("x".into())).is_retryable());
    }
}
