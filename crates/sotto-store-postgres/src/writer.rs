//! The message writer: one task per node, one connection, group commit.
//!
//! Writes wait in a bounded queue ([`QUEUE`]); the task takes whatever is
//! waiting (up to [`MAX_BATCH`]), applies it in one transaction and
//! commits once, then answers every write of the batch in order. Under
//! light load a batch is one write; under heavy load the cost of a commit
//! (a WAL flush, a round trip) is shared by many. A batch fails or succeeds
//! as a whole.
//!
//! # Several nodes at once
//!
//! Ids and positions come from counter rows (`conversations`, `inboxes`).
//! A batch's first statement locks every `inboxes` row it will change
//! (`SELECT … FOR UPDATE`) and returns their counters; the batch hands out
//! positions from those values (see [`crate::writes`]) and writes the new
//! ones back before it commits. PostgreSQL keeps the rows locked until the
//! transaction ends, and a second transaction locking one waits and then
//! gets the committed value (READ COMMITTED re-reads a row it waited for).
//! So two nodes writing for one user take turns on that user's `inboxes`
//! row: positions never collide, and position P+1 can only be handed out
//! after the transaction that took P has committed. A reader paging an
//! inbox by position therefore never sees P+1 while P is still to come:
//! the higher position cannot commit first. (PostgreSQL makes a commit
//! visible before it releases its locks, so the waiting transaction even
//! starts after P is visible.) The same holds for conversation ids, whose
//! rows are only ever updated by a transaction that already holds both
//! parties' inbox rows. The pending cap, the resend check (done once the
//! recipients are locked: nobody else can store to them meanwhile) and
//! `confirmed` are decided under the same locks.
//!
//! Holding several row locks invites deadlocks: node A's batch locks
//! alice then bob, node B's bob then alice. So each batch first locks every
//! `inboxes` row it will update, in one statement, in `user_id` order (the
//! same "C" collation on every node): two batches then queue on their first
//! common row instead of each holding what the other wants. The rows a
//! confirmation will touch (the senders it sends receipts to) depend on
//! data, so they are read just before locking; the confirmations, run
//! once the confirming users are locked (when nobody can add to their
//! inboxes any more), find the final set, and a sender that arrived in
//! between is locked with NOWAIT, never waiting out of order. If that row is busy, or PostgreSQL ever has to
//! break a deadlock (retention deleting rows a batch updates), the batch
//! is rolled back and run again ([`TRIES`]): nothing of a rolled-back
//! batch was stored, so running it again is safe.

use crate::error::{classify, copies, lost_race};
use crate::writes::{self, Locked};
use sotto_core::auth::UserId;
use sotto_core::ports::{Pending, StoreError, Write, Written};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Writes waiting for the writer, at most; a full queue makes senders
/// wait, which is the back-pressure of a store that cannot keep up.
const QUEUE: usize = 8192;
/// Writes per transaction, at most. Smaller than SQLite's: a batch holds
/// its row locks until it commits, and writers on other nodes wait for
/// them, so a batch should not take long.
const MAX_BATCH: usize = 512;
/// Runs of a batch that lost a deadlock or serialization race.
const TRIES: u32 = 3;
/// How long one run of a batch may take, waits for other nodes' locks
/// included, before its writes are answered as unavailable. Beyond the
/// server's own statement timeout, this bounds a network that stops
/// answering at all. Dropping the run closes its connection, which rolls
/// the transaction back.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

enum Job {
    Write {
        write: Write,
        done: oneshot::Sender<Result<Written, StoreError>>,
    },
    /// Answered once every write queued before it is committed.
    Flush(oneshot::Sender<()>),
}

/// The handle of the writer task; the task stops once every handle is
/// dropped and the queue is drained.
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
    pool: PgPool,
    closed: AtomicBool,
    stats: Arc<WriterStats>,
}

/// What the writer has done: writes per commit is what group commit
/// buys; retries count batches that lost a deadlock to another node.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub writes: AtomicU64,
    pub retries: AtomicU64,
    /// Confirmations applied together, ahead of their place in their
    /// batch (see `writes::Batch::confirm_ahead`), not one statement each.
    pub confirms_ahead: AtomicU64,
}

impl Writer {
    /// Starts the task on `pool` (its own, of one connection).
    pub(crate) fn start(pool: PgPool) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        tokio::spawn(run(pool.clone(), rx, stats.clone()));
        Writer {
            tx,
            pool,
            closed: AtomicBool::new(false),
            stats,
        }
    }

    pub(crate) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    pub(crate) async fn submit(&self, write: Write) -> Result<Pending, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::unavailable("the store is closed"));
        }
        let (done, pending) = oneshot::channel();
        self.tx
            .send(Job::Write { write, done })
            .await
            .map_err(|_| StoreError::unavailable("the database writer stopped"))?;
        Ok(pending)
    }

    /// Refuses new writes, waits for the queued ones to commit, and closes
    /// the writer's connection.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let (flushed, done) = oneshot::channel();
        if self.tx.send(Job::Flush(flushed)).await.is_ok() {
            let _ = done.await;
        }
        self.pool.close().await;
    }
}

