//! Presence reaches whom it concerns: native connections their contacts'
//! and watched users', compat connections a capped list only when it
//! changed.

use super::{
    After, Event, Hub, HubConfig, Protocol, connect, drain, hub, hub_with, next, outgoing, user,
};
use crate::auth::UserId;
use crate::hub::event::Change;
use crate::hub::presence::broadcast;
use crate::ports::memory::MemoryStore;
use std::collections::HashSet;
use std::sync::Arc;

/// The (user, online) of every presence delta among `events`.
fn presence(events: &[Event]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Presence(p) => Some((p.profile.id.to_string(), p.change == Change::Online)),
            _ => None,
        })
        .collect()
}

/// The ids in the `users` snapshot among `events`, sorted.
fn snapshot(events: &[Event]) -> Vec<String> {
    let Some(Event::Users(list)) = events.iter().find(|e| matches!(e, Event::Users(_))) else {
        panic!("expected a users snapshot, got {events:?}");
    };
    let mut ids: Vec<String> = list.0.iter().map(|l| l.id.to_string()).collect();
    ids.sort();
    ids
}

fn watch(hub: &Hub, user: &UserId, out: &super::super::Outbound, ids: &[&UserId]) {
    let set: HashSet<UserId> = ids.iter().map(|u| (*u).clone()).collect();
    assert!(hub.interest.watch(user, out.id(), set));
}

#[tokio::test]
async fn natives_hear_of_contacts_and_watched_users_not_strangers() {
    let store = Arc::new(MemoryStore::new());
    let hub = hub(store.clone()).await;
    let ann = user(&store, "annann").await;
    let (bob, cat, dan) = (
        user(&store, "bobbob").await,
        user(&store, "catcat").await,
        user(&store, "dandan").await,
    );
    let (ann_out, mut ann_rx) = super::connect_with(&hub, &ann, Protocol::Native, 64);
    hub.interest.befriend(&ann.id, &bob.id);
    watch(&hub, &ann.id, &ann_out, &[&cat.id]);
    broadcast(&hub);
    drain(&mut ann_rx);
    let _bob = connect(&hub, &bob, Protocol::Native);
    let _cat = connect(&hub, &cat, Protocol::Compat);
    let _dan = connect(&hub, &dan, Protocol::Native);
    broadcast(&hub);
    let mut seen = presence(&drain(&mut ann_rx));
    seen.sort();
    assert_eq!(seen, [("bobbob".into(), true), ("catcat".into(), true)]);
    // Watching replaces: Dan in, Cat out; the snapshot is the whole view.
    watch(&hub, &ann.id, &ann_out, &[&dan.id]);
    let events = [hub.native_snapshot(&ann.id, ann_out.id())];
    assert_eq!(snapshot(&events), ["bobbob", "dandan"]);
    drop(_cat);
    let cat_conn = hub.conns_of(&cat.id);
    hub.detach(&cat.id, cat_conn[0].out.id());
    let dan_conn = hub.conns_of(&dan.id);
    hub.detach(&dan.id, dan_conn[0].out.id());
    broadcast(&hub);
    assert_eq!(presence(&drain(&mut ann_rx)), [("dandan".into(), false)]);
}

#[tokio::test]
async fn a_message_makes_its_two_users_contacts() {
    let store = Arc::new(MemoryStore::new());
    let hub = hub(store.clone()).await;
    let (ann, bob) = (user(&store, "annann").await, user(&store, "bobbob").await);
    let (ann_out, mut ann_rx) = super::connect_with(&hub, &ann, Protocol::Native, 64);
    let mut bob_rx = connect(&hub, &bob, Protocol::Native);
    broadcast(&hub);
    assert!(drain(&mut ann_rx).is_empty(), "strangers hear nothing");
    assert!(drain(&mut bob_rx).is_empty());
    let after = After::CompatSend { out: ann_out };
    hub.send(outgoing(&ann.id, &bob.id, "hi"), after).await;
    // Each is told the other is online, beside the message itself.
    let bob_events = next(&mut bob_rx, 2).await;
    assert_eq!(presence(&bob_events), [("annann".into(), true)]);
    let ann_events = next(&mut ann_rx, 2).await;
    assert_eq!(presence(&ann_events), [("bobbob".into(), true)]);
    let bob_conn = hub.conns_of(&bob.id);
    hub.detach(&bob.id, bob_conn[0].out.id());
    broadcast(&hub);
    assert_eq!(presence(&drain(&mut ann_rx)), [("bobbob".into(), false)]);
}

#[tokio::test]
async fn compat_lists_are_capped_and_sent_only_when_they_change() {
    let store = Arc::new(MemoryStore::new());
    let config = HubConfig {
        user_list_max: 3,
        ..HubConfig::default()
    };
    let hub = hub_with(store.clone(), config).await;
    let mut queues = Vec::new();
    for i in 0..5 {
        let profile = user(&store, &format!("user{i:02}")).await;
        queues.push(connect(&hub, &profile, Protocol::Compat));
    }
    broadcast(&hub);
    for rx in &mut queues {
        let events = drain(rx);
        assert_eq!(events.len(), 1, "one list per connection and window");
        assert_eq!(snapshot(&events), ["user00", "user01", "user02"]);
    }
    // More logins past the cap change no one's list: nothing is sent.
    for i in 5..8 {
        let profile = user(&store, &format!("user{i:02}")).await;
        queues.push(connect(&hub, &profile, Protocol::Compat));
    }
    broadcast(&hub);
    for (i, rx) in queues.iter_mut().enumerate() {
        let events = drain(rx);
        // The newcomers never had a list (they authorized): they get one.
        assert_eq!(
            events.len(),
            usize::from(i >= 5),
            "connection {i}: {events:?}"
        );
    }
    broadcast(&hub);
    assert!(queues.iter_mut().all(|rx| drain(rx).is_empty()));
    // A listed user leaving changes every view: one new list each.
    let user01 = UserId::parse("user01").unwrap();
    let gone = hub.conns_of(&user01);
    hub.detach(&user01, gone[0].out.id());
    broadcast(&hub);
    let events = drain(&mut queues[0]);
    assert_eq!(snapshot(&events), ["user00", "user02", "user03"]);
}

/// A snapshot taken within a window may show a user who leaves before the
/// window ends: the last state is still told, not cancelled out.
#[tokio::test]
async fn a_come_and_go_within_one_window_is_still_told() {
    let store = Arc::new(MemoryStore::new());
    let hub = hub(store.clone()).await;
    let (ann, bob) = (user(&store, "annann").await, user(&store, "bobbob").await);
    let (ann_out, mut ann_rx) = super::connect_with(&hub, &ann, Protocol::Native, 64);
    watch(&hub, &ann.id, &ann_out, &[&bob.id]);
    let _bob = connect(&hub, &bob, Protocol::Native);
    let seen = [hub.native_snapshot(&ann.id, ann_out.id())];
    assert_eq!(snapshot(&seen), ["bobbob"]);
    let bob_conn = hub.conns_of(&bob.id);
    hub.detach(&bob.id, bob_conn[0].out.id());
    broadcast(&hub);
    assert_eq!(presence(&drain(&mut ann_rx)), [("bobbob".into(), false)]);
}
