//! `/metrics` after known traffic: the counters say what the test did.

mod support;

use support::*;

#[tokio::test]
async fn counters_match_the_traffic() {
    let s = TestServer::start().await;
    let mut a = registered(&s, "alice").await;
    let mut b = registered(&s, "bob").await;
    let b_id = b.id.clone().unwrap();
    for i in 0..3 {
        a.message(&b_id, &format!("live {i}")).await;
        b.recv_message().await;
    }
    let mut wrong = Client::connect(&s.chat_url()).await;
    assert_eq!(wrong.login("alice", "nope").await["valid"], false);

    let carol = api_user(&s, "carol").await;
    let dave = api_user(&s, "dave").await;
    let mut c = Native::connect(&s, &carol.token).await;
    for i in 0..2 {
        assert_eq!(
            c.send_message(&dave.id, "x", &format!("c{i}")).await["status"],
            "stored"
        );
    }
    let mut d = Native::connect(&s, &dave.token).await;
    d.recv_type("message").await;
    let second = d.recv_type("message").await;
    // Delivered means confirmed by the client (compat: flushed to it).
    d.send(serde_json::json!({"type": "confirm", "up_to": second["pos"]}))
        .await;
    let _ = upgrade(&s.ws_url(), Cred::Bearer("nope"), None).await;

    let expect = [
        ("sotto_messages_routed_total", 5.0),
        ("sotto_messages_stored_total", 5.0),
        ("sotto_messages_delivered_total", 5.0),
        ("sotto_message_route_seconds_count", 5.0),
        // registered(): 2 compat registers; the wrong login; 2 API
        // registers and 2 API logins.
        ("sotto_login_attempts_total", 7.0),
        ("sotto_login_failures_total", 1.0),
        ("sotto_upgrades_total{outcome=\"accepted\"}", 2.0),
        ("sotto_upgrades_total{outcome=\"unauthorized\"}", 1.0),
        ("sotto_upgrade_seconds_count", 2.0),
        ("sotto_authenticated_connections", 4.0),
        ("sotto_online_users", 4.0),
        ("sotto_unauthenticated_chat_connections", 1.0),
    ];
    // Some counters move just after the response the test waited for.
    let server = &s;
    for (name, value) in expect {
        let settled = eventually(|| async move { server.metric(name).await == value }).await;
        assert!(settled, "{name}: {} != {value}", s.metric(name).await);
    }
    drop(c);
}
