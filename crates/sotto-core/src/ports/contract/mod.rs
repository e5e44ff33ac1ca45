//! The store contract: what every implementation of the ports must do,
//! written once and run against each of them (the in-memory store, SQLite
//! on a real file, and PostgreSQL next) through the same code.
//!
//! Each check is a plain async function over a fresh [`Fixture`] that
//! panics on a broken rule; [`store_contract!`](crate::store_contract)
//! turns all of them into `#[tokio::test]`s for one constructor:
//!
//! ```ignore
//! async fn fixture() -> sotto_core::ports::contract::Fixture { /* open a store */ }
//! sotto_core::store_contract!(fixture);
//! ```
//!
//! Enabled by the `contract` feature (and in sotto-core's own tests).

mod accounts;
mod devices;
mod errors;
mod messages;
mod psks;

pub use accounts::*;
pub use devices::*;
pub use errors::*;
pub use messages::*;
pub use psks::*;

use super::{PskStore, Store, UserProfile, UserRecord};
use crate::auth::{UserId, UserName};
use std::sync::Arc;

/// A fresh, empty store under test.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    /// The key store on the same backend (often the same object).
    pub psks: Arc<dyn PskStore>,
    /// Whatever must live as long as the test (a temporary directory, a
    /// database to drop afterwards).
    pub keep: Box<dyn std::any::Any + Send + Sync>,
}

/// Every check, as `#[tokio::test]`s calling `$make().await` for a fresh
/// [`Fixture`] each (or an `Option<Fixture>`: `None` skips the check). Invoke once per implementation, inside a module.
#[macro_export]
macro_rules! store_contract {
    ($make:path) => {
        $crate::store_contract!(@checks $make;
            users_are_unique_by_name_in_any_case,
            user_ids_collide_as_id_taken,
            users_are_listed_by_name,
            sessions_are_created_found_touched_and_deleted,
            other_sessions_are_deleted_by_kind,
            sessions_expire_by_idle_and_age,
            messages_get_ids_per_conversation,
            messages_enter_both_inboxes_in_order,
            resends_are_recognised_by_sender_recipient_and_client_id,
            the_pending_cap_counts_unconfirmed_messages,
            confirming_delivers_and_tells_the_senders,
            reading_is_clamped_and_tells_the_sender,
            history_pages_newest_first,
            retention_deletes_old_messages,
            psks_are_added_listed_revoked_and_followed,
            a_closed_store_is_unavailable,
            devices_are_bound_to_sessions,
            deleting_a_device_revokes_its_sessions,
            logging_out_everywhere_removes_sessions_and_devices,
            users_are_found_by_name_prefix,
            conversations_list_the_last_message_and_unread,
            unread_counts_are_bounded,
        );
    };
    (@checks $make:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let made = $make().await;
                let Some(fixture) = $crate::ports::contract::IntoFixture::into_fixture(made) else {
                    return; // the backend is absent; the fixture said why
                };
                $crate::ports::contract::$check(&fixture).await;
            }
        )*
    };
}

/// What a fixture constructor returns: a [`Fixture`], or `Option<Fixture>`
/// for a backend that may be absent (PostgreSQL), whose constructor prints
/// why it returns `None` (and panics instead when the backend is required).
pub trait IntoFixture {
    fn into_fixture(self) -> Option<Fixture>;
}

impl IntoFixture for Fixture {
    fn into_fixture(self) -> Option<Fixture> {
        Some(self)
    }
}

impl IntoFixture for Option<Fixture> {
    fn into_fixture(self) -> Option<Fixture> {
        self
    }
}

/// A user record with a throwaway hash.
pub fn user(id: &str, name: &str) -> UserRecord {
    UserRecord {
        profile: UserProfile {
            id: id_of(id),
            name: name_of(name),
            public_key: format!("key-of-{name}"),
        },
        password_hash: format!("hash-of-{name}"),
    }
}

pub fn id_of(id: &str) -> UserId {
    UserId::parse(id).unwrap_or_else(|| panic!("test id {id:?} is not a valid id"))
}

pub fn name_of(name: &str) -> UserName {
    UserName::parse(name).unwrap_or_else(|e| panic!("test name {name:?}: {e:?}"))
}

/// Creates users `(id, name)` and returns their ids.
pub async fn users<const N: usize>(f: &Fixture, list: [(&str, &str); N]) -> [UserId; N] {
    for (id, name) in list {
        if let Err(e) = f.store.create_user(&user(id, name), 0).await {
            panic!("cannot create test user {name}: {e}");
        }
    }
    list.map(|(id, _)| id_of(id))
}
