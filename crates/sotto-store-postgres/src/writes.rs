//! One batch of message writes, applied set-based inside the writer's
//! transaction (see [`crate::writer`] for the queue, the lock order and
//! the retries). The results are those of the SQLite writer, which applies
//! the same writes one by one; only the number of round trips differs.
//!
//! Applied one by one, a send took four or five statements, each a round
//! trip to the server, all while the batch held its users' `inboxes` rows
//! that writers on other nodes wait for: a batch of 512 sends took ~2,500
//! round trips. Here the batch's users' counters come back from the
//! statement that locks them, and everything that depends only on them is
//! decided in Rust, in batch order, exactly as the statements would have:
//! every position (recipients', senders' copies, receipts), the pending
//! cap, unknown recipients. What needs the database is then done a set at
//! a time:
//! - one look-up of every resend of the batch, once its recipients are
//!   locked (nobody can add to their inboxes any more);
//! - the stored sends, in one statement that counts up the conversations
//!   (`INSERT … ON CONFLICT … RETURNING`) and inserts the messages;
//! - the new inbox entries and counters, in one statement at the end.
//!
//! A confirmation or read needs the rows that earlier writes of the batch
//! stored (the messages and inbox entries it marks), so when one it covers
//! is still unsent, the messages and entries gathered so far are stored
//! first (a flush: two statements); then the confirmation or read is one
//! statement. Its receipt takes its position in Rust at its place in the
//! batch, so positions stay in batch order. A confirmation up to what
//! earlier batches stored (what clients confirm) needs no flush.
//!
//! A resend answers with the first copy as it stands at the resend's
//! place in the batch: if a confirmation or read of its recipient came in
//! between, the copy is read again (rare).

use crate::messages::from_row;
use sotto_core::auth::UserId;
use sotto_core::ports::{
    Addressed, Entry, InboxItem, NewMessage, Sent, StoredMessage, Write, Written, conversation,
};
use sqlx::PgConnection;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Inbox entry kinds, as stored (see the migration).
const KIND_RECEIVED: i32 = 0;
const KIND_DELIVERED: i32 = 1;
const KIND_READ: i32 = 2;
const KIND_OWN_COPY: i32 = 3;

/// The first copies of the batch's resends, looked up together.
const RESENDS: &str = "SELECT m.id, m.seq, m.sender, m.recipient, m.body, m.client_id, m.sent_at,
            m.delivered_at, m.read_at
     FROM unnest($1::text[], $2::text[], $3::bytea[]) AS r(sender, recipient, client_id)
     JOIN messages m ON m.sender = r.sender AND m.recipient = r.recipient
                    AND m.client_id = r.client_id
     WHERE m.client_id IS NOT NULL";

/// A message read again by its handle.
const MESSAGE: &str =
    "SELECT id, seq, sender, recipient, body, client_id, sent_at, delivered_at, read_at
     FROM messages WHERE id = $1";

/// Counts up each conversation by its number of new messages (`n`: a
/// conversation may come only once in an upsert) and inserts the messages
/// with the ids that makes: the message with `back` later ones of its
/// conversation in the set gets `head - back`.
const INSERT_MESSAGES: &str = "WITH k AS (
        INSERT INTO conversations (key, head)
        SELECT * FROM unnest($1::text[], $2::bigint[])
        ON CONFLICT (key) DO UPDATE SET head = conversations.head + EXCLUDED.head
        RETURNING key, head)
     INSERT INTO messages (conversation, seq, sender, recipient, body, client_id, sent_at)
     SELECT m.conversation, k.head - m.back, m.sender, m.recipient, m.body, m.client_id, m.sent_at
     FROM unnest($3::text[], $4::bigint[], $5::text[], $6::text[], $7::bytea[], $8::bytea[],
                 $9::bigint[])
          AS m(conversation, back, sender, recipient, body, client_id, sent_at)
     JOIN k ON k.key = m.conversation
     RETURNING id, conversation, seq";

