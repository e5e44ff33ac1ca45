//! The message writer: one thread, one connection, group commit.
//!
//! Every message write used to be several statements in a transaction of
//! its own, each statement a hand-off to the SQLite driver's worker thread
//! and back: under load most of the server's time went to waking threads.
//! Here one OS thread owns a `rusqlite` connection, takes whatever writes
//! are waiting (up to [`MAX_BATCH`]), applies them with cached prepared
//! statements inside one `BEGIN IMMEDIATE` transaction and commits once:
//! one fsync for the whole batch. Under light load a batch is one write
//! and the latency is one commit; under heavy load batches grow and the
//! cost per message falls.
//!
//! The connection runs `synchronous = FULL`: a commit is on disk (WAL
//! fsync'd) before any write of the batch is answered, so an acknowledged
//! message survives a power loss, not only a crash of the process.
//!
//! A batch fails or succeeds as a whole: if the commit fails (a full disk,
//! an I/O error) every write in it is answered with the error and nothing
//! of it is stored.

use crate::error::classify_rusqlite;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use sotto_core::auth::UserId;
use sotto_core::ports::{
    Addressed, Entry, InboxItem, NewMessage, Pending, Sent, StoreError, StoredMessage, Write,
    Written, conversation,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Writes waiting for the writer, at most; a full queue makes senders
/// wait, which is the back-pressure of a store that cannot keep up.
const QUEUE: usize = 16384;
/// Writes per transaction, at most.
const MAX_BATCH: usize = 8192;

/// Inbox entry kinds, as stored (see the 0004 migration).
const KIND_RECEIVED: i64 = 0;
const KIND_DELIVERED: i64 = 1;
const KIND_READ: i64 = 2;
const KIND_OWN_COPY: i64 = 3;

struct Job {
    write: Write,
    done: oneshot::Sender<Result<Written, StoreError>>,
}

/// The handle of the writer thread; the thread stops once every handle
/// is dropped and the queue is drained.
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
    /// Dropping it stops the checkpointer.
    _checkpoints: std::sync::mpsc::Sender<()>,
}

/// What the writer has done: commits are fsyncs, so writes per commit is
/// what group commit buys.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
}

impl Writer {
    /// Opens the connection on `path` (already migrated) and starts the
    /// thread.
    pub(crate) fn start(path: &Path, cache_mib: u32) -> Result<Writer, StoreError> {
        let conn = open(path, cache_mib)
            .map_err(|e| classify_rusqlite(e).context(format!("cannot open {}", path.display())))?;
        let checkpoints = start_checkpointer(path)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = std::path::PathBuf::from(wal);
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let counted = stats.clone();
        std::thread::Builder::new()
            .name("sotto-db-writer".into())
            .spawn(move || run(conn, rx, &counted, &wal))
            .map_err(|e| StoreError::internal(e).context("cannot start the database writer"))?;
        Ok(Writer {
            tx,
            stats,
            _checkpoints: checkpoints,
        })
    }

    pub(crate) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    pub(crate) async fn submit(&self, write: Write) -> Result<Pending, StoreError> {
        let (done, pending) = oneshot::channel();
        self.tx
            .send(Job { write, done })
            .await
            .map_err(|_| StoreError::unavailable("the database writer stopped"))?;
        Ok(pending)
    }
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// WAL size beyond which the writer restarts the log between batches.
const WAL_RESTART_BYTES: u64 = 64 << 20;
/// What the WAL file is cut back to once restarted, in bytes.
const WAL_KEEP_BYTES: i64 = 64 << 20;

/// Checkpoints on a thread and connection of their own. Left to SQLite,
/// the writer would checkpoint inside its commits every 1,000 pages (one
/// commit in two under load), copying and fsyncing the database file while
/// every write waits. A PASSIVE checkpoint here runs beside the writer and
/// never blocks it. But under a steady stream of commits the log is never
/// found fully copied when a commit starts, so it is never rewound and
/// grows without end (3 GB in a 30-minute soak); see [`restart_log`].
/// Stops when the returned sender is dropped.
fn start_checkpointer(path: &Path) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let conn = Connection::open(path)
        .and_then(|c| c.busy_timeout(Duration::from_secs(5)).map(|()| c))
        .map_err(|e| classify_rusqlite(e).context(format!("cannot open {}", path.display())))?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sotto-db-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                if let Err(e) = done {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                }
            }
        })
        .map_err(|e| StoreError::internal(e).context("cannot start the checkpointer"))?;
    Ok(stop)
}

