//! Error kinds that are not about the data.

use super::{Fixture, id_of};
use crate::auth::TokenHash;

/// After `close`, every call fails as retryable `Unavailable`, never as an
/// empty answer: "no such session" would log users out during an outage.
pub async fn a_closed_store_is_unavailable(f: &Fixture) {
    let s = &f.store;
    s.ping().await.unwrap();
    s.close().await;
    let ping = s.ping().await;
    assert!(ping.as_ref().is_err_and(|e| e.is_retryable()), "{ping:?}");
    let found = s.session(&TokenHash([1; 32])).await;
    assert!(found.as_ref().is_err_and(|e| e.is_retryable()), "{found:?}");
    let exists = s.user_exists(&id_of("aaaaaa")).await;
    assert!(
        exists.as_ref().is_err_and(|e| e.is_retryable()),
        "{exists:?}"
    );
}
