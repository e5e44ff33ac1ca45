//! Devices (binding, limits, deletion, log out everywhere) and the
//! contact-list reads (users by prefix, conversations).

use super::{Fixture, id_of, users};
use crate::auth::{TokenHash, UserId};
use crate::ports::{
    Bound, Device, DeviceId, NewMessage, SessionKind, SessionRecord, StoreError, UNREAD_WINDOW,
    Write, write_now,
};

fn device(id: &str, key: &str, at: i64) -> Device {
    Device {
        id: DeviceId::parse(id).unwrap_or_else(|| panic!("bad test device id {id}")),
        public_key: key.to_owned(),
        name: format!("browser {key}"),
        created_at: at,
    }
}

async fn session(f: &Fixture, user: &UserId, byte: u8, kind: SessionKind) -> TokenHash {
    let record = SessionRecord {
        token_hash: TokenHash([byte; 32]),
        created_at: 0,
        last_used_at: 0,
    };
    f.store.create_session(user, &record, kind).await.unwrap();
    record.token_hash
}

async fn bind(f: &Fixture, user: &UserId, s: &TokenHash, d: &Device) -> Bound {
    f.store.bind_device(user, s, d, 3).await.unwrap()
}

fn keys(list: &[Device]) -> Vec<&str> {
    list.iter().map(|d| d.public_key.as_str()).collect()
}

/// One device per session; the same key is the same device again; the
/// limit and id collisions are decided by the store.
pub async fn devices_are_bound_to_sessions(f: &Fixture) {
    let s = &f.store;
    let [a, b] = users(f, [("aaaaaa", "alice"), ("bbbbbb", "bob")]).await;
    let (s1, s2) = (
        session(f, &a, 1, SessionKind::Api).await,
        session(f, &a, 2, SessionKind::Api).await,
    );
    let d1 = device("00000000000000a1", "k1", 10);
    assert_eq!(bind(f, &a, &s1, &d1).await, Bound::Created(d1.clone()));
    // Again from the same session: same device, nothing new.
    let again = device("00000000000000a2", "k1", 11);
    assert_eq!(bind(f, &a, &s1, &again).await, Bound::Rebound(d1.clone()));
    let other = device("00000000000000a3", "k2", 12);
    assert_eq!(
        bind(f, &a, &s1, &other).await,
        Bound::SessionHasDevice(d1.clone())
    );
    // A second login of the same browser finds its device by key.
    assert_eq!(bind(f, &a, &s2, &again).await, Bound::Rebound(d1.clone()));
    assert_eq!(s.session_device(&s2).await.unwrap(), Some(d1.clone()));
    // Someone else's session, or an unknown one, binds nothing.
    assert_eq!(bind(f, &b, &s1, &other).await, Bound::NoSession);
    assert_eq!(
        bind(f, &a, &TokenHash([9; 32]), &other).await,
        Bound::NoSession
    );
    let clash = Device {
        public_key: "k9".into(),
        ..d1.clone()
    };
    let collided = s
        .bind_device(&a, &session(f, &a, 3, SessionKind::Api).await, &clash, 3)
        .await;
    assert!(matches!(collided, Err(StoreError::IdTaken)), "{collided:?}");
    // Bob may use the same key: keys are unique per user only.
    let sb = session(f, &b, 4, SessionKind::Api).await;
    let bobs = device("00000000000000b1", "k1", 13);
    assert_eq!(bind(f, &b, &sb, &bobs).await, Bound::Created(bobs.clone()));
    for (byte, key) in [(5, "k5"), (6, "k6")] {
        let sx = session(f, &a, byte, SessionKind::Api).await;
        let d = device(&format!("00000000000000c{byte}"), key, i64::from(byte) * 10);
        assert!(matches!(bind(f, &a, &sx, &d).await, Bound::Created(_)));
    }
    let sx = session(f, &a, 7, SessionKind::Api).await;
    assert_eq!(
        bind(f, &a, &sx, &device("00000000000000c7", "k7", 70)).await,
        Bound::TooMany
    );
    assert_eq!(s.session_device(&sx).await.unwrap(), None);
    assert_eq!(keys(&s.devices(&a).await.unwrap()), ["k1", "k5", "k6"]);
    let both = s
        .devices_of(&[b.clone(), a.clone(), id_of("cccccc")])
        .await
        .unwrap();
    let owners: Vec<_> = both
        .iter()
        .map(|(u, d)| (u.as_str(), d.public_key.as_str()))
        .collect();
    assert_eq!(
        owners,
        [
            ("bbbbbb", "k1"),
            ("aaaaaa", "k1"),
            ("aaaaaa", "k5"),
            ("aaaaaa", "k6")
        ]
    );
    assert!(s.devices_of(&[]).await.unwrap().is_empty());
}

/// Deleting a device revokes exactly the sessions bound to it, and only
/// its owner can delete it.
pub async fn deleting_a_device_revokes_its_sessions(f: &Fixture) {
    let s = &f.store;
    let [a, b] = users(f, [("aaaaaa", "alice"), ("bbbbbb", "bob")]).await;
    let s1 = session(f, &a, 1, SessionKind::Api).await;
    let s2 = session(f, &a, 2, SessionKind::Api).await;
    let s3 = session(f, &a, 3, SessionKind::Api).await;
    let d1 = device("00000000000000a1", "k1", 10);
    bind(f, &a, &s1, &d1).await;
    bind(f, &a, &s2, &d1).await;
    bind(f, &a, &s3, &device("00000000000000a2", "k2", 11)).await;
    assert_eq!(s.delete_device(&b, &d1.id).await.unwrap(), None);
    let unknown = DeviceId::parse("ffffffffffffffff").unwrap();
    assert_eq!(s.delete_device(&a, &unknown).await.unwrap(), None);
    let mut gone = s.delete_device(&a, &d1.id).await.unwrap().unwrap();
    gone.sort_by_key(|h| h.0);
    assert_eq!(gone, [s1, s2]);
    assert!(s.session(&s1).await.unwrap().is_none());
    assert!(s.session(&s3).await.unwrap().is_some());
    assert_eq!(keys(&s.devices(&a).await.unwrap()), ["k2"]);
    assert_eq!(s.delete_device(&a, &d1.id).await.unwrap(), None);
}