/// Between batches, once the log is over [`WAL_RESTART_BYTES`]: a
/// RESTART checkpoint copies what the checkpointer has not copied yet
/// (little: it runs every [`CHECKPOINT_EVERY`]) and makes the next commit
/// start the log over, and `journal_size_limit` cuts the file back. Writes
/// wait for it, so it runs only when the log has grown. Only the writer
/// can do this: a checkpointer asking for it would wait for a moment with
/// no write in progress, which a steady stream of commits never leaves.
fn restart_log(conn: &Connection, wal: &Path) {
    let long = std::fs::metadata(wal).is_ok_and(|m| m.len() > WAL_RESTART_BYTES);
    if !long {
        return;
    }
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "cannot restart the WAL; it keeps growing for now");
    }
}

fn open(path: &Path, cache_mib: u32) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The writer touches the same hot pages (users, the newest inbox and
    // message pages) all the time: keep them in its own cache instead of
    // reading them back from the OS on every statement.
    conn.pragma_update(None, "cache_size", -i64::from(cache_mib.max(1)) * 1024)?;
    // Checkpoints run on their own thread (see `start_checkpointer`).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>, stats: &WriterStats, wal: &Path) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        stats.writes.fetch_add(batch.len() as u64, Relaxed);
        stats.commits.fetch_add(1, Relaxed);
        commit(&mut conn, &mut batch);
        restart_log(&conn, wal);
    }
}

/// Applies and commits one batch, then answers every write in it.
fn commit(conn: &mut Connection, batch: &mut Vec<Job>) {
    match apply_all(conn, batch) {
        Ok(results) => {
            for (job, result) in batch.drain(..).zip(results) {
                let _ = job.done.send(Ok(result));
            }
        }
        Err(e) => {
            let e = classify_rusqlite(e);
            tracing::error!(error = %e, writes = batch.len(), "message batch not committed");
            let text = e.to_string();
            for job in batch.drain(..) {
                let copy = match e.is_retryable() {
                    true => StoreError::unavailable(text.clone()),
                    false => StoreError::internal(text.clone()),
                };
                let _ = job.done.send(Err(copy));
            }
        }
    }
}

fn apply_all(conn: &mut Connection, batch: &[Job]) -> rusqlite::Result<Vec<Written>> {
    let confirms = coalesce_confirms(batch);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let results = batch
        .iter()
        .enumerate()
        .map(|(i, job)| match &job.write {
            Write::Confirm { user, now, .. } => match confirms.get(user) {
                Some(&(last, up_to)) if last == i => confirm(&tx, user, up_to, *now),
                _ => Ok(Written::Confirmed {
                    confirmed: 0,
                    delivered: 0,
                    receipts: Vec::new(),
                }),
            },
            write => apply(&tx, write),
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    tx.commit()?;
    Ok(results)
}

/// Confirmations are cumulative, and a client confirms every few
/// milliseconds: of one user's confirmations in a batch only the highest
/// matters. It is applied at the place of the user's *last* one (a
/// position it names may have been assigned by a send earlier in the
/// batch); the others are answered as no-ops. Returns, per user, that
/// index and the highest position.
fn coalesce_confirms(batch: &[Job]) -> HashMap<&UserId, (usize, i64)> {
    let mut last: HashMap<&UserId, (usize, i64)> = HashMap::new();
    for (i, job) in batch.iter().enumerate() {
        if let Write::Confirm { user, up_to, .. } = &job.write {
            let entry = last.entry(user).or_insert((i, *up_to));
            *entry = (i, entry.1.max(*up_to));
        }
    }
    last
}

fn apply(tx: &Transaction<'_>, write: &Write) -> rusqlite::Result<Written> {
    Ok(match write {
        Write::Send {
            message,
            max_pending,
        } => Written::Sent(send(tx, message, *max_pending)?),
        Write::Confirm { user, up_to, now } => confirm(tx, user, *up_to, *now)?,
        Write::Read {
            reader,
            from,
            up_to,
            now,
        } => Written::Read(read(tx, reader, from, *up_to, *now)?),
    })
}

/// The first copy of a resend; the columns in [`message_from`]'s order.
/// A literal, not built per message: this runs for every native send.
const RESEND: &str =
    "SELECT id, seq, sender, recipient, body, client_id, sent_at, delivered_at, read_at
     FROM messages WHERE sender = ?1 AND recipient = ?2 AND client_id = ?3";

fn message_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        row: r.get(0)?,
        seq: r.get(1)?,
        sender: UserId::from_trusted(r.get(2)?),
        recipient: UserId::from_trusted(r.get(3)?),
        body: r.get(4)?,
        client_id: r.get(5)?,
        sent_at: r.get(6)?,
        delivered_at: r.get(7)?,
        read_at: r.get(8)?,
    })
}

