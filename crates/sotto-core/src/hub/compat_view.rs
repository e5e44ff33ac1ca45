//! The user list compat connections see.
//!
//! QMessageServer's protocol carries presence as the whole active-user
//! list, so it cannot be scoped per contact the way native presence is.
//! What bounds its cost instead: the list is the first `user_list_max`
//! users to come online (still online), in that order, so once it is
//! full, a login or logout past it changes nobody's view and sends
//! nothing; every change that does alter it bumps a version, and the
//! broadcast sends the list only to connections that have not had that
//! version, at most once per presence interval (see `presence`).
//!
//! Fed with every presence change as it happens (online anywhere, so users of
//! other nodes count too); holds every online user's profile, ordered by
//! arrival.

use super::event::{Listed, Shared, UserList};
use crate::auth::UserId;
use crate::ports::UserProfile;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;

pub(super) struct CompatView {
    max: usize,
    /// Every online user by arrival number.
    order: BTreeMap<u64, Arc<UserProfile>>,
    arrival: HashMap<UserId, u64>,
    next: u64,
    /// The arrival number of the last listed user once the list is full:
    /// a user is listed iff theirs is at most this.
    last_listed: Option<u64>,
    version: u64,
    /// The list of `version`, built on first demand.
    built: Option<(u64, Arc<Shared<UserList>>)>,
}

impl CompatView {
    pub(super) fn new(max: usize) -> CompatView {
        CompatView {
            max,
            order: BTreeMap::new(),
            arrival: HashMap::new(),
            next: 0,
            last_listed: None,
            version: 0,
            built: None,
        }
    }

    fn listed(&self, n: u64) -> bool {
        self.last_listed.is_none_or(|last| n <= last)
    }

    /// `profile` is online (again, or with a new key).
    pub(super) fn online(&mut self, profile: &Arc<UserProfile>) {
        if let Some(&n) = self.arrival.get(&profile.id) {
            return self.update(n, profile);
        }
        if self.max == 0 {
            return;
        }
        let n = self.next;
        self.next += 1;
        self.order.insert(n, profile.clone());
        self.arrival.insert(profile.id.clone(), n);
        if self.last_listed.is_none() {
            self.version += 1;
            if self.order.len() == self.max {
                self.last_listed = Some(n);
            }
        }
    }

    /// A profile change of a user who may be online.
    pub(super) fn changed(&mut self, profile: &Arc<UserProfile>) {
        if let Some(&n) = self.arrival.get(&profile.id) {
            self.update(n, profile);
        }
    }

    fn update(&mut self, n: u64, profile: &Arc<UserProfile>) {
        let Some(p) = self.order.get_mut(&n) else {
            return;
        };
        if **p != **profile {
            *p = profile.clone();
            if self.listed(n) {
                self.version += 1;
            }
        }
    }

    /// `user` went offline everywhere.
    pub(super) fn offline(&mut self, user: &UserId) {
        let Some(n) = self.arrival.remove(user) else {
            return;
        };
        self.order.remove(&n);
        if !self.listed(n) {
            return;
        }
        self.version += 1;
        // The first user waiting past the list moves up into it.
        self.last_listed = self
            .last_listed
            .and_then(|last| self.order.range((Excluded(last), Unbounded)).next())
            .map(|(&k, _)| k);
    }

    /// The version of the list now: a connection that had it needs
    /// nothing.
    pub(super) fn version(&self) -> u64 {
        self.version
    }

    /// The list now, shared by every connection that gets it.
    pub(super) fn list(&mut self) -> Arc<Shared<UserList>> {
        if let Some((v, list)) = &self.built
            && *v == self.version
        {
            return list.clone();
        }
        let users = self
            .order
            .values()
            .take(self.max)
            .cloned()
            .map(Listed::from);
        let list = Shared::new(UserList(users.collect()));
        self.built = Some((self.version, list.clone()));
        list
    }

    /// What a login's answer lists besides its own user: the shared list
    /// now, with its version and the cap on entries.
    pub(super) fn for_login(&mut self) -> (Arc<Shared<UserList>>, u64, usize) {
        (self.list(), self.version, self.max)
    }

    /// Users online, listed or not.
    pub(super) fn online_count(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
#[path = "compat_view/tests.rs"]
mod tests;
