//! The queue's limits (events and bytes) and its close signal.

use super::*;
use std::sync::Arc;

#[test]
fn conn_ids_carry_the_node_and_print_compactly() {
    let (a, b) = (ConnId::next(), ConnId::next());
    assert_ne!(a, b);
    assert_eq!(a.node, node_id());
    assert_eq!(a.node, b.node);
    let shown = a.to_string();
    assert_eq!(shown, format!("{:016x}-{}", a.node, a.seq));
}

#[tokio::test]
async fn full_queue_closes_as_slow_consumer() {
    let root = CancellationToken::new();
    let (out, rx) = outbound(1, &root);
    assert_eq!(out.push(Event::Authorized), Ok(()));
    assert_eq!(out.push(Event::Authorized), Err(PushError::Full));
    assert_eq!(rx.reason(), Some(CloseReason::SlowConsumer));
    rx.close_signal().cancelled().await;
}

fn message(body_len: usize) -> Event {
    let m = crate::ports::StoredMessage {
        row: 1,
        seq: 1,
        sender: UserId::random(),
        recipient: UserId::random(),
        body: "x".repeat(body_len),
        client_id: None,
        sent_at: 0,
        delivered_at: None,
        read_at: None,
    };
    let item = crate::ports::InboxItem {
        pos: 1,
        entry: crate::ports::Entry::Message(Arc::new(m)),
    };
    Event::Inbox(crate::hub::event::Shared::new(item))
}

#[tokio::test]
async fn bytes_over_the_limit_close_as_slow_consumer() {
    let root = CancellationToken::new();
    let limit = QueueLimit {
        events: 1024,
        bytes: 10_000,
    };
    let (out, mut rx) = outbound(limit, &root);
    // Three 4 KB messages reach the limit; the fourth is refused even
    // though the event count is far from full.
    for _ in 0..3 {
        assert_eq!(out.push(message(4_000)), Ok(()));
    }
    assert!(rx.queued_bytes() > 10_000);
    assert_eq!(out.push(message(4_000)), Err(PushError::Full));
    assert_eq!(rx.reason(), Some(CloseReason::SlowConsumer));
    // Taking events releases exactly what they were charged.
    while rx.try_recv().is_ok() {}
    assert_eq!(rx.queued_bytes(), 0);
}

#[tokio::test]
async fn taken_events_make_room_again() {
    let root = CancellationToken::new();
    let limit = QueueLimit {
        events: 1024,
        bytes: 10_000,
    };
    let (out, mut rx) = outbound(limit, &root);
    for _ in 0..100 {
        assert_eq!(out.push(message(6_000)), Ok(()));
        assert_eq!(out.push(message(6_000)), Ok(()));
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_some());
    }
    assert_eq!(rx.queued_bytes(), 0);
    // One event larger than the whole limit passes an empty queue.
    assert_eq!(out.push(message(50_000)), Ok(()));
    assert!(!out.is_closed());
}

#[tokio::test(start_paused = true)]
async fn push_wait_waits_for_bytes_then_gives_up() {
    let root = CancellationToken::new();
    let limit = QueueLimit {
        events: 1024,
        bytes: 10_000,
    };
    let (out, mut rx) = outbound(limit, &root);
    assert_eq!(out.push(message(20_000)), Ok(()));
    let waiter = {
        let out = out.clone();
        tokio::spawn(async move { out.push_wait(message(10), Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished());
    assert!(rx.recv().await.is_some());
    assert_eq!(waiter.await.unwrap(), Ok(()));
    // Nobody reads now: the next wait ends with a slow-consumer close.
    assert_eq!(out.push(message(20_000)), Ok(()));
    let late = out.push_wait(message(10), Duration::from_secs(5)).await;
    assert_eq!(late, Err(PushError::Full));
    assert_eq!(rx.reason(), Some(CloseReason::SlowConsumer));
}

#[tokio::test]
async fn shutdown_closes_every_connection() {
    let root = CancellationToken::new();
    let (out, rx) = outbound(4, &root);
    root.cancel();
    rx.close_signal().cancelled().await;
    assert!(out.is_closed());
    // No reason was set by the hub: the transport reads that as shutdown.
    assert_eq!(rx.reason(), None);
}

/// A user list shared by many queues is charged in full to each: the
/// slowest connection holding it keeps the whole list alive.
#[test]
fn a_shared_user_list_counts_in_every_queue_holding_it() {
    use crate::auth::UserName;
    use crate::hub::event::{Shared, UserList};
    use crate::ports::UserProfile;
    let profile = |name: &str| {
        Arc::new(UserProfile {
            id: UserId::random(),
            name: UserName::parse(name).unwrap(),
            public_key: "k".repeat(1_000),
        })
    };
    let list = Event::Users(Shared::new(UserList(vec![
        profile("ann").into(),
        profile("bob").into(),
    ])));
    // Two 1,000-byte keys and their names and ids: over 2,000 bytes.
    assert!((2_000..2_400).contains(&list.weight()), "{}", list.weight());
    let root = CancellationToken::new();
    let (a, rx_a) = outbound(16, &root);
    let (b, rx_b) = outbound(16, &root);
    assert_eq!(a.push(list.clone()), Ok(()));
    assert_eq!(b.push(list.clone()), Ok(()));
    assert_eq!(rx_a.queued_bytes(), list.weight());
    assert_eq!(rx_b.queued_bytes(), list.weight());
}

/// A queue filled with inbox entries (a reader far behind, caught up from
/// the store) still takes the answers to the client's own requests: the
/// inbox may fill three quarters of the bytes and of the events, and a
/// reply is refused (and the connection closed) only past the whole limit.
#[tokio::test]
async fn inbox_entries_leave_room_for_replies() {
    let root = CancellationToken::new();
    let limit = QueueLimit {
        events: 8,
        bytes: 10_000,
    };
    let (out, _rx) = outbound(limit, &root);
    let mut queued = 0;
    while out.try_push(message(1_000)) == Ok(()) {
        queued += 1;
    }
    // The events' reserve (2 of 8) is what stops the inbox here.
    assert_eq!(queued, 6);
    assert_eq!(out.push(Event::Authorized), Ok(()));
    assert_eq!(out.push(Event::Authorized), Ok(()));
    assert!(!out.is_closed());
    assert_eq!(out.push(Event::Authorized), Err(PushError::Full));
    assert!(out.is_closed());
}

#[tokio::test]
async fn inbox_bytes_stop_at_three_quarters() {
    let root = CancellationToken::new();
    let limit = QueueLimit {
        events: 1024,
        bytes: 10_000,
    };
    let (out, rx) = outbound(limit, &root);
    let mut queued = 0;
    while out.try_push(message(2_000)) == Ok(()) {
        queued += 1;
    }
    // 2 KB entries: the fourth brings the queue past 7,500 bytes.
    assert_eq!(queued, 4);
    assert!(rx.queued_bytes() < 10_000);
    assert_eq!(out.push(message(2_000)), Ok(()), "a reply still fits");
    assert!(!out.is_closed());
}
