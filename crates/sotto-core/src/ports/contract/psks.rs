//! Device keys.

use super::Fixture;
use crate::ports::psk::{PskIdentity, PskKey, PskStoreError};

fn identity(raw: &str) -> PskIdentity {
    PskIdentity::parse(raw).unwrap()
}

/// Adding, listing (never keys), revoking and re-adding, with every
/// change numbered so a running server can follow another process's edits.
pub async fn psks_are_added_listed_revoked_and_followed(f: &Fixture) {
    let p = &f.psks;
    let (one, two) = (identity("device one"), identity("device-2"));
    let key = PskKey::from_hex("0102030405").unwrap();
    p.add_psk(&one, &key, None, 10).await.unwrap();
    p.add_psk(&two, &key, None, 20).await.unwrap();
    let taken = p.add_psk(&one, &key, None, 30).await;
    assert!(matches!(taken, Err(PskStoreError::IdentityTaken(ref i)) if i == "device one"));
    let listed: Vec<_> = p
        .list_psks()
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.identity, l.created_at, l.revoked_at))
        .collect();
    assert_eq!(
        listed,
        [
            ("device one".into(), 10, None),
            ("device-2".into(), 20, None)
        ]
    );

    assert!(p.revoke_psk(&one, 40).await.unwrap());
    assert!(!p.revoke_psk(&one, 41).await.unwrap(), "already revoked");
    assert!(!p.revoke_psk(&identity("nobody"), 41).await.unwrap());
    let changes = p.psk_changes(0, 10).await.unwrap();
    let seen: Vec<_> = changes
        .iter()
        .map(|c| (c.identity.to_string(), c.entry.is_some()))
        .collect();
    assert_eq!(
        seen,
        [("device-2".into(), true), ("device one".into(), false)]
    );
    assert!(changes.windows(2).all(|w| w[0].rev < w[1].rev));
    let live = changes[0].entry.as_ref().unwrap();
    assert_eq!(live.key.as_bytes(), key.as_bytes());

    let last = changes[1].rev;
    assert_eq!(p.psk_changes(last, 10).await.unwrap().len(), 0);
    let new_key = PskKey::generate();
    p.add_psk(&one, &new_key, None, 50).await.unwrap();
    let after = p.psk_changes(last, 10).await.unwrap();
    assert_eq!(after.len(), 1);
    assert!(after[0].rev > last);
    assert_eq!(
        after[0].entry.as_ref().unwrap().key.as_bytes(),
        new_key.as_bytes()
    );
    assert_eq!(p.psk_changes(0, 1).await.unwrap().len(), 1, "limit");
}
