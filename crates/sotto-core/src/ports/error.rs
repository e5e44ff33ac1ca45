//! What a store can fail with, by what the caller can do about it.

use std::fmt;

/// Any error a backend wants to keep as the cause (sqlx, tokio-postgres,
/// I/O); kept whole so logs show the full chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store failure, by kind.
///
/// The kind decides what users see: an unavailable store must never look
/// like an invalid credential (that would log everyone out during a
/// database hiccup), and only the two "taken" kinds are answers about the
/// data itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Registration hit the unique (case-insensitive) name.
    #[error("user name already exists")]
    NameTaken,
    /// A random user id collided; the caller draws another.
    #[error("user id already exists")]
    IdTaken,
    /// The store could not be reached, opened, locked or written (I/O,
    /// disk full, busy, pool closed or timed out). Retrying later may work;
    /// nothing is known about the data.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The store answered but the request cannot succeed as is: a bug, a
    /// schema mismatch, a corrupt file, an unexpected constraint. Not
    /// worth retrying.
    #[error("store failed: {0}")]
    Internal(#[source] BoxError),
}

impl StoreError {
    pub fn unavailable(e: impl Into<BoxError>) -> StoreError {
        StoreError::Unavailable(e.into())
    }

    pub fn internal(e: impl Into<BoxError>) -> StoreError {
        StoreError::Internal(e.into())
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Prefixes the cause with what was being done (`cannot open database
    /// …`), keeping the kind and the cause itself.
    pub fn context(self, what: impl Into<String>) -> StoreError {
        let wrap = |source| -> BoxError {
            Box::new(Context {
                what: what.into(),
                source,
            })
        };
        match self {
            StoreError::Unavailable(s) => StoreError::Unavailable(wrap(s)),
            StoreError::Internal(s) => StoreError::Internal(wrap(s)),
            other => other,
        }
    }
}

/// A cause with a note of what was being done.
#[derive(Debug)]
struct Context {
    what: String,
    source: BoxError,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_context() {
        let e = StoreError::unavailable("disk I/O error").context("cannot open x.db");
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "store unavailable: cannot open x.db: disk I/O error"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(!StoreError::internal("corrupt").is_retryable());
        assert!(matches!(
            StoreError::NameTaken.context("x"),
            StoreError::NameTaken
        ));
    }
}
