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

async fn store(what: &str, before: Vec<Write>) -> Option<(PostgresStore, TestDatabase)> {
    let db = TestDatabase::create(what).await?;
    let store = PostgresStore::open(&db.url).await.expect("store opens");
    for (id, name) in USERS {
        store.create_user(&user(id, name), 0).await.expect("user");
    }
    for w in before {
        write_now(&store, w).await.expect("committed");
    }
    Some((store, db))
}

/// Applies `script` one write at a time on one store and as one batch on
/// another, both after `before`, and checks that the results and the
/// stores' contents are the same. Returns the batch's results and how
/// many of its confirmations were applied ahead of their place.
///
/// On the default current-thread runtime the writer task cannot run
/// while this test submits, so the whole script waits in the queue and
/// is taken as one batch (checked by the commit count).
async fn batched_as_one_by_one(
    before: fn() -> Vec<Write>,
    script: fn() -> Vec<Write>,
) -> Option<(Vec<Written>, u64)> {
    let (one_by_one, _db1) = store("writes one at a time", before()).await?;
    let (batched, _db2) = store("writes in one batch", before()).await?;
    let mut expected = Vec::new();
    for w in script() {
        expected.push(plain_written(
            &write_now(&one_by_one, w).await.expect("one"),
        ));
    }
    let stats = batched.writer_stats();
    let commits = stats.commits.load(Ordering::Relaxed);
    let ahead = stats.confirms_ahead.load(Ordering::Relaxed);
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
    let batches = stats.commits.load(Ordering::Relaxed) - commits;
    assert_eq!(batches, 1, "the script was one batch");
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(g, e, "write {i} of the script");
    }
    assert_eq!(contents(&batched).await, contents(&one_by_one).await);
    let ahead = stats.confirms_ahead.load(Ordering::Relaxed) - ahead;
    Some((got, ahead))
}

#[tokio::test]
async fn a_mixed_batch_gives_what_the_writes_give_one_at_a_time() {
    let Some((got, _)) = batched_as_one_by_one(before, script).await else {
        return;
    };
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

/// Committed in an earlier batch: what the confirmations of
/// [`confirming_script`] cover. Bob's inbox: 1 p1, 2 p2, 3 p3, 4 his copy
/// of q1; alice's: 1 and 2 her copies of p1 and p3, 3 q1; carol's: 1 her
/// copy of p2.
fn confirmed_later() -> Vec<Write> {
    vec![
        send("aaaaaa", "bbbbbb", "p1", 100),
        send("cccccc", "bbbbbb", "p2", 100),
        send("aaaaaa", "bbbbbb", "p3", 100),
        send("bbbbbb", "aaaaaa", "q1", 100),
    ]
}

/// Confirmations of what earlier batches stored, as clients send them,
/// among sends, resends and reads of the same users: bob's and carol's
/// are applied before the batch's first write, alice's (a read of hers
/// comes first) at its place.
fn confirming_script() -> Vec<Write> {
    vec![
        // A resend before bob's confirmation: p1 still undelivered.
        send("aaaaaa", "bbbbbb", "p1", 100),
        send("aaaaaa", "bbbbbb", "n1", 100),
        // p1, p2, p3: receipts to alice and carol.
        confirm("bbbbbb", 3),
        // Resends after it: delivered.
        send("aaaaaa", "bbbbbb", "p1", 100),
        send("cccccc", "bbbbbb", "p2", 100),
        read("aaaaaa", "bbbbbb", 99),
        confirm("aaaaaa", 3),
        // Bob reads p1, p3 and n1 (n1 undelivered until now).
        read("bbbbbb", "aaaaaa", 99),
        // Carol's own copy only: nothing to mark, no receipt.
        confirm("cccccc", 1),
        send("cccccc", "bbbbbb", "p2", 100),
        send("bbbbbb", "cccccc", "r1", 1),
    ]
}

#[tokio::test]
async fn confirmations_applied_ahead_give_what_they_give_in_place() {
    let Some((got, ahead)) = batched_as_one_by_one(confirmed_later, confirming_script).await else {
        return;
    };
    assert_eq!(ahead, 2, "bob's and carol's confirmations went ahead");
    assert!(matches!(&got[0], Written::Sent(Sent::Duplicate(m)) if m.delivered_at.is_none()));
    assert!(matches!(&got[3], Written::Sent(Sent::Duplicate(m)) if m.delivered_at == Some(20)));
    assert!(matches!(&got[4], Written::Sent(Sent::Duplicate(m)) if m.delivered_at == Some(20)));
    assert!(
        matches!(&got[2], Written::Confirmed { delivered: 3, receipts, .. } if receipts.len() == 2)
    );
    assert!(matches!(&got[7], Written::Read(Some(_))));
    assert!(matches!(&got[8], Written::Confirmed { delivered: 0, .. }));
}
