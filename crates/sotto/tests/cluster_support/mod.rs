//! Helpers of the cluster tests (`cluster.rs`, `cluster_faults.rs`):
//! nodes on a fresh PostgreSQL database and a NATS subject prefix of
//! their own, and the frames the tests wait for.
#![allow(dead_code)]

use crate::support::*;
use serde_json::Value;
use sotto_server::config::BrokerConfig;
use sotto_server::{Config, Server};
use sotto_store_postgres::testing::TestDatabase;
use std::net::SocketAddr;
use std::time::Duration;

pub const NATS: &str = "127.0.0.1:4222";
/// Short, so a silent node is noticed quickly; heartbeats every 200 ms.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether NATS answers; otherwise why the test is skipped (or a panic
/// under SOTTO_REQUIRE_SERVICES=1).
pub async fn nats_up(what: &str) -> bool {
    let addr: SocketAddr = NATS.parse().expect("address");
    let probe = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr));
    if matches!(probe.await, Ok(Ok(_))) {
        return true;
    }
    if std::env::var("SOTTO_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{what}: NATS is required (SOTTO_REQUIRE_SERVICES=1) but {NATS} does not answer");
    }
    eprintln!("skipped {what}: no NATS at {NATS}");
    false
}

/// A fresh database and NATS, or None (skipped).
pub async fn services(what: &str) -> Option<TestDatabase> {
    let db = TestDatabase::create(what).await?;
    nats_up(what).await.then_some(db)
}

/// A subject prefix no other test (or run) uses.
pub fn prefix() -> String {
    format!("t{}x{}", std::process::id(), rand::random::<u32>())
}

/// A node on `db` whose broker reaches NATS at `nats`.
pub async fn node(db: &str, nats: SocketAddr, prefix: &str) -> TestServer {
    let mut config = Config::for_tests(db);
    config.hub.presence_interval = Duration::from_millis(20);
    config.hub.node_timeout = NODE_TIMEOUT;
    config.hub.node_heartbeat = Duration::from_millis(200);
    // Long: what crosses in these tests crosses by announcement (or the
    // catch-up after a reconnect), not by the periodic check.
    config.hub.head_check = Duration::from_secs(600);
    config.broker = BrokerConfig {
        url: Some(format!("nats://{nats}")),
        prefix: prefix.to_owned(),
    };
    let server = Server::start(config).await.expect("node starts");
    let dir = tempfile::tempdir().expect("temp dir");
    TestServer { server, dir }
}

/// Two nodes on one database and one NATS prefix, both linked.
pub async fn two_nodes(db: &TestDatabase) -> (TestServer, TestServer) {
    let nats = NATS.parse().expect("address");
    let p = prefix();
    let a = node(&db.url, nats, &p).await;
    let b = node(&db.url, nats, &p).await;
    assert!(ready(&a).await && ready(&b).await, "both nodes reach NATS");
    // Each has heard the other (heartbeats), so nothing is missed below.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (a, b)
}

pub async fn readyz(s: &TestServer) -> (u16, Value) {
    let r = reqwest::get(format!("{}/readyz", s.http_base()))
        .await
        .expect("readyz");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn ready(s: &TestServer) -> bool {
    eventually(|| async { readyz(s).await.0 == 200 }).await
}

/// The body of the next message from `from` (a sender's own copies,
/// which a connection may get as messages too, are skipped).
pub async fn body_from(c: &mut Native, from: &str) -> String {
    loop {
        let m = c.recv_type("message").await;
        if m["from"] == from {
            return m["body"].as_str().expect("body").to_owned();
        }
    }
}

/// The next `presence` frame about `user`.
pub async fn presence_of(c: &mut Native, user: &str) -> bool {
    loop {
        let f = c.recv_type("presence").await;
        if f["user"] == user {
            return f["online"].as_bool().expect("online flag");
        }
    }
}
