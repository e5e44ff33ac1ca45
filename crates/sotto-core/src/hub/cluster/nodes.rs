//! Presence across nodes: what this node knows of the others' users.
//!
//! Per other node: when it was last heard, its online users, and a digest
//! of their ids kept up to date one change at a time. Each heartbeat
//! carries the sender's own count and digest; a receiver whose view
//! differs (an `Online` or `Offline` was lost: core NATS delivers at most
//! once) asks that node for a snapshot, at most once per node timeout,
//! and the snapshot replaces its view. A node silent for `node_timeout`
//! is forgotten and its users go offline here unless online elsewhere.
//! Bounded: at most [`NODES_MAX`] nodes, and users only as many as are
//! online in the cluster.

use super::super::Hub;
use crate::auth::UserId;
use crate::broker::{Announcement, NodeId, id_hash};
use crate::hub::event::Listed;
use crate::ports::UserProfile;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Other nodes remembered at most; announcements from more are ignored
/// (a cluster is a handful of nodes, and the broker is not a place for
/// strangers).
const NODES_MAX: usize = 256;
/// Bytes of profiles in one snapshot part (NATS's default payload limit
/// is 1 MiB; a key is hex-encoded, two bytes per byte).
const PART_BYTES_MAX: usize = 256 * 1024;

/// What this node knows of the others.
#[derive(Default)]
pub(in crate::hub) struct Nodes {
    nodes: HashMap<NodeId, RemoteNode>,
}

struct RemoteNode {
    last_seen: Instant,
    users: Users,
    /// A snapshot being received: the parts so far.
    incoming: Option<Users>,
    /// When this node last asked it for a snapshot.
    asked: Option<Instant>,
}

/// A set of users with the digest of their ids.
#[derive(Default)]
struct Users {
    map: HashMap<UserId, Arc<UserProfile>>,
    digest: u64,
}

impl Users {
    fn insert(&mut self, p: Arc<UserProfile>) {
        if self.map.insert(p.id.clone(), p.clone()).is_none() {
            self.digest ^= id_hash(&p.id);
        }
    }

    fn remove(&mut self, id: &UserId) -> Option<Arc<UserProfile>> {
        let p = self.map.remove(id)?;
        self.digest ^= id_hash(id);
        Some(p)
    }
}

/// A user of another node as presence lists them. Their device set is
/// not announced with them: a native client reads it from the directory,
/// and hears of later changes through `devices` frames.
fn listed(p: &Arc<UserProfile>) -> Listed {
    Listed::from(p.clone())
}

impl Nodes {
    pub(in crate::hub) fn is_online(&self, user: &UserId) -> bool {
        self.nodes.values().any(|n| n.users.map.contains_key(user))
    }

    /// Notes that `node` was heard from; false if it is unknown and there
    /// is no room for it.
    pub(in crate::hub) fn heard(&mut self, node: NodeId) -> bool {
        if !self.nodes.contains_key(&node) && self.nodes.len() >= NODES_MAX {
            return false;
        }
        let n = self.nodes.entry(node).or_insert_with(|| RemoteNode {
            last_seen: Instant::now(),
            users: Users::default(),
            incoming: None,
            asked: None,
        });
        n.last_seen = Instant::now();
        true
    }

    fn set_key(&mut self, profile: &Arc<UserProfile>) {
        for n in self.nodes.values_mut() {
            if let Some(p) = n.users.map.get_mut(&profile.id) {
                *p = profile.clone();
            }
        }
    }
}

impl Hub {
    fn nodes(&self) -> std::sync::MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `user` is online on another node.
    pub(in crate::hub) fn online_elsewhere(&self, user: &UserId) -> bool {
        self.nodes().is_online(user)
    }

    /// Whether `user` is online here or on another node.
    fn online_anywhere(&self, user: &UserId) -> bool {
        self.online_elsewhere(user) || self.online_map().contains_key(user)
    }

    /// Those of `users` online on another node, as presence lists them
    /// (one look-up per user and node, never a scan of everyone).
    pub(in crate::hub) fn remote_listed(&self, users: &[UserId]) -> Vec<Listed> {
        let nodes = self.nodes();
        let profile = |u: &UserId| nodes.nodes.values().find_map(|n| n.users.map.get(u));
        users.iter().filter_map(profile).map(listed).collect()
    }

    pub(super) fn heard_from(&self, node: NodeId) -> bool {
        self.nodes().heard(node)
    }

    pub(super) fn remote_online(&self, node: NodeId, users: Vec<Arc<UserProfile>>) {
        for p in users {
            let was = self.online_anywhere(&p.id);
            let same_key = self.known_key(&p.id).is_none_or(|k| k == p.public_key);
            if let Some(n) = self.nodes().nodes.get_mut(&node) {
                n.users.insert(p.clone());
                if let Some(incoming) = &mut n.incoming {
                    incoming.insert(p.clone());
                }
            }
            match (was, same_key) {
                (false, _) => self.presence.changed(&listed(&p), Some(true)),
                // Online already: news only if the key is new.
                (true, false) => self.presence.changed(&listed(&p), None),
                (true, true) => {}
            }
        }
        self.presence_changed.notify_one();
    }

    /// The key this node knows `user` by, if online anywhere it knows of.
    fn known_key(&self, user: &UserId) -> Option<String> {
        if let Some(o) = self.online_map().get(user) {
            return Some(o.profile.public_key.clone());
        }
        let nodes = self.nodes();
        let mut known = nodes.nodes.values().filter_map(|n| n.users.map.get(user));
        known.next().map(|p| p.public_key.clone())
    }

