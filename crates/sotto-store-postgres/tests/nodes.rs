//! Two store instances on one database, as two nodes: both store messages
//! for the same users at once (both directions, with confirmations and
//! reads sending receipts across), and the ids and positions they hand out must be
//! unique and gapless, and a reader paging an inbox by position while they
//! write must never see a gap that fills later.

use sotto_core::auth::UserId;
use sotto_core::ports::contract::{id_of, user};
use sotto_core::ports::{MessageStore, NewMessage, Pending, Sent, UserStore, Write, Written};
use sotto_store_postgres::PostgresStore;
use sotto_store_postgres::testing::TestDatabase;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const USERS: [&str; 6] = ["AAAAAA", "bbbbbb", "Cccccc", "dddddd", "EeEeEe", "ffffff"];
/// Writers per node, each submitting [`ROUNDS`] sends in waves of
/// [`WAVE`] without waiting in between: batches hold several writes, and
/// there are many of them on both nodes at once.
const WRITERS: usize = 3;
const ROUNDS: usize = 120;
const WAVE: usize = 4;

fn ids() -> Vec<UserId> {
    USERS.iter().map(|u| id_of(u)).collect()
}

/// One writer's traffic: every send goes to some user from another (or
/// the same) user, in both directions, with a confirmation or a read now
/// and then, so batches on the two nodes need the same rows in different
/// orders, and mix sends with what reads them.
async fn write(store: Arc<PostgresStore>, node: usize, writer: usize) -> Vec<Written> {
    let users = ids();
    let mut pending: Vec<Pending> = Vec::new();
    let mut done = Vec::new();
    for i in 0..ROUNDS {
        let from = &users[(i + writer + node) % users.len()];
        let to = &users[(i * 3 + writer + 2 * node + 1) % users.len()];
        let message = NewMessage {
            sender: from.clone(),
            recipient: to.clone(),
            body: format!("node {node} writer {writer} message {i}"),
            client_id: Some(format!("{node}-{writer}-{i}")),
            sent_at: 1_000 + i as i64,
        };
        let send = Write::Send {
            message,
            max_pending: 1_000_000,
        };
        pending.push(store.submit(send).await.expect("queued"));
        if i % 7 == 0 {
            let confirm = Write::Confirm {
                user: to.clone(),
                up_to: i64::MAX,
                now: 2_000,
            };
            pending.push(store.submit(confirm).await.expect("queued"));
        }
        if i % 5 == 2 {
            let read = Write::Read {
                reader: to.clone(),
                from: from.clone(),
                up_to: i64::MAX,
                now: 3_000,
            };
            pending.push(store.submit(read).await.expect("queued"));
        }
        if i % WAVE == WAVE - 1 {
            for p in pending.drain(..) {
                done.push(p.await.expect("answered").expect("committed"));
            }
        }
    }
    for p in pending {
        done.push(p.await.expect("answered").expect("committed"));
    }
    done
}

