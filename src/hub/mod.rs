//! The hub: sessions, presence, routing and the offline queue.
//!
//! Transports hand it parsed requests together with the connection's
//! [`Outbound`] and [`Session`]; it answers by pushing encoded frames into
//! outbound queues. It never sees a socket, so a WebSocket, a DTLS device
//! and (later) a peer node are all the same to it.
//!
//! State: `online` maps each user to the one connection bound to it (the
//! compat protocol allows one per user). It sits behind a plain mutex that is
//! only ever held for a map operation, never across an `.await`. Everything
//! durable lives in the [`Store`].

mod accounts;
pub mod conn;
mod delivery;
mod expiry;
mod presence;

use crate::auth::{PasswordHasher, TokenHash, UserId};
use crate::protocol::compat::{self, Event, Request};
use crate::store::{Store, UserProfile};
pub use conn::{CloseReason, ConnId, Outbound, OutboundReceiver, PushError, Session, TextFrame};
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
    /// Messages kept for one offline user before senders get an error.
    pub offline_queue_max: u32,
    /// Presence changes within this window become one broadcast.
    pub presence_interval: Duration,
    /// Most entries sent in one compat `users` list.
    pub user_list_max: usize,
    /// Longest accepted `pubKey`, in bytes.
    pub public_key_max: usize,
    /// Longest accepted password, in bytes.
    pub password_max: usize,
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
        }
    }
}

/// The connection bound to a user.
#[derive(Debug, Clone)]
struct Online {
    out: Outbound,
    profile: Arc<UserProfile>,
    token_hash: TokenHash,
    session_created_at: i64,
}

pub struct Hub {
    store: Arc<dyn Store>,
    hasher: PasswordHasher,
    config: HubConfig,
    online: Mutex<HashMap<UserId, Online>>,
    /// Serializes "is this user online, else store" against "flush stored
    /// messages, then go online" for the same user, so nothing sent while a
    /// user comes online is lost or overtakes older messages.
    stripes: delivery::Stripes,
    presence_changed: Notify,
    shutdown: CancellationToken,
}

impl Hub {
    /// Builds the hub and starts its background tasks (presence broadcast,
    /// session expiry) on `tasks`; they stop when `shutdown` is cancelled.
    pub fn start(
        store: Arc<dyn Store>,
        hasher: PasswordHasher,
        config: HubConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            store,
            hasher,
            config,
            online: Mutex::new(HashMap::new()),
            stripes: delivery::Stripes::new(),
            presence_changed: Notify::new(),
            shutdown,
        });
        tasks.spawn(presence::run(hub.clone()));
        tasks.spawn(expiry::run(hub.clone()));
        hub
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Number of users with a bound connection.
    pub fn online_count(&self) -> usize {
        self.online_map().len()
    }

    /// Handles one compat request from `out`'s connection.
    pub async fn handle_compat(&self, out: &Outbound, session: &mut Session, request: Request) {
        match request {
            Request::Login(c) => self.login(out, session, c, false).await,
            Request::Register(c) => self.login(out, session, c, true).await,
            Request::Logout { token } => self.logout(out, session, &token).await,
            Request::Message {
                token,
                target,
                message,
            } => self.message(out, session, &token, &target, &message).await,
            Request::Authorize { token } => self.authorize(out, session, &token).await,
        }
    }

    /// Called once by the transport when a connection ends, however it ends.
    pub async fn disconnected(&self, out: &Outbound, session: Session) {
        let Session::Authenticated { user, token } = session else {
            return;
        };
        if self.unbind_if(&user, out.id()).is_some() {
            // The idle clock starts when the last connection goes.
            let now = now_ms();
            if let Err(e) = self.store.touch_sessions(&[token.hash()], now).await {
                tracing::error!(error = %e, "cannot record session use at disconnect");
            }
        }
    }

    /// Writes every live session's last use; called at shutdown so that a
    /// restart does not make open connections look idle.
    pub async fn flush_sessions(&self) {
        let hashes: Vec<TokenHash> = self.online_map().values().map(|o| o.token_hash).collect();
        if let Err(e) = self.store.touch_sessions(&hashes, now_ms()).await {
            tracing::error!(error = %e, "cannot record session use at shutdown");
        }
    }

    fn online_map(&self) -> MutexGuard<'_, HashMap<UserId, Online>> {
        // A panic while holding this lock would be a bug elsewhere; the map
        // itself is still consistent, so keep serving rather than cascade.
        self.online.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn online_outbound(&self, user: &UserId) -> Option<Outbound> {
        self.online_map().get(user).map(|o| o.out.clone())
    }

    /// Removes `user`'s binding if it belongs to connection `conn`.
    fn unbind_if(&self, user: &UserId, conn: ConnId) -> Option<Online> {
        let removed = {
            let mut map = self.online_map();
            match map.get(user) {
                Some(o) if o.out.id() == conn => map.remove(user),
                _ => None,
            }
        };
        if removed.is_some() {
            self.presence_changed.notify_one();
        }
        removed
    }

    /// Sends `frame` on the connection itself; a failure means it is closing.
    fn reply(&self, out: &Outbound, frame: String) {
        let _ = out.push(TextFrame::from(frame));
    }

    fn reply_error(&self, out: &Outbound, event: Option<Event>, error: &str) {
        self.reply(out, compat::error_response(event, error));
    }
}

/// Wall-clock unix milliseconds: session times must survive restarts, so a
/// monotonic clock will not do.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
