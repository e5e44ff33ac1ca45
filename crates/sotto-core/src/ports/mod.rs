//! Durable state behind small traits, one per concern: [`UserStore`],
//! [`SessionStore`], [`MessageStore`], [`DeviceStore`] (end-to-end
//! devices), [`DirectoryStore`] (contact-list reads), [`PskStore`], plus
//! [`Lifecycle`] (readiness and shutdown).
//!
//! The hub holds one `Arc<dyn Store>`: [`Store`] is only the sum of the
//! chat ports, implemented for every type that implements them all, so a
//! new backend (PostgreSQL) implements the small traits and nothing in the
//! hub changes. Splitting by concern also lets a later message broker or a
//! cache wrap one port (messages) without re-implementing the others.
//!
//! Rules every implementation follows, checked by the shared
//! [`contract`](crate::ports::contract) suite:
//! - Times are unix milliseconds passed in by the caller, so the store holds
//!   no clock and expiry stays testable with a paused one.
//! - Whatever must be unique or ordered is decided *inside the write* (the
//!   per-conversation `seq` of a message, the cap on undelivered messages),
//!   never read-then-write in the caller: with several server nodes on one
//!   database that is the only place where it can be atomic.
//! - Failures are [`StoreError`]s whose kind says whether retrying can help;
//!   an unreachable store is never reported as "not found".

mod devices;
mod directory;
mod error;
mod lifecycle;
mod messages;
mod sessions;
mod users;

pub mod memory;

#[cfg(any(test, feature = "contract"))]
pub mod contract;
#[cfg(any(test, feature = "contract"))]
pub mod fault;

pub mod psk;
pub use devices::{Bound, Device, DeviceId, DeviceStore};
pub use directory::{ConversationSummary, DirectoryStore, UNREAD_WINDOW};
pub use error::{BoxError, StoreError};
pub use lifecycle::Lifecycle;
pub use messages::{
    Addressed, Entry, InboxItem, InboxState, MessageStore, NewMessage, Pending, Sent,
    StoredMessage, Write, Written, conversation, write_now,
};
pub use psk::{PskStore, PskStoreError};
pub use sessions::{SessionKind, SessionRecord, SessionStore};
pub use users::{UserProfile, UserRecord, UserStore};

/// Every chat port at once: what the hub and the accounts hold.
///
/// Implemented automatically; implement the small traits instead.
pub trait Store:
    UserStore + SessionStore + MessageStore + DeviceStore + DirectoryStore + Lifecycle + 'static
{
}

impl<T> Store for T where
    T: UserStore
        + SessionStore
        + MessageStore
        + DeviceStore
        + DirectoryStore
        + Lifecycle
        + 'static
        + ?Sized
{
}
