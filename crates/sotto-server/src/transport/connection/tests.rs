//! The connection loop's clocks (login deadline, heartbeat, session
//! lifetime) on tokio's paused time, without a socket: `run` drives a
//! WebSocket over an in-memory duplex pipe against a real hub on the
//! in-memory store. A duplex pipe involves no I/O driver, so paused time
//! auto-advances whenever every task waits, and a test of a ten-minute
//! heartbeat takes milliseconds. Times are read from tokio's clock and
//! checked against the configured values, so a deadline that fires early
//! or late fails the test.

use super::{Start, WsLimits, run, ws_config};
use crate::config::EdgeConfig;
use crate::transport::Edge;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sotto_core::auth::UserId;
use sotto_core::auth::accounts::Accounts;
use sotto_core::auth::password::{PasswordHasher, PasswordParams};
use sotto_core::clock::Clock;
use sotto_core::hub::{Hub, HubConfig};
use sotto_core::ports::SessionKind;
use sotto_core::ports::memory::MemoryStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const DEADLINE: Duration = Duration::from_secs(10);
const HEARTBEAT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough that it never interferes unless a test shortens it.
const NEVER: Duration = Duration::from_secs(100 * 24 * 3600);

/// A hub with its background tasks and an edge, as the server wires them.
struct Node {
    hub: Arc<Hub>,
    edge: Edge,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Node {
    async fn start(session_lifetime: Duration) -> Node {
        let store = Arc::new(MemoryStore::new());
        let cheap = PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let hasher = PasswordHasher::new(cheap, 1, 8).await.unwrap();
        let config = HubConfig {
            session_lifetime,
            ..HubConfig::default()
        };
        let limits = config.account_limits();
        // Anchored now, it then follows tokio's (paused) clock.
        let accounts = Accounts::new(store.clone(), hasher, limits, Clock::system());
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        let metrics = Arc::default();
        let hub = Hub::start(
            store,
            Arc::new(accounts),
            Arc::clone(&metrics),
            config,
            shutdown.clone(),
            &tasks,
        );
        let edge_config = EdgeConfig {
            login_deadline: DEADLINE,
            ..EdgeConfig::default()
        };
        let edge = Edge::new(edge_config, 64, metrics);
        Node {
            hub,
            edge,
            shutdown,
            tasks,
        }
    }

    /// Runs a server connection over one end of a pipe; `client` wraps the
    /// other end (the test decides whether its answers reach the server).
    async fn open<C>(
        &self,
        start: Start,
        heartbeat: Duration,
        client: impl FnOnce(tokio::io::DuplexStream) -> C,
    ) -> (WebSocketStream<C>, JoinHandle<()>)
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let (server_end, client_end) = tokio::io::duplex(64 * 1024);
        let limits = WsLimits {
            max_message: 64 * 1024,
            outbound_queue: 64,
            outbound_bytes: 1 << 20,
            write_timeout: WRITE_TIMEOUT,
            handshake_timeout: Duration::from_secs(5),
            heartbeat,
        };
        let config = Some(ws_config(&limits));
        let server = WebSocketStream::from_raw_socket(server_end, Role::Server, config).await;
        let peer = "192.0.2.1:40000".parse().unwrap();
        let task = tokio::spawn(run(
            server,
            peer,
            self.hub.clone(),
            self.edge.clone(),
            limits,
            start,
        ));
        let client = WebSocketStream::from_raw_socket(client(client_end), Role::Client, None).await;
        (client, task)
    }

    /// A `/ws` connection of a freshly registered user, authorized as the
    /// upgrade handler would.
    async fn native(&self, name: &str) -> Start {
        self.native_user(name).await.0
    }

