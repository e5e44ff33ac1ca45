//! End-to-end devices at the hub: binding one to a session, deleting one,
//! logging out everywhere, and telling the native connections that care
//! when a user's device set changes; plus the directory reads that show devices.
//!
//! The hub keeps each online user's device set next to their profile (it
//! goes into `users` snapshots and `presence` frames) and replaces it
//! after every change. Changes are announced one at a time
//! (`device_changes`), each with the set read from the store after its
//! write, so the last `devices` frame anyone gets is the current set; an
//! arriving connection takes the same lock from its snapshot to its
//! attachment, and a count of announcements (`device_epoch`) tells it
//! whether the set it read before is still current.

use super::conn::{CloseReason, Outbound};
use super::event::{DeviceSet, Devices, Event, Shared};
use super::{Hub, Protocol};
use crate::auth::{TokenHash, UserId};
use crate::ports::{Bound, ConversationSummary, Device, DeviceId, StoreError, UserProfile};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Fresh ids drawn before giving up on collisions (64-bit ids: a second
/// draw is already astronomically rare).
const ID_DRAWS: usize = 4;

/// A user as the HTTP directory shows them.
#[derive(Debug, Clone)]
pub struct Member {
    pub profile: UserProfile,
    pub online: bool,
    pub devices: Vec<Device>,
}

impl Hub {
    /// The device set of a user coming online: the one kept for them if
    /// they already are, else the store's; with the number of
    /// announcements made before it was read (see [`Hub::settle_devices`]).
    pub(super) async fn devices_for(&self, user: &UserId) -> Result<(Devices, u64), StoreError> {
        let epoch = self.device_epoch.load(Ordering::Acquire);
        if let Some(o) = self.online_map().get(user) {
            return Ok((o.devices.clone(), epoch));
        }
        Ok((Arc::from(self.store.devices(user).await?), epoch))
    }

    /// Called by an arriving connection before its greeting: holds
    /// announcements off until it is attached (the guard), so none falls
    /// between its `users` snapshot and its attachment, and re-reads its
    /// user's devices if one was announced since `devices_for` read them
    /// (rare: the store is read under the lock only then).
    pub(super) async fn settle_devices(
        &self,
        user: &UserId,
        (devices, epoch): (Devices, u64),
    ) -> Result<(tokio::sync::MutexGuard<'_, ()>, Devices), StoreError> {
        let guard = self.device_changes.lock().await;
        if self.device_epoch.load(Ordering::Acquire) == epoch {
            return Ok((guard, devices));
        }
        let (fresh, _) = self.devices_for(user).await?;
        Ok((guard, fresh))
    }

    /// Registers the device with `public_key` for session `session` of
    /// `user` (see [`DeviceStore::bind_device`](crate::ports::DeviceStore::bind_device));
    /// `public_key` and `name` were validated at the edge. A new device is
    /// announced to everyone.
    pub async fn register_device(
        &self,
        user: &UserId,
        session: &TokenHash,
        public_key: &str,
        name: &str,
    ) -> Result<Bound, StoreError> {
        let max = self.config.max_devices_per_user;
        for _ in 0..ID_DRAWS {
            let device = Device {
                id: DeviceId::random(),
                public_key: public_key.to_owned(),
                name: name.to_owned(),
                created_at: self.now_ms(),
            };
            match self.store.bind_device(user, session, &device, max).await {
                Err(StoreError::IdTaken) => continue,
                Err(e) => return Err(e),
                Ok(bound) => {
                    if let Bound::Created(d) = &bound {
                        tracing::info!(user = %user, device = %d.id, "device registered");
                        self.devices_changed(user).await;
                    }
                    return Ok(bound);
                }
            }
        }
        Err(StoreError::internal("device ids kept colliding"))
    }

    /// Device writes (register, delete) count against the user's send
    /// limits, as read receipts do: each is a database write a client
    /// could repeat at will. `Err` holds the seconds to wait.
    pub fn admit_device_write(&self, user: &UserId) -> Result<(), u64> {
        match self.admit_send(user, "") {
            Ok(()) => Ok(()),
            Err(super::Failure::SendLimited { retry_after_secs }) => Err(retry_after_secs),
            Err(_) => Err(1),
        }
    }

    /// The devices of `user`, oldest first.
    pub async fn devices(&self, user: &UserId) -> Result<Vec<Device>, StoreError> {
        self.store.devices(user).await
    }

    /// The device bound to a session, if any.
    pub async fn session_device(&self, session: &TokenHash) -> Result<Option<Device>, StoreError> {
        self.store.session_device(session).await
    }

    /// Deletes device `id` of `user`: its sessions are revoked and their
    /// sockets closed, and everyone is told. False if `user` has no such
    /// device.
    pub async fn delete_device(&self, user: &UserId, id: &DeviceId) -> Result<bool, StoreError> {
        let Some(gone) = self.store.delete_device(user, id).await? else {
            return Ok(false);
        };
        // Announced before the sockets close: a user going offline with
        // them is then shown offline with the devices that remain, not
        // with the deleted one.
        self.devices_changed(user).await;
        let closed = self.close_sessions(user, &gone);
        tracing::info!(user = %user, device = %id, sessions = gone.len(), closed, "device deleted");
        Ok(true)
    }

    /// "Log out everywhere": every session of `user` is revoked and its
    /// sockets closed, every device removed, and everyone told. Returns
    /// how many sockets closed.
    pub async fn logout_everywhere(&self, user: &UserId) -> Result<usize, StoreError> {
        let gone = self.store.delete_sessions_and_devices(user).await?;
        // Announced first, as in `delete_device`: the offline presence
        // that follows the closes then carries no devices.
        self.devices_changed(user).await;
        let closed = self.close_sessions(user, &gone);
        tracing::info!(user = %user, sessions = gone.len(), closed, "logged out everywhere");
        Ok(closed)
    }

    fn close_sessions(&self, user: &UserId, hashes: &[TokenHash]) -> usize {
        hashes
            .iter()
            .map(|h| self.close_user_session(user, h, CloseReason::LoggedOut))
            .sum()
    }

    /// A device-set change of `user`, on this node and the others.
    async fn devices_changed(&self, user: &UserId) {
        let user = user.clone();
        self.announce(crate::broker::Announcement::DevicesChanged { user: user.clone() });
        self.devices_changed_here(&user).await;
    }

    /// Reads `user`'s devices, keeps them for the directory, and sends the
    /// `devices` event to the user's own native connections and to those
    /// that get the user's presence (contacts, watchers). A store failure is
    /// logged: the change itself is committed, and clients that missed it
    /// see it in the next `users` snapshot or directory read.
    pub(super) async fn devices_changed_here(&self, user: &UserId) {
        let _one_at_a_time = self.device_changes.lock().await;
        self.device_epoch.fetch_add(1, Ordering::AcqRel);
        let devices: Devices = match self.store.devices(user).await {
            Ok(list) => Arc::from(list),
            Err(e) => {
                tracing::error!(error = %e, user = %user, "cannot read devices to announce them");
                return;
            }
        };
        let mut conns: Vec<(UserId, Outbound)> = {
            let mut map = self.online_map();
            let own = map.get_mut(user).map(|o| {
                o.devices = devices.clone();
                o.conns.clone()
            });
            own.unwrap_or_default()
                .into_iter()
                .filter(|l| l.protocol == Protocol::Native)
                .map(|l| (user.clone(), l.out))
                .collect()
        };
        // The others: those who get this user's presence (see `interest`).
        let others = self.interest.audience(user).into_iter();
        conns.extend(others.filter(|(u, _)| u != user));
        let set = DeviceSet {
            user: user.clone(),
            devices,
        };
        let event = Event::Devices(Shared::new(set));
        for (u, out) in conns {
            if out.push(event.clone()).is_err() {
                self.detach(&u, out.id());
            }
        }
    }

    /// Registered users (at most `limit`, those whose name starts with
    /// `prefix` if given, in any letter case) with whether each is online
    /// and their devices, for the HTTP directory.
    pub async fn directory(
        &self,
        limit: u32,
        prefix: Option<&str>,
    ) -> Result<Vec<Member>, StoreError> {
        let users = match prefix {
            Some(p) => {
                let key = p.to_ascii_lowercase();
                self.store.users_by_prefix(&key, limit).await?
            }
            None => self.store.list_users(limit).await?,
        };
        self.members(users).await
    }

    /// One user as the directory shows them, if they exist.
    pub async fn member(&self, id: &UserId) -> Result<Option<Member>, StoreError> {
        let Some(user) = self.store.user_by_id(id).await? else {
            return Ok(None);
        };
        Ok(self.members(vec![user]).await?.pop())
    }

    async fn members(&self, users: Vec<UserProfile>) -> Result<Vec<Member>, StoreError> {
        let ids: Vec<UserId> = users.iter().map(|u| u.id.clone()).collect();
        let mut devices: HashMap<UserId, Vec<Device>> = HashMap::new();
        for (u, d) in self.store.devices_of(&ids).await? {
            devices.entry(u).or_default().push(d);
        }
        let map = self.online_map();
        Ok(users
            .into_iter()
            .map(|profile| Member {
                online: map.contains_key(&profile.id) || self.online_elsewhere(&profile.id),
                devices: devices.remove(&profile.id).unwrap_or_default(),
                profile,
            })
            .collect())
    }

    /// The conversations of `user`, most recent first.
    pub async fn conversations(
        &self,
        user: &UserId,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        self.store.conversations(user, limit).await
    }
}
