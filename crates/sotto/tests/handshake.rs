//! Authorization at the WebSocket handshake on `/ws`: every refusal is an
//! HTTP status on the upgrade response, never a close frame, and refused
//! attempts leave no connection or task behind.

mod support;

use futures_util::StreamExt;
use std::time::Duration;
use support::*;

const BAD_TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn assert_unauthorized(r: Result<impl Sized, (u16, serde_json::Value)>, what: &str) {
    match r {
        Ok(_) => panic!("{what}: upgrade accepted"),
        Err((status, body)) => {
            assert_eq!(status, 401, "{what}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
        }
    }
}

#[tokio::test]
async fn upgrade_statuses() {
    let s = TestServer::start().await;
    let url = s.ws_url();
    let alice = api_user(&s, "alice").await;

    assert_unauthorized(upgrade(&url, Cred::None, None).await, "no credential");
    assert_unauthorized(
        upgrade(&url, Cred::Bearer(BAD_TOKEN), None).await,
        "unknown token",
    );
    assert_unauthorized(
        upgrade(&url, Cred::Bearer("short"), None).await,
        "malformed token",
    );
    assert_unauthorized(
        upgrade(&url, Cred::Cookie(BAD_TOKEN), None).await,
        "bad cookie",
    );
    assert_unauthorized(
        upgrade(&url, Cred::Subprotocol(BAD_TOKEN), None).await,
        "bad subprotocol",
    );

    // The 401 says how to authenticate.
    let raw = http_raw(
        s.server.http_addr(),
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert_eq!(raw.0, 401);
    assert_eq!(header(&raw.1, "www-authenticate"), Some("Bearer"));
    assert_eq!(header(&raw.1, "connection"), Some("close"));

    // A page of another site may not ride the cookie.
    let foreign = upgrade(
        &url,
        Cred::Cookie(&alice.token),
        Some("http://evil.example"),
    )
    .await;
    match foreign {
        Err((403, body)) => assert_eq!(body["error"]["code"], "forbidden_origin"),
        other => panic!("foreign origin: {:?}", other.map(|_| ()).err()),
    }
    let own = format!("http://{}", s.server.http_addr());
    assert!(
        upgrade(&url, Cred::Cookie(&alice.token), Some(&own))
            .await
            .is_ok()
    );

    let (_ws, resp) = upgrade(&url, Cred::Bearer(&alice.token), None)
        .await
        .expect("header");
    assert_eq!(resp.status(), 101);
    let (_ws, resp) = upgrade(&url, Cred::Cookie(&alice.token), None)
        .await
        .expect("cookie");
    assert_eq!(resp.status(), 101);
    let (_ws, resp) = upgrade(&url, Cred::Subprotocol(&alice.token), None)
        .await
        .expect("subprotocol");
    assert_eq!(resp.status(), 101);
    let selected = resp.headers().get("sec-websocket-protocol").unwrap();
    assert_eq!(
        selected, "sotto.v1",
        "only sotto.v1 is selected, never the token"
    );

    // Revoked: after logout the same token is refused.
    let r = reqwest::Client::new()
        .post(format!("{}/api/logout", s.http_base()))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_unauthorized(
        upgrade(&url, Cred::Bearer(&alice.token), None).await,
        "revoked",
    );
}

#[tokio::test]
async fn logout_closes_that_sessions_sockets_within_a_second() {
    let s = TestServer::start().await;
    let phone = api_user(&s, "alice").await;
    let laptop = api_login(&s, "alice").await;
    let mut a1 = Native::connect(&s, &phone.token).await;
    let mut a2 = Native::connect(&s, &phone.token).await;
    let mut other = Native::connect(&s, &laptop.token).await;
    for c in [&mut a1, &mut a2, &mut other] {
        c.recv_type("users").await;
    }
    let r = reqwest::Client::new()
        .post(format!("{}/api/logout", s.http_base()))
        .bearer_auth(&phone.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("Max-Age=0"),
        "logout clears the cookie: {cookie}"
    );
    for c in [&mut a1, &mut a2] {
        let closed = tokio::time::timeout(Duration::from_secs(1), c.expect_closed()).await;
        assert_eq!(closed.expect("closed within a second"), Some(1000));
    }
    // The user's other session is untouched.
    let bob = api_user(&s, "bob").await;
    let mut b = Native::connect(&s, &bob.token).await;
    b.recv_type("users").await;
    b.send_message(&phone.id, "still there?", "c1").await;
    assert_eq!(other.recv_type("message").await["body"], "still there?");
}

/// 2,000 upgrade attempts with bad tokens, 50 at a time, while a real
/// client keeps chatting: every attempt gets a 401, the client is served
/// throughout, and afterwards the server holds no connection and no task
/// for any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upgrades_leave_nothing_behind() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut a = Native::connect(&s, &alice.token).await;
    let mut b = Native::connect(&s, &bob.token).await;
    a.recv_type("users").await;
    b.recv_type("users").await;
    let tasks_before = s.metric("sotto_tasks").await;

    let url = s.ws_url();
    let attempts = futures_util::stream::iter(0..2000)
        .map(|i| {
            let url = url.clone();
            async move {
                let token = format!("{i:064x}");
                match upgrade(&url, Cred::Bearer(&token), None).await {
                    Err((status, _)) => status,
                    Ok(_) => 101,
                }
            }
        })
        .buffer_unordered(50);
    let chat = async {
        for i in 0..20 {
            let ack = a
                .send_message(&bob.id, &format!("m{i}"), &format!("c{i}"))
                .await;
            assert_eq!(ack["status"], "stored");
            assert_eq!(b.recv_type("message").await["body"], format!("m{i}"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (statuses, ()) = tokio::join!(attempts.collect::<Vec<u16>>(), chat);
    assert_eq!(statuses.len(), 2000);
    assert!(
        statuses.iter().all(|&st| st == 401),
        "every attempt is a 401"
    );

    // Give the last refused sockets a moment to be dropped by both sides.
    let mut tcp = 0.0;
    for _ in 0..50 {
        // Two WebSockets plus the scrape's own connection, exactly: the
        // WebSockets hold their slots after the upgrade.
        tcp = s.metric("sotto_tcp_connections").await;
        if tcp == 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tcp, 3.0, "connections left: {tcp}");
    assert_eq!(s.metric("sotto_authenticated_connections").await, 2.0);
    // Tasks that finish on their own (a feed's catch-up, a connection's
    // writer draining its last frame) may still be running at the scrape:
    // wait for them, boundedly. A task leaked per refused upgrade would
    // leave hundreds behind, never one.
    let mut tasks = 0.0;
    for _ in 0..50 {
        tasks = s.metric("sotto_tasks").await;
        if tasks <= tasks_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tasks, tasks_before, "no task left");
    assert_eq!(
        s.metric("sotto_upgrades_total{outcome=\"unauthorized\"}")
            .await,
        2000.0
    );
}
