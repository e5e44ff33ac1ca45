//! The hub's event fan-out, checked without a socket: events land in the
//! outbound queues as typed values, shared ones as one allocation whose
//! encoding runs once per protocol however many connections get it.

use super::conn::{OutboundReceiver, outbound};
use super::event::{Event, Shared};
use super::{Hub, HubConfig, Live, LiveSession, Protocol};
use crate::auth::accounts::Accounts;
use crate::auth::password::{PasswordHasher, PasswordParams};
use crate::auth::{Token, UserId, UserName};
use crate::clock::Clock;
use crate::ports::memory::MemoryStore;
use crate::ports::{MessageStore, UserProfile, UserRecord, UserStore};
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// A hub without its background tasks, so presence is broadcast only when
/// a test says so.
async fn hub(store: Arc<MemoryStore>) -> Hub {
    let params = PasswordParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let hasher = PasswordHasher::new(params, 1, 1).await.unwrap();
    let config = HubConfig::default();
    let accounts = Accounts::new(
        store.clone(),
        hasher,
        config.account_limits(),
        Clock::system(),
    );
    let senders = super::send_limit::Senders::new(config.send_limits);
    Hub {
        store,
        accounts: Arc::new(accounts),
        metrics: Arc::default(),
        config,
        online: Mutex::default(),
        stripes: super::delivery::Stripes::new(),
        senders,
        presence: super::presence::Changes::default(),
        presence_changed: tokio::sync::Notify::new(),
        shutdown: CancellationToken::new(),
    }
}

async fn user(store: &MemoryStore, id: &str) -> Arc<UserProfile> {
    let profile = UserProfile {
        id: UserId::parse(id).unwrap(),
        name: UserName::parse(id).unwrap(),
        public_key: format!("key-of-{id}"),
    };
    let record = UserRecord {
        profile: profile.clone(),
        password_hash: String::new(),
    };
    store.create_user(&record, 0).await.unwrap();
    Arc::new(profile)
}

/// Attaches a connection of `protocol` for `profile`, as coming online
/// would, and returns its queue.
fn connect(hub: &Hub, profile: &Arc<UserProfile>, protocol: Protocol) -> OutboundReceiver {
    let (out, rx) = outbound(64, &hub.shutdown);
    let session = (protocol != Protocol::Device).then(|| LiveSession::of(&Token::generate(), 0));
    hub.attach(
        profile.clone(),
        Live {
            out,
            protocol,
            session,
        },
    );
    rx
}

fn drain(rx: &mut OutboundReceiver) -> Vec<Event> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// An encoder that counts its calls.
fn counting<T>(calls: &AtomicUsize) -> impl FnOnce(&T) -> Bytes + '_ {
    move |_| {
        calls.fetch_add(1, Ordering::Relaxed);
        Bytes::from_static(b"frame")
    }
}

#[tokio::test]
async fn one_user_list_is_shared_and_encoded_once_for_every_connection() {
    let store = Arc::new(MemoryStore::new());
    let hub = hub(store.clone()).await;
    let mut queues = Vec::new();
    for i in 0..50 {
        let profile = user(&store, &format!("user{i:02}")).await;
        queues.push(connect(&hub, &profile, Protocol::Compat));
    }
    super::presence::broadcast(&hub);
    let calls = AtomicUsize::new(0);
    let mut first: Option<Arc<Shared<super::event::UserList>>> = None;
    for rx in &mut queues {
        let events = drain(rx);
        assert_eq!(events.len(), 1, "one list per connection");
        let Event::Users(list) = &events[0] else {
            panic!("expected the user list, got {:?}", events[0]);
        };
        assert_eq!(list.0.len(), 50);
        let shared = first.get_or_insert_with(|| list.clone());
        assert!(Arc::ptr_eq(shared, list), "the same value in every queue");
        list.encoded(Protocol::Compat, counting(&calls));
    }
    assert_eq!(calls.load(Ordering::Relaxed), 1, "encoded once for all");
}

#[tokio::test]
async fn a_message_to_many_sessions_is_encoded_once_per_protocol() {
    let store = Arc::new(MemoryStore::new());
    let hub = hub(store.clone()).await;
    let (alice, bob) = (user(&store, "alice1").await, user(&store, "bob222").await);
    let mut tabs: Vec<_> = (0..5)
        .map(|_| connect(&hub, &bob, Protocol::Native))
        .collect();
    let mut device = connect(&hub, &bob, Protocol::Device);
    let outgoing = super::delivery::Outgoing {
        sender: &alice.id,
        target: &bob.id,
        body: "hello",
        client_id: None,
        origin: None,
    };
    let accepted = hub.deliver_stored(outgoing).await.unwrap();
    assert!(accepted.delivered);
    let calls = AtomicUsize::new(0);
    for rx in &mut tabs {
        let events = drain(rx);
        let [Event::Message(m)] = &events[..] else {
            panic!("expected one message, got {events:?}");
        };
        m.encoded(Protocol::Native, counting(&calls));
    }
    assert_eq!(calls.load(Ordering::Relaxed), 1, "one native encoding");
    // The device gets the same typed message: no frame to parse back.
    let events = drain(&mut device);
    let [Event::Message(m)] = &events[..] else {
        panic!("expected one message, got {events:?}");
    };
    assert_eq!(
        (m.seq, m.sender.as_str(), m.body.as_str()),
        (accepted.seq, "alice1", "hello")
    );
}

