//! The store's write path alone, without sockets: how many messages per
//! second the group-commit writer stores, and how many commits (fsyncs)
//! that takes. `cargo run --release -p sotto-store-sqlite --example
//! sqlite_write_path -- [messages] [submitters] [users] [db path]`.
//!
//! Each submitter plays one sender: it keeps up to 32 sends in flight (as
//! a client with a window would), to recipients chosen round-robin, and
//! every recipient confirms what it got every 64 messages, so the pending
//! cap never bites. Figures go to docs/BENCHMARKS.md.

use sotto_core::auth::UserId;
use sotto_core::ports::{
    MessageStore, NewMessage, Pending, Sent, UserProfile, UserRecord, UserStore, Write, Written,
};
use sotto_store_sqlite::SqliteStore;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

const WINDOW: usize = 32;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let messages: usize = args.get(1).map_or(Ok(200_000), |a| a.parse())?;
    let submitters: usize = args.get(2).map_or(Ok(100), |a| a.parse())?;
    let users: usize = args.get(3).map_or(Ok(1000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let path = match args.get(4) {
        Some(p) => std::path::PathBuf::from(p),
        None => dir.path().join("bench.db"),
    };
    let store = Arc::new(SqliteStore::open(&path.to_string_lossy()).await?);
    let mut ids = Vec::with_capacity(users);
    for i in 0..users {
        let id = UserId::random();
        let record = UserRecord {
            profile: UserProfile {
                id: id.clone(),
                name: sotto_core::auth::UserName::parse(&format!("u{i}"))
                    .map_err(|e| format!("{e:?}"))?,
                public_key: String::new(),
            },
            password_hash: "x".into(),
        };
        store.create_user(&record, 0).await?;
        ids.push(id);
    }
    let ids = Arc::new(ids);
    let per = messages / submitters;
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let mut tasks = Vec::new();
    for s in 0..submitters {
        let (store, ids) = (store.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            submitter(&store, &ids, s, per).await
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let stats = store.writer_stats();
    let (commits, writes) = (stats.commits.load(Relaxed), stats.writes.load(Relaxed));
    println!(
        "{stored} messages in {elapsed:.2} s: {:.0} messages/s, {:.0} commits (fsyncs)/s, \
         {:.1} writes per commit (sends and confirms), {:.1} µs of process CPU per message",
        stored as f64 / elapsed,
        commits as f64 / elapsed,
        writes as f64 / commits.max(1) as f64,
        cpu * 1e6 / stored.max(1) as f64,
    );
    Ok(())
}

/// One sender: `count` messages, `WINDOW` in flight; returns how many were
/// stored.
async fn submitter(
    store: &SqliteStore,
    ids: &[UserId],
    me: usize,
    count: usize,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let sender = ids[me % ids.len()].clone();
    let mut in_flight: VecDeque<Pending> = VecDeque::new();
    let mut stored = 0;
    for i in 0..count {
        if in_flight.len() >= WINDOW
            && let Some(p) = in_flight.pop_front()
        {
            stored += settle(store, p.await??).await?;
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
        in_flight.push_back(store.submit(write).await?);
    }
    while let Some(p) = in_flight.pop_front() {
        stored += settle(store, p.await??).await?;
    }
    Ok(stored)
}

/// Counts a stored message; every 64th position of its recipient is
/// confirmed, as a client confirming in batches would.
async fn settle(
    store: &SqliteStore,
    written: Written,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let Written::Sent(Sent::Stored {
        message,
        recipient_pos,
        ..
    }) = written
    else {
        return Ok(0);
    };
    if recipient_pos % 64 == 0 {
        let confirm = Write::Confirm {
            user: message.recipient.clone(),
            up_to: recipient_pos,
            now: 2,
        };
        // Not awaited: confirmations ride along in later batches.
        drop(store.submit(confirm).await?);
    }
    Ok(1)
}

/// This process's user + system CPU time, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
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
