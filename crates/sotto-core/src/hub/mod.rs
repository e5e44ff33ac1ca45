//! The hub: sessions, presence, routing and the offline queue.
//!
//! Transports hand it parsed requests together with the connection's
//! [`Outbound`] and [`Session`]; it answers by pushing typed [`Event`]s
//! into outbound queues, which each edge encodes in its own protocol. It
//! never sees a socket or builds a frame, so a WebSocket of either
//! protocol, a DTLS device and (later) a peer node are all the same to it.
//!
//! State: `online` maps each user to their live connections: at most one
//! compat connection (QMessageServer allows one per user) and any number of
//! native ones (one per browser tab or device). It sits behind a plain mutex
//! that is only held for a map operation, never across an `.await`.
//! Everything durable lives in the [`Store`].

mod cluster;
mod compat;
mod compat_view;
pub mod conn;
mod delivery;
mod device;
mod e2e;
pub mod event;
mod expiry;
mod feed;
mod interest;
mod native;
mod online;
mod presence;
mod send_limit;
#[cfg(test)]
mod tests;

use crate::auth::accounts::{AccountLimits, Accounts};
use crate::auth::{TokenHash, UserId};
use crate::broker::{Broker, BrokerState, LocalBroker, NodeId};
use crate::ports::{Store, UserProfile};
pub use conn::{CloseReason, ConnId, Outbound, OutboundReceiver, PushError, QueueLimit, Session};
pub use e2e::Member;
pub use event::{Event, Failure};
pub use send_limit::SendLimits;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The hub's limits and timings; see `Config` for the option names.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// A token unused for this long is de-authorized (an open connection
    /// counts as use).
    pub session_idle: Duration,
    /// A token older than this is de-authorized however much it is used.
    pub session_lifetime: Duration,
    /// Undelivered messages kept for one user before senders get an error.
    pub offline_queue_max: u32,
    /// Presence changes within this window become one broadcast.
    pub presence_interval: Duration,
    /// Most entries sent in one user list.
    pub user_list_max: usize,
    /// Longest accepted public key, in bytes.
    pub public_key_max: usize,
    /// Longest accepted password, in bytes.
    pub password_max: usize,
    /// Messages older than this are deleted from history.
    pub history_retention: Duration,
    /// How much one user may send, all protocols together.
    pub send_limits: SendLimits,
    /// How often this node tells the others it is alive (with a broker).
    pub node_heartbeat: Duration,
    /// How often a bounded batch of local users' inbox heads is compared
    /// with the store (with a broker), for announcements that were lost.
    pub head_check: Duration,
    /// A node silent this long is taken for dead: its users go offline.
    pub node_timeout: Duration,
    /// End-to-end devices one user may register (default 16).
    pub max_devices_per_user: u32,
}

impl HubConfig {
    /// The part of these settings the accounts enforce.
    pub fn account_limits(&self) -> AccountLimits {
        AccountLimits {
            password_max: self.password_max,
            public_key_max: self.public_key_max,
            session_idle: self.session_idle,
            session_lifetime: self.session_lifetime,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            session_idle: Duration::from_secs(600),
            session_lifetime: Duration::from_secs(30 * 24 * 3600),
            offline_queue_max: 1000,
            presence_interval: Duration::from_millis(250),
            user_list_max: 1000,
            public_key_max: 16 * 1024,
            password_max: 1024,
            history_retention: Duration::from_secs(90 * 24 * 3600),
            send_limits: SendLimits::default(),
            node_heartbeat: cluster::HEARTBEAT,
            head_check: Duration::from_secs(5),
            node_timeout: Duration::from_secs(10),
            max_devices_per_user: 16,
        }
    }
}

/// Which protocol a connection speaks: decides which events it gets and
/// which encoding cache of a shared event its edge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// QMessageServer's protocol on the chat port.
    Compat,
    /// sotto's own protocol on `/ws`.
    Native,
    /// A DTLS device: receives stored messages only, as typed values.
    Device,
}

/// One live connection of a user.
#[derive(Debug, Clone)]
struct Live {
    out: Outbound,
    protocol: Protocol,
    /// The token session it was opened with; None for a DTLS device, which
    /// authenticates by pre-shared key instead.
    session: Option<LiveSession>,
    /// Its place in the user's inbox.
    feed: Arc<feed::Feed>,
    /// Compat: the version of the user list it last got (see
    /// `compat_view`), so an unchanged list is not sent again, and when
    /// it may get the next one during a storm (see `presence`).
    listed: Arc<presence::Listing>,
}

#[derive(Debug, Clone, Copy)]
struct LiveSession {
    token_hash: TokenHash,
    created_at: i64,
}

impl LiveSession {
    fn of(token: &crate::auth::Token, created_at: i64) -> LiveSession {
        LiveSession {
            token_hash: token.hash(),
            created_at,
        }
    }
}

impl Live {
    fn token_hash(&self) -> Option<TokenHash> {
        self.session.map(|s| s.token_hash)
    }
}