fn send(tx: &Transaction<'_>, m: &NewMessage, max_pending: u32) -> rusqlite::Result<Sent> {
    if let Some(client_id) = &m.client_id {
        let first = tx
            .prepare_cached(RESEND)?
            .query_row(
                params![m.sender.as_str(), m.recipient.as_str(), client_id],
                message_from,
            )
            .optional()?;
        if let Some(first) = first {
            return Ok(Sent::Duplicate(first));
        }
    }
    // One statement takes the recipient's next position and counts the
    // message as pending, unless the recipient is at the cap (or unknown).
    let recipient_pos: Option<i64> = tx
        .prepare_cached(
            "UPDATE inboxes SET head = head + 1, pending = pending + 1
             WHERE user_id = ?1 AND pending < ?2 RETURNING head",
        )?
        .query_row(params![m.recipient.as_str(), max_pending], |r| r.get(0))
        .optional()?;
    let Some(recipient_pos) = recipient_pos else {
        let exists = tx
            .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
            .exists([m.recipient.as_str()])?;
        return Ok(match exists {
            true => Sent::QueueFull,
            false => Sent::UnknownRecipient,
        });
    };
    let conv = conversation(&m.sender, &m.recipient);
    let seq: i64 = tx
        .prepare_cached(
            "INSERT INTO conversations (key, head) VALUES (?1, 1)
             ON CONFLICT (key) DO UPDATE SET head = head + 1 RETURNING head",
        )?
        .query_row([&conv], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO messages (conversation, seq, sender, recipient, body, client_id, sent_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        conv,
        seq,
        m.sender.as_str(),
        m.recipient.as_str(),
        m.body,
        m.client_id,
        m.sent_at
    ])?;
    let row = tx.last_insert_rowid();
    insert_entry(
        tx,
        &m.recipient,
        recipient_pos,
        &NewEntry::message(KIND_RECEIVED, row, m.sent_at),
    )?;
    let sender_pos = match m.sender != m.recipient {
        true => append(
            tx,
            &m.sender,
            &NewEntry::message(KIND_OWN_COPY, row, m.sent_at),
        )?,
        false => None,
    };
    let stored = StoredMessage {
        row,
        seq,
        sender: m.sender.clone(),
        recipient: m.recipient.clone(),
        body: m.body.clone(),
        client_id: m.client_id.clone(),
        sent_at: m.sent_at,
        delivered_at: None,
        read_at: None,
    };
    Ok(Sent::Stored {
        message: Arc::new(stored),
        recipient_pos,
        sender_pos,
    })
}

/// An inbox row to append.
struct NewEntry<'a> {
    kind: i64,
    message: Option<i64>,
    peer: Option<&'a str>,
    up_to: Option<i64>,
    at: i64,
}

impl NewEntry<'_> {
    fn message(kind: i64, row: i64, at: i64) -> NewEntry<'static> {
        NewEntry {
            kind,
            message: Some(row),
            peer: None,
            up_to: None,
            at,
        }
    }
}

/// Appends an entry to `user`'s inbox at its next position; None if the
/// user does not exist (a sender deleted meanwhile).
fn append(tx: &Transaction<'_>, user: &UserId, e: &NewEntry<'_>) -> rusqlite::Result<Option<i64>> {
    let pos: Option<i64> = tx
        .prepare_cached("UPDATE inboxes SET head = head + 1 WHERE user_id = ?1 RETURNING head")?
        .query_row([user.as_str()], |r| r.get(0))
        .optional()?;
    let Some(pos) = pos else { return Ok(None) };
    insert_entry(tx, user, pos, e)?;
    Ok(Some(pos))
}

fn insert_entry(
    tx: &Transaction<'_>,
    user: &UserId,
    pos: i64,
    e: &NewEntry<'_>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO inbox (user_id, pos, kind, message, peer, up_to, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        user.as_str(),
        pos,
        e.kind,
        e.message,
        e.peer,
        e.up_to,
        e.at
    ])?;
    Ok(())
}

