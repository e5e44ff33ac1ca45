//! Hubs of several nodes on one store, joined by an in-process bus that
//! can lose announcements of chosen kinds: what at-most-once delivery
//! loses is made good (the periodic head check, the heartbeat's digest
//! and snapshots), and presence is cluster-wide.

use super::*;
use crate::broker::{Broker, BrokerState, BrokerStats, Envelope, Incoming, LocalBroker, wire};
use crate::hub::Parts;
use crate::hub::event::Change;
use std::collections::HashSet;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Every node's queue, and the kinds of announcement lost on the way.
#[derive(Default)]
struct Bus {
    nodes: Mutex<Vec<mpsc::Sender<Incoming>>>,
    lose: Mutex<HashSet<&'static str>>,
}

struct OnBus {
    bus: Arc<Bus>,
    incoming: Mutex<Option<mpsc::Receiver<Incoming>>>,
    stats: BrokerStats,
}

impl Bus {
    fn join(self: &Arc<Bus>) -> Arc<OnBus> {
        let (tx, rx) = mpsc::channel(1024);
        self.nodes.lock().unwrap().push(tx);
        Arc::new(OnBus {
            bus: self.clone(),
            incoming: Mutex::new(Some(rx)),
            stats: BrokerStats::default(),
        })
    }

    fn lose(&self, kind: &'static str) {
        self.lose.lock().unwrap().insert(kind);
    }
}

impl Broker for OnBus {
    fn publish(&self, envelope: Envelope) {
        if self
            .bus
            .lose
            .lock()
            .unwrap()
            .contains(wire::kind(&envelope.announcement))
        {
            return;
        }
        // Through the wire format, as NATS would carry it.
        let decoded = wire::decode(&wire::encode(&envelope)).expect("round trip");
        for node in self.bus.nodes.lock().unwrap().iter() {
            let _ = node.try_send(Incoming::Announcement(decoded.clone()));
        }
    }

    fn subscribe(&self) -> mpsc::Receiver<Incoming> {
        self.incoming
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| mpsc::channel(1).1)
    }

    fn state(&self) -> BrokerState {
        BrokerState::Connected
    }

    fn stats(&self) -> &BrokerStats {
        &self.stats
    }
}

/// A running hub on `store` whose broker is on `bus`, with quick timings.
async fn node(store: &Arc<MemoryStore>, bus: &Arc<Bus>) -> Arc<Hub> {
    let config = HubConfig {
        presence_interval: Duration::from_millis(10),
        node_heartbeat: Duration::from_millis(50),
        node_timeout: Duration::from_millis(500),
        head_check: Duration::from_millis(100),
        ..HubConfig::default()
    };
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
    let parts = Parts {
        store: store.clone(),
        accounts: Arc::new(accounts),
        metrics: Arc::default(),
        broker: bus.join(),
    };
    Hub::start_with(parts, config, CancellationToken::new(), &TaskTracker::new())
}

/// A connection of `profile` on `hub` whose session is new (the running
/// hub's expiry would close one made at time 0).
fn join(
    hub: &Hub,
    profile: &Arc<UserProfile>,
    protocol: Protocol,
) -> (super::super::Outbound, OutboundReceiver) {
    let (out, rx) = outbound(64, &hub.shutdown);
    let live = Live {
        out: out.clone(),
        protocol,
        session: Some(LiveSession::of(&Token::generate(), hub.now_ms())),
        feed: Feed::live_after(0),
        listed: Arc::new(u64::MAX.into()),
    };
    if protocol == Protocol::Native {
        hub.interest.join(&profile.id, &out, Vec::new());
    }
    hub.attach(profile.clone(), Arc::from(Vec::new()), live);
    (out, rx)
}

/// Waits (up to 5 s) for a presence event about `user` saying `change`.
async fn presence(rx: &mut OutboundReceiver, user: &UserId, change: Change) {
    let wait = async {
        while let Some(e) = rx.recv().await {
            if let Event::Presence(p) = &e
                && p.profile.id == *user
                && p.change == change
            {
                return;
            }
        }
        panic!("queue closed");
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("no {change:?} for {user}"));
}

/// Waits (up to 5 s) until `check` holds.
async fn until(mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_lost_inbox_announcement_is_found_by_the_periodic_check() {
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(Bus::default());
    bus.lose("inbox");
    let (a, b) = (node(&store, &bus).await, node(&store, &bus).await);
    let alice = user(&store, "alice1").await;
    let bob = user(&store, "bob123").await;
    let (out, _alice_rx) = join(&a, &alice, Protocol::Compat);
    let (_bob_rx_out, mut bob_rx) = join(&b, &bob, Protocol::Compat);
    let after = After::CompatSend { out };
    a.send(outgoing(&alice.id, &bob.id, "lost, then found"), after)
        .await;
    let got = loop {
        let e = next(&mut bob_rx, 1).await.remove(0);
        if matches!(e, Event::Inbox(_)) {
            break e;
        }
    };
    assert_eq!(message_of(&got).1.body, "lost, then found");
}

#[tokio::test]
async fn a_lost_offline_is_repaired_by_the_heartbeat_digest() {
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(Bus::default());
    bus.lose("offline");
    let (a, b) = (node(&store, &bus).await, node(&store, &bus).await);
    let alice = user(&store, "alice1").await;
    let bob = user(&store, "bob123").await;
    let (_bob_rx_out, mut bob_rx) = join(&b, &bob, Protocol::Native);
    // Presence goes to those who care: Alice is Bob's contact.
    b.interest.befriend(&bob.id, &alice.id);
    let (out, _rx) = join(&a, &alice, Protocol::Native);
    presence(&mut bob_rx, &alice.id, Change::Online).await;
    a.detach(&alice.id, out.id());
    presence(&mut bob_rx, &alice.id, Change::Offline).await;
    assert!(!b.online_elsewhere(&alice.id));
}

#[tokio::test]
async fn a_user_is_online_while_online_on_any_node() {
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(Bus::default());
    let (a, b, c) = (
        node(&store, &bus).await,
        node(&store, &bus).await,
        node(&store, &bus).await,
    );
    let alice = user(&store, "alice1").await;
    let (on_a, _rx_a) = join(&a, &alice, Protocol::Native);
    let (on_b, _rx_b) = join(&b, &alice, Protocol::Native);
    until(|| c.online_elsewhere(&alice.id)).await;
    a.detach(&alice.id, on_a.id());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.online_elsewhere(&alice.id), "still online on node b");
    assert!(b.online_elsewhere(&alice.id) || b.online_count() == 1);
    b.detach(&alice.id, on_b.id());
    until(|| !c.online_elsewhere(&alice.id)).await;
}

#[tokio::test]
async fn a_single_node_broker_announces_nothing_and_needs_no_tasks() {
    let broker = LocalBroker::default();
    assert_eq!(broker.state(), BrokerState::Local);
    let mut rx = broker.subscribe();
    assert!(rx.recv().await.is_none());
}
