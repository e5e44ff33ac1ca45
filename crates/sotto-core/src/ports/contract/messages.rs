//! Messages: ids, dedupe, the offline queue, history, receipts, retention.

use super::{Fixture, users};
use crate::auth::UserId;
use crate::ports::{Inserted, NewMessage, StoredMessage};

/// A message sent at `at`, waiting (not delivered).
fn msg<'a>(from: &'a UserId, to: &'a UserId, cid: Option<&'a str>, at: i64) -> NewMessage<'a> {
    NewMessage {
        sender: from,
        recipient: to,
        body: "hello",
        client_id: cid,
        sent_at: at,
        delivered_at: None,
    }
}

async fn stored(f: &Fixture, m: &NewMessage<'_>) -> StoredMessage {
    match f.store.insert_message(m, 100).await.unwrap() {
        Inserted::Stored(s) => s,
        other => panic!("expected a stored message, got {other:?}"),
    }
}

fn seqs(list: &[StoredMessage]) -> Vec<i64> {
    list.iter().map(|m| m.seq).collect()
}

/// Both directions of a conversation share one sequence; other
/// conversations have their own.
pub async fn messages_get_ids_per_conversation(f: &Fixture) {
    let [a, b, c] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b"), ("cccccc", "c")]).await;
    let first = stored(f, &msg(&a, &b, Some("1"), 10)).await;
    assert_eq!(
        (first.sender.clone(), first.recipient.clone()),
        (a.clone(), b.clone())
    );
    assert_eq!((first.body.as_str(), first.sent_at), ("hello", 10));
    assert_eq!((first.delivered_at, first.read_at), (None, None));
    assert_eq!(first.client_id.as_deref(), Some("1"));
    let mut ids = vec![first.seq];
    ids.push(stored(f, &msg(&b, &a, Some("2"), 11)).await.seq);
    ids.push(stored(f, &msg(&a, &b, None, 12)).await.seq);
    ids.push(stored(f, &msg(&a, &b, None, 13)).await.seq);
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(stored(f, &msg(&a, &c, None, 14)).await.seq, 1);
    assert_eq!(stored(f, &msg(&c, &b, None, 15)).await.seq, 1);
}

/// A resent `client_id` returns the first copy (whatever the new
/// recipient); client ids are per sender.
pub async fn resends_are_recognised_by_client_id(f: &Fixture) {
    let [a, b, c] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b"), ("cccccc", "c")]).await;
    let first = stored(f, &msg(&a, &b, Some("m"), 10)).await;
    let again = f
        .store
        .insert_message(&msg(&a, &c, Some("m"), 20), 100)
        .await;
    assert_eq!(again.unwrap(), Inserted::Duplicate(first));
    let other_sender = stored(f, &msg(&b, &c, Some("m"), 30)).await;
    assert_eq!(other_sender.seq, 1);
    assert_eq!(f.store.history(&a, &c, None, 10).await.unwrap(), []);
}

/// The cap counts waiting messages only; a message delivered as it is
/// stored is never refused.
pub async fn the_offline_cap_counts_undelivered_only(f: &Fixture) {
    let [a, b] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b")]).await;
    let s = &f.store;
    for cid in ["1", "2"] {
        let r = s.insert_message(&msg(&a, &b, Some(cid), 10), 2).await;
        assert!(matches!(r.unwrap(), Inserted::Stored(_)));
    }
    let full = s.insert_message(&msg(&a, &b, Some("3"), 10), 2).await;
    assert_eq!(full.unwrap(), Inserted::QueueFull);
    let live = NewMessage {
        delivered_at: Some(11),
        ..msg(&a, &b, Some("4"), 11)
    };
    assert!(matches!(
        s.insert_message(&live, 2).await.unwrap(),
        Inserted::Stored(m) if m.seq == 3 && m.delivered_at == Some(11)
    ));
    let rows: Vec<i64> = s
        .undelivered(&b, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.row)
        .collect();
    s.mark_delivered(&rows, 20).await.unwrap();
    let again = s.insert_message(&msg(&a, &b, Some("3"), 21), 2).await;
    assert!(matches!(again.unwrap(), Inserted::Stored(m) if m.seq == 4));
}