/// Pages `user`'s inbox by position until `stop` is set and the head is
/// reached, asserting every page continues exactly where the last ended.
async fn follow(store: Arc<PostgresStore>, user: UserId, stop: Arc<AtomicBool>) -> i64 {
    let mut seen = 0;
    loop {
        let finished = stop.load(Ordering::Acquire);
        let page = store.inbox(&user, seen, 50).await.expect("inbox");
        for item in &page {
            assert_eq!(
                item.pos,
                seen + 1,
                "{user}: position {} visible before {}",
                item.pos,
                seen + 1
            );
            seen = item.pos;
        }
        if page.is_empty() {
            if finished {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_hand_out_unique_gapless_ids_and_positions() {
    let Some(db) = TestDatabase::create("two nodes on one database").await else {
        return;
    };
    let one = Arc::new(PostgresStore::open(&db.url).await.expect("node one opens"));
    let two = Arc::new(PostgresStore::open(&db.url).await.expect("node two opens"));
    for (i, u) in USERS.iter().enumerate() {
        let node = if i % 2 == 0 { &one } else { &two };
        node.create_user(&user(u, &format!("user{i}")), 0)
            .await
            .expect("user created");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reader = Arc::new(PostgresStore::open(&db.url).await.expect("reader opens"));
    let followers: Vec<_> = ids()
        .into_iter()
        .map(|u| tokio::spawn(follow(reader.clone(), u, stop.clone())))
        .collect();
    let mut writers = Vec::new();
    for (node, store) in [&one, &two].into_iter().enumerate() {
        for w in 0..WRITERS {
            writers.push(tokio::spawn(write(store.clone(), node, w)));
        }
    }
    let mut results = Vec::new();
    for w in writers {
        let done = tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("writers finish");
        results.extend(done.expect("writer task"));
    }
    stop.store(true, Ordering::Release);
    let mut followed = BTreeMap::new();
    for (u, f) in ids().into_iter().zip(followers) {
        followed.insert(u, f.await.expect("follower"));
    }
    for (name, node) in [("one", &one), ("two", &two)] {
        let s = node.writer_stats();
        let (commits, writes) = (
            s.commits.load(Ordering::Relaxed),
            s.writes.load(Ordering::Relaxed),
        );
        let retries = s.retries.load(Ordering::Relaxed);
        println!("node {name}: {writes} writes in {commits} commits, {retries} retried");
        assert!(writes > commits, "node {name}: batches held several writes");
    }
    check_positions(&results, &followed, &reader).await;
    check_ids(&results, &reader).await;
}

/// Every position handed out (to recipients, senders' copies, receipts)
/// is unique per user, and together they are exactly 1..=head: nothing
/// collided, nothing was skipped, and the followers saw all of it.
async fn check_positions(
    results: &[Written],
    followed: &BTreeMap<UserId, i64>,
    store: &PostgresStore,
) {
    let mut given: BTreeMap<UserId, Vec<i64>> = BTreeMap::new();
    for r in results {
        match r {
            Written::Sent(Sent::Stored {
                message,
                recipient_pos,
                sender_pos,
            }) => {
                given
                    .entry(message.recipient.clone())
                    .or_default()
                    .push(*recipient_pos);
                if let Some(p) = sender_pos {
                    given.entry(message.sender.clone()).or_default().push(*p);
                }
            }
            Written::Confirmed { receipts, .. } => {
                for r in receipts {
                    given.entry(r.user.clone()).or_default().push(r.item.pos);
                }
            }
            Written::Read(receipt) => {
                if let Some(r) = receipt {
                    given.entry(r.user.clone()).or_default().push(r.item.pos);
                }
            }
            other => panic!("unexpected result {other:?}"),
        }
    }
    for u in ids() {
        let mut mine = given.remove(&u).unwrap_or_default();
        mine.sort_unstable();
        let head = store.inbox_state(&u).await.expect("state").head;
        let expected: Vec<i64> = (1..=head).collect();
        assert_eq!(mine, expected, "{u}: positions unique and gapless");
        assert_eq!(followed[&u], head, "{u}: the follower read to the head");
    }
}

/// Per conversation, the message ids are exactly 1..=n.
async fn check_ids(results: &[Written], store: &PostgresStore) {
    let mut per_pair: BTreeMap<(UserId, UserId), BTreeSet<i64>> = BTreeMap::new();
    let mut stored = 0;
    for r in results {
        if let Written::Sent(Sent::Stored { message, .. }) = r {
            let mut pair = [message.sender.clone(), message.recipient.clone()];
            pair.sort();
            let [a, b] = pair;
            let fresh = per_pair.entry((a, b)).or_default().insert(message.seq);
            assert!(fresh, "id {} handed out twice", message.seq);
            stored += 1;
        }
    }
    assert_eq!(stored, 2 * WRITERS * ROUNDS, "every send stored once");
    for ((a, b), seqs) in per_pair {
        let n = seqs.len() as i64;
        assert_eq!(
            seqs.into_iter().collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>()
        );
        let history = store.history(&a, &b, None, 10_000).await.expect("history");
        assert_eq!(history.len() as i64, n, "{a}-{b}: history holds them all");
    }
}
