//! A batch that mixes sends, confirmations and reads for the same users,
//! applied in one transaction by the set-based writer, must give exactly
//! what the same writes give one at a time: the same results, the same
//! inboxes, the same counters. Every path of the batch is in the script:
//! sends whose messages a later confirmation or read of the batch marks,
//! resends of a first copy from an earlier batch and from this one (marked
//! in between or not), an unknown recipient, the pending cap reached and
//! then freed by a confirmation, a message to oneself, receipts.

use sotto_core::auth::UserId;
use sotto_core::ports::contract::{id_of, user};
use sotto_core::ports::{
    Entry, InboxItem, MessageStore, NewMessage, Sent, StoredMessage, UserStore, Write, Written,
    write_now,
};
use sotto_store_postgres::PostgresStore;
use sotto_store_postgres::testing::TestDatabase;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const USERS: [(&str, &str); 3] = [("aaaaaa", "alice"), ("bbbbbb", "bob"), ("cccccc", "carol")];

fn send(from: &str, to: &str, cid: &str, max_pending: u32) -> Write {
    Write::Send {
        message: NewMessage {
            sender: id_of(from),
            recipient: id_of(to),
            body: format!("{from} to {to}: {cid}"),
            client_id: Some(cid.to_owned()),
            sent_at: 10,
        },
        max_pending,
    }
}

fn confirm(who: &str, up_to: i64) -> Write {
    Write::Confirm {
        user: id_of(who),
        up_to,
        now: 20,
    }
}

fn read(reader: &str, from: &str, up_to: i64) -> Write {
    Write::Read {
        reader: id_of(reader),
        from: id_of(from),
        up_to,
        now: 30,
    }
}

/// Committed in an earlier batch: first copies for resends.
fn before() -> Vec<Write> {
    vec![
        send("aaaaaa", "bbbbbb", "old", 100),
        send("bbbbbb", "aaaaaa", "old-a", 100),
    ]
}

/// The batch. Each user confirms at most once in it: several
/// confirmations of one user in a batch are coalesced into the last (as
/// on SQLite), which one at a time they are not.
fn script() -> Vec<Write> {
    vec![
        // A resend from the earlier batch, before anything marks alice.
        send("bbbbbb", "aaaaaa", "old-a", 100),
        send("aaaaaa", "bbbbbb", "a1", 100),
        send("aaaaaa", "bbbbbb", "a2", 100),
        send("cccccc", "bbbbbb", "c1", 100),
        // Covers the earlier batch's message (bob's 1) and a1 (bob's 3,
        // stored in this batch), not a2: a receipt to alice.
        confirm("bbbbbb", 3),
        // A resend of a1, which the confirmation delivered meanwhile.
        send("aaaaaa", "bbbbbb", "a1", 100),
        // A resend from the earlier batch, marked delivered since.
        send("aaaaaa", "bbbbbb", "old", 100),
        send("bbbbbb", "aaaaaa", "b1", 100),
        // Reads bob's messages (old-a and b1): a read receipt for bob.
        read("aaaaaa", "bbbbbb", 99),
        send("aaaaaa", "zzzzzz", "nobody", 100),
        send("aaaaaa", "cccccc", "a3", 1),
        // Carol has one pending: the cap of one refuses this.
        send("bbbbbb", "cccccc", "b2", 1),
        confirm("cccccc", 99),
        // Delivered now, so there is room.
        send("bbbbbb", "cccccc", "b2", 1),
        send("aaaaaa", "aaaaaa", "self", 100),
        // A resend of c1 (not marked since: bob confirmed below it).
        send("cccccc", "bbbbbb", "c1", 100),
        // Same client id, another recipient: a new message.
        send("cccccc", "aaaaaa", "c1", 100),
        read("bbbbbb", "aaaaaa", 1),
        read("bbbbbb", "cccccc", 99),
        send("bbbbbb", "cccccc", "b3", 1),
        confirm("aaaaaa", 2),
        read("cccccc", "aaaaaa", 99),
    ]
}

