//! Every port in memory: for hub unit tests (with a paused clock) and as
//! the reference the contract suite checks the real stores against.
//!
//! One plain mutex around all of the state, held only inside a method's
//! synchronous body (never across an `.await`), which also makes every
//! write atomic the way a database transaction is.

mod psk;

use super::{
    Inserted, Lifecycle, MessageStore, NewMessage, SessionKind, SessionRecord, SessionStore,
    StoreError, StoredMessage, UserProfile, UserRecord, UserStore, conversation,
};
use crate::auth::{TokenHash, UserId, UserName};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

/// The in-memory store. Cheap to create; forget it to drop everything.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    closed: bool,
    users: BTreeMap<UserId, UserRecord>,
    /// `UserName::key` → id: the case-insensitive unique index.
    names: HashMap<String, UserId>,
    sessions: HashMap<TokenHash, (UserId, SessionRecord, SessionKind)>,
    /// By row, so iteration is arrival order.
    messages: BTreeMap<i64, StoredMessage>,
    /// Rows are never reused, even after retention deleted the newest.
    last_row: i64,
    psks: BTreeMap<String, psk::PskRow>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The state, or `Unavailable` once closed (as a closed pool answers).
    fn open(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        // A panic while holding the lock leaves plain data behind; keep
        // serving it rather than poison every later test step.
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return Err(StoreError::unavailable("the memory store is closed"));
        }
        Ok(state)
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(&self, user: &UserRecord, _now: i64) -> Result<(), StoreError> {
        let mut s = self.open()?;
        let key = user.profile.name.key();
        if s.users.contains_key(&user.profile.id) {
            return Err(StoreError::IdTaken);
        }
        if s.names.contains_key(&key) {
            return Err(StoreError::NameTaken);
        }
        s.names.insert(key, user.profile.id.clone());
        s.users.insert(user.profile.id.clone(), user.clone());
        Ok(())
    }

    async fn user_by_name(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError> {
        let s = self.open()?;
        Ok(s.names
            .get(&name.key())
            .and_then(|id| s.users.get(id))
            .cloned())
    }

    async fn user_exists(&self, id: &UserId) -> Result<bool, StoreError> {
        Ok(self.open()?.users.contains_key(id))
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<UserProfile>, StoreError> {
        Ok(self.open()?.users.get(id).map(|u| u.profile.clone()))
    }

    async fn set_public_key(&self, id: &UserId, key: &str) -> Result<(), StoreError> {
        if let Some(u) = self.open()?.users.get_mut(id) {
            u.profile.public_key = key.to_owned();
        }
        Ok(())
    }

    async fn set_password_hash(&self, id: &UserId, hash: &str) -> Result<(), StoreError> {
        if let Some(u) = self.open()?.users.get_mut(id) {
            u.password_hash = hash.to_owned();
        }
        Ok(())
    }

    async fn list_users(&self, limit: u32) -> Result<Vec<UserProfile>, StoreError> {
        let s = self.open()?;
        let mut all: Vec<_> = s.users.values().map(|u| u.profile.clone()).collect();
        all.sort_by_key(|p| p.name.key());
        all.truncate(limit as usize);
        Ok(all)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(
        &self,
        user: &UserId,
        session: &SessionRecord,
        kind: SessionKind,
    ) -> Result<(), StoreError> {
        let mut s = self.open()?;
        if !s.users.contains_key(user) {
            return Err(StoreError::internal(format!("no user {user}")));
        }
        if s.sessions.contains_key(&session.token_hash) {
            return Err(StoreError::internal("session hash already exists"));
        }
        s.sessions
            .insert(session.token_hash, (user.clone(), *session, kind));
        Ok(())
    }

    async fn session(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(SessionRecord, UserProfile)>, StoreError> {
        let s = self.open()?;
        Ok(s.sessions.get(hash).and_then(|(user, record, _)| {
            let profile = s.users.get(user)?.profile.clone();
            Some((*record, profile))
        }))
    }

    async fn touch_sessions(&self, hashes: &[TokenHash], now: i64) -> Result<(), StoreError> {
        let mut s = self.open()?;
        for h in hashes {
            if let Some((_, record, _)) = s.sessions.get_mut(h) {
                record.last_used_at = now;
            }
        }
        Ok(())
    }

    async fn delete_session(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        Ok(self.open()?.sessions.remove(hash).is_some())
    }

    async fn delete_other_sessions(
        &self,
        user: &UserId,
        keep: &TokenHash,
        kind: SessionKind,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let mut s = self.open()?;
        let mut gone = Vec::new();
        s.sessions.retain(|h, (u, _, k)| {
            let other = u == user && h != keep && *k == kind;
            if other {
                gone.push(*h);
            }
            !other
        });
        Ok(gone)
    }

    async fn delete_expired_sessions(
        &self,
        idle_before: i64,
        created_before: i64,
    ) -> Result<u64, StoreError> {
        let mut s = self.open()?;
        let before = s.sessions.len();
        s.sessions.retain(|_, (_, r, _)| {
            !(r.last_used_at < idle_before || r.created_at < created_before)
        });
        Ok((before - s.sessions.len()) as u64)
    }
}

impl State {
    fn by_client_id(&self, sender: &UserId, client_id: &str) -> Option<StoredMessage> {
        self.messages
            .values()
            .find(|m| &m.sender == sender && m.client_id.as_deref() == Some(client_id))
            .cloned()
    }

    fn waiting_for(&self, to: &UserId) -> usize {
        self.messages
            .values()
            .filter(|m| &m.recipient == to && m.delivered_at.is_none())
            .count()
    }

    fn next_seq(&self, conv: &str) -> i64 {
        self.messages
            .values()
            .filter(|m| conversation(&m.sender, &m.recipient) == conv)
            .map(|m| m.seq)
            .max()
            .unwrap_or(0)
            + 1
    }

    fn in_conversation<'a>(
        &'a self,
        conv: &'a str,
    ) -> impl Iterator<Item = &'a StoredMessage> + 'a {
        self.messages
            .values()
            .filter(move |m| conversation(&m.sender, &m.recipient) == conv)
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn insert_message(
        &self,
        m: &NewMessage<'_>,
        max_undelivered: u32,
    ) -> Result<Inserted, StoreError> {
        let mut s = self.open()?;
        if let Some(first) = m.client_id.and_then(|c| s.by_client_id(m.sender, c)) {
            return Ok(Inserted::Duplicate(first));
        }
        if m.delivered_at.is_none() && s.waiting_for(m.recipient) >= max_undelivered as usize {
            return Ok(Inserted::QueueFull);
        }
        s.last_row += 1;
        let stored = StoredMessage {
            row: s.last_row,
            seq: s.next_seq(&conversation(m.sender, m.recipient)),
            sender: m.sender.clone(),
            recipient: m.recipient.clone(),
            body: m.body.to_owned(),
            client_id: m.client_id.map(str::to_owned),
            sent_at: m.sent_at,
            delivered_at: m.delivered_at,
            read_at: None,
        };
        s.messages.insert(stored.row, stored.clone());
        Ok(Inserted::Stored(stored))
    }

    async fn undelivered(&self, to: &UserId, limit: u32) -> Result<Vec<StoredMessage>, StoreError> {
        let s = self.open()?;
        Ok(s.messages
            .values()
            .filter(|m| &m.recipient == to && m.delivered_at.is_none())
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn mark_delivered(&self, rows: &[i64], now: i64) -> Result<(), StoreError> {
        let mut s = self.open()?;
        for row in rows {
            if let Some(m) = s.messages.get_mut(row) {
                m.delivered_at = Some(now);
            }
        }
        Ok(())
    }

    async fn mark_undelivered(&self, row: i64) -> Result<(), StoreError> {
        if let Some(m) = self.open()?.messages.get_mut(&row) {
            m.delivered_at = None;
        }
        Ok(())
    }

    async fn requeue(
        &self,
        sender: &UserId,
        recipient: &UserId,
        seq: i64,
    ) -> Result<(), StoreError> {
        let mut s = self.open()?;
        let found = s
            .messages
            .values_mut()
            .find(|m| &m.sender == sender && &m.recipient == recipient && m.seq == seq);
        if let Some(m) = found {
            m.delivered_at = None;
        }
        Ok(())
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
            .in_conversation(&conv)
            .filter(|m| m.seq < before)
            .cloned()
            .collect();
        page.sort_by_key(|m| std::cmp::Reverse(m.seq));
        page.truncate(limit as usize);
        Ok(page)
    }

    async fn mark_read(
        &self,
        reader: &UserId,
        from: &UserId,
        up_to: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut s = self.open()?;
        let mut changed = 0;
        for m in s.messages.values_mut() {
            if &m.recipient == reader && &m.sender == from && m.seq <= up_to && m.read_at.is_none()
            {
                m.read_at = Some(now);
                m.delivered_at.get_or_insert(now);
                changed += 1;
            }
        }
        Ok(changed)
    }

    async fn delete_messages_before(&self, before: i64) -> Result<u64, StoreError> {
        let mut s = self.open()?;
        let count = s.messages.len();
        s.messages.retain(|_, m| m.sent_at >= before);
        Ok((count - s.messages.len()) as u64)
    }
}

#[async_trait]
impl Lifecycle for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.open().map(|_| ())
    }

    async fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    use crate::ports::contract::Fixture;
    use std::sync::Arc;

    async fn fixture() -> Fixture {
        let store = Arc::new(MemoryStore::new());
        Fixture {
            store: store.clone(),
            psks: store,
            keep: Box::new(()),
        }
    }

    crate::store_contract!(fixture);
}
