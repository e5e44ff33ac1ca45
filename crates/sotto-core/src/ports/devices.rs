//! The device directory: each browser (or other end-to-end client) is a
//! *device* of its user, with its own public key, registered under the
//! login session it runs in.
//!
//! A session is bound to at most one device; a device may be bound to
//! several sessions (a browser that logs in again keeps its device, found
//! by its key). Deleting a device revokes every session bound to it, so a
//! lost or stolen browser can be cut off from another one.
//!
//! The server never uses the keys: it only lists them, so that senders
//! can encrypt for every device of a recipient (docs/E2E.md). Whatever
//! must be unique or counted (the key per user, the device limit) is
//! decided inside the store's write, as for every port.

use super::StoreError;
use crate::auth::{TokenHash, UserId};
use async_trait::async_trait;
use std::fmt;

/// Length of a device id: 16 lowercase hex digits (64 random bits).
const DEVICE_ID_LEN: usize = 16;

/// A device id, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    /// A fresh random id. A collision is refused by the store
    /// ([`StoreError::IdTaken`]) and the caller draws again.
    pub fn random() -> DeviceId {
        let mut bytes = [0u8; DEVICE_ID_LEN / 2];
        rand::fill(&mut bytes);
        DeviceId(hex::encode(bytes))
    }

    /// Accepts exactly the shape [`DeviceId::random`] produces.
    pub fn parse(raw: &str) -> Option<DeviceId> {
        let ok = raw.len() == DEVICE_ID_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| DeviceId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For values read back from our own store.
    pub fn from_trusted(s: String) -> DeviceId {
        DeviceId(s)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registered device. `public_key` and `name` were validated at the
/// edge (sotto-proto's `api::DeviceBody`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: DeviceId,
    pub public_key: String,
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// What [`DeviceStore::bind_device`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A new device, now bound to the session.
    Created(Device),
    /// The user already had a device with this key: it is now (or was
    /// already) bound to the session; nothing new was stored.
    Rebound(Device),
    /// The session is bound to another device, with a different key.
    SessionHasDevice(Device),
    /// The user has the maximum number of devices.
    TooMany,
    /// No such session of this user (revoked meanwhile).
    NoSession,
}

#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Binds a device with `device.public_key` to session `session` of
    /// `user`, in one atomic write, deciding in this order:
    /// 1. the session is bound to a device: [`Bound::Rebound`] if its key
    ///    is this key, else [`Bound::SessionHasDevice`];
    /// 2. the user has a device with this key: bind it, [`Bound::Rebound`];
    /// 3. the user has `max` devices or more: [`Bound::TooMany`];
    /// 4. store `device` (its `id` freshly drawn by the caller) and bind
    ///    it: [`Bound::Created`], or [`StoreError::IdTaken`] if the id
    ///    collides with any device's.
    ///
    /// An unknown session (or one of another user) is [`Bound::NoSession`].
    async fn bind_device(
        &self,
        user: &UserId,
        session: &TokenHash,
        device: &Device,
        max: u32,
    ) -> Result<Bound, StoreError>;
    /// The devices of `user`, oldest first (by `created_at`, then id).
    async fn devices(&self, user: &UserId) -> Result<Vec<Device>, StoreError>;
    /// The devices of each of `users`, in the order of [`devices`](Self::devices)
    /// per user; users without devices are absent. Callers pass at most a
    /// directory page of users.
    async fn devices_of(&self, users: &[UserId]) -> Result<Vec<(UserId, Device)>, StoreError>;
    /// The device bound to a session, if any.
    async fn session_device(&self, session: &TokenHash) -> Result<Option<Device>, StoreError>;
    /// Deletes device `id` of `user` and every session bound to it;
    /// returns those sessions (so their sockets can be closed), or `None`
    /// when `user` has no such device (another user's device included).
    async fn delete_device(
        &self,
        user: &UserId,
        id: &DeviceId,
    ) -> Result<Option<Vec<TokenHash>>, StoreError>;
    /// "Log out everywhere": deletes every session of `user`, of every
    /// kind, and every device; returns the sessions that went.
    async fn delete_sessions_and_devices(
        &self,
        user: &UserId,
    ) -> Result<Vec<TokenHash>, StoreError>;
}