/// What a hub is made of besides its settings.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub accounts: Arc<Accounts>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The other nodes ([`LocalBroker`] when there are none).
    pub broker: Arc<dyn Broker>,
}

/// A user who has at least one live connection.
#[derive(Debug)]
struct OnlineUser {
    profile: Arc<UserProfile>,
    /// Their end-to-end devices, loaded when they came online and
    /// replaced whenever the set changes (see `e2e`).
    devices: event::Devices,
    conns: Vec<Live>,
}

impl OnlineUser {
    fn listed(&self) -> event::Listed {
        event::Listed {
            profile: self.profile.clone(),
            devices: self.devices.clone(),
        }
    }
}

pub struct Hub {
    store: Arc<dyn Store>,
    accounts: Arc<Accounts>,
    metrics: Arc<crate::metrics::Metrics>,
    config: HubConfig,
    online: Mutex<HashMap<UserId, OnlineUser>>,
    /// Writes on their way to the store, in order (see `delivery`).
    writes: delivery::WriteQueue,
    /// The hub itself, for the tasks it spawns.
    me: std::sync::Weak<Hub>,
    /// Where those tasks run: stopped and awaited at shutdown.
    tasks: TaskTracker,
    /// Per-user send limits, checked before a message is routed.
    senders: send_limit::Senders,
    presence: presence::Changes,
    presence_changed: Notify,
    /// Whose presence each native connection gets.
    interest: interest::Interest,
    /// Serializes device-set announcements (see `e2e`).
    device_changes: tokio::sync::Mutex<()>,
    /// Device-set announcements so far.
    device_epoch: std::sync::atomic::AtomicU64,
    shutdown: CancellationToken,
    /// How this node talks to the others sharing its database.
    broker: Arc<dyn Broker>,
    /// This hub's id among them.
    node: NodeId,
    /// Who is online on the other nodes.
    nodes: Mutex<cluster::Nodes>,
}

