//! Users and sessions.

use super::{Fixture, id_of, name_of, user, users};
use crate::auth::TokenHash;
use crate::ports::{SessionKind, SessionRecord, StoreError};

fn session(byte: u8, created_at: i64, last_used_at: i64) -> SessionRecord {
    SessionRecord {
        token_hash: TokenHash([byte; 32]),
        created_at,
        last_used_at,
    }
}

/// Names are unique by their key (letter case does not count), found in
/// any case, and keep the spelling they were registered with.
pub async fn users_are_unique_by_name_in_any_case(f: &Fixture) {
    let s = &f.store;
    s.create_user(&user("aaaaaa", "Alice"), 1).await.unwrap();
    let taken = s.create_user(&user("bbbbbb", "aLICE"), 2).await;
    assert!(matches!(taken, Err(StoreError::NameTaken)), "{taken:?}");
    let found = s.user_by_name(&name_of("ALICE")).await.unwrap().unwrap();
    assert_eq!(found.profile, user("aaaaaa", "Alice").profile);
    assert_eq!(found.password_hash, "hash-of-Alice");
    assert!(s.user_by_name(&name_of("bob")).await.unwrap().is_none());
    assert!(s.user_exists(&id_of("aaaaaa")).await.unwrap());
    assert!(!s.user_exists(&id_of("bbbbbb")).await.unwrap());
    s.set_public_key(&id_of("aaaaaa"), "new key").await.unwrap();
    let p = s.user_by_id(&id_of("aaaaaa")).await.unwrap().unwrap();
    assert_eq!(
        (p.name.as_str(), p.public_key.as_str()),
        ("Alice", "new key")
    );
    assert!(s.user_by_id(&id_of("bbbbbb")).await.unwrap().is_none());
    s.set_public_key(&id_of("bbbbbb"), "k").await.unwrap();
    s.set_password_hash(&id_of("aaaaaa"), "rehashed")
        .await
        .unwrap();
    let found = s.user_by_name(&name_of("alice")).await.unwrap().unwrap();
    assert_eq!(found.password_hash, "rehashed");
    s.set_password_hash(&id_of("bbbbbb"), "x").await.unwrap();
}

/// A colliding random id is told apart from a taken name, so registration
/// draws another id instead of refusing the name.
pub async fn user_ids_collide_as_id_taken(f: &Fixture) {
    let s = &f.store;
    s.create_user(&user("aaaaaa", "alice"), 1).await.unwrap();
    let collided = s.create_user(&user("aaaaaa", "bob"), 2).await;
    assert!(matches!(collided, Err(StoreError::IdTaken)), "{collided:?}");
    assert!(s.user_by_name(&name_of("bob")).await.unwrap().is_none());
}

pub async fn users_are_listed_by_name(f: &Fixture) {
    users(
        f,
        [("cccccc", "carol"), ("aaaaaa", "Alice"), ("bbbbbb", "bob")],
    )
    .await;
    let names = |list: Vec<crate::ports::UserProfile>| {
        list.into_iter()
            .map(|p| p.name.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(f.store.list_users(10).await.unwrap()),
        ["Alice", "bob", "carol"]
    );
    assert_eq!(
        names(f.store.list_users(2).await.unwrap()),
        ["Alice", "bob"]
    );
}

pub async fn sessions_are_created_found_touched_and_deleted(f: &Fixture) {
    let s = &f.store;
    let [a] = users(f, [("aaaaaa", "alice")]).await;
    let one = session(1, 10, 10);
    s.create_session(&a, &one, SessionKind::Api).await.unwrap();
    let (record, profile) = s.session(&one.token_hash).await.unwrap().unwrap();
    assert_eq!((record, profile.id.clone()), (one, a.clone()));
    assert!(s.session(&TokenHash([9; 32])).await.unwrap().is_none());
    s.touch_sessions(&[one.token_hash, TokenHash([9; 32])], 50)
        .await
        .unwrap();
    s.touch_sessions(&[], 60).await.unwrap();
    let (record, _) = s.session(&one.token_hash).await.unwrap().unwrap();
    assert_eq!((record.created_at, record.last_used_at), (10, 50));
    assert!(s.delete_session(&one.token_hash).await.unwrap());
    assert!(!s.delete_session(&one.token_hash).await.unwrap());
    assert!(s.session(&one.token_hash).await.unwrap().is_none());
}

/// A compat login replaces the user's other compat sessions only: browser
/// sessions and other users' sessions stay.
pub async fn other_sessions_are_deleted_by_kind(f: &Fixture) {
    let s = &f.store;
    let [a, b] = users(f, [("aaaaaa", "alice"), ("bbbbbb", "bob")]).await;
    let plan = [
        (&a, 1, SessionKind::Compat),
        (&a, 2, SessionKind::Compat),
        (&a, 3, SessionKind::Compat),
        (&a, 4, SessionKind::Api),
        (&b, 5, SessionKind::Compat),
    ];
    for (user, byte, kind) in plan {
        s.create_session(user, &session(byte, 0, 0), kind)
            .await
            .unwrap();
    }
    let gone = s
        .delete_other_sessions(&a, &TokenHash([3; 32]), SessionKind::Compat)
        .await
        .unwrap();
    let mut gone: Vec<u8> = gone.iter().map(|h| h.0[0]).collect();
    gone.sort();
    assert_eq!(gone, [1, 2], "the revoked sessions are named");
    for (byte, alive) in [(1, false), (2, false), (3, true), (4, true), (5, true)] {
        let found = s.session(&TokenHash([byte; 32])).await.unwrap();
        assert_eq!(found.is_some(), alive, "session {byte}");
    }
}

pub async fn sessions_expire_by_idle_and_age(f: &Fixture) {
    let s = &f.store;
    let [a] = users(f, [("aaaaaa", "alice")]).await;
    let idle = session(1, 100, 100);
    let old = session(2, 0, 500);
    let fresh = session(3, 100, 500);
    for r in [idle, old, fresh] {
        s.create_session(&a, &r, SessionKind::Api).await.unwrap();
    }
    assert_eq!(s.delete_expired_sessions(200, 50).await.unwrap(), 2);
    assert!(s.session(&idle.token_hash).await.unwrap().is_none());
    assert!(s.session(&old.token_hash).await.unwrap().is_none());
    assert!(s.session(&fresh.token_hash).await.unwrap().is_some());
    assert_eq!(s.delete_expired_sessions(500, 100).await.unwrap(), 0);
}
