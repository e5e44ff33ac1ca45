//! The message port in memory: the same rules as the SQLite store (ids and
//! positions assigned inside the write, dedupe by sender, recipient and
//! `client_id`, pending counts, clamped receipts), each write applied at
//! once, so a submitted write has resolved before `submit` returns.

use super::{MemoryStore, State};
use crate::auth::UserId;
use crate::ports::{
    Addressed, Entry, InboxItem, InboxState, MessageStore, NewMessage, Pending, Sent, StoreError,
    StoredMessage, Write, Written, conversation,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::oneshot;

#[derive(Default)]
pub(super) struct Messages {
    /// By row, so iteration is arrival order.
    pub(super) rows: BTreeMap<i64, StoredMessage>,
    /// Rows are never reused, even after retention deleted the newest.
    last_row: i64,
    /// The last id of each conversation: never reused either.
    heads: HashMap<String, i64>,
    inboxes: HashMap<UserId, Inbox>,
}

#[derive(Default)]
struct Inbox {
    state: InboxState,
    /// Messages to this user not yet confirmed.
    pending: u32,
    entries: BTreeMap<i64, Stored>,
}

/// An inbox entry as kept: messages by row, so reads see their current
/// delivered and read times.
#[derive(Clone)]
struct Stored {
    at: i64,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Message(i64),
    Delivered { with: UserId, up_to: i64 },
    Read { with: UserId, up_to: i64 },
}

impl Inbox {
    fn append(&mut self, at: i64, kind: Kind) -> i64 {
        self.state.head += 1;
        self.entries.insert(self.state.head, Stored { at, kind });
        self.state.head
    }
}

impl State {
    fn send(&mut self, m: NewMessage, max_pending: u32) -> Sent {
        let dup = m.client_id.as_ref().and_then(|c| {
            self.messages.rows.values().find(|s| {
                s.sender == m.sender
                    && s.recipient == m.recipient
                    && s.client_id.as_ref() == Some(c)
            })
        });
        if let Some(first) = dup {
            return Sent::Duplicate(first.clone());
        }
        if !self.users.contains_key(&m.recipient) {
            return Sent::UnknownRecipient;
        }
        let store = &mut self.messages;
        if store
            .inboxes
            .get(&m.recipient)
            .is_some_and(|i| i.pending >= max_pending)
        {
            return Sent::QueueFull;
        }
        store.last_row += 1;
        let head = store
            .heads
            .entry(conversation(&m.sender, &m.recipient))
            .or_default();
        *head += 1;
        let stored = StoredMessage {
            row: store.last_row,
            seq: *head,
            sender: m.sender,
            recipient: m.recipient,
            body: m.body,
            client_id: m.client_id,
            sent_at: m.sent_at,
            delivered_at: None,
            read_at: None,
        };
        let (row, at) = (stored.row, stored.sent_at);
        let to = store.inboxes.entry(stored.recipient.clone()).or_default();
        to.pending += 1;
        let recipient_pos = to.append(at, Kind::Message(row));
        let sender_pos = (stored.sender != stored.recipient).then(|| {
            let from = store.inboxes.entry(stored.sender.clone()).or_default();
            from.append(at, Kind::Message(row))
        });
        store.rows.insert(row, stored.clone());
        Sent::Stored {
            message: Arc::new(stored),
            recipient_pos,
            sender_pos,
        }
    }

    fn confirm(&mut self, user: &UserId, up_to: i64, now: i64) -> Written {
        let store = &mut self.messages;
        let Some(inbox) = store.inboxes.get_mut(user) else {
            return Written::Confirmed {
                confirmed: 0,
                delivered: 0,
                receipts: Vec::new(),
            };
        };
        let from = inbox.state.confirmed;
        let to = up_to.min(inbox.state.head);
        if to <= from {
            return Written::Confirmed {
                confirmed: from,
                delivered: 0,
                receipts: Vec::new(),
            };
        }
        inbox.state.confirmed = to;
        let rows: Vec<i64> = inbox
            .entries
            .range(from + 1..=to)
            .filter_map(|(_, e)| match e.kind {
                Kind::Message(row) => Some(row),
                _ => None,
            })
            .collect();
        // Newest newly delivered id per sender, in order of first delivery.
        let mut per_sender: Vec<(UserId, i64)> = Vec::new();
        let mut delivered = 0;
        for row in rows {
            let Some(m) = store.rows.get_mut(&row) else {
                continue;
            };
            if m.recipient != *user || m.delivered_at.is_some() {
                continue;
            }
            m.delivered_at = Some(now);
            delivered += 1;
            match per_sender.iter_mut().find(|(s, _)| *s == m.sender) {
                Some((_, up_to)) => *up_to = (*up_to).max(m.seq),
                None => per_sender.push((m.sender.clone(), m.seq)),
            }
        }
        if let Some(i) = store.inboxes.get_mut(user) {
            i.pending = i.pending.saturating_sub(delivered);
        }
        let mut receipts = Vec::new();
        for (sender, id) in per_sender {
            if sender == *user {
                continue;
            }
            let with = user.clone();
            let pos = store.inboxes.entry(sender.clone()).or_default().append(
                now,
                Kind::Delivered {
                    with: with.clone(),
                    up_to: id,
                },
            );
            receipts.push(Addressed {
                user: sender,
                item: InboxItem {
                    pos,
                    entry: Entry::Delivered { with, id },
                },
            });
        }
        Written::Confirmed {
            confirmed: to,
            delivered: u64::from(delivered),
            receipts,
        }
    }

    fn read(&mut self, reader: &UserId, from: &UserId, up_to: i64, now: i64) -> Option<Addressed> {
        let store = &mut self.messages;
        let newest = store
            .rows
            .values()
            .filter(|m| m.recipient == *reader && m.sender == *from)
            .map(|m| m.seq)
            .max()?;
        let up_to = up_to.min(newest);
        let (mut changed, mut delivered) = (0, 0);
        for m in store.rows.values_mut() {
            if m.recipient == *reader && m.sender == *from && m.seq <= up_to && m.read_at.is_none()
            {
                m.read_at = Some(now);
                if m.delivered_at.is_none() {
                    m.delivered_at = Some(now);
                    delivered += 1;
                }
                changed += 1;
            }
        }
        if let Some(inbox) = store.inboxes.get_mut(reader) {
            inbox.pending = inbox.pending.saturating_sub(delivered);
        }
        if changed == 0 || reader == from {
            return None;
        }
        let pos = store.inboxes.entry(from.clone()).or_default().append(
            now,
            Kind::Read {
                with: reader.clone(),
                up_to,
            },
        );
        Some(Addressed {
            user: from.clone(),
            item: InboxItem {
                pos,
                entry: Entry::Read {
                    with: reader.clone(),
                    up_to,
                },
            },
        })
    }

    fn item(&self, pos: i64, stored: &Stored) -> Option<InboxItem> {
        let entry = match &stored.kind {
            Kind::Message(row) => Entry::Message(Arc::new(self.messages.rows.get(row)?.clone())),
            Kind::Delivered { with, up_to } => Entry::Delivered {
                with: with.clone(),
                id: *up_to,
            },
            Kind::Read { with, up_to } => Entry::Read {
                with: with.clone(),
                up_to: *up_to,
            },
        };
        Some(InboxItem { pos, entry })
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn submit(&self, write: Write) -> Result<Pending, StoreError> {
        let mut s = self.open()?;
        let written = match write {
            Write::Send {
                message,
                max_pending,
            } => Written::Sent(s.send(message, max_pending)),
            Write::Confirm { user, up_to, now } => s.confirm(&user, up_to, now),
            Write::Read {
                reader,
                from,
                up_to,
                now,
            } => Written::Read(s.read(&reader, &from, up_to, now)),
        };
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(written));
        Ok(rx)
    }

    async fn inbox_state(&self, user: &UserId) -> Result<InboxState, StoreError> {
        let s = self.open()?;
        Ok(s.messages
            .inboxes
            .get(user)
            .map(|i| i.state)
            .unwrap_or_default())
    }

    async fn inbox(
        &self,
        user: &UserId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let s = self.open()?;
        let Some(inbox) = s.messages.inboxes.get(user) else {
            return Ok(Vec::new());
        };
        Ok(inbox
            .entries
            .range(after.saturating_add(1)..)
            .filter_map(|(pos, e)| s.item(*pos, e))
            .take(limit as usize)
            .collect())
    }

    async fn history(
        &self,
        a: &UserId,
        b: &UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let s = self.open()?;
        let conv = conversation(a, b);
        let before = before.unwrap_or(i64::MAX);
        let mut page: Vec<_> = s
            .messages
            .rows
            .values()
            .filter(|m| conversation(&m.sender, &m.recipient) == conv && m.seq < before)
            .cloned()
            .collect();
        page.sort_by_key(|m| std::cmp::Reverse(m.seq));
        page.truncate(limit as usize);
        Ok(page)
    }

    async fn delete_messages_before(&self, before: i64) -> Result<u64, StoreError> {
        let mut s = self.open()?;
        let store = &mut s.messages;
        let count = store.rows.len();
        store.rows.retain(|_, m| m.sent_at >= before);
        let rows = &store.rows;
        for (user, inbox) in store.inboxes.iter_mut() {
            let pending = rows
                .values()
                .filter(|m| m.recipient == *user && m.delivered_at.is_none())
                .count();
            inbox.pending = u32::try_from(pending).unwrap_or(u32::MAX);
            inbox.entries.retain(|_, e| {
                e.at >= before
                    && match e.kind {
                        Kind::Message(r) => rows.contains_key(&r),
                        Kind::Delivered { .. } | Kind::Read { .. } => true,
                    }
            });
        }
        Ok((count - store.rows.len()) as u64)
    }
}