    /// [`native`](Self::native), with the user's id.
    async fn native_user(&self, name: &str) -> (Start, UserId) {
        let accounts = self.hub.accounts();
        let user = accounts.register(name, "pw", "").await.unwrap();
        let (token, _) = accounts
            .start_session(&user.id, SessionKind::Api)
            .await
            .unwrap();
        let valid = self.hub.valid_session(token.as_str()).await.unwrap();
        let start = Start::Native(valid.expect("a fresh token is valid"), None);
        (start, user.id)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn compat() -> Start {
    Start::Compat {
        unauthenticated: None,
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next text frame as JSON, skipping compat user lists (event 4),
/// which presence broadcasts send at any time.
async fn recv<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["event"] != 4 {
                    return v;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The close code the server sent, skipping whatever came before it.
async fn close_code<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> CloseCode {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_never_logs_in_is_closed_at_the_deadline() {
    let node = Node::start(NEVER).await;
    let started = Instant::now();
    let (mut idle, task) = node.open(compat(), NEVER, |io| io).await;
    assert_eq!(close_code(&mut idle).await, CloseCode::Policy);
    let elapsed = started.elapsed();
    assert!(elapsed >= DEADLINE, "closed early, after {elapsed:?}");
    assert!(
        elapsed < DEADLINE + Duration::from_millis(50),
        "closed late, after {elapsed:?}"
    );
    task.await.unwrap();
    let closed = node
        .edge
        .metrics
        .login_deadline_closed
        .load(Ordering::Relaxed);
    assert_eq!(closed, 1);
    node.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_logged_in_socket_is_not_closed_by_the_deadline() {
    let node = Node::start(NEVER).await;
    let (mut ws, task) = node.open(compat(), NEVER, |io| io).await;
    send(
        &mut ws,
        json!({"action": 1, "name": "alice", "password": "pw", "pubKey": "k"}),
    )
    .await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["valid"], true, "{answer}");
    // Well past the deadline: nothing but user lists arrives.
    let quiet = tokio::time::timeout(DEADLINE * 3, recv(&mut ws)).await;
    assert!(quiet.is_err(), "unexpected {quiet:?}");
    assert!(!task.is_finished());
    let token = answer["token"].as_str().unwrap();
    send(&mut ws, json!({"action": 4, "token": token})).await;
    assert_eq!(recv(&mut ws).await["valid"], true);
    assert_eq!(
        node.edge
            .metrics
            .login_deadline_closed
            .load(Ordering::Relaxed),
        0
    );
    drop(ws);
    task.await.unwrap();
    node.stop().await;
}

/// A peer that vanished without closing: it reads (so the test sees the
/// ping), but nothing it writes, pongs included, reaches the server.
#[tokio::test(start_paused = true)]
async fn silent_peers_are_pinged_and_dropped() {
    let node = Node::start(NEVER).await;
    let start = node.native("silent").await;
    let started = Instant::now();
    let mute = |io| {
        let (read, _write) = tokio::io::split(io);
        tokio::io::join(read, tokio::io::sink())
    };
    let (mut silent, task) = node.open(start, HEARTBEAT, mute).await;
    assert_eq!(recv(&mut silent).await["type"], "users");
    assert_eq!(node.hub.online_count(), 1);
    let ping = silent.next().await;
    assert!(matches!(ping, Some(Ok(Message::Ping(_)))), "{ping:?}");
    let pinged = started.elapsed();
    assert!(pinged >= HEARTBEAT, "pinged early, after {pinged:?}");
    assert!(
        pinged < HEARTBEAT + Duration::from_millis(50),
        "pinged late, after {pinged:?}"
    );
    task.await.unwrap();
    let dropped = started.elapsed();
    assert!(dropped >= HEARTBEAT * 2, "dropped early, after {dropped:?}");
    assert!(
        dropped < HEARTBEAT * 2 + Duration::from_millis(50),
        "dropped late, after {dropped:?}"
    );
    assert_eq!(node.hub.online_count(), 0, "detached");
    node.stop().await;
}

#[tokio::test(start_paused = true)]
async fn peers_that_answer_pings_stay_connected() {
    let node = Node::start(NEVER).await;
    let start = node.native("alive").await;
    let (mut ws, task) = node.open(start, HEARTBEAT, |io| io).await;
    // tungstenite answers each ping as the client reads.
    let pings = Arc::new(AtomicUsize::new(0));
    let seen = pings.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_ping() {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    tokio::time::sleep(HEARTBEAT * 20).await;
    assert!(!task.is_finished(), "dropped a peer that answers");
    assert_eq!(node.hub.online_count(), 1);
    // One ping per quiet heartbeat, each answered.
    let pings = pings.load(Ordering::Relaxed);
    assert!((19..=20).contains(&pings), "{pings} pings");
    reader.abort();
    let _ = reader.await;
    task.await.unwrap();
    node.stop().await;
}

/// The hub's lifetime sweep reaches the wire: the compat client is told
/// why, then closed with 1008.
#[tokio::test(start_paused = true)]
async fn a_session_past_its_lifetime_is_closed_with_policy() {
    let lifetime = Duration::from_secs(3600);
    let node = Node::start(lifetime).await;
    let started = Instant::now();
    let (mut ws, task) = node.open(compat(), NEVER, |io| io).await;
    send(
        &mut ws,
        json!({"action": 1, "name": "yolanda", "password": "pw", "pubKey": "k"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["valid"], true);
    let told = recv(&mut ws).await;
    assert_eq!(
        told,
        json!({"valid": false, "event": 3, "error": "Session expired."})
    );
    assert!(
        started.elapsed() > lifetime,
        "after {:?}",
        started.elapsed()
    );
    assert_eq!(close_code(&mut ws).await, CloseCode::Policy);
    task.await.unwrap();
    node.stop().await;
}

/// A user who stopped reading, and one who sends to them: the server side
/// of the pipe fills (64 KiB), and the deaf user's writer blocks.
/// Returns the deaf client's end, the connection's task, and the ids of
/// the sender and the deaf user.
async fn deaf_and_sender(
    node: &Node,
) -> (WebSocketStream<DuplexStream>, JoinHandle<()>, [UserId; 2]) {
    let (start, deaf) = node.native_user("deaf").await;
    let (mut ws, task) = node.open(start, NEVER, |io| io).await;
    assert_eq!(recv(&mut ws).await["type"], "users");
    let sender = node
        .hub
        .accounts()
        .register("loud", "pw", "")
        .await
        .unwrap();
    let body = "x".repeat(30_000);
    // 240 KB: well under the byte limit, well over what the pipe holds.
    for _ in 0..8 {
        let sent = node.hub.device_send(&sender.id, &deaf, &body).await;
        assert!(sent.is_ok(), "{sent:?}");
    }
    (ws, task, [sender.id, deaf])
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_dropped_at_the_write_deadline() {
    let node = Node::start(NEVER).await;
    let started = Instant::now();
    // Kept open and unread: only the deadline can end the connection.
    let (_deaf, task, _) = deaf_and_sender(&node).await;
    task.await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= WRITE_TIMEOUT, "dropped early, after {elapsed:?}");
    assert!(
        elapsed < WRITE_TIMEOUT + Duration::from_millis(50),
        "dropped late, after {elapsed:?}"
    );
    assert_eq!(node.hub.online_count(), 0, "detached");
    node.stop().await;
}

/// The close signal reaches a writer blocked on a full socket: closed by
/// the server (shutdown here; a logout or an expiry likewise), it ends
/// within the close grace, long before the write deadline.
#[tokio::test(start_paused = true)]
async fn a_writer_blocked_on_a_full_socket_notices_the_close() {
    let node = Node::start(NEVER).await;
    let (_deaf, task, _) = deaf_and_sender(&node).await;
    let started = Instant::now();
    node.hub.shutdown_token().cancel();
    task.await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed <= super::writer::CLOSE_GRACE + Duration::from_millis(50),
        "ended after {elapsed:?}"
    );
    node.stop().await;
}
