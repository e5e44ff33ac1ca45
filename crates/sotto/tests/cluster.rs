//! Several nodes on one PostgreSQL database and one NATS server (issue
//! 12): messages and receipts cross nodes live, logout and the compat
//! log-in-again rule close sockets on the other node, presence crosses
//! and a node that goes silent has its users shown offline within the
//! node timeout, and a node that loses NATS says so and makes good what
//! it missed once NATS is back.
//!
//! Needs PostgreSQL at 127.0.0.1:5432 and NATS at 127.0.0.1:4222: each
//! test skips with a printed reason when one is absent, and fails instead
//! under SOTTO_REQUIRE_SERVICES=1. Each test has a fresh database and a
//! NATS subject prefix of its own, so tests never hear each other; the
//! shared NATS server is never stopped (a loss is a TCP relay cut).

mod impair;
mod real_binary;
mod support;

use impair::tcp::{Shape, TcpRelay};
use serde_json::{Value, json};
use sotto_server::config::BrokerConfig;
use sotto_server::{Config, Server};
use sotto_store_postgres::testing::TestDatabase;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

const NATS: &str = "127.0.0.1:4222";
/// Short, so a silent node is noticed quickly; heartbeats every 200 ms.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether NATS answers; otherwise why the test is skipped (or a panic
/// under SOTTO_REQUIRE_SERVICES=1).
async fn nats_up(what: &str) -> bool {
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
async fn services(what: &str) -> Option<TestDatabase> {
    let db = TestDatabase::create(what).await?;
    nats_up(what).await.then_some(db)
}

/// A subject prefix no other test (or run) uses.
fn prefix() -> String {
    format!("t{}x{}", std::process::id(), rand::random::<u32>())
}

/// A node on `db` whose broker reaches NATS at `nats`.
async fn node(db: &str, nats: SocketAddr, prefix: &str) -> TestServer {
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
async fn two_nodes(db: &TestDatabase) -> (TestServer, TestServer) {
    let nats = NATS.parse().expect("address");
    let p = prefix();
    let a = node(&db.url, nats, &p).await;
    let b = node(&db.url, nats, &p).await;
    assert!(ready(&a).await && ready(&b).await, "both nodes reach NATS");
    // Each has heard the other (heartbeats), so nothing is missed below.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (a, b)
}

async fn readyz(s: &TestServer) -> (u16, Value) {
    let r = reqwest::get(format!("{}/readyz", s.http_base()))
        .await
        .expect("readyz");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ready(s: &TestServer) -> bool {
    eventually(|| async { readyz(s).await.0 == 200 }).await
}

/// The body of the next message from `from` (a sender's own copies,
/// which a connection may get as messages too, are skipped).
async fn body_from(c: &mut Native, from: &str) -> String {
    loop {
        let m = c.recv_type("message").await;
        if m["from"] == from {
            return m["body"].as_str().expect("body").to_owned();
        }
    }
}

/// The next `presence` frame about `user`.
async fn presence_of(c: &mut Native, user: &str) -> bool {
    loop {
        let f = c.recv_type("presence").await;
        if f["user"] == user {
            return f["online"].as_bool().expect("online flag");
        }
    }
}

#[tokio::test]
async fn messages_and_receipts_cross_nodes_live_both_ways() {
    let Some(db) = services("messages across nodes").await else {
        return;
    };
    let (one, two) = two_nodes(&db).await;
    let alice = api_user(&one, "alice").await;
    let bob = api_user(&two, "bob").await;
    let mut a = Native::connect(&one, &alice.token).await;
    let mut b = Native::connect(&two, &bob.token).await;
    a.recv_type("users").await;
    b.recv_type("users").await;
    for round in 0..3 {
        let ack = a
            .send_message(&bob.id, &format!("a→b {round}"), &format!("a{round}"))
            .await;
        assert_eq!(ack["status"], "stored");
        let m = b.recv_type("message").await;
        assert_eq!(
            (m["from"].as_str(), m["body"].as_str()),
            (
                Some(alice.id.as_str()),
                Some(format!("a→b {round}").as_str())
            )
        );
        b.send(json!({"type": "confirm", "up_to": m["pos"]})).await;
        let delivered = a.recv_type("delivered").await;
        assert_eq!(
            (delivered["with"].as_str(), delivered["id"].as_i64()),
            (Some(bob.id.as_str()), m["id"].as_i64())
        );
        b.send(json!({"type": "read", "with": alice.id, "up_to": m["id"]}))
            .await;
        let read = a.recv_type("read").await;
        assert_eq!(read["up_to"], m["id"], "read receipt crosses to node one");

        let ack = b
            .send_message(&alice.id, &format!("b→a {round}"), &format!("b{round}"))
            .await;
        assert_eq!(ack["status"], "stored");
        assert_eq!(body_from(&mut a, &bob.id).await, format!("b→a {round}"));
    }
    one.server.shutdown().await;
    two.server.shutdown().await;
}

#[tokio::test]
async fn logout_on_one_node_closes_the_session_socket_on_the_other() {
    let Some(db) = services("logout across nodes").await else {
        return;
    };
    let (one, two) = two_nodes(&db).await;
    let alice = api_user(&one, "alice").await;
    let other = api_login(&one, "alice").await;
    let mut on_two = Native::connect(&two, &alice.token).await;
    let mut spared = Native::connect(&two, &other.token).await;
    on_two.recv_type("users").await;
    spared.recv_type("users").await;
    let out = reqwest::Client::new()
        .post(format!("{}/api/logout", one.http_base()))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status().as_u16(), 204);
    assert_eq!(
        on_two.expect_closed().await,
        Some(1000),
        "closed on node two"
    );
    // Another session of the same user stays.
    spared
        .send(json!({"type": "history", "with": alice.id}))
        .await;
    spared.recv_type("history").await;
    one.server.shutdown().await;
    two.server.shutdown().await;
}

#[tokio::test]
async fn a_compat_login_on_one_node_closes_the_compat_socket_on_the_other() {
    let Some(db) = services("compat rule across nodes").await else {
        return;
    };
    let (one, two) = two_nodes(&db).await;
    let mut first = Client::connect(&one.chat_url()).await;
    let answer = first.register("carol", "pw-carol-1").await;
    assert_eq!(answer["valid"], true, "{answer}");
    let mut second = Client::connect(&two.chat_url()).await;
    let answer = second.login("carol", "pw-carol-1").await;
    assert_eq!(answer["valid"], true, "{answer}");
    first.expect_closed().await;
    one.server.shutdown().await;
    two.server.shutdown().await;
}

#[tokio::test]
async fn presence_crosses_and_a_silent_node_s_users_go_offline() {
    let Some(db) = services("presence across nodes").await else {
        return;
    };
    // Node one reaches NATS through a relay the test can cut: to node
    // two, that is a node killed without a word.
    let relay = TcpRelay::start(
        NATS.parse().unwrap(),
        Shape::default(),
        Shape::default(),
        None,
        1,
    )
    .await;
    let p = prefix();
    let one = node(&db.url, relay.addr, &p).await;
    let two = node(&db.url, NATS.parse().unwrap(), &p).await;
    assert!(ready(&one).await && ready(&two).await);
    let alice = api_user(&one, "alice").await;
    let bob = api_user(&two, "bob").await;
    let mut b = Native::connect(&two, &bob.token).await;
    b.recv_type("users").await;
    // Presence goes to those who care: each watches the other.
    b.watch(&[&alice.id]).await;
    let mut a = Native::connect(&one, &alice.token).await;
    a.recv_type("users").await;
    let users = a.watch(&[&bob.id]).await;
    assert!(
        users.to_string().contains(&bob.id),
        "node two's user is listed on node one: {users}"
    );
    assert!(
        presence_of(&mut b, &alice.id).await,
        "alice shows online on node two"
    );
    let listed = get_with_token(&two, "/api/users", &bob.token).await;
    let entry = listed.json["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == alice.id)
        .cloned();
    assert_eq!(entry.map(|u| u["online"].clone()), Some(json!(true)));

    relay.set_down(true);
    relay.cut();
    let cut_at = tokio::time::Instant::now();
    assert!(
        !presence_of(&mut b, &alice.id).await,
        "alice shows offline on node two"
    );
    let took = cut_at.elapsed();
    assert!(
        took <= NODE_TIMEOUT + Duration::from_secs(2),
        "offline after {took:?}"
    );

    relay.set_down(false);
    assert!(
        presence_of(&mut b, &alice.id).await,
        "back online when node one returns"
    );
    drop(a);
    one.server.shutdown().await;
    two.server.shutdown().await;
}

#[tokio::test]
async fn a_node_that_loses_nats_says_so_keeps_serving_and_catches_up() {
    let Some(db) = services("NATS loss").await else {
        return;
    };
    let relay = TcpRelay::start(
        NATS.parse().unwrap(),
        Shape::default(),
        Shape::default(),
        None,
        2,
    )
    .await;
    let p = prefix();
    let one = node(&db.url, relay.addr, &p).await;
    let two = node(&db.url, NATS.parse().unwrap(), &p).await;
    assert!(ready(&one).await && ready(&two).await);
    let alice = api_user(&one, "alice").await;
    let carol = api_user(&one, "carol").await;
    let bob = api_user(&two, "bob").await;
    let mut a = Native::connect(&one, &alice.token).await;
    let mut c = Native::connect(&one, &carol.token).await;
    let mut b = Native::connect(&two, &bob.token).await;
    for n in [&mut a, &mut b, &mut c] {
        n.recv_type("users").await;
    }

    relay.set_down(true);
    relay.cut();
    let down = eventually(|| async { readyz(&one).await.0 == 503 }).await;
    assert!(down, "node one reports not ready");
    let (_, body) = readyz(&one).await;
    assert_eq!(body["status"], "broker unavailable", "{body}");
    assert!(body["down"]["broker"].is_string(), "{body}");
    assert_eq!(one.metric("sotto_broker_connected").await, 0.0);
    assert_eq!(readyz(&two).await.0, 200, "node two is fine");

    // Local delivery goes on; cross-node messages are stored.
    a.send_message(&carol.id, "local while cut", "l1").await;
    assert_eq!(body_from(&mut c, &alice.id).await, "local while cut");
    let ack = a.send_message(&bob.id, "to bob while cut", "x1").await;
    assert_eq!(ack["status"], "stored");
    let ack = b.send_message(&alice.id, "to alice while cut", "y1").await;
    assert_eq!(ack["status"], "stored");

    relay.set_down(false);
    assert!(ready(&one).await, "node one recovers by itself");
    assert_eq!(one.metric("sotto_broker_connected").await, 1.0);
    assert_eq!(body_from(&mut b, &alice.id).await, "to bob while cut");
    assert_eq!(body_from(&mut a, &bob.id).await, "to alice while cut");
    // And live traffic crosses again.
    a.send_message(&bob.id, "after", "x2").await;
    assert_eq!(body_from(&mut b, &alice.id).await, "after");
    assert!(one.metric("sotto_broker_announcements_dropped_total").await >= 1.0);
    one.server.shutdown().await;
    two.server.shutdown().await;
}

#[tokio::test]
async fn readyz_names_the_database_when_it_is_down() {
    let Some(db) = services("database loss in /readyz").await else {
        return;
    };
    let pg: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    if !db.url.contains("@127.0.0.1:5432/") {
        eprintln!("skipped database loss in /readyz: the test database is not at {pg}");
        return;
    }
    let relay = TcpRelay::start(pg, Shape::default(), Shape::default(), None, 3).await;
    let url = db
        .url
        .replace("@127.0.0.1:5432/", &format!("@{}/", relay.addr));
    let one = node(&url, NATS.parse().unwrap(), &prefix()).await;
    assert!(ready(&one).await);
    relay.set_down(true);
    relay.cut();
    let down = eventually(|| async { readyz(&one).await.0 == 503 }).await;
    assert!(down, "not ready without its database");
    let (_, body) = readyz(&one).await;
    assert_eq!(body["status"], "store unavailable", "{body}");
    assert!(body["down"]["database"].is_string(), "{body}");
    assert!(body["down"].get("broker").is_none(), "NATS is fine: {body}");
    relay.set_down(false);
    assert!(ready(&one).await, "ready again once the database is back");
    one.server.shutdown().await;
}

#[tokio::test]
async fn a_killed_node_s_users_go_offline_and_their_messages_wait() {
    let Some(db) = services("a killed node").await else {
        return;
    };
    let p = prefix();
    let two = node(&db.url, NATS.parse().unwrap(), &p).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = format!("nats://{NATS}");
    let args = [
        "--database",
        &db.url,
        "--broker",
        &nats,
        "--broker-prefix",
        &p,
        "--node-timeout-secs",
        "2",
        "--disable-dtls",
    ];
    let one = real_binary::Sotto::start(dir.path(), &args).await;
    let alice = api_user(&two, "alice").await;
    let bob = api_user(&two, "bob").await;
    let mut b = Native::connect(&two, &bob.token).await;
    b.recv_type("users").await;
    b.watch(&[&alice.id]).await;
    let (ws, _) = upgrade(&one.ws_url(), Cred::Bearer(&alice.token), None)
        .await
        .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"));
    let mut a = Native { ws };
    a.recv_type("users").await;
    assert!(
        presence_of(&mut b, &alice.id).await,
        "alice, on the binary, shows online on node two"
    );

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &one.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let at = tokio::time::Instant::now();
    assert!(
        !presence_of(&mut b, &alice.id).await,
        "offline after the kill"
    );
    let took = at.elapsed();
    assert!(
        took <= NODE_TIMEOUT + Duration::from_secs(2),
        "offline after {took:?}"
    );

    b.send_message(&alice.id, "while you were away", "w1").await;
    drop(a);
    let mut again = Native::connect(&two, &alice.token).await;
    assert_eq!(body_from(&mut again, &bob.id).await, "while you were away");
    two.server.shutdown().await;
}

#[tokio::test]
async fn a_key_change_on_one_node_reaches_the_other() {
    let Some(db) = services("key change across nodes").await else {
        return;
    };
    let (one, two) = two_nodes(&db).await;
    let alice = api_user(&one, "alice").await;
    let bob = api_user(&two, "bob").await;
    let mut b = Native::connect(&two, &bob.token).await;
    b.recv_type("users").await;
    b.watch(&[&alice.id]).await;
    let mut a = Native::connect(&one, &alice.token).await;
    a.recv_type("users").await;
    assert!(presence_of(&mut b, &alice.id).await);
    a.send(json!({"type": "set_key", "public_key": "a new key"}))
        .await;
    let changed = b.recv_type("key_changed").await;
    assert_eq!(
        (changed["user"].as_str(), changed["public_key"].as_str()),
        (Some(alice.id.as_str()), Some("a new key"))
    );
    let users = get_with_token(&two, "/api/users", &bob.token).await;
    assert!(
        users.json.to_string().contains("a new key"),
        "{}",
        users.json
    );
    one.server.shutdown().await;
    two.server.shutdown().await;
}

#[tokio::test]
async fn a_node_shut_down_gracefully_says_goodbye_for_its_users() {
    let Some(db) = services("graceful leave").await else {
        return;
    };
    let (one, two) = two_nodes(&db).await;
    let alice = api_user(&one, "alice").await;
    let bob = api_user(&two, "bob").await;
    let mut b = Native::connect(&two, &bob.token).await;
    b.recv_type("users").await;
    b.watch(&[&alice.id]).await;
    let _a = Native::connect(&one, &alice.token).await;
    assert!(presence_of(&mut b, &alice.id).await);
    let at = tokio::time::Instant::now();
    one.server.shutdown().await;
    assert!(!presence_of(&mut b, &alice.id).await);
    let took = at.elapsed();
    assert!(
        took < NODE_TIMEOUT,
        "goodbye, not the node timeout: {took:?}"
    );
    two.server.shutdown().await;
}

#[tokio::test]
async fn a_device_registered_on_one_node_is_told_on_the_other() {
    let Some(db) = services("devices across nodes").await else {
        return;
    };
    let (one, two) = two_nodes(&db).await;
    let alice = api_user(&one, "alice").await;
    let bob = api_user(&two, "bob").await;
    let mut b = Native::connect(&two, &bob.token).await;
    b.recv_type("users").await;
    b.watch(&[&alice.id]).await;
    let r = add_device(&one, &alice, 7, "laptop").await;
    assert_eq!(r.status, 201);
    let f = b.recv_type("devices").await;
    assert_eq!(
        f,
        json!({"type": "devices", "user": alice.id, "devices": [r.json["device"]]})
    );
    one.server.shutdown().await;
    two.server.shutdown().await;
}
