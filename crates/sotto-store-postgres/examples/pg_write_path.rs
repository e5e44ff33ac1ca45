//! The PostgreSQL store's write path alone, without sockets: how many
//! messages per second the group-commit writer stores, with one store
//! instance or with several on the same database (as several nodes), and
//! how long each send waits for its commit.
//!
//! `cargo run --release -p sotto-store-postgres --example pg_write_path --
//! [messages] [submitters] [users] [nodes] [rate] [confirm_every]`
//!
//! It creates a throwaway database on the PostgreSQL of the tests
//! (`SOTTO_TEST_POSTGRES`, default the local one) and drops it at the end.
//! As the SQLite store's `sqlite_write_path`: each submitter plays
//! one sender, keeps up to 32 sends in flight, to recipients chosen
//! round-robin over all users, and every recipient confirms every 64th
//! position (`confirm_every`: 1 confirms each one, as paced clients that
//! receive messages one at a time do). Submitter `s` writes through node `s % nodes`, so with two
//! nodes both write for the same recipients at once. `rate` (messages/s
//! over all submitters, 0 = flat out) paces the sends, for latency at a
//! given load. Figures go to docs/BENCHMARKS.md.

use sotto_core::auth::{UserId, UserName};
use sotto_core::ports::{
    MessageStore, NewMessage, Pending, Sent, UserProfile, UserRecord, UserStore, Write, Written,
};
use sotto_store_postgres::PostgresStore;
use sotto_store_postgres::testing::TestDatabase;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