fn confirm(tx: &Transaction<'_>, user: &UserId, up_to: i64, now: i64) -> rusqlite::Result<Written> {
    let state: Option<(i64, i64)> = tx
        .prepare_cached("SELECT head, confirmed FROM inboxes WHERE user_id = ?1")?
        .query_row([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((head, confirmed)) = state else {
        return Ok(Written::Confirmed {
            confirmed: 0,
            delivered: 0,
            receipts: Vec::new(),
        });
    };
    let to = up_to.min(head);
    if to <= confirmed {
        return Ok(Written::Confirmed {
            confirmed,
            delivered: 0,
            receipts: Vec::new(),
        });
    }
    tx.prepare_cached("UPDATE inboxes SET confirmed = ?2 WHERE user_id = ?1")?
        .execute(params![user.as_str(), to])?;
    // Per sender, the newest newly delivered id: receipts are cumulative
    // (a conversation's messages reach the recipient's inbox in id order),
    // so a batch of confirmations costs one receipt per sender.
    let per_sender: Vec<(String, i64, i64)> = tx
        .prepare_cached(
            "SELECT m.sender, MAX(m.seq), COUNT(*) FROM inbox i JOIN messages m ON m.id = i.message
             WHERE i.user_id = ?1 AND i.pos > ?2 AND i.pos <= ?3 AND i.kind = 0
               AND m.delivered_at IS NULL
             GROUP BY m.sender",
        )?
        .query_map(params![user.as_str(), confirmed, to], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let delivered = tx
        .prepare_cached(
            "UPDATE messages SET delivered_at = ?4 WHERE delivered_at IS NULL AND id IN
               (SELECT message FROM inbox WHERE user_id = ?1 AND pos > ?2 AND pos <= ?3 AND kind = 0)",
        )?
        .execute(params![user.as_str(), confirmed, to, now])?;
    let mut receipts = Vec::new();
    for (sender, up_to, _) in &per_sender {
        let sender = UserId::from_trusted(sender.clone());
        if sender == *user {
            continue;
        }
        let entry = NewEntry {
            kind: KIND_DELIVERED,
            message: None,
            peer: Some(user.as_str()),
            up_to: Some(*up_to),
            at: now,
        };
        if let Some(pos) = append(tx, &sender, &entry)? {
            receipts.push(Addressed {
                user: sender,
                item: InboxItem {
                    pos,
                    entry: Entry::Delivered {
                        with: user.clone(),
                        id: *up_to,
                    },
                },
            });
        }
    }
    release_pending(tx, user, delivered)?;
    Ok(Written::Confirmed {
        confirmed: to,
        delivered: u64::try_from(delivered).unwrap_or(0),
        receipts,
    })
}

fn release_pending(tx: &Transaction<'_>, user: &UserId, n: usize) -> rusqlite::Result<()> {
    if n > 0 {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        tx.prepare_cached("UPDATE inboxes SET pending = MAX(pending - ?2, 0) WHERE user_id = ?1")?
            .execute(params![user.as_str(), n])?;
    }
    Ok(())
}

fn read(
    tx: &Transaction<'_>,
    reader: &UserId,
    from: &UserId,
    up_to: i64,
    now: i64,
) -> rusqlite::Result<Option<Addressed>> {
    let conv = conversation(reader, from);
    let newest: Option<i64> = tx
        .prepare_cached(
            "SELECT seq FROM messages WHERE conversation = ?1 AND recipient = ?2 AND sender = ?3
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![conv, reader.as_str(), from.as_str()], |r| r.get(0))
        .optional()?;
    let Some(newest) = newest else {
        return Ok(None);
    };
    let up_to = up_to.min(newest);
    let undelivered: i64 = tx
        .prepare_cached(
            "SELECT COUNT(*) FROM messages WHERE conversation = ?1 AND recipient = ?2
               AND sender = ?3 AND seq <= ?4 AND delivered_at IS NULL",
        )?
        .query_row(params![conv, reader.as_str(), from.as_str(), up_to], |r| {
            r.get(0)
        })?;
    let changed = tx
        .prepare_cached(
            "UPDATE messages SET read_at = ?5, delivered_at = COALESCE(delivered_at, ?5)
             WHERE conversation = ?1 AND recipient = ?2 AND sender = ?3 AND seq <= ?4
               AND read_at IS NULL",
        )?
        .execute(params![conv, reader.as_str(), from.as_str(), up_to, now])?;
    release_pending(tx, reader, usize::try_from(undelivered).unwrap_or(0))?;
    if changed == 0 || reader == from {
        return Ok(None);
    }
    let entry = NewEntry {
        kind: KIND_READ,
        message: None,
        peer: Some(reader.as_str()),
        up_to: Some(up_to),
        at: now,
    };
    Ok(append(tx, from, &entry)?.map(|pos| Addressed {
        user: from.clone(),
        item: InboxItem {
            pos,
            entry: Entry::Read {
                with: reader.clone(),
                up_to,
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    /// "Durable" means across a power loss: the writer's commits wait for
    /// the WAL's fsync (NORMAL would not).
    #[test]
    fn the_writer_commits_with_fsync_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::open(&dir.path().join("t.db"), 4).unwrap();
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous = FULL");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
