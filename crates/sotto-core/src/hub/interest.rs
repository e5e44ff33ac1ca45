//! Whose presence each native connection gets.
//!
//! Telling every connection about every login costs O(N²) over a login
//! storm. A native connection gets presence only for the users its user
//! cares about: their **contacts** (the users they share a conversation
//! with, at most [`CONTACTS_MAX`], read from the store when the user comes
//! online and grown when a conversation starts) and the users the
//! connection **watches** (`watch` frame: at most 256, e.g. the directory
//! page on screen). A change about X then costs one look-up of X's
//! watchers plus one push per interested connection, and a login costs its
//! contacts, never N.
//!
//! Kept here, for local users with a native connection only: per user the
//! contacts and the connections (each with its watch set), and the reverse
//! index `watchers` (X → the local users who care about X) that the
//! fan-out reads. One mutex, held for map operations only; it is never
//! taken while the online map's lock is held, nor the other way round.

use super::conn::{ConnId, Outbound};
use crate::auth::UserId;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// Contacts kept per online user: the most recent conversations'.
pub(super) const CONTACTS_MAX: u32 = 1000;

#[derive(Default)]
pub(super) struct Interest {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<UserId, Cares>,
    /// X → the local users in `users` whose contacts or watch sets hold X.
    watchers: HashMap<UserId, HashSet<UserId>>,
}

/// What one local user cares about, and their native connections.
struct Cares {
    contacts: HashSet<UserId>,
    conns: Vec<Watching>,
}

struct Watching {
    out: Outbound,
    watched: HashSet<UserId>,
}

impl Cares {
    fn cares_about(&self, x: &UserId) -> bool {
        self.contacts.contains(x) || self.conns.iter().any(|c| c.watched.contains(x))
    }
}

impl Inner {
    fn link(&mut self, user: &UserId, x: &UserId) {
        self.watchers
            .entry(x.clone())
            .or_default()
            .insert(user.clone());
    }

    /// Drops `user` from X's watchers unless they still care.
    fn unlink_unless_cared(&mut self, user: &UserId, x: &UserId) {
        if self.users.get(user).is_some_and(|c| c.cares_about(x)) {
            return;
        }
        if let Some(set) = self.watchers.get_mut(x) {
            set.remove(user);
            if set.is_empty() {
                self.watchers.remove(x);
            }
        }
    }
}

impl Interest {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers native connection `out` of `user`. `contacts` (read from
    /// the store) are taken only if the user has no other native
    /// connection here: theirs are already kept, and may be newer.
    pub(super) fn join(&self, user: &UserId, out: &Outbound, contacts: Vec<UserId>) {
        let mut inner = self.lock();
        if !inner.users.contains_key(user) {
            let contacts: HashSet<UserId> = contacts.into_iter().filter(|c| c != user).collect();
            for c in &contacts {
                inner.link(user, c);
            }
            let cares = Cares {
                contacts,
                conns: Vec::new(),
            };
            inner.users.insert(user.clone(), cares);
        }
        if let Some(cares) = inner.users.get_mut(user) {
            cares.conns.push(Watching {
                out: out.clone(),
                watched: HashSet::new(),
            });
        }
    }

    /// Forgets connection `conn` of `user` (any protocol: a no-op for one
    /// that never joined), and the user with their last one.
    pub(super) fn leave(&self, user: &UserId, conn: ConnId) {
        let mut inner = self.lock();
        let Some(cares) = inner.users.get_mut(user) else {
            return;
        };
        let Some(i) = cares.conns.iter().position(|c| c.out.id() == conn) else {
            return;
        };
        let gone = cares.conns.swap_remove(i);
        let forgotten: Vec<UserId> = if cares.conns.is_empty() {
            let cares = inner.users.remove(user);
            let contacts = cares.map(|c| c.contacts).unwrap_or_default();
            contacts.into_iter().chain(gone.watched).collect()
        } else {
            gone.watched.into_iter().collect()
        };
        for x in &forgotten {
            inner.unlink_unless_cared(user, x);
        }
    }

    /// Replaces the watch set of connection `conn` of `user`; false if
    /// the connection is not registered.
    pub(super) fn watch(&self, user: &UserId, conn: ConnId, users: HashSet<UserId>) -> bool {
        let mut inner = self.lock();
        let Some(w) = inner
            .users
            .get_mut(user)
            .and_then(|c| c.conns.iter_mut().find(|c| c.out.id() == conn))
        else {
            return false;
        };
        let old = std::mem::replace(&mut w.watched, users.clone());
        for x in old.difference(&users) {
            inner.unlink_unless_cared(user, x);
        }
        for x in users.difference(&old) {
            inner.link(user, x);
        }
        true
    }

    /// Makes `other` a contact of `user` if `user` is registered here;
    /// true if that is new. At [`CONTACTS_MAX`] an arbitrary contact
    /// makes room.
    pub(super) fn befriend(&self, user: &UserId, other: &UserId) -> bool {
        if user == other {
            return false;
        }
        let mut inner = self.lock();
        let Some(cares) = inner.users.get_mut(user) else {
            return false;
        };
        if !cares.contacts.insert(other.clone()) {
            return false;
        }
        let evicted = (cares.contacts.len() > CONTACTS_MAX as usize)
            .then(|| cares.contacts.iter().find(|c| *c != other).cloned())
            .flatten();
        if let Some(e) = evicted {
            cares.contacts.remove(&e);
            inner.unlink_unless_cared(user, &e);
        }
        inner.link(user, other);
        true
    }

    /// The users connection `conn` of `user` gets presence for.
    pub(super) fn view_of(&self, user: &UserId, conn: ConnId) -> Vec<UserId> {
        let inner = self.lock();
        let Some(cares) = inner.users.get(user) else {
            return Vec::new();
        };
        let watched = cares
            .conns
            .iter()
            .filter(|c| c.out.id() == conn)
            .flat_map(|c| c.watched.iter());
        let all: HashSet<&UserId> = cares.contacts.iter().chain(watched).collect();
        all.into_iter().cloned().collect()
    }

    /// The native connections that get news about `x`, each with its
    /// user (`x`'s own connections are not among them unless `x` watches
    /// themselves).
    pub(super) fn audience(&self, x: &UserId) -> Vec<(UserId, Outbound)> {
        let inner = self.lock();
        let Some(users) = inner.watchers.get(x) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for u in users {
            let Some(cares) = inner.users.get(u) else {
                continue;
            };
            let contact = cares.contacts.contains(x);
            let conns = cares.conns.iter();
            for c in conns.filter(|c| contact || c.watched.contains(x)) {
                found.push((u.clone(), c.out.clone()));
            }
        }
        found
    }

    /// The native connections of `user` registered here.
    pub(super) fn conns_of(&self, user: &UserId) -> Vec<Outbound> {
        let inner = self.lock();
        inner
            .users
            .get(user)
            .map(|c| c.conns.iter().map(|w| w.out.clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[path = "interest/tests.rs"]
mod tests;