impl Hub {
    /// Builds the hub and starts its background tasks (presence broadcast,
    /// session expiry, retention) on `tasks`; they stop when `shutdown` is
    /// cancelled.
    pub fn start(
        store: Arc<dyn Store>,
        accounts: Arc<Accounts>,
        metrics: Arc<crate::metrics::Metrics>,
        config: HubConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Hub> {
        let parts = Parts {
            store,
            accounts,
            metrics,
            broker: Arc::new(LocalBroker::default()),
        };
        Hub::start_with(parts, config, shutdown, tasks)
    }

    /// [`Hub::start`] with a broker to the other nodes: also listens to
    /// them and heartbeats.
    pub fn start_with(
        parts: Parts,
        config: HubConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Hub> {
        let (hub, committed) = Hub::build(parts, config, shutdown, tasks);
        tasks.spawn(presence::run(hub.clone()));
        tasks.spawn(expiry::run(hub.clone()));
        tasks.spawn(hub.clone().dispatch(committed));
        if hub.broker.state() != BrokerState::Local {
            tasks.spawn(hub.clone().listen());
            tasks.spawn(hub.clone().keep_in_touch());
        }
        hub
    }

    /// The hub without its background tasks; the caller spawns at least
    /// the dispatcher (tests leave presence and expiry to themselves).
    fn build(
        parts: Parts,
        config: HubConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> (Arc<Hub>, tokio::sync::mpsc::Receiver<delivery::Submitted>) {
        let Parts {
            store,
            accounts,
            metrics,
            broker,
        } = parts;
        let senders = send_limit::Senders::new(config.send_limits);
        let (writes, committed) = delivery::WriteQueue::new();
        let list_max = config.user_list_max;
        let hub = Arc::new_cyclic(|me| Hub {
            store,
            accounts,
            metrics,
            config,
            online: Mutex::new(HashMap::new()),
            writes,
            me: me.clone(),
            tasks: tasks.clone(),
            senders,
            presence: presence::Changes::new(list_max),
            presence_changed: Notify::new(),
            interest: interest::Interest::default(),
            device_changes: tokio::sync::Mutex::new(()),
            device_epoch: std::sync::atomic::AtomicU64::new(0),
            shutdown,
            broker,
            node: rand::random(),
            nodes: Mutex::default(),
        });
        (hub, committed)
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    /// Unix milliseconds from the accounts' clock, so sessions and
    /// messages agree on what time it is.
    pub fn now_ms(&self) -> i64 {
        self.accounts.clock().now_ms()
    }

    /// Number of users with at least one live connection.
    pub fn online_count(&self) -> usize {
        self.online_map().len()
    }

    /// Number of live authenticated connections.
    pub fn connection_count(&self) -> usize {
        self.online_map().values().map(|u| u.conns.len()).sum()
    }

    /// Whether the store answers, for readiness checks.
    pub async fn store_ping(&self) -> Result<(), crate::ports::StoreError> {
        self.store.ping().await
    }

    /// Called once by the transport when a connection ends, however it ends.
    pub async fn disconnected(&self, out: &Outbound, session: Session) {
        let Session::Authenticated { user, token } = session else {
            return;
        };
        if self.detach(&user, out.id()).is_some() {
            // The idle clock starts when the connection goes.
            if let Err(e) = self
                .store
                .touch_sessions(&[token.hash()], self.now_ms())
                .await
            {
                tracing::error!(error = %e, "cannot record session use at disconnect");
            }
        }
    }

    /// Closes every live connection authenticated with `hash` (its token was
    /// revoked), on this node and the others; returns how many here.
    pub fn close_session(&self, hash: &TokenHash, reason: CloseReason) -> usize {
        self.announce(crate::broker::Announcement::Revoked { session: *hash });
        self.close_session_here(hash, reason)
    }

    /// [`Hub::close_session`] for a session known to belong to `user`:
    /// looks at their connections only, not at every one here.
    pub fn close_user_session(
        &self,
        user: &UserId,
        hash: &TokenHash,
        reason: CloseReason,
    ) -> usize {
        self.announce(crate::broker::Announcement::Revoked { session: *hash });
        self.close_user_session_here(user, hash, reason)
    }

    /// The broker's link to the other nodes, for `/readyz`.
    pub fn broker_state(&self) -> BrokerState {
        self.broker.state()
    }

    /// The broker's counters, for `/metrics`.
    pub fn broker_stats(&self) -> &crate::broker::BrokerStats {
        self.broker.stats()
    }

    /// Writes every live session's last use; called at shutdown so that a
    /// restart does not make open connections look idle.
    pub async fn flush_sessions(&self) {
        let hashes = self.live_token_hashes();
        if let Err(e) = self.store.touch_sessions(&hashes, self.now_ms()).await {
            tracing::error!(error = %e, "cannot record session use at shutdown");
        }
    }

    fn live_token_hashes(&self) -> Vec<TokenHash> {
        let map = self.online_map();
        map.values()
            .flat_map(|o| o.conns.iter().filter_map(Live::token_hash))
            .collect()
    }

    fn online_map(&self) -> MutexGuard<'_, HashMap<UserId, OnlineUser>> {
        // A panic while holding this lock would be a bug elsewhere; the map
        // itself is still consistent, so keep serving rather than cascade.
        self.online.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live connections of `user` (cloned handles).
    fn conns_of(&self, user: &UserId) -> Vec<Live> {
        self.online_map()
            .get(user)
            .map(|o| o.conns.clone())
            .unwrap_or_default()
    }

    /// Whether a connection is using this session right now.
    fn is_live(&self, user: &UserId, hash: &TokenHash) -> bool {
        self.online_map()
            .get(user)
            .is_some_and(|o| o.conns.iter().any(|l| l.token_hash() == Some(*hash)))
    }

    /// Adds a connection; announces the user if it is their first.
    /// `devices` is used only when it is: a user already online keeps the
    /// set `e2e` keeps up to date.
    fn attach(&self, profile: Arc<UserProfile>, devices: event::Devices, live: Live) {
        let (came_online, listed) = {
            let mut map = self.online_map();
            let entry = map.entry(profile.id.clone()).or_insert_with(|| OnlineUser {
                profile: profile.clone(),
                devices,
                conns: Vec::new(),
            });
            entry.profile = profile.clone();
            entry.conns.push(live);
            (entry.conns.len() == 1, entry.listed())
        };
        if came_online {
            let users = vec![profile.clone()];
            self.announce(crate::broker::Announcement::Online { users });
        }
        // Already online on another node: others here know.
        let news = came_online && !self.online_elsewhere(&profile.id);
        self.presence.changed(&listed, news.then_some(true));
        self.presence_changed.notify_one();
    }

    /// Removes connection `conn` of `user`; announces the user as gone if it
    /// was their last.
    fn detach(&self, user: &UserId, conn: ConnId) -> Option<Live> {
        self.interest.leave(user, conn);
        let (removed, profile) = {
            let mut map = self.online_map();
            let entry = map.get_mut(user)?;
            let pos = entry.conns.iter().position(|l| l.out.id() == conn)?;
            let removed = entry.conns.swap_remove(pos);
            let gone = entry.conns.is_empty().then(|| entry.listed());
            if gone.is_some() {
                map.remove(user);
            }
            (removed, gone)
        };
        if let Some(p) = profile {
            let users = vec![p.id.clone()];
            self.announce(crate::broker::Announcement::Offline { users });
            if !self.online_elsewhere(&p.id) {
                self.presence.changed(&p, Some(false));
            }
        }
        self.presence_changed.notify_one();
        Some(removed)
    }

    /// Answers on the connection itself; a failure means it is closing.
    fn reply(&self, out: &Outbound, event: Event) {
        let _ = out.push(event);
    }

    fn reply_error(&self, out: &Outbound, failure: Failure) {
        self.reply(out, Event::error(failure));
    }
}
