//! Messages: ids, inbox positions, dedupe, the pending cap, confirmation,
//! receipts, history, retention.

use super::{Fixture, users};
use crate::auth::UserId;
use crate::ports::{
    Addressed, Entry, InboxItem, InboxState, NewMessage, Sent, StoredMessage, Write, Written,
    write_now,
};
use std::sync::Arc;

fn msg(from: &UserId, to: &UserId, cid: Option<&str>, at: i64) -> NewMessage {
    NewMessage {
        sender: from.clone(),
        recipient: to.clone(),
        body: "hello".into(),
        client_id: cid.map(str::to_owned),
        sent_at: at,
    }
}

async fn send(f: &Fixture, m: NewMessage, max_pending: u32) -> Sent {
    let write = Write::Send {
        message: m,
        max_pending,
    };
    match write_now(f.store.as_ref(), write).await {
        Ok(Written::Sent(sent)) => sent,
        other => panic!("expected a send result, got {other:?}"),
    }
}

/// Stores a message and returns it with (recipient, sender) positions.
async fn stored(f: &Fixture, m: NewMessage) -> (Arc<StoredMessage>, i64, Option<i64>) {
    match send(f, m, 100).await {
        Sent::Stored {
            message,
            recipient_pos,
            sender_pos,
        } => (message, recipient_pos, sender_pos),
        other => panic!("expected a stored message, got {other:?}"),
    }
}

async fn confirm(f: &Fixture, user: &UserId, up_to: i64, now: i64) -> (i64, Vec<Addressed>) {
    let write = Write::Confirm {
        user: user.clone(),
        up_to,
        now,
    };
    match write_now(f.store.as_ref(), write).await {
        Ok(Written::Confirmed {
            confirmed,
            receipts,
            ..
        }) => (confirmed, receipts),
        other => panic!("expected a confirmation, got {other:?}"),
    }
}

async fn read(f: &Fixture, reader: &UserId, from: &UserId, up_to: i64) -> Option<Addressed> {
    let write = Write::Read {
        reader: reader.clone(),
        from: from.clone(),
        up_to,
        now: 50,
    };
    match write_now(f.store.as_ref(), write).await {
        Ok(Written::Read(r)) => r,
        other => panic!("expected a read result, got {other:?}"),
    }
}

async fn inbox(f: &Fixture, user: &UserId, after: i64) -> Vec<InboxItem> {
    f.store.inbox(user, after, 100).await.unwrap()
}

fn positions(items: &[InboxItem]) -> Vec<i64> {
    items.iter().map(|i| i.pos).collect()
}

fn seqs(list: &[StoredMessage]) -> Vec<i64> {
    list.iter().map(|m| m.seq).collect()
}

/// Both directions of a conversation share one sequence; other
/// conversations have their own.
pub async fn messages_get_ids_per_conversation(f: &Fixture) {
    let [a, b, c] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b"), ("cccccc", "c")]).await;
    let (first, _, _) = stored(f, msg(&a, &b, Some("1"), 10)).await;
    assert_eq!(
        (first.sender.clone(), first.recipient.clone()),
        (a.clone(), b.clone())
    );
    assert_eq!((first.body.as_str(), first.sent_at), ("hello", 10));
    assert_eq!((first.delivered_at, first.read_at), (None, None));
    assert_eq!(first.client_id.as_deref(), Some("1"));
    let mut ids = vec![first.seq];
    ids.push(stored(f, msg(&b, &a, Some("2"), 11)).await.0.seq);
    ids.push(stored(f, msg(&a, &b, None, 12)).await.0.seq);
    ids.push(stored(f, msg(&a, &b, None, 13)).await.0.seq);
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(stored(f, msg(&a, &c, None, 14)).await.0.seq, 1);
    assert_eq!(stored(f, msg(&c, &b, None, 15)).await.0.seq, 1);
}