    pub(super) fn remote_offline(&self, node: NodeId, users: Vec<UserId>) {
        for u in users {
            let removed = self.nodes().nodes.get_mut(&node).and_then(|n| {
                if let Some(incoming) = &mut n.incoming {
                    incoming.remove(&u);
                }
                n.users.remove(&u)
            });
            if let Some(p) = removed {
                self.went_offline_there(&p);
            }
        }
        self.presence_changed.notify_one();
    }

    /// A user of another node went offline there: offline here too
    /// unless still online somewhere.
    fn went_offline_there(&self, p: &Arc<UserProfile>) {
        if !self.online_anywhere(&p.id) {
            self.presence.changed(&listed(p), Some(false));
        }
    }

    /// A part of `node`'s snapshot; the last one replaces this node's
    /// view of it, telling local connections what changed.
    pub(super) fn remote_snapshot(
        &self,
        node: NodeId,
        part: u32,
        last: bool,
        users: Vec<Arc<UserProfile>>,
    ) {
        let replaced = {
            let mut nodes = self.nodes();
            let Some(n) = nodes.nodes.get_mut(&node) else {
                return;
            };
            let incoming = match (part, &mut n.incoming) {
                (0, slot) => slot.insert(Users::default()),
                (_, Some(incoming)) => incoming,
                // A part without its beginning: wait for the next one.
                (_, None) => return,
            };
            users.into_iter().for_each(|p| incoming.insert(p));
            if !last {
                return;
            }
            let fresh = n.incoming.take().unwrap_or_default();
            std::mem::replace(&mut n.users, fresh)
        };
        let now: Vec<Arc<UserProfile>> = {
            let nodes = self.nodes();
            let n = nodes.nodes.get(&node);
            n.map(|n| n.users.map.values().cloned().collect())
                .unwrap_or_default()
        };
        for p in &now {
            if !replaced.map.contains_key(&p.id) {
                self.presence.changed(&listed(p), Some(true));
            }
        }
        for (id, p) in &replaced.map {
            if !now.iter().any(|q| q.id == *id) {
                self.went_offline_there(p);
            }
        }
        self.presence_changed.notify_one();
    }

    /// A heartbeat: a node whose count or digest differs from this node's
    /// view of it is asked for a snapshot, at most once per node timeout.
    pub(super) fn remote_alive(&self, node: NodeId, users: u64, digest: u64) {
        let timeout = self.config.node_timeout;
        let ask = {
            let mut nodes = self.nodes();
            let Some(n) = nodes.nodes.get_mut(&node) else {
                return;
            };
            let differs = n.users.map.len() as u64 != users || n.users.digest != digest;
            let may = n.asked.is_none_or(|t| t.elapsed() >= timeout);
            if differs && may {
                n.asked = Some(Instant::now());
            }
            differs && may
        };
        if ask {
            self.announce(Announcement::Hello { to: Some(node) });
        }
    }

    pub(super) fn remote_key_changed(&self, profile: Arc<UserProfile>) {
        self.nodes().set_key(&profile);
        if let Some(o) = self.online_map().get_mut(&profile.id) {
            o.profile = profile.clone();
        }
        self.presence.changed(&listed(&profile), None);
        self.presence_changed.notify_one();
    }

    /// Tells the other nodes which users are online here: a snapshot in
    /// parts of bounded size.
    pub(super) fn introduce(&self) {
        let profiles: Vec<Arc<UserProfile>> = self
            .online_map()
            .values()
            .map(|o| o.profile.clone())
            .collect();
        let mut parts: Vec<Vec<Arc<UserProfile>>> = vec![Vec::new()];
        let mut bytes = 0;
        for p in profiles {
            let size = p.id.as_str().len() + p.name.as_str().len() + 2 * p.public_key.len() + 4;
            if bytes + size > PART_BYTES_MAX && !parts.last().is_some_and(Vec::is_empty) {
                parts.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(part) = parts.last_mut() {
                part.push(p);
            }
        }
        let count = parts.len();
        for (i, users) in parts.into_iter().enumerate() {
            let part = u32::try_from(i).unwrap_or(u32::MAX);
            let last = i + 1 == count;
            self.announce(Announcement::Snapshot { part, last, users });
        }
    }

    /// Forgets the nodes silent for longer than `node_timeout`; their
    /// users go offline here unless online elsewhere.
    pub(super) fn forget_silent_nodes(&self) {
        let timeout = self.config.node_timeout;
        let gone: Vec<(NodeId, RemoteNode)> = {
            let mut nodes = self.nodes();
            let silent: Vec<NodeId> = nodes
                .nodes
                .iter()
                .filter(|(_, n)| n.last_seen.elapsed() > timeout)
                .map(|(id, _)| *id)
                .collect();
            silent
                .into_iter()
                .filter_map(|id| nodes.nodes.remove(&id).map(|n| (id, n)))
                .collect()
        };
        for (id, node) in gone {
            tracing::warn!(node = %format!("{id:016x}"), users = node.users.map.len(), "node silent past --node-timeout-secs; its users are offline");
            for p in node.users.map.values() {
                self.went_offline_there(p);
            }
            self.presence_changed.notify_one();
        }
    }
}