const WINDOW: usize = 32;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: usize| args.get(i).map_or(Ok(default), |a| a.parse());
    let messages = arg(1, 200_000)?;
    let submitters = arg(2, 100)?.max(1);
    let users = arg(3, 1000)?.max(1);
    let nodes = arg(4, 1)?.max(1);
    let rate = arg(5, 0)?;
    let every = i64::try_from(arg(6, 64)?.max(1))?;
    let Some(db) = TestDatabase::create("pg_write_path").await else {
        return Err("no PostgreSQL to measure".into());
    };
    let mut stores = Vec::new();
    for _ in 0..nodes {
        stores.push(Arc::new(PostgresStore::open(&db.url).await?));
    }
    let ids = Arc::new(create_users(&stores[0], users).await?);
    let per = messages / submitters;
    // Each submitter sends one message every `gap` when paced.
    let gap = (rate > 0).then(|| Duration::from_secs_f64(submitters as f64 / rate as f64));
    let server_before = server_cpu(&db.url).await?;
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let mut tasks = Vec::new();
    for s in 0..submitters {
        let (store, ids) = (stores[s % nodes].clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            submitter(&store, &ids, s, per, gap, every).await
        }));
    }
    let mut latencies = Vec::with_capacity(messages);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let server = server_cpu(&db.url).await? - server_before;
    latencies.sort_unstable();
    let stored = latencies.len();
    let at = |q: f64| latencies.get(((stored as f64 * q) as usize).min(stored.saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!(
        "{stored} messages over {nodes} node(s) in {elapsed:.2} s: {:.0} messages/s, \
         commit latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         {:.1} µs of process CPU and {:.1} µs of PostgreSQL CPU (its backends for this \
         database) per message",
        stored as f64 / elapsed,
        ms(at(0.5)),
        ms(at(0.99)),
        ms(latencies.last()),
        cpu * 1e6 / stored.max(1) as f64,
        server * 1e6 / stored.max(1) as f64,
    );
    for (i, store) in stores.iter().enumerate() {
        let stats = store.writer_stats();
        let (commits, writes) = (stats.commits.load(Relaxed), stats.writes.load(Relaxed));
        println!(
            "node {i}: {writes} writes (sends and confirms) in {commits} commits, \
             {:.1} writes per commit, {} batches retried, {} confirmations applied together",
            writes as f64 / commits.max(1) as f64,
            stats.retries.load(Relaxed),
            stats.confirms_ahead.load(Relaxed),
        );
    }
    for store in &stores {
        sotto_core::ports::Lifecycle::close(store.as_ref()).await;
    }
    Ok(())
}

async fn create_users(store: &PostgresStore, users: usize) -> Result<Vec<UserId>, Error> {
    let mut ids = Vec::with_capacity(users);
    for i in 0..users {
        let id = UserId::random();
        let record = UserRecord {
            profile: UserProfile {
                id: id.clone(),
                name: UserName::parse(&format!("u{i}")).map_err(|e| format!("{e:?}"))?,
                public_key: String::new(),
            },
            password_hash: "x".into(),
        };
        store.create_user(&record, 0).await?;
        ids.push(id);
    }
    Ok(ids)
}

/// One sender: `count` messages, `WINDOW` in flight, one every `gap` if
/// paced; returns each stored message's time from submit to commit.
async fn submitter(
    store: &PostgresStore,
    ids: &[UserId],
    me: usize,
    count: usize,
    gap: Option<Duration>,
    every: i64,
) -> Result<Vec<Duration>, Error> {
    let sender = ids[me % ids.len()].clone();
    let mut in_flight: VecDeque<Committed> = VecDeque::new();
    let mut latencies = Vec::with_capacity(count);
    let mut ticks = gap.map(|g| {
        let mut t = tokio::time::interval(g);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    for i in 0..count {
        if let Some(t) = ticks.as_mut() {
            t.tick().await;
        }
        if in_flight.len() >= WINDOW
            && let Some(p) = in_flight.pop_front()
        {
            let (took, written) = p.await?;
            settle(store, written?, took, &mut latencies, every).await?;
        }
        let to = ids[(me * 7919 + i) % ids.len()].clone();
        let write = Write::Send {
            message: NewMessage {
                sender: sender.clone(),
                recipient: to,
                body: "x".repeat(100),
                client_id: Some(format!("{me}-{i}")),
                sent_at: 1,
            },
            max_pending: u32::MAX,
        };
        in_flight.push_back(timed(store.submit(write).await?));
    }
    while let Some(p) = in_flight.pop_front() {
        let (took, written) = p.await?;
        settle(store, written?, took, &mut latencies, every).await?;
    }
    Ok(latencies)
}

/// A send's answer and how long it took to come, from submission.
type Committed = tokio::task::JoinHandle<(Duration, Result<Written, Error>)>;

/// Times `pending` as it resolves, not when the submitter gets round to
/// looking (a paced submitter looks only when its window is full).
fn timed(pending: Pending) -> Committed {
    let at = Instant::now();
    tokio::spawn(async move {
        let written = match pending.await {
            Ok(Ok(w)) => Ok(w),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(e.into()),
        };
        (at.elapsed(), written)
    })
}

/// Counts a stored message; every `every`th position of its recipient is
/// confirmed, as a client confirming in batches would.
async fn settle(
    store: &PostgresStore,
    written: Written,
    took: Duration,
    latencies: &mut Vec<Duration>,
    every: i64,
) -> Result<(), Error> {
    let Written::Sent(Sent::Stored {
        message,
        recipient_pos,
        ..
    }) = written
    else {
        return Ok(());
    };
    latencies.push(took);
    if recipient_pos % every == 0 {
        let confirm = Write::Confirm {
            user: message.recipient.clone(),
            up_to: recipient_pos,
            now: 2,
        };
        // Not awaited: confirmations ride along in later batches.
        drop(store.submit(confirm).await?);
    }
    Ok(())
}

/// The CPU time, in seconds, of the PostgreSQL backends connected to the
/// database at `url` (the server is on this machine): what the stores'
/// statements cost the server, apart from how busy the machine is.
async fn server_cpu(url: &str) -> Result<f64, Error> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await?;
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut c)
    .await?;
    c.close().await?;
    Ok(pids
        .iter()
        .map(|p| cpu_of(&format!("/proc/{p}/stat")))
        .sum())
}

/// This process's user + system CPU time, in seconds.
fn cpu_seconds() -> f64 {
    cpu_of("/proc/self/stat")
}

/// The user + system CPU time of the process whose stat file is `path`.
fn cpu_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
