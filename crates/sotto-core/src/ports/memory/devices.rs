//! The device and directory ports in memory, by the same rules as the
//! SQLite store (see `ports::devices` and `ports::directory`).

use super::{MemoryStore, State};
use crate::auth::{TokenHash, UserId};
use crate::ports::{
    Bound, ConversationSummary, Device, DeviceId, DeviceStore, DirectoryStore, StoreError,
    UNREAD_WINDOW, UserProfile, conversation,
};
use async_trait::async_trait;
use std::collections::HashMap;

impl State {
    fn devices_of_user(&self, user: &UserId) -> Vec<Device> {
        let mut list: Vec<Device> = self
            .devices
            .values()
            .filter(|(owner, _)| owner == user)
            .map(|(_, d)| d.clone())
            .collect();
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        list
    }

    fn bind(
        &mut self,
        user: &UserId,
        session: &TokenHash,
        device: &Device,
        max: u32,
    ) -> Result<Bound, StoreError> {
        if self.sessions.get(session).is_none_or(|(u, ..)| u != user) {
            return Ok(Bound::NoSession);
        }
        let bound = self
            .bindings
            .get(session)
            .and_then(|id| self.devices.get(id));
        if let Some((_, current)) = bound {
            return Ok(match current.public_key == device.public_key {
                true => Bound::Rebound(current.clone()),
                false => Bound::SessionHasDevice(current.clone()),
            });
        }
        let mine = self.devices_of_user(user);
        if let Some(same) = mine.iter().find(|d| d.public_key == device.public_key) {
            self.bindings.insert(*session, same.id.clone());
            return Ok(Bound::Rebound(same.clone()));
        }
        if mine.len() >= max as usize {
            return Ok(Bound::TooMany);
        }
        if self.devices.contains_key(&device.id) {
            return Err(StoreError::IdTaken);
        }
        self.devices
            .insert(device.id.clone(), (user.clone(), device.clone()));
        self.bindings.insert(*session, device.id.clone());
        Ok(Bound::Created(device.clone()))
    }

    /// Deletes the sessions `doomed` picks, with their bindings.
    fn delete_sessions(&mut self, doomed: impl Fn(&TokenHash, &UserId) -> bool) -> Vec<TokenHash> {
        let mut gone = Vec::new();
        self.sessions.retain(|h, (u, ..)| {
            let go = doomed(h, u);
            if go {
                gone.push(*h);
            }
            !go
        });
        for h in &gone {
            self.bindings.remove(h);
        }
        gone
    }
}

#[async_trait]
impl DeviceStore for MemoryStore {
    async fn bind_device(
        &self,
        user: &UserId,
        session: &TokenHash,
        device: &Device,
        max: u32,
    ) -> Result<Bound, StoreError> {
        self.open()?.bind(user, session, device, max)
    }

    async fn devices(&self, user: &UserId) -> Result<Vec<Device>, StoreError> {
        Ok(self.open()?.devices_of_user(user))
    }

    async fn devices_of(&self, users: &[UserId]) -> Result<Vec<(UserId, Device)>, StoreError> {
        let s = self.open()?;
        Ok(users
            .iter()
            .flat_map(|u| s.devices_of_user(u).into_iter().map(|d| (u.clone(), d)))
            .collect())
    }

    async fn session_device(&self, session: &TokenHash) -> Result<Option<Device>, StoreError> {
        let s = self.open()?;
        if !s.sessions.contains_key(session) {
            return Ok(None);
        }
        let bound = s.bindings.get(session).and_then(|id| s.devices.get(id));
        Ok(bound.map(|(_, d)| d.clone()))
    }

    async fn delete_device(
        &self,
        user: &UserId,
        id: &DeviceId,
    ) -> Result<Option<Vec<TokenHash>>, StoreError> {
        let mut s = self.open()?;
        if s.devices.get(id).is_none_or(|(owner, _)| owner != user) {
            return Ok(None);
        }
        s.devices.remove(id);
        let bound: Vec<TokenHash> = s
            .bindings
            .iter()
            .filter(|(_, d)| *d == id)
            .map(|(h, _)| *h)
            .collect();
        Ok(Some(s.delete_sessions(|h, _| bound.contains(h))))
    }

    async fn delete_sessions_and_devices(
        &self,
        user: &UserId,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let mut s = self.open()?;
        s.devices.retain(|_, (owner, _)| owner != user);
        Ok(s.delete_sessions(|_, u| u == user))
    }
}

#[async_trait]
impl DirectoryStore for MemoryStore {
    async fn users_by_prefix(
        &self,
        prefix_key: &str,
        limit: u32,
    ) -> Result<Vec<UserProfile>, StoreError> {
        let s = self.open()?;
        let mut found: Vec<_> = s
            .users
            .values()
            .filter(|u| u.profile.name.key().starts_with(prefix_key))
            .map(|u| u.profile.clone())
            .collect();
        found.sort_by_key(|p| p.name.key());
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn conversations(
        &self,
        user: &UserId,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let s = self.open()?;
        // Each conversation's messages, newest first.
        let mut by_peer: HashMap<UserId, Vec<_>> = HashMap::new();
        for m in s.messages.rows.values().rev() {
            let peer = match (&m.sender, &m.recipient) {
                (from, to) if from == user => to,
                (from, to) if to == user => from,
                _ => continue,
            };
            by_peer.entry(peer.clone()).or_default().push(m);
        }
        let mut list: Vec<ConversationSummary> = by_peer
            .into_iter()
            .filter_map(|(peer, mut newest)| {
                newest.sort_by_key(|m| std::cmp::Reverse(m.seq));
                debug_assert!(newest.iter().all(|m| {
                    conversation(&m.sender, &m.recipient) == conversation(user, &peer)
                }));
                let name = s.users.get(&peer)?.profile.name.clone();
                let unread = newest
                    .iter()
                    .take(UNREAD_WINDOW as usize)
                    .filter(|m| m.recipient == *user && m.sender == peer && m.read_at.is_none())
                    .count();
                Some(ConversationSummary {
                    name,
                    last: (*newest.first()?).clone(),
                    unread: u32::try_from(unread).unwrap_or(u32::MAX),
                    with: peer,
                })
            })
            .collect();
        list.sort_by_key(|c| std::cmp::Reverse(c.last.row));
        list.truncate(limit as usize);
        Ok(list)
    }
}