/// Each message enters the recipient's inbox and the sender's (one entry
/// for a message to oneself), at consecutive positions per user.
pub async fn messages_enter_both_inboxes_in_order(f: &Fixture) {
    let [a, b] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b")]).await;
    assert_eq!(
        f.store.inbox_state(&a).await.unwrap(),
        InboxState::default()
    );
    let (_, rb1, sa1) = stored(f, msg(&a, &b, None, 10)).await;
    let (_, ra1, sb2) = stored(f, msg(&b, &a, None, 11)).await;
    let (_, rb3, sa3) = stored(f, msg(&a, &b, None, 12)).await;
    assert_eq!(
        (rb1, sa1, ra1, sb2, rb3, sa3),
        (1, Some(1), 2, Some(2), 3, Some(3))
    );
    let (_, own, none) = stored(f, msg(&a, &a, None, 13)).await;
    assert_eq!((own, none), (4, None));
    let items = inbox(f, &a, 0).await;
    assert_eq!(positions(&items), [1, 2, 3, 4]);
    let Entry::Message(m) = &items[1].entry else {
        panic!("expected a message, got {:?}", items[1]);
    };
    assert_eq!((m.sender.clone(), m.seq), (b.clone(), 2));
    assert_eq!(positions(&inbox(f, &a, 2).await), [3, 4]);
    assert_eq!(f.store.inbox(&a, 0, 2).await.unwrap().len(), 2);
    let state = f.store.inbox_state(&b).await.unwrap();
    assert_eq!((state.head, state.confirmed), (3, 0));
}

/// A resent `client_id` to the same recipient returns the first copy; the
/// same `client_id` towards someone else is a new message.
pub async fn resends_are_recognised_by_sender_recipient_and_client_id(f: &Fixture) {
    let [a, b, c] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b"), ("cccccc", "c")]).await;
    let (first, _, _) = stored(f, msg(&a, &b, Some("m"), 10)).await;
    let again = send(f, msg(&a, &b, Some("m"), 20), 100).await;
    assert_eq!(again, Sent::Duplicate((*first).clone()));
    let (other, _, _) = stored(f, msg(&a, &c, Some("m"), 21)).await;
    assert_eq!((other.recipient.clone(), other.seq), (c.clone(), 1));
    let (theirs, _, _) = stored(f, msg(&b, &a, Some("m"), 22)).await;
    assert_eq!(theirs.seq, 2);
    assert_eq!(inbox(f, &b, 0).await.len(), 2, "the resend added nothing");
}

/// The cap counts unconfirmed messages to the user; confirming frees it;
/// an unknown recipient is refused.
pub async fn the_pending_cap_counts_unconfirmed_messages(f: &Fixture) {
    let [a, b] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b")]).await;
    for i in 0..2 {
        assert!(matches!(
            send(f, msg(&a, &b, None, i), 2).await,
            Sent::Stored { .. }
        ));
    }
    assert_eq!(send(f, msg(&a, &b, None, 5), 2).await, Sent::QueueFull);
    // b's own copies of what b sends do not count against b.
    assert!(matches!(
        send(f, msg(&b, &a, None, 6), 2).await,
        Sent::Stored { .. }
    ));
    confirm(f, &b, 1, 7).await;
    assert!(matches!(
        send(f, msg(&a, &b, None, 8), 2).await,
        Sent::Stored { .. }
    ));
    let ghost = crate::ports::contract::id_of("zzzzzz");
    assert_eq!(
        send(f, msg(&a, &ghost, None, 9), 2).await,
        Sent::UnknownRecipient
    );
}

/// Confirming marks messages to the user delivered, once, and gives each
/// sender one cumulative `delivered` entry; it is clamped to the head and
/// never goes back.
pub async fn confirming_delivers_and_tells_the_senders(f: &Fixture) {
    let [a, b, c] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b"), ("cccccc", "c")]).await;
    stored(f, msg(&a, &b, None, 10)).await; // seq 1: b:1 a:1
    stored(f, msg(&b, &a, None, 11)).await; // seq 2: b:2 (own copy) a:2
    stored(f, msg(&c, &b, None, 12)).await; // c-b seq 1: b:3 c:1
    stored(f, msg(&a, &b, None, 13)).await; // seq 3: b:4 a:3
    let write = Write::Confirm {
        user: b.clone(),
        up_to: 1_000,
        now: 20,
    };
    let Ok(Written::Confirmed {
        confirmed,
        delivered,
        receipts,
    }) = write_now(f.store.as_ref(), write).await
    else {
        panic!("expected a confirmation");
    };
    assert_eq!((confirmed, delivered), (4, 3), "clamped to the head");
    let mut to: Vec<(String, i64, Entry)> = receipts
        .into_iter()
        .map(|r| (r.user.to_string(), r.item.pos, r.item.entry))
        .collect();
    to.sort_by(|x, y| x.0.cmp(&y.0));
    let delivered_to_b = |id| Entry::Delivered {
        with: b.clone(),
        id,
    };
    assert_eq!(
        to,
        [
            (a.to_string(), 4, delivered_to_b(3)),
            (c.to_string(), 2, delivered_to_b(1)),
        ],
        "one receipt per sender, up to its newest message"
    );
    assert_eq!(confirm(f, &b, 2, 21).await, (4, Vec::new()), "never back");
    assert_eq!(confirm(f, &b, 4, 22).await, (4, Vec::new()), "only once");
    let state = f.store.inbox_state(&b).await.unwrap();
    assert_eq!((state.head, state.confirmed), (4, 4));
    let page = f.store.history(&a, &b, None, 10).await.unwrap();
    for m in page.iter().filter(|m| m.recipient == b) {
        assert_eq!(m.delivered_at, Some(20));
    }
    let from_b = page.iter().find(|m| m.sender == b).unwrap();
    assert_eq!(from_b.delivered_at, None, "b confirming its own copy");
    let a_inbox = inbox(f, &a, 3).await;
    assert_eq!(a_inbox.len(), 1);
    assert_eq!(a_inbox[0].entry, delivered_to_b(3));
}