pub async fn undelivered_come_in_arrival_order(f: &Fixture) {
    let [a, b, c] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b"), ("cccccc", "c")]).await;
    let m1 = stored(f, &msg(&a, &c, None, 10)).await;
    let m2 = stored(f, &msg(&b, &c, None, 11)).await;
    stored(f, &msg(&c, &a, None, 12)).await;
    let m3 = stored(f, &msg(&a, &c, None, 13)).await;
    let waiting = f.store.undelivered(&c, 10).await.unwrap();
    assert_eq!(waiting, [m1.clone(), m2.clone(), m3]);
    assert_eq!(f.store.undelivered(&c, 2).await.unwrap(), [m1, m2]);
    assert_eq!(f.store.undelivered(&b, 10).await.unwrap(), []);
}

/// Delivered messages leave the queue; a failed live delivery puts one
/// back, by row or by (sender, recipient, seq).
pub async fn delivery_marks_and_requeue(f: &Fixture) {
    let [a, b] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b")]).await;
    let s = &f.store;
    let m1 = stored(f, &msg(&a, &b, None, 10)).await;
    let m2 = stored(f, &msg(&a, &b, None, 11)).await;
    s.mark_delivered(&[m1.row, m2.row], 30).await.unwrap();
    s.mark_delivered(&[], 31).await.unwrap();
    assert_eq!(s.undelivered(&b, 10).await.unwrap(), []);
    let page = s.history(&a, &b, None, 10).await.unwrap();
    assert!(page.iter().all(|m| m.delivered_at == Some(30)), "{page:?}");
    s.mark_undelivered(m2.row).await.unwrap();
    assert_eq!(seqs(&s.undelivered(&b, 10).await.unwrap()), [2]);
    s.requeue(&b, &a, m1.seq).await.unwrap();
    assert_eq!(
        seqs(&s.undelivered(&b, 10).await.unwrap()),
        [2],
        "wrong sender"
    );
    s.requeue(&a, &b, m1.seq).await.unwrap();
    assert_eq!(seqs(&s.undelivered(&b, 10).await.unwrap()), [1, 2]);
}

pub async fn history_pages_newest_first(f: &Fixture) {
    let [a, b, c] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b"), ("cccccc", "c")]).await;
    for i in 0..5 {
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        stored(f, &msg(from, to, None, i)).await;
    }
    stored(f, &msg(&a, &c, None, 9)).await;
    let s = &f.store;
    assert_eq!(seqs(&s.history(&b, &a, None, 2).await.unwrap()), [5, 4]);
    assert_eq!(
        seqs(&s.history(&a, &b, Some(4), 10).await.unwrap()),
        [3, 2, 1]
    );
    assert_eq!(seqs(&s.history(&a, &b, Some(1), 10).await.unwrap()), [0; 0]);
    assert_eq!(seqs(&s.history(&c, &a, None, 10).await.unwrap()), [1]);
}

/// Reading marks the reader's incoming messages up to `up_to`, once; a
/// message read before it was delivered counts as delivered too.
pub async fn reading_marks_messages_read_and_delivered(f: &Fixture) {
    let [a, b] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b")]).await;
    let s = &f.store;
    stored(f, &msg(&a, &b, None, 10)).await;
    stored(f, &msg(&b, &a, None, 11)).await;
    stored(f, &msg(&a, &b, None, 12)).await;
    stored(f, &msg(&a, &b, None, 13)).await;
    assert_eq!(s.mark_read(&b, &a, 3, 50).await.unwrap(), 2);
    assert_eq!(s.mark_read(&b, &a, 3, 60).await.unwrap(), 0, "already read");
    let page = s.history(&a, &b, None, 10).await.unwrap();
    let marks: Vec<_> = page
        .iter()
        .map(|m| (m.seq, m.read_at, m.delivered_at))
        .collect();
    assert_eq!(
        marks,
        [
            (4, None, None),
            (3, Some(50), Some(50)),
            (2, None, None),
            (1, Some(50), Some(50))
        ]
    );
    assert_eq!(seqs(&s.undelivered(&b, 10).await.unwrap()), [4]);
}

pub async fn retention_deletes_old_messages(f: &Fixture) {
    let [a, b] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b")]).await;
    for at in [10, 20, 30] {
        stored(f, &msg(&a, &b, None, at)).await;
    }
    assert_eq!(f.store.delete_messages_before(30).await.unwrap(), 2);
    assert_eq!(f.store.delete_messages_before(30).await.unwrap(), 0);
    assert_eq!(seqs(&f.store.history(&a, &b, None, 10).await.unwrap()), [3]);
}
