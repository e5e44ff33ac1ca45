//! Several nodes on one database: what the hub announces through the
//! [`Broker`](crate::broker::Broker) and what it does with the others'
//! announcements.
//!
//! - **Inbox**: after its own fan-out the hub announces "user U has
//!   entries up to P"; a node with connections of U makes them catch up
//!   from the store (see `feed`). A lost announcement is made good by the
//!   next one for U, by the periodic check of the store's heads for local
//!   users (bounded per tick), and by a full check after a reconnect.
//! - **Presence**: each node announces its users' comings and goings and
//!   heartbeats; a user is online if online on any node. A node silent
//!   for `node_timeout` is forgotten and its users go offline here.
//! - **Closing sockets**: revoked sessions and the compat log-in-again
//!   rule close the matching sockets on every node.

use super::conn::CloseReason;
use super::{Hub, Protocol};
use crate::auth::{TokenHash, UserId};
use crate::broker::{Announcement, Envelope, Incoming, NodeId};
use crate::ports::UserProfile;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Other nodes remembered at most; announcements from more are ignored
/// (a cluster is a handful of nodes, and the broker is not a place for
/// strangers).
const NODES_MAX: usize = 256;
/// Local users whose store head one periodic check compares.
const CHECK_BATCH: usize = 512;
/// Bytes of profiles in one `Online` announcement (NATS's default
/// payload limit is 1 MiB).
const ONLINE_BYTES_MAX: usize = 256 * 1024;

/// What this node knows of the others.
#[derive(Default)]
pub(super) struct Nodes {
    nodes: HashMap<NodeId, RemoteNode>,
}

struct RemoteNode {
    last_seen: Instant,
    users: HashMap<UserId, Arc<UserProfile>>,
    /// When this node last asked it for its users.
    asked: Option<Instant>,
}

impl Nodes {
    pub(super) fn is_online(&self, user: &UserId) -> bool {
        self.nodes.values().any(|n| n.users.contains_key(user))
    }

    /// The users online elsewhere, each once.
    pub(super) fn profiles(&self) -> Vec<Arc<UserProfile>> {
        let mut seen = HashMap::new();
        for n in self.nodes.values() {
            for (u, p) in &n.users {
                seen.entry(u).or_insert_with(|| p.clone());
            }
        }
        seen.into_values().collect()
    }

    /// The entry of `node`, made if new (None past [`NODES_MAX`]).
    fn touch(&mut self, node: NodeId) -> Option<&mut RemoteNode> {
        if !self.nodes.contains_key(&node) && self.nodes.len() >= NODES_MAX {
            return None;
        }
        let n = self.nodes.entry(node).or_insert_with(|| RemoteNode {
            last_seen: Instant::now(),
            users: HashMap::new(),
            asked: None,
        });
        n.last_seen = Instant::now();
        Some(n)
    }
}

impl Hub {
    /// Sends `announcement` to the other nodes (never waits).
    pub(super) fn announce(&self, announcement: Announcement) {
        self.broker.publish(Envelope {
            node: self.node,
            announcement,
        });
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `user` is online on another node.
    pub(super) fn online_elsewhere(&self, user: &UserId) -> bool {
        self.nodes().is_online(user)
    }

    /// The profiles of users online on other nodes but not here.
    pub(super) fn remote_profiles(&self) -> Vec<Arc<UserProfile>> {
        let remote = self.nodes().profiles();
        let map = self.online_map();
        remote
            .into_iter()
            .filter(|p| !map.contains_key(&p.id))
            .collect()
    }

    /// Handles the other nodes' announcements until shutdown or until
    /// the broker has nothing more to say (a single node's).
    pub(super) async fn listen(self: Arc<Hub>) {
        let mut incoming = self.broker.subscribe();
        self.announce(Announcement::Hello { to: None });
        loop {
            let next = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                next = incoming.recv() => next,
            };
            match next {
                None => return,
                Some(Incoming::Reconnected) => self.reconnected().await,
                Some(Incoming::Announcement(e)) if e.node != self.node => self.received(e),
                Some(Incoming::Announcement(_)) => {}
            }
        }
    }

