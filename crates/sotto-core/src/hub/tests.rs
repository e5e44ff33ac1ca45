//! The hub's event fan-out, checked without a socket: events land in the
//! outbound queues as typed values, shared ones as one allocation whose
//! encoding runs once per protocol however many connections get it.

use super::conn::{OutboundReceiver, outbound};
use super::delivery::{After, Outgoing};
use super::event::{Event, Failure, Shared};
use super::feed::Feed;
use super::{Hub, HubConfig, Live, LiveSession, Protocol};
use crate::auth::accounts::Accounts;
use crate::auth::password::{PasswordHasher, PasswordParams};
use crate::auth::{Token, UserId, UserName};
use crate::clock::Clock;
use crate::ports::memory::MemoryStore;
use crate::ports::{Entry, InboxItem, MessageStore, UserProfile, UserRecord, UserStore};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod presence;

/// A hub whose only background task is the dispatcher, so presence is
/// broadcast only when a test says so.
async fn hub(store: Arc<MemoryStore>) -> Arc<Hub> {
    hub_with(store, HubConfig::default()).await
}

async fn hub_with(store: Arc<MemoryStore>, config: HubConfig) -> Arc<Hub> {
    let params = PasswordParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let hasher = PasswordHasher::new(params, 1, 1).await.unwrap();
    let accounts = Accounts::new(
        store.clone(),
        hasher,
        config.account_limits(),
        Clock::system(),
    );
    let tasks = TaskTracker::new();
    let parts = super::Parts {
        store,
        accounts: Arc::new(accounts),
        metrics: Arc::default(),
        broker: Arc::new(crate::broker::LocalBroker::default()),
    };
    let (hub, committed) = Hub::build(parts, config, CancellationToken::new(), &tasks);
    tasks.spawn(hub.clone().dispatch(committed));
    hub
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

/// Attaches a connection of `protocol` for `profile` with a live feed at
/// the start of the inbox, and returns its queue.
fn connect(hub: &Hub, profile: &Arc<UserProfile>, protocol: Protocol) -> OutboundReceiver {
    connect_with(hub, profile, protocol, 64).1
}

fn connect_with(
    hub: &Hub,
    profile: &Arc<UserProfile>,
    protocol: Protocol,
    queue: usize,
) -> (super::Outbound, OutboundReceiver) {
    let (out, rx) = outbound(queue, &hub.shutdown);
    let session = (protocol != Protocol::Device).then(|| LiveSession::of(&Token::generate(), 0));
    let live = Live {
        out: out.clone(),
        protocol,
        session,
        feed: Feed::live_after(0),
        listed: Arc::new(u64::MAX.into()),
    };
    if protocol == Protocol::Native {
        hub.interest.join(&profile.id, &out, Vec::new());
    }
    hub.attach(profile.clone(), Arc::from(Vec::new()), live);
    (out, rx)
}

fn drain(rx: &mut OutboundReceiver) -> Vec<Event> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// The next `n` events, waiting for each (they come from the dispatcher
/// or a catch-up task).
async fn next(rx: &mut OutboundReceiver, n: usize) -> Vec<Event> {
    let mut got = Vec::new();
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(e)) => got.push(e),
            _ => panic!("expected {n} events, got {got:?}"),
        }
    }
    got
}

fn outgoing(from: &UserId, to: &UserId, body: &str) -> Outgoing {
    Outgoing {
        sender: from.clone(),
        target: to.clone(),
        body: body.to_owned(),
        client_id: None,
    }
}

/// The message of an inbox event, with its position.
fn message_of(e: &Event) -> (i64, Arc<crate::ports::StoredMessage>) {
    match e {
        Event::Inbox(item) => match &item.entry {
            Entry::Message(m) => (item.pos, m.clone()),
            other => panic!("expected a message, got {other:?}"),
        },
        other => panic!("expected an inbox entry, got {other:?}"),
    }
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
    let seq = hub.device_send(&alice.id, &bob.id, "hello").await.unwrap();
    let calls = AtomicUsize::new(0);
    let mut first: Option<Arc<Shared<InboxItem>>> = None;
    for rx in &mut tabs {
        let events = next(rx, 1).await;
        let [Event::Inbox(item)] = &events[..] else {
            panic!("expected one inbox entry, got {events:?}");
        };
        assert_eq!(item.pos, 1);
        let shared = first.get_or_insert_with(|| item.clone());
        assert!(Arc::ptr_eq(shared, item), "the same value in every queue");
        item.encoded(Protocol::Native, counting(&calls));
    }
    assert_eq!(calls.load(Ordering::Relaxed), 1, "one native encoding");
    // The device gets the same typed message: no frame to parse back.
    let (pos, m) = message_of(&next(&mut device, 1).await[0]);
    assert_eq!(
        (pos, m.seq, m.sender.as_str(), m.body.as_str()),
        (1, seq, "alice1", "hello")
    );
}

