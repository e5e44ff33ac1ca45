//! Inbox reads are grouped: reads queued together are answered by one
//! statement (see src/reads.rs). Many users' reads at once, with
//! different starting points and limits, must each get exactly their own
//! page, as the same read alone gets it.

use sotto_core::ports::contract::{id_of, user};
use sotto_core::ports::{InboxItem, MessageStore, NewMessage, UserStore, Write, write_now};
use sotto_store_postgres::PostgresStore;
use sotto_store_postgres::testing::TestDatabase;
use std::sync::Arc;

const USERS: usize = 30;

fn id(i: usize) -> String {
    format!("u{i:05}")
}

/// User i receives i + 1 messages from user i + 1 (and so holds copies
/// of its own messages to user i - 1 too).
async fn fill(store: &PostgresStore) {
    for i in 0..USERS {
        store
            .create_user(&user(&id(i), &format!("user{i}")), 0)
            .await
            .expect("user");
    }
    let mut pending = Vec::new();
    for i in 0..USERS {
        for n in 0..=i {
            let write = Write::Send {
                message: NewMessage {
                    sender: id_of(&id((i + 1) % USERS)),
                    recipient: id_of(&id(i)),
                    body: format!("{n} to {i}"),
                    client_id: None,
                    sent_at: 1,
                },
                max_pending: 1000,
            };
            pending.push(store.submit(write).await.expect("queued"));
        }
    }
    for p in pending {
        p.await.expect("answered").expect("stored");
    }
    // Some receipts in the inboxes as well.
    for i in (0..USERS).step_by(3) {
        let confirm = Write::Confirm {
            user: id_of(&id(i)),
            up_to: 2,
            now: 5,
        };
        write_now(store, confirm).await.expect("confirmed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_once_each_get_their_own_page() {
    let Some(db) = TestDatabase::create("grouped reads").await else {
        return;
    };
    let store = Arc::new(PostgresStore::open(&db.url).await.expect("store opens"));
    fill(&store).await;
    let mut asks = Vec::new();
    for i in 0..USERS {
        for (after, limit) in [(0, 1000), (1, 2), (i as i64, 3), (1000, 10)] {
            asks.push((i, after, limit));
        }
    }
    let mut alone: Vec<Vec<InboxItem>> = Vec::new();
    for &(i, after, limit) in &asks {
        alone.push(
            store
                .inbox(&id_of(&id(i)), after, limit)
                .await
                .expect("read"),
        );
    }
    let mut at_once = Vec::new();
    for &(i, after, limit) in &asks {
        let store = store.clone();
        at_once.push(tokio::spawn(async move {
            store.inbox(&id_of(&id(i)), after, limit).await
        }));
    }
    for (k, task) in at_once.into_iter().enumerate() {
        let page = task.await.expect("task").expect("read");
        assert_eq!(page, alone[k], "read {k}: {:?}", asks[k]);
    }
    // The pages are what was written, not all empty.
    let (full, mine) = (&alone[4 * 7], 7 + 1);
    let received = full
        .iter()
        .filter(|item| matches!(&item.entry, sotto_core::ports::Entry::Message(m) if m.recipient == id_of(&id(7))))
        .count();
    assert_eq!(received, mine);
    assert_eq!(alone[4 * 7 + 1].len(), 2);
    assert!(alone[4 * 7 + 3].is_empty());
}