    fn received(&self, e: Envelope) {
        let Envelope { node, announcement } = e;
        let known = self.nodes().touch(node).is_some();
        match announcement {
            Announcement::Inbox { user, up_to } => self.nudge(&user, up_to),
            Announcement::Online { users } if known => self.remote_online(node, users),
            Announcement::Offline { users } if known => self.remote_offline(node, users),
            Announcement::Alive { users } if known => self.remote_alive(node, users),
            Announcement::Hello { to: None } => self.hello_from(node),
            Announcement::Hello { to: Some(n) } if n == self.node => self.introduce(),
            Announcement::Revoked { session } => {
                self.close_session_here(&session, CloseReason::LoggedOut);
            }
            Announcement::KeyChanged { profile } => self.remote_key_changed(profile),
            Announcement::DevicesChanged { .. } => {}
            Announcement::CloseCompat { user } => self.close_compat_here(&user, None),
            _ => {}
        }
    }

    /// Makes the connections of `user` here catch up to `up_to`.
    pub(super) fn nudge(&self, user: &UserId, up_to: i64) {
        for live in self.conns_of(user) {
            if live.feed.behind(up_to) {
                self.start_catch_up(user.clone(), live);
            }
        }
    }

    fn remote_online(&self, node: NodeId, users: Vec<Arc<UserProfile>>) {
        for p in users {
            let was = self.online_elsewhere(&p.id) || self.online_map().contains_key(&p.id);
            if let Some(n) = self.nodes().nodes.get_mut(&node) {
                n.users.insert(p.id.clone(), p.clone());
            }
            self.presence.changed(&p, (!was).then_some(true));
        }
        self.presence_changed.notify_one();
    }

    fn remote_offline(&self, node: NodeId, users: Vec<UserId>) {
        for u in users {
            let removed = self
                .nodes()
                .nodes
                .get_mut(&node)
                .and_then(|n| n.users.remove(&u));
            if let Some(p) = removed {
                self.went_offline_there(&p);
            }
        }
        self.presence_changed.notify_one();
    }

    /// A user of another node went offline there: offline here too
    /// unless still online somewhere.
    fn went_offline_there(&self, p: &Arc<UserProfile>) {
        if !self.online_elsewhere(&p.id) && !self.online_map().contains_key(&p.id) {
            self.presence.changed(p, Some(false));
        }
    }