#[tokio::test]
async fn a_device_gets_stored_then_live_messages_as_typed_values() {
    let store = Arc::new(MemoryStore::new());
    let hub = hub(store.clone()).await;
    let (alice, bob) = (user(&store, "alice1").await, user(&store, "bob222").await);
    // Bob is away: stored.
    let stored = hub.device_send(&alice.id, &bob.id, "while away").await;
    let (out, mut rx) = outbound(8, &hub.shutdown);
    assert!(hub.connect_device(&out, &bob.id).await);
    let live = hub.device_send(&alice.id, &bob.id, "live").await.unwrap();
    let got: Vec<(i64, i64, String)> = next(&mut rx, 2)
        .await
        .iter()
        .map(|e| {
            let (pos, m) = message_of(e);
            (pos, m.seq, m.body.clone())
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, stored.unwrap(), "while away".to_owned()),
            (2, live, "live".to_owned())
        ],
        "stored first, then live"
    );
    // Presence is not a device's business.
    super::presence::broadcast(&hub);
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test]
async fn compat_messages_are_stored_and_reach_the_senders_native_sessions() {
    let store = Arc::new(MemoryStore::new());
    let hub = hub(store.clone()).await;
    let (alice, bob) = (user(&store, "alice1").await, user(&store, "bob222").await);
    let mut bob_compat = connect(&hub, &bob, Protocol::Compat);
    let (alice_compat, mut alice_compat_rx) = outbound(8, &hub.shutdown);
    let mut alice_tab = connect(&hub, &alice, Protocol::Native);
    let after = After::CompatSend {
        out: alice_compat.clone(),
    };
    hub.send(outgoing(&alice.id, &bob.id, "hi"), after).await;
    let (pos, m) = message_of(&next(&mut bob_compat, 1).await[0]);
    assert_eq!(
        (pos, m.sender.as_str(), m.body.as_str()),
        (1, "alice1", "hi")
    );
    // Bob is now Alice's contact: her tab hears he is online first.
    let events = next(&mut alice_tab, 2).await;
    assert!(matches!(&events[0], Event::Presence(p) if p.profile.id == bob.id));
    let (pos, copy) = message_of(&events[1]);
    assert_eq!((pos, copy.seq), (1, m.seq), "the sender's other session");
    let history = store.history(&alice.id, &bob.id, None, 10).await.unwrap();
    assert_eq!(history.len(), 1, "stored, so in history");
    assert!(
        drain(&mut alice_compat_rx).is_empty(),
        "no reply on success"
    );
}

#[tokio::test]
async fn a_full_queue_falls_behind_and_catches_up_without_being_closed() {
    let store = Arc::new(MemoryStore::new());
    let hub = hub(store.clone()).await;
    let (alice, bob) = (user(&store, "alice1").await, user(&store, "bob222").await);
    let (out, mut rx) = connect_with(&hub, &bob, Protocol::Native, 4);
    for i in 0..20 {
        let sent = hub.device_send(&alice.id, &bob.id, &format!("m{i}")).await;
        assert!(sent.is_ok());
    }
    let positions: Vec<i64> = next(&mut rx, 20)
        .await
        .iter()
        .map(|e| message_of(e).0)
        .collect();
    assert_eq!(
        positions,
        (1..=20).collect::<Vec<_>>(),
        "in order, none lost"
    );
    assert!(!out.is_closed(), "falling behind is not a reason to close");
    assert!(drain(&mut rx).is_empty(), "and nothing twice");
}

/// Every connection's queue preallocates a block of 32 events: keep an
/// event two words, as documented on [`Event`].
#[test]
fn events_stay_small() {
    assert!(std::mem::size_of::<Event>() <= 16);
}

