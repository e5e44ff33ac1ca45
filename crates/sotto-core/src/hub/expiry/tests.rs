//! The sweeper on paused time: a running hub (`Hub::start`, so the real
//! background task sweeps) on the in-memory store, with a clock that
//! follows tokio's. Hours of idling take milliseconds, and every check
//! reads the store or the connection's queue rather than sleeping "long
//! enough" for something to have happened.

use super::sweep_period;
use crate::auth::accounts::Accounts;
use crate::auth::password::{PasswordHasher, PasswordParams};
use crate::auth::{Token, TokenHash};
use crate::clock::Clock;
use crate::hub::conn::{CloseReason, OutboundReceiver, outbound};
use crate::hub::event::{Event, Failure};
use crate::hub::{Hub, HubConfig, Outbound, Session};
use crate::ports::memory::MemoryStore;
use crate::ports::{SessionKind, SessionStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const IDLE: Duration = Duration::from_secs(600);
const LIFETIME: Duration = Duration::from_secs(24 * 3600);

struct Running {
    hub: Arc<Hub>,
    store: Arc<MemoryStore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Running {
    async fn start(session_idle: Duration, session_lifetime: Duration) -> Running {
        let store = Arc::new(MemoryStore::new());
        let cheap = PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let hasher = PasswordHasher::new(cheap, 1, 8).await.unwrap();
        let config = HubConfig {
            session_idle,
            session_lifetime,
            ..HubConfig::default()
        };
        let limits = config.account_limits();
        let clock = Clock::starting_at(1_700_000_000_000);
        let accounts = Arc::new(Accounts::new(store.clone(), hasher, limits, clock));
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        let metrics = Arc::default();
        let hub = Hub::start(
            store.clone(),
            accounts,
            metrics,
            config,
            shutdown.clone(),
            &tasks,
        );
        Running {
            hub,
            store,
            shutdown,
            tasks,
        }
    }

    /// A registered user's fresh API token.
    async fn token(&self, name: &str) -> Token {
        let accounts = self.hub.accounts();
        let user = accounts.register(name, "pw", "").await.unwrap();
        let (token, _) = accounts
            .start_session(&user.id, SessionKind::Api)
            .await
            .unwrap();
        token
    }

    /// Opens a native connection with `token`, as the `/ws` edge does.
    async fn connect(&self, token: &Token) -> (Outbound, OutboundReceiver, Session) {
        let valid = self.hub.valid_session(token.as_str()).await.unwrap();
        let (out, rx) = outbound(64, self.hub.shutdown_token());
        let mut session = Session::Anonymous;
        self.hub
            .connect_native(&out, &mut session, valid.unwrap(), None)
            .await;
        assert!(matches!(session, Session::Authenticated { .. }));
        (out, rx, session)
    }

    /// Whether the store still holds the session, read without going
    /// through `Accounts::session` (which would record a use).
    async fn stored(&self, token: &Token) -> bool {
        let hash: TokenHash = token.hash();
        self.store.session(&hash).await.unwrap().is_some()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[test]
fn sweep_period_is_a_quarter_of_idle_within_bounds() {
    assert_eq!(
        sweep_period(Duration::from_secs(600)),
        Duration::from_secs(60)
    );
    assert_eq!(
        sweep_period(Duration::from_secs(40)),
        Duration::from_secs(10)
    );
    assert_eq!(
        sweep_period(Duration::from_millis(100)),
        Duration::from_millis(250)
    );
}

/// QMessageServer logs out a user who only receives; here an open
/// connection counts as use, and the idle clock starts when it goes.
#[tokio::test(start_paused = true)]
async fn idle_tokens_expire_but_open_connections_count_as_use() {
    let s = Running::start(IDLE, LIFETIME).await;
    let (live, gone) = (s.token("sybil").await, s.token("victor").await);
    let (out, rx, session) = s.connect(&live).await;

    tokio::time::sleep(IDLE * 3).await;
    // The sweeper deleted the unused token on its own, without a lookup.
    assert!(!s.stored(&gone).await, "an unused token expires");
    assert!(s.stored(&live).await, "an open connection is use");
    let accounts = s.hub.accounts();
    assert!(
        accounts
            .session(gone.as_str(), |_, _| false)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!out.is_closed());

    // Once the connection goes, the token idles like any other.
    s.hub.disconnected(&out, session).await;
    drop(rx);
    let second = Duration::from_secs(1);
    tokio::time::sleep(IDLE - second).await;
    assert!(s.stored(&live).await, "not idle yet");
    // Deleted by the first sweep after it is idle.
    tokio::time::sleep(sweep_period(IDLE) + second * 2).await;
    assert!(!s.stored(&live).await, "idle after the connection went");
    assert!(
        accounts
            .session(live.as_str(), |_, _| false)
            .await
            .unwrap()
            .is_none()
    );
    s.stop().await;
}

/// However busy, a session past its lifetime is closed on its live
/// connections, with the reason, and its token no longer works.
#[tokio::test(start_paused = true)]
async fn sessions_past_their_lifetime_are_closed() {
    let lifetime = Duration::from_secs(3600);
    let s = Running::start(IDLE, lifetime).await;
    let token = s.token("yolanda").await;
    let started = Instant::now();
    let (out, mut rx, _session) = s.connect(&token).await;

    out.closed().await;
    let elapsed = started.elapsed();
    assert!(elapsed > lifetime, "closed early, after {elapsed:?}");
    assert!(
        elapsed <= lifetime + sweep_period(IDLE),
        "closed late, after {elapsed:?}"
    );
    assert_eq!(rx.reason(), Some(CloseReason::SessionExpired));
    let told = std::iter::from_fn(|| rx.try_recv().ok())
        .any(|e| matches!(e, Event::Error(ref r) if r.failure == Failure::SessionExpired));
    assert!(told, "the client is told why");
    assert_eq!(s.hub.online_count(), 0, "detached");
    assert!(!s.stored(&token).await, "deleted by the sweep");
    assert!(s.hub.valid_session(token.as_str()).await.unwrap().is_none());
    s.stop().await;
}

/// Use keeps a token from idling, never from ageing: a token looked up
/// every few minutes is refused once past its lifetime, and not before.
#[tokio::test(start_paused = true)]
async fn expired_tokens_are_refused() {
    let lifetime = Duration::from_secs(3600);
    let s = Running::start(IDLE, lifetime).await;
    let token = s.token("alice").await;
    let accounts = s.hub.accounts();
    let started = Instant::now();
    while started.elapsed() < lifetime {
        let valid = accounts
            .session(token.as_str(), |_, _| false)
            .await
            .unwrap();
        assert!(valid.is_some(), "refused after {:?}", started.elapsed());
        tokio::time::sleep(IDLE / 2).await;
    }
    // Past its lifetime, before the next sweep: `Accounts::session` itself
    // refuses it, and deletes it on sight.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(s.stored(&token).await, "the sweeper has not run yet");
    assert!(
        accounts
            .session(token.as_str(), |_, _| false)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!s.stored(&token).await);
    s.stop().await;
}
