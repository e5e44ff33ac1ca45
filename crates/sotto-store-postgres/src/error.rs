//! sqlx errors sorted into [`StoreError`] kinds by SQLSTATE codes, never
//! by message text (which is translated with the server's `lc_messages`).
//! <https://www.postgresql.org/docs/current/errcodes-appendix.html>

use sotto_core::ports::StoreError;
use sotto_core::psk::PskStoreError;
use std::borrow::Cow;

const UNIQUE_VIOLATION: &str = "23505";
const SERIALIZATION_FAILURE: &str = "40001";
const DEADLOCK_DETECTED: &str = "40P01";
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The SQLSTATE of a database error.
fn sqlstate(e: &sqlx::Error) -> Option<Cow<'_, str>> {
    match e {
        sqlx::Error::Database(db) => db.code(),
        _ => None,
    }
}

/// The constraint a unique violation collided with, if it was one.
pub(crate) fn unique_violation(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) if sqlstate(e).as_deref() == Some(UNIQUE_VIOLATION) => {
            Some(db.constraint().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}

/// Whether the transaction failed because it lost a race with another
/// one (a deadlock the server broke, a serialization failure, a NOWAIT
/// lock that was taken): it is rolled back, nothing of it was stored, and
/// running it again is safe.
pub(crate) fn lost_race(e: &sqlx::Error) -> bool {
    matches!(
        sqlstate(e).as_deref(),
        Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED | LOCK_NOT_AVAILABLE)
    )
}

/// Whether the SQLSTATE class says "not now" rather than "never": the
/// connection broke (08), the server is short of resources (53) or is
/// shutting down or starting (57P), a lock could not be had (55P03), an
/// I/O error (58), a transaction lost a race (40), or the server is a
/// read-only standby, as after a fail-over (25006).
fn is_transient_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code.starts_with("58")
        || code.starts_with("40")
        || code == "55P03"
        || code == "25006"
}

/// Whether retrying later may succeed: the server could not be reached or
/// the pool is closed or exhausted, or the server says "not now". Schema,
/// constraint and decoding errors are not: they would fail again.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => sqlstate(e).is_some_and(|c| is_transient_code(&c)),
        _ => false,
    }
}

/// A BYTEA column that holds UTF-8 text (see the migration), as a String;
/// bytes that are not UTF-8 are a decoding error (internal), never
/// silently replaced.
pub(crate) fn utf8(bytes: Vec<u8>) -> Result<String, sqlx::Error> {
    String::from_utf8(bytes).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// The kind of a failed query, keeping the sqlx error as the cause.
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    if is_transient(&e) {
        StoreError::unavailable(e)
    } else {
        StoreError::internal(e)
    }
}

/// The same error for each of the callers a failed group answers
/// (`StoreError` is not `Clone`): its text, and whether it is retryable.
pub(crate) fn copies(e: &StoreError) -> impl Fn() -> StoreError {
    let (text, retryable) = (e.to_string(), e.is_retryable());
    move || match retryable {
        true => StoreError::unavailable(text.clone()),
        false => StoreError::internal(text.clone()),
    }
}

/// A failed migration: the inner query error decides; anything else (a
/// changed or missing migration, a database newer than this binary) is
/// internal.
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
    fn codes_sort_into_kinds() {
        for transient in [
            "08006", "53300", "57P01", "57P03", "58030", "40P01", "25006",
        ] {
            assert!(is_transient_code(transient), "{transient}");
        }
        for permanent in ["23505", "42P01", "22001", "XX000"] {
            assert!(!is_transient_code(permanent), "{permanent}");
        }
        assert!(classify(sqlx::Error::PoolClosed).is_retryable());
        assert!(classify(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(classify(sqlx::Error::Io(std::io::Error::other("gone"))).is_retryable());
        assert!(!classify(sqlx::Error::RowNotFound).is_retryable());
        assert!(!classify(sqlx::Error::ColumnNotFound("x".into())).is_retryable());
    }
}
