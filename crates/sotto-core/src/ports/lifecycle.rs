//! Readiness and shutdown: kept out of the data ports so a wrapper (a
//! cache, a broker) that only touches data need not think about them.

use super::StoreError;
use async_trait::async_trait;

#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Answers when the store can serve queries (`/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Flushes and closes; called once at shutdown. Every later call
    /// answers [`StoreError::Unavailable`].
    async fn close(&self);
}
