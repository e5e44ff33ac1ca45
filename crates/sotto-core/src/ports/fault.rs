//! A store that fails on demand, around a real one: for outage tests that
//! need the store back afterwards (a closed pool cannot be reopened).

use super::{
    InboxItem, InboxState, Lifecycle, MessageStore, Pending, SessionKind, SessionRecord,
    SessionStore, Store, StoreError, StoredMessage, UserProfile, UserRecord, UserStore, Write,
};
use crate::auth::{TokenHash, UserId, UserName};
use async_trait::async_trait;
use std::sync::{Arc, Mutex};

/// Turns the outage of a [`FaultyStore`] on and off.
#[derive(Clone, Default)]
pub struct FaultSwitch(Arc<Mutex<Outage>>);

/// Which calls fail.
#[derive(Clone, Copy, Default)]
enum Outage {
    #[default]
    None,
    All,
    /// Only the store method of this name: for the failure of one step
    /// in the middle of an operation whose other steps succeed.
    Only(&'static str),
}

impl FaultSwitch {
    /// From now on every call fails with [`StoreError::Unavailable`].
    pub fn fail(&self) {
        self.set(Outage::All);
    }

    /// From now on calls of the store method named `method` (e.g.
    /// `"delete_other_sessions"`) fail, and only those.
    pub fn fail_only(&self, method: &'static str) {
        self.set(Outage::Only(method));
    }

    /// Calls reach the real store again.
    pub fn restore(&self) {
        self.set(Outage::None);
    }

    fn set(&self, outage: Outage) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = outage;
    }

    fn check(&self, method: &'static str) -> Result<(), StoreError> {
        let outage = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        match outage {
            Outage::All => Err(StoreError::unavailable("injected outage")),
            Outage::Only(m) if m == method => Err(StoreError::unavailable("injected outage")),
            _ => Ok(()),
        }
    }
}

/// Passes every call to `inner` unless its switch says the store is down.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    switch: FaultSwitch,
}

impl FaultyStore {
    /// Wraps `inner`; the switch starts in the "working" position.
    pub fn wrap(inner: Arc<dyn Store>) -> (Arc<FaultyStore>, FaultSwitch) {
        let switch = FaultSwitch::default();
        let store = FaultyStore {
            inner,
            switch: switch.clone(),
        };
        (Arc::new(store), switch)
    }
}

#[async_trait]
impl UserStore for FaultyStore {
    async fn create_user(&self, user: &UserRecord, now: i64) -> Result<(), StoreError> {
        self.switch.check("create_user")?;
        self.inner.create_user(user, now).await
    }
    async fn user_by_name(&self, name: &UserName) -> Result<Option<UserRecord>, StoreError> {
        self.switch.check("user_by_name")?;
        self.inner.user_by_name(name).await
    }
    async fn user_exists(&self, id: &UserId) -> Result<bool, StoreError> {
        self.switch.check("user_exists")?;
        self.inner.user_exists(id).await
    }
    async fn user_by_id(&self, id: &UserId) -> Result<Option<UserProfile>, StoreError> {
        self.switch.check("user_by_id")?;
        self.inner.user_by_id(id).await
    }
    async fn set_public_key(&self, id: &UserId, key: &str) -> Result<(), StoreError> {
        self.switch.check("set_public_key")?;
        self.inner.set_public_key(id, key).await
    }
    async fn set_password_hash(&self, id: &UserId, hash: &str) -> Result<(), StoreError> {
        self.switch.check("set_password_hash")?;
        self.inner.set_password_hash(id, hash).await
    }
    async fn list_users(&self, limit: u32) -> Result<Vec<UserProfile>, StoreError> {
        self.switch.check("list_users")?;
        self.inner.list_users(limit).await
    }
}

