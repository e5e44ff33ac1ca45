//! Every port in memory: for hub unit tests (with a paused clock) and as
//! the reference the contract suite checks the real stores against.
//!
//! One plain mutex around all of the state, held only inside a method's
//! synchronous body (never across an `.await`), which also makes every
//! write atomic the way a database transaction is.

mod devices;
mod messages;
mod psk;

use super::{
    Lifecycle, SessionKind, SessionRecord, SessionStore, StoreError, UserProfile, UserRecord,
    UserStore,
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
    messages: messages::Messages,
    psks: BTreeMap<String, psk::PskRow>,
    /// Every device and its user.
    devices: BTreeMap<crate::ports::DeviceId, (UserId, crate::ports::Device)>,
    /// Session → the device bound to it.
    bindings: HashMap<TokenHash, crate::ports::DeviceId>,
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
