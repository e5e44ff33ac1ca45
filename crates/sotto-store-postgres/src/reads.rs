//! Inbox reads, grouped: many users' pages in one statement.
//!
//! Every message that crosses nodes is read from the database by the node
//! of its recipient (NATS only says "user U has new entries"), and its
//! delivered receipt again by the node of its sender: at a few thousand
//! messages per second that was a few thousand single-user queries per
//! second, each with its own pooled-connection check, and they cost
//! PostgreSQL more CPU than the writes. Here a read waits in a queue; a
//! dispatcher takes a connection's worth of permission ([`IN_FLIGHT`]),
//! then everything waiting (up to [`MAX_GROUP`]), and reads it with one
//! statement. Under light load a group is one read, sent at once; under
//! load reads pile up while the statements in flight run, and the next
//! group takes them all.
//!
//! Each read sees what its statement's snapshot sees (READ COMMITTED): at
//! least every write answered before the read was queued, as a single
//! query would.

use crate::error::{classify, copies};
use crate::messages::item_from;
use sotto_core::auth::UserId;
use sotto_core::ports::{InboxItem, StoreError};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Reads waiting, at most; a full queue makes readers wait.
const QUEUE: usize = 8192;
/// Users read by one statement, at most.
const MAX_GROUP: usize = 256;
/// Statements in flight at once. Below the pool's size, so accounts,
/// sessions and the rest keep connections of their own.
pub(crate) const IN_FLIGHT: usize = 4;

/// One user's page: the entries after `after`, at most `limit`.
struct Read {
    user: UserId,
    after: i64,
    limit: u32,
    done: oneshot::Sender<Result<Vec<InboxItem>, StoreError>>,
}

/// Pages of several users, in order of the arrays' index (`k`), each
/// page in position order.
const PAGES: &str = "SELECT r.k, i.pos, i.kind, i.peer, i.up_to,
            m.id, m.seq, m.sender, m.recipient, m.body, m.client_id,
            m.sent_at, m.delivered_at, m.read_at
     FROM unnest($1::text[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS r(user_id, after, lim, k)
     CROSS JOIN LATERAL (
        SELECT * FROM inbox e WHERE e.user_id = r.user_id AND e.pos > r.after
        ORDER BY e.pos LIMIT r.lim) i
     LEFT JOIN messages m ON m.id = i.message
     ORDER BY r.k, i.pos";

/// The handle of the dispatcher; it stops when the handle is dropped.
pub(crate) struct Reader {
    tx: mpsc::Sender<Read>,
}

impl Reader {
    pub(crate) fn start(pool: PgPool, in_flight: usize) -> Reader {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(dispatch(pool, rx, in_flight.max(1)));
        Reader { tx }
    }

    /// `user`'s inbox entries after `after`, at most `limit`.
    pub(crate) async fn inbox(
        &self,
        user: &UserId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let (done, answer) = oneshot::channel();
        let read = Read {
            user: user.clone(),
            after,
            limit,
            done,
        };
        let stopped = || StoreError::unavailable("the inbox reader stopped");
        self.tx.send(read).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn dispatch(pool: PgPool, mut rx: mpsc::Receiver<Read>, in_flight: usize) {
    let permits = Arc::new(Semaphore::new(in_flight));
    loop {
        // The permit first: while every statement is busy, reads gather.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(read) => group.push(read),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            read_group(&pool, group).await;
            drop(permit);
        });
    }
}

/// Reads every page of `group` with one statement and answers each.
async fn read_group(pool: &PgPool, group: Vec<Read>) {
    let users: Vec<&str> = group.iter().map(|r| r.user.as_str()).collect();
    let afters: Vec<i64> = group.iter().map(|r| r.after).collect();
    let limits: Vec<i64> = group.iter().map(|r| i64::from(r.limit)).collect();
    let rows = sqlx::query(PAGES)
        .bind(users)
        .bind(afters)
        .bind(limits)
        .fetch_all(pool)
        .await;
    let pages = rows.and_then(|rows| into_pages(&rows, group.len()));
    match pages {
        Ok(pages) => {
            for (read, page) in group.into_iter().zip(pages) {
                let _ = read.done.send(Ok(page));
            }
        }
        Err(e) => {
            let e = classify(e);
            let copy = copies(&e);
            for read in group {
                let _ = read.done.send(Err(copy()));
            }
        }
    }
}

/// Splits the rows of [`PAGES`] into the pages of `n` reads; a row that
/// cannot be read fails them all (none is answered short).
fn into_pages(rows: &[PgRow], n: usize) -> Result<Vec<Vec<InboxItem>>, sqlx::Error> {
    let mut pages: Vec<Vec<InboxItem>> = (0..n).map(|_| Vec::new()).collect();
    for row in rows {
        let k: i64 = row.try_get("k")?;
        let page = usize::try_from(k - 1)
            .ok()
            .and_then(|k| pages.get_mut(k))
            .ok_or_else(|| sqlx::Error::Protocol(format!("inbox page {k} was not asked for")))?;
        if let Some(item) = item_from(row)? {
            page.push(item);
        }
    }
    Ok(pages)
}