#[tokio::test]
async fn a_device_gets_stored_then_live_messages_as_typed_values() {
    let store = Arc::new(MemoryStore::new());
    let hub = hub(store.clone()).await;
    let (alice, bob) = (user(&store, "alice1").await, user(&store, "bob222").await);
    let send = |body: &'static str| super::delivery::Outgoing {
        sender: &alice.id,
        target: &bob.id,
        body,
        client_id: None,
        origin: None,
    };
    // Bob is away: stored.
    let stored = hub.deliver_stored(send("while away")).await.unwrap();
    assert!(!stored.delivered);
    let (out, mut rx) = outbound(8, &hub.shutdown);
    assert!(hub.connect_device(&out, &bob.id).await);
    let live = hub.device_send(&alice.id, &bob.id, "live").await.unwrap();
    let got: Vec<(i64, String)> = drain(&mut rx)
        .into_iter()
        .map(|e| match e {
            Event::Message(m) => (m.seq, m.body.clone()),
            other => panic!("a device gets messages only, got {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (stored.seq, "while away".to_owned()),
            (live, "live".to_owned())
        ],
        "stored first, then live"
    );
    // Presence is not a device's business.
    super::presence::broadcast(&hub);
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test]
async fn compat_messages_are_relayed_and_stored_when_the_relay_fails() {
    let store = Arc::new(MemoryStore::new());
    let hub = hub(store.clone()).await;
    let (alice, bob) = (user(&store, "alice1").await, user(&store, "bob222").await);
    let mut rx = connect(&hub, &bob, Protocol::Compat);
    let relayed = hub
        .deliver_compat(alice.id.clone(), &bob.id, "hi".to_owned())
        .await
        .unwrap();
    assert!(relayed.delivered);
    let events = drain(&mut rx);
    let [Event::Relayed(r)] = &events[..] else {
        panic!("expected a relayed message, got {events:?}");
    };
    assert_eq!((r.sender.as_str(), r.body.as_str()), ("alice1", "hi"));
    let stored = store.history(&alice.id, &bob.id, None, 10).await.unwrap();
    assert!(stored.is_empty(), "relayed, not stored");

    // A queue that cannot take it: the message is kept, not lost.
    drop(rx);
    let stored = hub
        .deliver_compat(alice.id.clone(), &bob.id, "later".to_owned())
        .await
        .unwrap();
    assert!(!stored.delivered);
    let messages = store.history(&alice.id, &bob.id, None, 10).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body, "later");
    assert_eq!(hub.online_count(), 0, "the dead connection was detached");
}

/// Every connection's queue preallocates a block of 32 events: keep an
/// event two words, as documented on [`Event`].
#[test]
fn events_stay_small() {
    assert!(std::mem::size_of::<Event>() <= 16);
}

#[tokio::test]
async fn a_sender_over_its_limit_is_refused_on_every_path_and_nothing_is_stored() {
    use super::Failure;
    use std::num::NonZeroU32;
    let store = Arc::new(MemoryStore::new());
    let mut hub = hub(store.clone()).await;
    hub.senders = super::send_limit::Senders::new(super::SendLimits {
        per_second: NonZeroU32::new(1),
        burst: NonZeroU32::new(2).unwrap(),
        bytes_per_minute: None,
    });
    let (alice, bob) = (user(&store, "alice1").await, user(&store, "bob222").await);
    assert!(hub.device_send(&alice.id, &bob.id, "one").await.is_ok());
    let relayed = hub.deliver_compat(alice.id.clone(), &bob.id, "two".into());
    assert!(relayed.await.is_ok());
    let refused = hub.device_send(&alice.id, &bob.id, "three").await;
    assert!(
        matches!(refused, Err(Failure::SendLimited { retry_after_secs }) if retry_after_secs >= 1),
        "{refused:?}"
    );
    let refused = hub.deliver_compat(alice.id.clone(), &bob.id, "four".into());
    assert!(matches!(refused.await, Err(Failure::SendLimited { .. })));
    assert!(
        hub.device_send(&bob.id, &alice.id, "bob's own")
            .await
            .is_ok()
    );
    let stored = store.undelivered(&bob.id, 10).await.unwrap();
    let bodies: Vec<_> = stored.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["one", "two"], "refused sends are not stored");
    assert_eq!(hub.metrics.sends_rate_limited.load(Ordering::Relaxed), 2);
}