/// Marks delivered what a confirmation covers, and says per sender the
/// newest id and how many (receipts are cumulative, so a confirmation
/// costs one receipt per sender).
const CONFIRM: &str = "WITH d AS (
        UPDATE messages m SET delivered_at = $4
        FROM inbox i
        WHERE i.user_id = $1 AND i.pos > $2 AND i.pos <= $3 AND i.kind = 0
          AND m.id = i.message AND m.delivered_at IS NULL
        RETURNING m.sender, m.seq)
     SELECT sender, MAX(seq), COUNT(*) FROM d GROUP BY sender ORDER BY sender";

/// [`CONFIRM`] for every confirmation of the batch that can be applied
/// ahead of its place (see [`Batch::confirm_ahead`]) at once: per
/// confirming user (`$1`) the range of positions (`$2`, `$3`] and the
/// time `$4`; says per user and sender the newest id and how many.
const CONFIRM_ALL: &str = "WITH c AS (
        SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
                 AS c(user_id, after, up_to, at)),
     d AS (
        UPDATE messages m SET delivered_at = c.at
        FROM c JOIN inbox i ON i.user_id = c.user_id AND i.pos > c.after AND i.pos <= c.up_to
        WHERE i.kind = 0 AND m.id = i.message AND m.delivered_at IS NULL
        RETURNING i.user_id, m.sender, m.seq)
     SELECT user_id, sender, MAX(seq), COUNT(*) FROM d
     GROUP BY user_id, sender ORDER BY user_id, sender";

/// Marks read (and delivered) the messages from `$3` to `$2` up to id `$4`,
/// clamped to the newest; says that newest (NULL: there is none), how
/// many were undelivered, and how many newly read. A message is only ever
/// read once delivered, so the undelivered are among the unread.
const READ: &str = "WITH n AS (
        SELECT MAX(seq) AS newest FROM messages
        WHERE conversation = $1 AND recipient = $2 AND sender = $3),
     t AS (
        SELECT m.id, m.delivered_at IS NULL AS undelivered FROM messages m, n
        WHERE m.conversation = $1 AND m.recipient = $2 AND m.sender = $3
          AND m.seq <= LEAST($4, n.newest) AND m.read_at IS NULL),
     u AS (
        UPDATE messages m SET read_at = $5, delivered_at = COALESCE(m.delivered_at, $5)
        FROM t WHERE m.id = t.id)
     SELECT n.newest, (SELECT COUNT(*) FROM t WHERE t.undelivered), (SELECT COUNT(*) FROM t)
     FROM n";

/// The new inbox entries and the batch's final counters, together.
const FINISH: &str = "WITH c AS (
        UPDATE inboxes SET head = u.head, pending = u.pending, confirmed = u.confirmed
        FROM unnest($8::text[], $9::bigint[], $10::bigint[], $11::bigint[])
             AS u(user_id, head, pending, confirmed)
        WHERE inboxes.user_id = u.user_id)
     INSERT INTO inbox (user_id, pos, kind, message, peer, up_to, created_at)
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::bigint[], $5::text[],
                          $6::bigint[], $7::bigint[])";

/// A locked user's `inboxes` row, as the batch changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    pub head: i64,
    pub pending: i64,
    pub confirmed: i64,
}

/// The locked users' counters, by user id.
pub(crate) type Locked = HashMap<String, Counters>;

/// Locks the `inboxes` rows of `users` in `user_id` order (see
/// [`crate::writer`]) and returns their counters; a user without a row
/// does not exist. `nowait` fails at once if a row is busy.
pub(crate) async fn lock(
    c: &mut PgConnection,
    users: Vec<String>,
    nowait: bool,
) -> Result<Locked, sqlx::Error> {
    let sql = match nowait {
        false => {
            "SELECT user_id, head, pending, confirmed FROM inboxes
             WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE"
        }
        true => {
            "SELECT user_id, head, pending, confirmed FROM inboxes
             WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE NOWAIT"
        }
    };
    let rows: Vec<(String, i64, i64, i64)> =
        sqlx::query_as(sql).bind(users).fetch_all(&mut *c).await?;
    Ok(rows
        .into_iter()
        .map(|(user, head, pending, confirmed)| {
            let counters = Counters {
                head,
                pending,
                confirmed,
            };
            (user, counters)
        })
        .collect())
}