#[async_trait]
impl SessionStore for FaultyStore {
    async fn create_session(
        &self,
        user: &UserId,
        session: &SessionRecord,
        kind: SessionKind,
    ) -> Result<(), StoreError> {
        self.switch.check("create_session")?;
        self.inner.create_session(user, session, kind).await
    }
    async fn session(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(SessionRecord, UserProfile)>, StoreError> {
        self.switch.check("session")?;
        self.inner.session(hash).await
    }
    async fn touch_sessions(&self, hashes: &[TokenHash], now: i64) -> Result<(), StoreError> {
        self.switch.check("touch_sessions")?;
        self.inner.touch_sessions(hashes, now).await
    }
    async fn delete_session(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        self.switch.check("delete_session")?;
        self.inner.delete_session(hash).await
    }
    async fn delete_other_sessions(
        &self,
        user: &UserId,
        keep: &TokenHash,
        kind: SessionKind,
    ) -> Result<Vec<TokenHash>, StoreError> {
        self.switch.check("delete_other_sessions")?;
        self.inner.delete_other_sessions(user, keep, kind).await
    }
    async fn delete_expired_sessions(
        &self,
        idle_before: i64,
        created_before: i64,
    ) -> Result<u64, StoreError> {
        self.switch.check("delete_expired_sessions")?;
        self.inner
            .delete_expired_sessions(idle_before, created_before)
            .await
    }
}

#[async_trait]
impl MessageStore for FaultyStore {
    async fn submit(&self, write: Write) -> Result<Pending, StoreError> {
        self.switch.check("submit")?;
        self.inner.submit(write).await
    }
    async fn inbox_state(&self, user: &UserId) -> Result<InboxState, StoreError> {
        self.switch.check("inbox_state")?;
        self.inner.inbox_state(user).await
    }
    async fn inbox(
        &self,
        user: &UserId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<InboxItem>, StoreError> {
        self.switch.check("inbox")?;
        self.inner.inbox(user, after, limit).await
    }
    async fn history(
        &self,
        a: &UserId,
        b: &UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.switch.check("history")?;
        self.inner.history(a, b, before, limit).await
    }
    async fn delete_messages_before(&self, before: i64) -> Result<u64, StoreError> {
        self.switch.check("delete_messages_before")?;
        self.inner.delete_messages_before(before).await
    }
}

#[async_trait]
impl Lifecycle for FaultyStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.switch.check("ping")?;
        self.inner.ping().await
    }
    /// Always reaches the real store, so shutdown closes it even during an
    /// injected outage.
    async fn close(&self) {
        self.inner.close().await
    }
}

#[async_trait]
impl super::DeviceStore for FaultyStore {
    async fn bind_device(
        &self,
        user: &UserId,
        session: &TokenHash,
        device: &super::Device,
        max: u32,
    ) -> Result<super::Bound, StoreError> {
        self.switch.check("bind_device")?;
        self.inner.bind_device(user, session, device, max).await
    }
    async fn devices(&self, user: &UserId) -> Result<Vec<super::Device>, StoreError> {
        self.switch.check("devices")?;
        self.inner.devices(user).await
    }
    async fn devices_of(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserId, super::Device)>, StoreError> {
        self.switch.check("devices_of")?;
        self.inner.devices_of(users).await
    }
    async fn session_device(
        &self,
        session: &TokenHash,
    ) -> Result<Option<super::Device>, StoreError> {
        self.switch.check("session_device")?;
        self.inner.session_device(session).await
    }
    async fn delete_device(
        &self,
        user: &UserId,
        id: &super::DeviceId,
    ) -> Result<Option<Vec<TokenHash>>, StoreError> {
        self.switch.check("delete_device")?;
        self.inner.delete_device(user, id).await
    }
    async fn delete_sessions_and_devices(
        &self,
        user: &UserId,
    ) -> Result<Vec<TokenHash>, StoreError> {
        self.switch.check("delete_sessions_and_devices")?;
        self.inner.delete_sessions_and_devices(user).await
    }
}

#[async_trait]
impl super::DirectoryStore for FaultyStore {
    async fn users_by_prefix(
        &self,
        prefix_key: &str,
        limit: u32,
    ) -> Result<Vec<UserProfile>, StoreError> {
        self.switch.check("users_by_prefix")?;
        self.inner.users_by_prefix(prefix_key, limit).await
    }
    async fn conversations(
        &self,
        user: &UserId,
        limit: u32,
    ) -> Result<Vec<super::ConversationSummary>, StoreError> {
        self.switch.check("conversations")?;
        self.inner.conversations(user, limit).await
    }

    async fn peers(&self, user: &UserId, limit: u32) -> Result<Vec<UserId>, StoreError> {
        self.switch.check("peers")?;
        self.inner.peers(user, limit).await
    }
}