    /// A heartbeat: a node whose count differs from what this node knows
    /// of it (an announcement was lost) is asked for its users, at most
    /// once per node timeout.
    fn remote_alive(&self, node: NodeId, users: u64) {
        let timeout = self.config.node_timeout;
        let ask = {
            let mut nodes = self.nodes();
            let Some(n) = nodes.nodes.get_mut(&node) else {
                return;
            };
            let differs = n.users.len() as u64 != users;
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

    /// A node (re)joined: it is told who is here, and since whatever it
    /// announced while it was away is lost, every local user is checked
    /// against the store.
    fn hello_from(&self, node: NodeId) {
        tracing::info!(node = %format!("{node:016x}"), "broker: a node (re)joined");
        self.introduce();
        if let Some(hub) = self.me.upgrade() {
            self.tasks.spawn(async move { hub.check_all_heads().await });
        }
    }

    /// Tells the other nodes which users are online here, in announcements
    /// of bounded size.
    fn introduce(&self) {
        let profiles: Vec<Arc<UserProfile>> = self
            .online_map()
            .values()
            .map(|o| o.profile.clone())
            .collect();
        let mut batch = Vec::new();
        let mut bytes = 0;
        for p in profiles {
            bytes += p.id.as_str().len() + p.name.as_str().len() + 2 * p.public_key.len() + 4;
            batch.push(p);
            if bytes >= ONLINE_BYTES_MAX {
                self.announce(Announcement::Online {
                    users: std::mem::take(&mut batch),
                });
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.announce(Announcement::Online { users: batch });
        }
    }

    fn remote_key_changed(&self, profile: Arc<UserProfile>) {
        for n in self.nodes().nodes.values_mut() {
            if let Some(p) = n.users.get_mut(&profile.id) {
                *p = profile.clone();
            }
        }
        if let Some(o) = self.online_map().get_mut(&profile.id) {
            o.profile = profile.clone();
        }
        self.presence.changed(&profile, None);
        self.presence_changed.notify_one();
    }

    /// Closes every connection here authenticated with `hash`; returns how
    /// many.
    pub(super) fn close_session_here(&self, hash: &TokenHash, reason: CloseReason) -> usize {
        let closed: Vec<(UserId, super::Live)> = {
            let map = self.online_map();
            map.iter()
                .flat_map(|(u, o)| o.conns.iter().map(move |l| (u.clone(), l.clone())))
                .filter(|(_, l)| l.token_hash() == Some(*hash))
                .collect()
        };
        for (user, live) in &closed {
            self.detach(user, live.out.id());
            live.out.close(reason);
        }
        closed.len()
    }

    /// Closes the compat connection of `user` here, unless it is `keep`.
    pub(super) fn close_compat_here(&self, user: &UserId, keep: Option<super::ConnId>) {
        let replaced = self
            .conns_of(user)
            .into_iter()
            .find(|l| l.protocol == Protocol::Compat && Some(l.out.id()) != keep);
        if let Some(old) = replaced {
            tracing::info!(user = %user, "closing previous compat connection");
            self.detach(user, old.out.id());
            old.out.close(CloseReason::Replaced);
        }
    }

    /// After the link to the other nodes came back: every local user is
    /// caught up from the store, the others hear who is here, and are
    /// asked who is there.
    async fn reconnected(&self) {
        tracing::info!("broker link up: catching local users up from the store");
        self.announce(Announcement::Hello { to: None });
        self.introduce();
        self.check_all_heads().await;
    }

    /// Compares every local user's inbox head with the store, one at a
    /// time.
    async fn check_all_heads(&self) {
        let users: Vec<UserId> = self.online_map().keys().cloned().collect();
        for user in users {
            if self.shutdown.is_cancelled() {
                return;
            }
            self.check_head(&user).await;
        }
    }

    /// Compares `user`'s inbox head in the store with what their
    /// connections here were sent.
    async fn check_head(&self, user: &UserId) {
        if let Ok(state) = self.store.inbox_state(user).await {
            self.nudge(user, state.head);
        }
    }

    /// Heartbeats and forgets silent nodes every `node_heartbeat`, and
    /// checks a bounded batch of local users' heads every `head_check`,
    /// until shutdown.
    pub(super) async fn keep_in_touch(self: Arc<Hub>) {
        let mut beat = tokio::time::interval(self.config.node_heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(self.config.head_check);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cursor: Option<UserId> = None;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = beat.tick() => {
                    let users = self.online_count() as u64;
                    self.announce(Announcement::Alive { users });
                    self.forget_silent_nodes();
                }
                _ = check.tick() => cursor = self.check_batch(cursor).await,
            }
        }
    }

    fn forget_silent_nodes(&self) {
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
            tracing::warn!(node = %format!("{id:016x}"), users = node.users.len(), "node silent past --node-timeout-secs; its users are offline");
            for p in node.users.values() {
                self.went_offline_there(p);
            }
            self.presence_changed.notify_one();
        }
    }

    /// Checks the heads of up to [`CHECK_BATCH`] local users after
    /// `cursor` in id order, wrapping around; returns the next cursor.
    async fn check_batch(&self, cursor: Option<UserId>) -> Option<UserId> {
        let mut users: Vec<UserId> = self.online_map().keys().cloned().collect();
        users.sort_unstable();
        let start = cursor.map_or(0, |c| users.partition_point(|u| *u <= c));
        let batch: Vec<UserId> = users.into_iter().skip(start).take(CHECK_BATCH).collect();
        for user in &batch {
            self.check_head(user).await;
        }
        // A short batch reached the end: start over next time.
        (batch.len() == CHECK_BATCH)
            .then(|| batch.last().cloned())
            .flatten()
    }
}

/// How often a node heartbeats by default.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