/// An inbox row to insert (at the next flush or the end of the batch).
struct NewEntry {
    user: String,
    pos: i64,
    kind: i32,
    /// The send (its index in the batch) whose message this entry is.
    send: Option<usize>,
    peer: Option<String>,
    up_to: Option<i64>,
    at: i64,
}

/// A send that is stored: where it went, and (once inserted) its message.
struct Stored {
    recipient_pos: i64,
    sender_pos: Option<i64>,
    /// `(row, seq)`, once the message is inserted.
    inserted: Option<(i64, i64)>,
}

/// What a write will be answered, once the batch's sends are inserted.
enum Answer {
    Now(Written),
    /// The send at this index was stored.
    Stored(usize),
    /// A resend of the send at this index, stored earlier in the batch and
    /// untouched since.
    CopyOf(usize),
}

/// The identity of a resend: sender, recipient, client id.
type ResendKey<'a> = (&'a str, &'a str, &'a str);

/// What one confirmation marked delivered: per sender (in id order), the
/// newest id and how many messages.
type PerSender = Vec<(String, i64, i64)>;

/// One batch being applied.
pub(crate) struct Batch<'a> {
    writes: &'a [Write],
    /// Per user, the index of the write that confirms for them (the last
    /// of theirs) and the highest position they confirm.
    confirms: &'a HashMap<&'a UserId, (usize, i64)>,
    /// The counters of every user the batch locked.
    users: Locked,
    /// The users asked for when locking: one of them not in `users` does
    /// not exist.
    asked: HashSet<String>,
    /// Users whose counters changed.
    changed: HashSet<String>,
    stored: HashMap<usize, Stored>,
    /// Stored sends whose messages are not inserted yet, in batch order,
    /// and per recipient the first position they take.
    unsent: Vec<usize>,
    unsent_to: HashMap<&'a str, i64>,
    entries: Vec<NewEntry>,
    /// First copies of resends found in the database.
    earlier: HashMap<ResendKey<'a>, StoredMessage>,
    /// First copies stored in this batch, by the index of their send.
    this_batch: HashMap<ResendKey<'a>, usize>,
    /// Per user, the index of the last confirmation or read that marked
    /// their messages in this batch.
    marked: HashMap<&'a str, usize>,
    /// Confirmations applied ahead of their place, by confirming user:
    /// what each marked, for its bookkeeping at its place.
    ahead: HashMap<&'a str, PerSender>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(
        writes: &'a [Write],
        confirms: &'a HashMap<&'a UserId, (usize, i64)>,
        users: Locked,
        asked: HashSet<String>,
    ) -> Batch<'a> {
        Batch {
            writes,
            confirms,
            users,
            asked,
            changed: HashSet::new(),
            stored: HashMap::new(),
            unsent: Vec::new(),
            unsent_to: HashMap::new(),
            entries: Vec::new(),
            earlier: HashMap::new(),
            this_batch: HashMap::new(),
            marked: HashMap::new(),
            ahead: HashMap::new(),
        }
    }

    /// Applies every write (the rows must be locked) and returns their
    /// results in batch order, and how many confirmations were applied
    /// ahead of their place.
    pub(crate) async fn apply(
        mut self,
        c: &mut PgConnection,
    ) -> Result<(Vec<Written>, usize), sqlx::Error> {
        // First: the resends' first copies must be seen as they were
        // before any confirmation of the batch marked them.
        self.find_resends(c).await?;
        let ahead = self.confirm_ahead(c).await?;
        let mut answers = Vec::with_capacity(self.writes.len());
        let writes = self.writes;
        for (i, write) in writes.iter().enumerate() {
            let answer = match write {
                Write::Send {
                    message,
                    max_pending,
                } => self.send(c, i, message, *max_pending).await?,
                Write::Confirm { user, now, .. } => match self.confirms.get(user) {
                    Some(&(last, up_to)) if last == i => {
                        Answer::Now(self.confirm(c, i, user, up_to, *now).await?)
                    }
                    _ => Answer::Now(confirmed(0)),
                },
                Write::Read {
                    reader,
                    from,
                    up_to,
                    now,
                } => Answer::Now(Written::Read(
                    self.read(c, i, reader, from, *up_to, *now).await?,
                )),
            };
            answers.push(answer);
        }
        self.insert_messages(c).await?;
        self.write_entries(c, true).await?;
        let results: Result<Vec<_>, _> = answers.into_iter().map(|a| self.answer(a)).collect();
        Ok((results?, ahead))
    }

    /// A locked user's counters, to change (so noted, for the final
    /// update); None if the user does not exist.
    fn counters(&mut self, user: &str) -> Option<&mut Counters> {
        let counters = self.users.get_mut(user)?;
        if !self.changed.contains(user) {
            self.changed.insert(user.to_owned());
        }
        Some(counters)
    }

    /// The next position of `user`'s inbox; None if the user does not
    /// exist.
    fn next_pos(&mut self, user: &str) -> Option<i64> {
        let counters = self.counters(user)?;
        counters.head += 1;
        Some(counters.head)
    }

    /// Looks up, in one statement, the first copies of every send of the
    /// batch that carries a client id.
    async fn find_resends(&mut self, c: &mut PgConnection) -> Result<(), sqlx::Error> {
        let mut senders = Vec::new();
        let mut recipients = Vec::new();
        let mut client_ids = Vec::new();
        for write in self.writes {
            if let Write::Send { message: m, .. } = write
                && let Some(client_id) = &m.client_id
            {
                senders.push(m.sender.as_str());
                recipients.push(m.recipient.as_str());
                client_ids.push(client_id.as_bytes());
            }
        }
        if senders.is_empty() {
            return Ok(());
        }
        let rows = sqlx::query(RESENDS)
            .bind(senders)
            .bind(recipients)
            .bind(client_ids)
            .fetch_all(&mut *c)
            .await?;
        let writes = self.writes;
        let mut found: HashMap<(String, String, String), StoredMessage> = HashMap::new();
        for row in &rows {
            let m = from_row(row)?;
            let key = (
                m.sender.as_str().to_owned(),
                m.recipient.as_str().to_owned(),
                m.client_id.clone().unwrap_or_default(),
            );
            found.insert(key, m);
        }
        for write in writes {
            if let Write::Send { message: m, .. } = write
                && let Some(client_id) = &m.client_id
            {
                let key = (
                    m.sender.as_str().to_owned(),
                    m.recipient.as_str().to_owned(),
                    client_id.clone(),
                );
                if let Some(first) = found.get(&key) {
                    let key = (m.sender.as_str(), m.recipient.as_str(), client_id.as_str());
                    self.earlier.insert(key, first.clone());
                }
            }
        }
        Ok(())
    }

    async fn send(
        &mut self,
        c: &mut PgConnection,
        i: usize,
        m: &'a NewMessage,
        max_pending: u32,
    ) -> Result<Answer, sqlx::Error> {
        let key = m
            .client_id
            .as_deref()
            .map(|id| (m.sender.as_str(), m.recipient.as_str(), id));
        if let Some(key) = key {
            if let Some(first) = self.earlier.get(&key) {
                let first = first.clone();
                return self.duplicate(c, first, None).await;
            }
            if let Some(&j) = self.this_batch.get(&key) {
                return self.copy_of(c, j, m).await;
            }
        }
        let Some(recipient) = self.users.get(m.recipient.as_str()).copied() else {
            return Ok(Answer::Now(Written::Sent(Sent::UnknownRecipient)));
        };
        if recipient.pending >= i64::from(max_pending) {
            return Ok(Answer::Now(Written::Sent(Sent::QueueFull)));
        }
        let Some(recipient_pos) = self.next_pos(m.recipient.as_str()) else {
            return Ok(Answer::Now(Written::Sent(Sent::UnknownRecipient)));
        };
        if let Some(counters) = self.counters(m.recipient.as_str()) {
            counters.pending += 1;
        }
        self.entries.push(NewEntry {
            user: m.recipient.as_str().to_owned(),
            pos: recipient_pos,
            kind: KIND_RECEIVED,
            send: Some(i),
            peer: None,
            up_to: None,
            at: m.sent_at,
        });
        let sender_pos = match m.sender != m.recipient {
            true => self.next_pos(m.sender.as_str()),
            false => None,
        };
        if let Some(pos) = sender_pos {
            self.entries.push(NewEntry {
                user: m.sender.as_str().to_owned(),
                pos,
                kind: KIND_OWN_COPY,
                send: Some(i),
                peer: None,
                up_to: None,
                at: m.sent_at,
            });
        }
        let stored = Stored {
            recipient_pos,
            sender_pos,
            inserted: None,
        };
        self.stored.insert(i, stored);
        self.unsent.push(i);
        self.unsent_to
            .entry(m.recipient.as_str())
            .or_insert(recipient_pos);
        if let Some(key) = key {
            self.this_batch.insert(key, i);
        }
        Ok(Answer::Stored(i))
    }

    /// A resend whose first copy is in the database: as it stands now,
    /// read again if a confirmation or read of its recipient in this batch
    /// may have changed it.
    async fn duplicate(
        &mut self,
        c: &mut PgConnection,
        first: StoredMessage,
        since: Option<usize>,
    ) -> Result<Answer, sqlx::Error> {
        let marked = self.marked.get(first.recipient.as_str());
        let stale = marked.is_some_and(|&at| since.is_none_or(|j| at > j));
        if !stale {
            return Ok(Answer::Now(Written::Sent(Sent::Duplicate(first))));
        }
        let row = sqlx::query(MESSAGE)
            .bind(first.row)
            .fetch_optional(&mut *c)
            .await?;
        let now = match row {
            Some(row) => from_row(&row)?,
            None => first,
        };
        Ok(Answer::Now(Written::Sent(Sent::Duplicate(now))))
    }

    /// A resend of the send at `j`, stored earlier in this batch.
    async fn copy_of(
        &mut self,
        c: &mut PgConnection,
        j: usize,
        m: &NewMessage,
    ) -> Result<Answer, sqlx::Error> {
        let marked = self
            .marked
            .get(m.recipient.as_str())
            .is_some_and(|&at| at > j);
        let inserted = self.stored.get(&j).and_then(|s| s.inserted);
        match (marked, inserted) {
            // Marking flushes the recipient's unsent messages first, so a
            // copy marked since it was stored is inserted.
            (true, Some((row, seq))) => {
                let first = self.message(j, row, seq)?;
                self.duplicate(c, first, Some(j)).await
            }
            _ => Ok(Answer::CopyOf(j)),
        }
    }

    /// The message of the send at `j`, as stored with `row` and `seq`.
    fn message(&self, j: usize, row: i64, seq: i64) -> Result<StoredMessage, sqlx::Error> {
        let Some(Write::Send { message: m, .. }) = self.writes.get(j) else {
            return Err(sqlx::Error::Protocol(format!("write {j} is not a send")));
        };
        Ok(StoredMessage {
            row,
            seq,
            sender: m.sender.clone(),
            recipient: m.recipient.clone(),
            body: m.body.clone(),
            client_id: m.client_id.clone(),
            sent_at: m.sent_at,
            delivered_at: None,
            read_at: None,
        })
    }

    /// Inserts the messages of the unsent stored sends, in one statement,
    /// and notes each one's handle and id.
    async fn insert_messages(&mut self, c: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let unsent = std::mem::take(&mut self.unsent);
        self.unsent_to.clear();
        let messages: Vec<(usize, &NewMessage)> = unsent
            .iter()
            .filter_map(|&i| match self.writes.get(i) {
                Some(Write::Send { message, .. }) => Some((i, message)),
                _ => None,
            })
            .collect();
        let keys: Vec<String> = messages
            .iter()
            .map(|(_, m)| conversation(&m.sender, &m.recipient))
            .collect();
        // Per conversation, how many messages; per message, how many of
        // its conversation come after it.
        let mut count: HashMap<&str, i64> = HashMap::new();
        let mut back = vec![0; keys.len()];
        for (k, key) in keys.iter().enumerate().rev() {
            let n = count.entry(key.as_str()).or_insert(0);
            back[k] = *n;
            *n += 1;
        }
        let (conversations, counts): (Vec<&str>, Vec<i64>) =
            count.iter().map(|(k, n)| (*k, *n)).unzip();
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(INSERT_MESSAGES)
            .bind(conversations)
            .bind(counts)
            .bind(&keys)
            .bind(&back)
            .bind(
                messages
                    .iter()
                    .map(|(_, m)| m.sender.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                messages
                    .iter()
                    .map(|(_, m)| m.recipient.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                messages
                    .iter()
                    .map(|(_, m)| m.body.as_bytes())
                    .collect::<Vec<_>>(),
            )
            .bind(
                messages
                    .iter()
                    .map(|(_, m)| m.client_id.as_deref().map(str::as_bytes))
                    .collect::<Vec<_>>(),
            )
            .bind(messages.iter().map(|(_, m)| m.sent_at).collect::<Vec<_>>())
            .fetch_all(&mut *c)
            .await?;
        let mut heads: HashMap<&str, i64> = HashMap::new();
        let mut ids: HashMap<(&str, i64), i64> = HashMap::new();
        for (row, key, seq) in &rows {
            let head = heads.entry(key.as_str()).or_insert(*seq);
            *head = (*head).max(*seq);
            ids.insert((key.as_str(), *seq), *row);
        }
        for (k, (i, _)) in messages.iter().enumerate() {
            let key = keys[k].as_str();
            let seq = heads.get(key).map(|head| head - back[k]);
            let row = seq.and_then(|seq| ids.get(&(key, seq)).map(|row| (*row, seq)));
            let Some(inserted) = row else {
                return Err(sqlx::Error::Protocol(format!(
                    "message {k} of the batch came back without its id"
                )));
            };
            if let Some(stored) = self.stored.get_mut(i) {
                stored.inserted = Some(inserted);
            }
        }
        Ok(())
    }

    async fn confirm(
        &mut self,
        c: &mut PgConnection,
        i: usize,
        user: &'a UserId,
        up_to: i64,
        now: i64,
    ) -> Result<Written, sqlx::Error> {
        let Some(state) = self.users.get(user.as_str()).copied() else {
            return Ok(confirmed(0));
        };
        let to = up_to.min(state.head);
        if to <= state.confirmed {
            return Ok(confirmed(state.confirmed));
        }
        let per_sender = match self.ahead.remove(user.as_str()) {
            Some(per_sender) => per_sender,
            None => self.confirm_here(c, user, state.confirmed, to, now).await?,
        };
        self.marked.insert(user.as_str(), i);
        let delivered: i64 = per_sender.iter().map(|(_, _, n)| n).sum();
        if let Some(counters) = self.counters(user.as_str()) {
            counters.confirmed = to;
            counters.pending = (counters.pending - delivered).max(0);
        }
        let mut receipts = Vec::new();
        for (sender, up_to, _) in per_sender {
            if sender == user.as_str() {
                continue;
            }
            let sender = UserId::from_trusted(sender);
            let Some(pos) = self.receipt_pos(c, &sender).await? else {
                continue;
            };
            self.entries.push(NewEntry {
                user: sender.as_str().to_owned(),
                pos,
                kind: KIND_DELIVERED,
                send: None,
                peer: Some(user.as_str().to_owned()),
                up_to: Some(up_to),
                at: now,
            });
            let entry = Entry::Delivered {
                with: user.clone(),
                id: up_to,
            };
            receipts.push(Addressed {
                user: sender,
                item: InboxItem { pos, entry },
            });
        }
        Ok(Written::Confirmed {
            confirmed: to,
            delivered: u64::try_from(delivered).unwrap_or(0),
            receipts,
        })
    }

    /// Marks delivered what one confirmation covers, at its place in the
    /// batch: the messages it covers that this batch sends are stored
    /// first.
    async fn confirm_here(
        &mut self,
        c: &mut PgConnection,
        user: &UserId,
        after: i64,
        to: i64,
        now: i64,
    ) -> Result<PerSender, sqlx::Error> {
        if self
            .unsent_to
            .get(user.as_str())
            .is_some_and(|&first| first <= to)
        {
            self.flush(c).await?;
        }
        sqlx::query_as(CONFIRM)
            .bind(user.as_str())
            .bind(after)
            .bind(to)
            .bind(now)
            .fetch_all(&mut *c)
            .await
    }

    /// Applies, in one statement before the batch's first write, every
    /// confirmation whose result cannot depend on what the batch does
    /// before it: one that covers only positions stored by earlier
    /// batches (what a client confirms is what it has received) of a user
    /// none of whose reads comes before it in the batch (a read marks
    /// messages delivered too). Nothing else in a batch changes whether
    /// a user's messages are delivered, so such a confirmation marks the
    /// same messages, with the same time, wherever in the batch it runs.
    /// Its counters and receipts are still handled at its place in the
    /// batch (from [`Self::ahead`]), so positions stay in batch order.
    /// Paced clients confirm about once per message they receive; one
    /// statement each was most of a batch's round trips.
    async fn confirm_ahead(&mut self, c: &mut PgConnection) -> Result<usize, sqlx::Error> {
        let (writes, confirms) = (self.writes, self.confirms);
        let mut first_read: HashMap<&str, usize> = HashMap::new();
        for (i, write) in writes.iter().enumerate() {
            if let Write::Read { reader, .. } = write {
                first_read.entry(reader.as_str()).or_insert(i);
            }
        }
        let (mut users, mut afters, mut tos, mut ats) = (Vec::new(), Vec::new(), vec![], vec![]);
        for (user, &(last, up_to)) in confirms {
            let Some(state) = self.users.get(user.as_str()) else {
                continue;
            };
            let Some(Write::Confirm { now, .. }) = writes.get(last) else {
                continue;
            };
            let read_before = first_read.get(user.as_str()).is_some_and(|&r| r < last);
            if up_to > state.head || up_to <= state.confirmed || read_before {
                continue;
            }
            users.push(user.as_str());
            afters.push(state.confirmed);
            tos.push(up_to);
            ats.push(*now);
        }
        if users.is_empty() {
            return Ok(0);
        }
        let ahead = users.len();
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(CONFIRM_ALL)
            .bind(&users)
            .bind(afters)
            .bind(tos)
            .bind(ats)
            .fetch_all(&mut *c)
            .await?;
        for user in users {
            self.ahead.insert(user, Vec::new());
        }
        let mut late = Vec::new();
        for (user, sender, up_to, n) in rows {
            if sender != user && !self.asked.contains(&sender) {
                self.asked.insert(sender.clone());
                late.push(sender.clone());
            }
            if let Some(per_sender) = self.ahead.get_mut(user.as_str()) {
                per_sender.push((sender, up_to, n));
            }
        }
        // Receivers of receipts that arrived after the batch looked for
        // them (see [`crate::writer`]): locked without waiting.
        if !late.is_empty() {
            let locked = lock(c, late, true).await?;
            self.users.extend(locked);
        }
        Ok(ahead)
    }

    /// The position of a delivered receipt in `sender`'s inbox. Every
    /// sender a confirmation can reach is locked with the batch (see
    /// [`crate::writer`]); one that somehow is not is locked now, without
    /// waiting out of order: if it is busy, the batch runs again.
    async fn receipt_pos(
        &mut self,
        c: &mut PgConnection,
        sender: &UserId,
    ) -> Result<Option<i64>, sqlx::Error> {
        if !self.asked.contains(sender.as_str()) {
            self.asked.insert(sender.as_str().to_owned());
            let late = lock(c, vec![sender.as_str().to_owned()], true).await?;
            self.users.extend(late);
        }
        Ok(self.next_pos(sender.as_str()))
    }

    async fn read(
        &mut self,
        c: &mut PgConnection,
        i: usize,
        reader: &'a UserId,
        from: &UserId,
        up_to: i64,
        now: i64,
    ) -> Result<Option<Addressed>, sqlx::Error> {
        if self.unsent_to.contains_key(reader.as_str()) {
            self.flush(c).await?;
        }
        let (newest, undelivered, changed): (Option<i64>, i64, i64) = sqlx::query_as(READ)
            .bind(conversation(reader, from))
            .bind(reader.as_str())
            .bind(from.as_str())
            .bind(up_to)
            .bind(now)
            .fetch_one(&mut *c)
            .await?;
        let Some(newest) = newest else {
            return Ok(None);
        };
        let up_to = up_to.min(newest);
        self.marked.insert(reader.as_str(), i);
        if undelivered > 0
            && let Some(counters) = self.counters(reader.as_str())
        {
            counters.pending = (counters.pending - undelivered).max(0);
        }
        if changed == 0 || reader == from {
            return Ok(None);
        }
        let Some(pos) = self.next_pos(from.as_str()) else {
            return Ok(None);
        };
        self.entries.push(NewEntry {
            user: from.as_str().to_owned(),
            pos,
            kind: KIND_READ,
            send: None,
            peer: Some(reader.as_str().to_owned()),
            up_to: Some(up_to),
            at: now,
        });
        let entry = Entry::Read {
            with: reader.clone(),
            up_to,
        };
        Ok(Some(Addressed {
            user: from.clone(),
            item: InboxItem { pos, entry },
        }))
    }

    /// Stores what the batch gathered so far, for a statement that reads
    /// it: the unsent messages and the new inbox entries (the counters wait
    /// for the end: only this batch reads them, from memory).
    async fn flush(&mut self, c: &mut PgConnection) -> Result<(), sqlx::Error> {
        self.insert_messages(c).await?;
        self.write_entries(c, false).await
    }

    /// Inserts every new inbox entry and, with `counters`, writes the
    /// changed counters, in one statement.
    async fn write_entries(
        &mut self,
        c: &mut PgConnection,
        counters: bool,
    ) -> Result<(), sqlx::Error> {
        if self.entries.is_empty() && (!counters || self.changed.is_empty()) {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.entries);
        let mut messages = Vec::with_capacity(entries.len());
        for e in &entries {
            let row = match e.send {
                Some(i) => match self.stored.get(&i).and_then(|s| s.inserted) {
                    Some((row, _)) => Some(row),
                    None => {
                        return Err(sqlx::Error::Protocol(format!(
                            "the message of write {i} was not inserted"
                        )));
                    }
                },
                None => None,
            };
            messages.push(row);
        }
        let mut users = Vec::with_capacity(self.changed.len());
        let (mut heads, mut pending, mut confirmed) = (Vec::new(), Vec::new(), Vec::new());
        let changed = self.changed.iter().filter(|_| counters);
        for user in changed {
            if let Some(counters) = self.users.get(user) {
                users.push(user.as_str());
                heads.push(counters.head);
                pending.push(counters.pending);
                confirmed.push(counters.confirmed);
            }
        }
        sqlx::query(FINISH)
            .bind(entries.iter().map(|e| e.user.as_str()).collect::<Vec<_>>())
            .bind(entries.iter().map(|e| e.pos).collect::<Vec<_>>())
            .bind(entries.iter().map(|e| e.kind).collect::<Vec<_>>())
            .bind(messages)
            .bind(
                entries
                    .iter()
                    .map(|e| e.peer.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(entries.iter().map(|e| e.up_to).collect::<Vec<_>>())
            .bind(entries.iter().map(|e| e.at).collect::<Vec<_>>())
            .bind(users)
            .bind(heads)
            .bind(pending)
            .bind(confirmed)
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    /// The result of a write, once every send is inserted.
    fn answer(&self, answer: Answer) -> Result<Written, sqlx::Error> {
        let stored = |i: usize| {
            let s = self.stored.get(&i);
            match s.and_then(|s| s.inserted) {
                Some((row, seq)) => Ok((s, self.message(i, row, seq)?)),
                None => Err(sqlx::Error::Protocol(format!(
                    "the message of write {i} was not inserted"
                ))),
            }
        };
        Ok(match answer {
            Answer::Now(written) => written,
            Answer::Stored(i) => {
                let (s, message) = stored(i)?;
                Written::Sent(Sent::Stored {
                    message: Arc::new(message),
                    recipient_pos: s.map_or(0, |s| s.recipient_pos),
                    sender_pos: s.and_then(|s| s.sender_pos),
                })
            }
            Answer::CopyOf(j) => Written::Sent(Sent::Duplicate(stored(j)?.1)),
        })
    }
}

fn confirmed(confirmed: i64) -> Written {
    Written::Confirmed {
        confirmed,
        delivered: 0,
        receipts: Vec::new(),
    }
}