#[tokio::test]
async fn a_sender_over_its_limit_is_refused_on_every_path_and_nothing_is_stored() {
    use std::num::NonZeroU32;
    let store = Arc::new(MemoryStore::new());
    let config = HubConfig {
        send_limits: super::SendLimits {
            per_second: NonZeroU32::new(1),
            burst: NonZeroU32::new(2).unwrap(),
            bytes_per_minute: None,
        },
        ..HubConfig::default()
    };
    let hub = hub_with(store.clone(), config).await;
    let (alice, bob) = (user(&store, "alice1").await, user(&store, "bob222").await);
    let (compat, mut compat_rx) = outbound(8, &hub.shutdown);
    let compat_send = |body: &str| {
        let after = After::CompatSend {
            out: compat.clone(),
        };
        hub.send(outgoing(&alice.id, &bob.id, body), after)
    };
    assert!(hub.device_send(&alice.id, &bob.id, "one").await.is_ok());
    compat_send("two").await;
    let refused = hub.device_send(&alice.id, &bob.id, "three").await;
    assert!(
        matches!(refused, Err(Failure::SendLimited { retry_after_secs }) if retry_after_secs >= 1),
        "{refused:?}"
    );
    compat_send("four").await;
    let events = next(&mut compat_rx, 1).await;
    assert!(
        matches!(&events[0], Event::Error(e) if matches!(e.failure, Failure::SendLimited { .. })),
        "{events:?}"
    );
    assert!(
        hub.device_send(&bob.id, &alice.id, "bob's own")
            .await
            .is_ok()
    );
    let inbox = store.inbox(&bob.id, 0, 10).await.unwrap();
    let bodies: Vec<String> = inbox
        .iter()
        .filter_map(|i| match &i.entry {
            Entry::Message(m) if m.recipient == bob.id => Some(m.body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, ["one", "two"], "refused sends are not stored");
    assert_eq!(hub.metrics.sends_rate_limited.load(Ordering::Relaxed), 2);
}

/// A new device is told to the native connections that care (its
/// owner's, a contact's) as one shared set; a stranger's and compat
/// connections hear nothing, and the set is kept for later snapshots.
#[tokio::test]
async fn a_device_set_goes_to_the_native_connections_that_care_once() {
    use crate::ports::{Bound, SessionKind, SessionRecord, SessionStore};
    let store = Arc::new(MemoryStore::new());
    let hub = hub(store.clone()).await;
    let (ann, bob) = (user(&store, "annann").await, user(&store, "bobbob").await);
    let mut natives = [
        connect(&hub, &ann, Protocol::Native),
        connect(&hub, &bob, Protocol::Native),
    ];
    let mut compat = connect(&hub, &bob, Protocol::Compat);
    let stranger = user(&store, "carcar").await;
    let mut strangers = connect(&hub, &stranger, Protocol::Native);
    assert!(hub.interest.befriend(&bob.id, &ann.id));
    let token = crate::auth::TokenHash([7; 32]);
    let record = SessionRecord {
        token_hash: token,
        created_at: 0,
        last_used_at: 0,
    };
    store
        .create_session(&ann.id, &record, SessionKind::Api)
        .await
        .unwrap();
    let bound = hub.register_device(&ann.id, &token, "key", "laptop").await;
    let Ok(Bound::Created(device)) = bound else {
        panic!("expected a new device, got {bound:?}");
    };
    let mut first = None;
    for rx in &mut natives {
        let events = drain(rx);
        let [Event::Devices(set)] = &events[..] else {
            panic!("expected one devices event, got {events:?}");
        };
        assert_eq!(
            (&set.user, &set.devices[..]),
            (&ann.id, &[device.clone()][..])
        );
        let shared = first.get_or_insert_with(|| set.clone());
        assert!(Arc::ptr_eq(shared, set));
    }
    assert!(drain(&mut compat).is_empty());
    assert!(drain(&mut strangers).is_empty());
    let kept = hub.online_map().get(&ann.id).map(|o| o.devices.clone());
    assert_eq!(kept.as_deref(), Some(&[device][..]));
}

/// A session revoked for a known user closes that user's connections
/// with it, and no one else's, whichever way it is looked up.
#[tokio::test]
async fn a_users_revoked_session_closes_only_its_connections() {
    let store = Arc::new(MemoryStore::default());
    let hub = hub(store.clone()).await;
    let (ann, bob) = (user(&store, "ann001").await, user(&store, "bob001").await);
    let (ann_out, _ann_rx) = connect_with(&hub, &ann, Protocol::Native, 64);
    let (other_out, _other_rx) = connect_with(&hub, &ann, Protocol::Native, 64);
    let (bob_out, _bob_rx) = connect_with(&hub, &bob, Protocol::Native, 64);
    let hash_of = |out: &super::Outbound| {
        let map = hub.online_map();
        let conns = map.values().flat_map(|o| o.conns.iter());
        conns
            .filter(|l| l.out.id() == out.id())
            .find_map(Live::token_hash)
            .unwrap()
    };
    let (ann_hash, bob_hash) = (hash_of(&ann_out), hash_of(&bob_out));
    // Bob's session is not Ann's: looked up as hers, it closes nothing.
    assert_eq!(
        hub.close_user_session(&ann.id, &bob_hash, super::CloseReason::LoggedOut),
        0
    );
    assert!(!bob_out.is_closed());
    assert_eq!(
        hub.close_user_session(&ann.id, &ann_hash, super::CloseReason::LoggedOut),
        1
    );
    assert!(ann_out.is_closed());
    assert!(!other_out.is_closed() && !bob_out.is_closed());
    assert_eq!(hub.conns_of(&ann.id).len(), 1);
    // The unscoped look-up finds the same connections.
    assert_eq!(
        hub.close_session(&bob_hash, super::CloseReason::LoggedOut),
        1
    );
    assert!(bob_out.is_closed());
    assert!(!hub.online_map().contains_key(&bob.id));
}

mod cluster;