/// The store's own handle of a message differs with the order the
/// messages of a set are inserted in; everything else must not.
fn plain(m: &StoredMessage) -> StoredMessage {
    StoredMessage {
        row: 0,
        ..m.clone()
    }
}

fn plain_item(item: &InboxItem) -> InboxItem {
    let entry = match &item.entry {
        Entry::Message(m) => Entry::Message(Arc::new(plain(m))),
        other => other.clone(),
    };
    InboxItem {
        pos: item.pos,
        entry,
    }
}

fn plain_written(w: &Written) -> Written {
    match w {
        Written::Sent(Sent::Stored {
            message,
            recipient_pos,
            sender_pos,
        }) => Written::Sent(Sent::Stored {
            message: Arc::new(plain(message)),
            recipient_pos: *recipient_pos,
            sender_pos: *sender_pos,
        }),
        Written::Sent(Sent::Duplicate(m)) => Written::Sent(Sent::Duplicate(plain(m))),
        other => other.clone(),
    }
}

/// What a store holds afterwards: every user's counters and inbox.
async fn contents(store: &PostgresStore) -> Vec<(UserId, i64, i64, Vec<InboxItem>)> {
    let mut all = Vec::new();
    for (id, _) in USERS {
        let u = id_of(id);
        let state = store.inbox_state(&u).await.expect("state");
        let items = store.inbox(&u, 0, 1000).await.expect("inbox");
        let items = items.iter().map(plain_item).collect();
        all.push((u, state.head, state.confirmed, items));
    }
    all
}

async fn store(what: &str) -> Option<(PostgresStore, TestDatabase)> {
    let db = TestDatabase::create(what).await?;
    let store = PostgresStore::open(&db.url).await.expect("store opens");
    for (id, name) in USERS {
        store.create_user(&user(id, name), 0).await.expect("user");
    }
    for w in before() {
        write_now(&store, w).await.expect("committed");
    }
    Some((store, db))
}

/// On the default current-thread runtime the writer task cannot run
/// while this test submits, so the whole script waits in the queue and
/// is taken as one batch (checked by the commit count).
#[tokio::test]
async fn a_mixed_batch_gives_what_the_writes_give_one_at_a_time() {
    let Some((one_by_one, _db1)) = store("writes one at a time").await else {
        return;
    };
    let Some((batched, _db2)) = store("writes in one batch").await else {
        return;
    };
    let mut expected = Vec::new();
    for w in script() {
        expected.push(plain_written(
            &write_now(&one_by_one, w).await.expect("one"),
        ));
    }
    let commits = batched.writer_stats().commits.load(Ordering::Relaxed);
    let mut pending = Vec::new();
    for w in script() {
        pending.push(batched.submit(w).await.expect("queued"));
    }
    let mut got = Vec::new();
    for p in pending {
        got.push(plain_written(
            &p.await.expect("answered").expect("committed"),
        ));
    }
    let batches = batched.writer_stats().commits.load(Ordering::Relaxed) - commits;
    assert_eq!(batches, 1, "the script was one batch");
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(g, e, "write {i} of the script");
    }
    assert_eq!(contents(&batched).await, contents(&one_by_one).await);
    // The script reached what it means to test.
    assert!(matches!(got[9], Written::Sent(Sent::UnknownRecipient)));
    assert!(matches!(got[11], Written::Sent(Sent::QueueFull)));
    assert!(matches!(got[13], Written::Sent(Sent::Stored { .. })));
    assert!(matches!(&got[5], Written::Sent(Sent::Duplicate(m)) if m.delivered_at == Some(20)));
    assert!(matches!(&got[6], Written::Sent(Sent::Duplicate(m)) if m.delivered_at == Some(20)));
    assert!(matches!(&got[15], Written::Sent(Sent::Duplicate(m)) if m.delivered_at.is_none()));
    assert!(matches!(&got[4], Written::Confirmed { receipts, .. } if !receipts.is_empty()));
    assert!(matches!(&got[8], Written::Read(Some(_))));
}