/// Log out everywhere: every session of the user, of both kinds, and
/// every device; nobody else's.
pub async fn logging_out_everywhere_removes_sessions_and_devices(f: &Fixture) {
    let s = &f.store;
    let [a, b] = users(f, [("aaaaaa", "alice"), ("bbbbbb", "bob")]).await;
    let s1 = session(f, &a, 1, SessionKind::Api).await;
    let s2 = session(f, &a, 2, SessionKind::Compat).await;
    let sb = session(f, &b, 3, SessionKind::Api).await;
    bind(f, &a, &s1, &device("00000000000000a1", "k1", 10)).await;
    bind(f, &b, &sb, &device("00000000000000b1", "k1", 10)).await;
    let mut gone = s.delete_sessions_and_devices(&a).await.unwrap();
    gone.sort_by_key(|h| h.0);
    assert_eq!(gone, [s1, s2]);
    assert!(s.devices(&a).await.unwrap().is_empty());
    assert_eq!(s.devices(&b).await.unwrap().len(), 1);
    assert!(s.session(&sb).await.unwrap().is_some());
    assert!(s.delete_sessions_and_devices(&a).await.unwrap().is_empty());
}

pub async fn users_are_found_by_name_prefix(f: &Fixture) {
    users(
        f,
        [
            ("cccccc", "carol"),
            ("aaaaaa", "Alice"),
            ("bbbbbb", "alfred"),
            ("dddddd", "bob"),
        ],
    )
    .await;
    let names = |list: Vec<crate::ports::UserProfile>| {
        list.into_iter()
            .map(|p| p.name.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let s = &f.store;
    assert_eq!(
        names(s.users_by_prefix("al", 10).await.unwrap()),
        ["alfred", "Alice"]
    );
    assert_eq!(names(s.users_by_prefix("al", 1).await.unwrap()), ["alfred"]);
    assert_eq!(
        names(s.users_by_prefix("alice", 10).await.unwrap()),
        ["Alice"]
    );
    assert!(s.users_by_prefix("z", 10).await.unwrap().is_empty());
    // `_` and `%` are plain characters here, not patterns.
    assert!(s.users_by_prefix("_", 10).await.unwrap().is_empty());
    assert!(s.users_by_prefix("%", 10).await.unwrap().is_empty());
    assert_eq!(s.users_by_prefix("", 10).await.unwrap().len(), 4);
}

async fn send(f: &Fixture, from: &UserId, to: &UserId, body: &str, at: i64) {
    let message = NewMessage {
        sender: from.clone(),
        recipient: to.clone(),
        body: body.to_owned(),
        client_id: None,
        sent_at: at,
    };
    write_now(
        f.store.as_ref(),
        Write::Send {
            message,
            max_pending: 10_000,
        },
    )
    .await
    .unwrap();
}

/// The most recent conversation first, each with its newest message and
/// the messages to the user not yet read.
pub async fn conversations_list_the_last_message_and_unread(f: &Fixture) {
    let s = &f.store;
    let [a, b, c] = users(
        f,
        [("aaaaaa", "alice"), ("bbbbbb", "bob"), ("cccccc", "carol")],
    )
    .await;
    send(f, &b, &a, "b1", 1).await;
    send(f, &b, &a, "b2", 2).await;
    send(f, &a, &c, "c1", 3).await;
    send(f, &c, &a, "c2", 4).await;
    send(f, &a, &b, "b3", 5).await;
    send(f, &b, &c, "not alice's", 6).await;
    let list = s.conversations(&a, 10).await.unwrap();
    let seen: Vec<_> = list
        .iter()
        .map(|c| {
            (
                c.with.as_str(),
                c.name.as_str(),
                c.last.body.as_str(),
                c.unread,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("bbbbbb", "bob", "b3", 2), ("cccccc", "carol", "c2", 1)]
    );
    assert_eq!(list[0].last.seq, 3);
    assert_eq!(s.conversations(&a, 1).await.unwrap().len(), 1);
    let read = Write::Read {
        reader: a.clone(),
        from: b.clone(),
        up_to: 1,
        now: 7,
    };
    write_now(s.as_ref(), read).await.unwrap();
    let list = s.conversations(&a, 10).await.unwrap();
    assert_eq!((list[0].unread, list[1].unread), (1, 1));
    // Bob's side: Alice's b3 is unread by him.
    let bobs = s.conversations(&b, 10).await.unwrap();
    let seen: Vec<_> = bobs.iter().map(|c| (c.with.as_str(), c.unread)).collect();
    assert_eq!(seen, [("cccccc", 0), ("aaaaaa", 1)]);
    assert!(
        s.conversations(&id_of("dddddd"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Unread messages are counted among the newest [`UNREAD_WINDOW`] only.
pub async fn unread_counts_are_bounded(f: &Fixture) {
    let [a, b] = users(f, [("aaaaaa", "alice"), ("bbbbbb", "bob")]).await;
    for i in 0..i64::from(UNREAD_WINDOW) + 5 {
        send(f, &b, &a, "x", i).await;
    }
    send(f, &a, &b, "mine", 10_000).await;
    let list = f.store.conversations(&a, 10).await.unwrap();
    assert_eq!(list[0].unread, UNREAD_WINDOW - 1);
}
