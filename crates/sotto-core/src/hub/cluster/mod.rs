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
//!
//! The other nodes' users are kept in `nodes`.

mod nodes;

pub(super) use nodes::Nodes;

use super::conn::CloseReason;
use super::{Hub, Protocol};
use crate::auth::{TokenHash, UserId};
use crate::broker::{Announcement, Envelope, Incoming, NodeId, digest_of};
use std::sync::Arc;
use std::time::Duration;

/// Local users whose store head one periodic check compares.
const CHECK_BATCH: usize = 512;
/// User ids in one goodbye announcement (7 bytes each on the wire).
const OFFLINE_BATCH: usize = 10_000;

impl Hub {
    /// Sends `announcement` to the other nodes (never waits).
    pub(super) fn announce(&self, announcement: Announcement) {
        self.broker.publish(Envelope {
            node: self.node,
            announcement,
        });
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
        let known = self.heard_from(node);
        match announcement {
            Announcement::Inbox { user, up_to } => self.nudge(&user, up_to),
            Announcement::Online { users } if known => self.remote_online(node, users),
            Announcement::Offline { users } if known => self.remote_offline(node, users),
            Announcement::Alive { users, digest } if known => {
                self.remote_alive(node, users, digest)
            }
            Announcement::Snapshot { part, last, users } if known => {
                self.remote_snapshot(node, part, last, users)
            }
            Announcement::Hello { to: None } => self.hello_from(node),
            Announcement::Hello { to: Some(n) } if n == self.node => self.introduce(),
            Announcement::Revoked { session } => {
                self.close_session_here(&session, CloseReason::LoggedOut);
            }
            Announcement::KeyChanged { profile } => self.remote_key_changed(profile),
            Announcement::DevicesChanged { user } => {
                if let Some(hub) = self.me.upgrade() {
                    self.tasks
                        .spawn(async move { hub.devices_changed_here(&user).await });
                }
            }
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

    /// Closes every connection here authenticated with `hash`; returns how
    /// many. Scans every connection here (only the matches are cloned):
    /// for a session whose user is known, use
    /// [`Hub::close_user_session_here`].
    pub(super) fn close_session_here(&self, hash: &TokenHash, reason: CloseReason) -> usize {
        let closed: Vec<(UserId, super::Live)> = {
            let map = self.online_map();
            map.iter()
                .flat_map(|(u, o)| o.conns.iter().map(move |l| (u, l)))
                .filter(|(_, l)| l.token_hash() == Some(*hash))
                .map(|(u, l)| (u.clone(), l.clone()))
                .collect()
        };
        for (user, live) in &closed {
            self.detach(user, live.out.id());
            live.out.close(reason);
        }
        closed.len()
    }

    /// [`Hub::close_session_here`] for a session of `user`: a connection's
    /// user is its session's, so only `user`'s connections can match.
    /// Every compat login revokes its user's previous session; scanning
    /// all connections for it made a login storm quadratic.
    pub(super) fn close_user_session_here(
        &self,
        user: &UserId,
        hash: &TokenHash,
        reason: CloseReason,
    ) -> usize {
        let closed: Vec<super::Live> = self
            .conns_of(user)
            .into_iter()
            .filter(|l| l.token_hash() == Some(*hash))
            .collect();
        for live in &closed {
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
                    self.heartbeat();
                    self.forget_silent_nodes();
                }
                _ = check.tick() => cursor = self.check_batch(cursor).await,
            }
        }
    }

    /// Says goodbye before a graceful shutdown: the other nodes show this
    /// node's users offline now rather than after the node timeout.
    pub fn leave_cluster(&self) {
        let users: Vec<UserId> = self.online_map().keys().cloned().collect();
        for users in users.chunks(OFFLINE_BATCH) {
            let users = users.to_vec();
            self.announce(Announcement::Offline { users });
        }
    }

    /// Tells the others this node is alive, with its users' count and
    /// digest.
    fn heartbeat(&self) {
        let (users, digest) = {
            let map = self.online_map();
            (map.len() as u64, digest_of(map.keys()))
        };
        self.announce(Announcement::Alive { users, digest });
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
