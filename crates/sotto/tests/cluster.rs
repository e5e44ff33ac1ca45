//! Several nodes on one PostgreSQL database and one NATS server (issue
//! 12), all of them up: messages and receipts cross nodes live, logout
//! and the compat log-in-again rule close sockets on the other node, key
//! and device changes reach it, and a node shut down gracefully says
//! goodbye for its users. Faults are in `cluster_faults.rs`.
//!
//! Needs PostgreSQL at 127.0.0.1:5432 and NATS at 127.0.0.1:4222: each
//! test skips with a printed reason when one is absent, and fails instead
//! under SOTTO_REQUIRE_SERVICES=1. Each test has a fresh database and a
//! NATS subject prefix of its own, so tests never hear each other.

mod cluster_support;
mod support;

use cluster_support::*;
use serde_json::json;
use support::*;

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