/// A read receipt marks read (and delivered) up to the newest message to
/// the reader, and enters the sender's inbox with the clamped id.
pub async fn reading_is_clamped_and_tells_the_sender(f: &Fixture) {
    let [a, b] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b")]).await;
    assert_eq!(read(f, &b, &a, 5).await, None, "nothing to read");
    stored(f, msg(&a, &b, None, 10)).await; // seq 1, a:1
    stored(f, msg(&a, &b, None, 11)).await; // seq 2, a:2
    stored(f, msg(&b, &a, None, 12)).await; // seq 3, a:3
    let receipt = read(f, &b, &a, 1_000_000).await.expect("a receipt");
    assert_eq!(receipt.user, a);
    assert_eq!(receipt.item.pos, 4);
    assert_eq!(
        receipt.item.entry,
        Entry::Read {
            with: b.clone(),
            up_to: 2
        },
        "clamped to the newest message from a to b"
    );
    assert_eq!(read(f, &b, &a, 2).await, None, "nothing new");
    let page = f.store.history(&a, &b, None, 10).await.unwrap();
    for m in page.iter().filter(|m| m.recipient == b) {
        assert_eq!((m.read_at, m.delivered_at), (Some(50), Some(50)));
    }
    assert_eq!(inbox(f, &a, 3).await[0], receipt.item);
    // Read messages no longer count as pending.
    for i in 0..2 {
        assert!(matches!(
            send(f, msg(&a, &b, None, 60 + i), 2).await,
            Sent::Stored { .. }
        ));
    }
}

pub async fn history_pages_newest_first(f: &Fixture) {
    let [a, b] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b")]).await;
    for i in 0..5 {
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        stored(f, msg(from, to, None, i)).await;
    }
    let s = &f.store;
    assert_eq!(seqs(&s.history(&a, &b, None, 2).await.unwrap()), [5, 4]);
    assert_eq!(seqs(&s.history(&b, &a, Some(4), 2).await.unwrap()), [3, 2]);
    assert_eq!(seqs(&s.history(&a, &b, Some(2), 10).await.unwrap()), [1]);
}

/// Retention deletes old messages and their inbox entries, ids are not
/// reused afterwards, and what was deleted no longer counts as pending.
pub async fn retention_deletes_old_messages(f: &Fixture) {
    let [a, b] = users(f, [("aaaaaa", "a"), ("bbbbbb", "b")]).await;
    stored(f, msg(&a, &b, None, 10)).await;
    stored(f, msg(&a, &b, None, 20)).await;
    assert_eq!(f.store.delete_messages_before(30).await.unwrap(), 2);
    assert!(inbox(f, &b, 0).await.is_empty());
    let (next, pos, _) = stored(f, msg(&a, &b, None, 40)).await;
    assert_eq!((next.seq, pos), (3, 3), "neither ids nor positions reused");
    for i in 0..1 {
        assert!(matches!(
            send(f, msg(&a, &b, None, 50 + i), 2).await,
            Sent::Stored { .. }
        ));
    }
    assert_eq!(send(f, msg(&a, &b, None, 60), 2).await, Sent::QueueFull);
}