type Done = oneshot::Sender<Result<Written, StoreError>>;

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Job>, stats: Arc<WriterStats>) {
    let mut writes: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    let mut answers: Vec<Done> = Vec::with_capacity(MAX_BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write { write, done } => {
                    writes.push(write);
                    answers.push(done);
                }
                Job::Flush(f) => flushes.push(f),
            }
            if writes.len() < MAX_BATCH && flushes.is_empty() {
                next = rx.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            stats
                .writes
                .fetch_add(writes.len() as u64, Ordering::Relaxed);
            stats.commits.fetch_add(1, Ordering::Relaxed);
            commit(&pool, &writes, answers.drain(..), &stats).await;
            writes.clear();
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
}

/// Applies and commits one batch (retrying lost races), then answers
/// every write in it.
async fn commit(
    pool: &PgPool,
    writes: &[Write],
    answers: impl Iterator<Item = Done>,
    stats: &WriterStats,
) {
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        let run = tokio::time::timeout(BATCH_TIMEOUT, apply_batch(pool, writes));
        let done = run.await.unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the database did not commit within {BATCH_TIMEOUT:?}"),
            )))
        });
        match done {
            Err(e) if lost_race(&e) && tries < TRIES => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(error = %e, writes = writes.len(), "message batch lost a race; retrying");
            }
            done => break done,
        }
    };
    match outcome {
        Ok((results, ahead)) => {
            stats
                .confirms_ahead
                .fetch_add(ahead as u64, Ordering::Relaxed);
            for (done, result) in answers.zip(results) {
                let _ = done.send(Ok(result));
            }
        }
        Err(e) => {
            let e = classify(e);
            tracing::error!(error = %e, writes = writes.len(), "message batch not committed");
            let copy = copies(&e);
            for done in answers {
                let _ = done.send(Err(copy()));
            }
        }
    }
}

/// Applies one batch in a transaction; its results, and how many
/// confirmations went ahead.
async fn apply_batch(pool: &PgPool, batch: &[Write]) -> Result<(Vec<Written>, usize), sqlx::Error> {
    let confirms = coalesce_confirms(batch);
    let mut tx = pool.begin().await?;
    let (locked, asked) = lock_inboxes(&mut tx, batch, &confirms).await?;
    let results = writes::Batch::new(batch, &confirms, locked, asked)
        .apply(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(results)
}

/// Confirmations are cumulative, and a client confirms every few
/// milliseconds: of one user's confirmations in a batch only the highest
/// matters. It is applied at the place of the user's *last* one (a
/// position it names may have been assigned by a send earlier in the
/// batch); the others are answered as no-ops. Returns, per user, that
/// index and the highest position. (As the SQLite writer does.)
fn coalesce_confirms(batch: &[Write]) -> HashMap<&UserId, (usize, i64)> {
    let mut last: HashMap<&UserId, (usize, i64)> = HashMap::new();
    for (i, write) in batch.iter().enumerate() {
        if let Write::Confirm { user, up_to, .. } = write {
            let entry = last.entry(user).or_insert((i, *up_to));
            *entry = (i, entry.1.max(*up_to));
        }
    }
    last
}

/// Locks, in `user_id` order, the `inboxes` row of every user the batch
/// will give a position to or whose counters it changes (see the module
/// comment for why the order matters), and returns their counters and
/// every user asked for (one asked for and not locked does not exist).
async fn lock_inboxes(
    c: &mut PgConnection,
    batch: &[Write],
    confirms: &HashMap<&UserId, (usize, i64)>,
) -> Result<(Locked, HashSet<String>), sqlx::Error> {
    let mut users: BTreeSet<String> = BTreeSet::new();
    for write in batch {
        let (a, b) = match write {
            Write::Send { message, .. } => (&message.sender, &message.recipient),
            Write::Confirm { user, .. } => (user, user),
            Write::Read { reader, from, .. } => (reader, from),
        };
        users.insert(a.as_str().to_owned());
        users.insert(b.as_str().to_owned());
    }
    users.extend(receipt_targets(c, confirms).await?);
    let locked = writes::lock(c, users.iter().cloned().collect(), false).await?;
    // A sender that reached a confirming user's inbox since this look is
    // locked without waiting (NOWAIT) once the confirmation finds it (see
    // `writes::Batch::confirm_ahead` and `receipt_pos`): waiting out of
    // order could deadlock; if it is busy, the batch is rolled back and
    // run again, and the next look finds it.
    Ok((locked, users.into_iter().collect()))
}

/// The senders the batch's confirmations will send delivery receipts to,
/// as the database stands now (unlocked: a hint for the lock set).
async fn receipt_targets(
    c: &mut PgConnection,
    confirms: &HashMap<&UserId, (usize, i64)>,
) -> Result<Vec<String>, sqlx::Error> {
    if confirms.is_empty() {
        return Ok(Vec::new());
    }
    let (users, up_to): (Vec<String>, Vec<i64>) = confirms
        .iter()
        .map(|(user, &(_, up_to))| (user.as_str().to_owned(), up_to))
        .unzip();
    sqlx::query_scalar(
        "SELECT DISTINCT m.sender
         FROM unnest($1::text[], $2::bigint[]) AS c(user_id, up_to)
         JOIN inboxes b ON b.user_id = c.user_id
         JOIN inbox i ON i.user_id = c.user_id AND i.pos > b.confirmed AND i.pos <= c.up_to
         JOIN messages m ON m.id = i.message
         WHERE i.kind = 0 AND m.delivered_at IS NULL",
    )
    .bind(users)
    .bind(up_to)
    .fetch_all(&mut *c)
    .await
}
