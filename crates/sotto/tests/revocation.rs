//! Removing a device and logging out everywhere: the revoked sessions'
//! tokens stop working, their sockets close with 1000 "logged out", and
//! everyone still online is told the new device set.

mod support;

use serde_json::{Value, json};
use support::*;

/// A login of `name` with a device (key `seed`) and an open `/ws` that
/// has had its snapshot (so it is attached and told of every change).
async fn device_session(s: &TestServer, name: &str, seed: u8) -> (ApiUser, Value, Native) {
    let user = api_login(s, name).await;
    let r = add_device(s, &user, seed, &format!("device {seed}")).await;
    assert!(r.status == 201 || r.status == 200, "{}", r.json);
    let mut ws = Native::connect(s, &user.token).await;
    ws.recv_type("users").await;
    (user, r.json["device"].clone(), ws)
}

async fn me_status(s: &TestServer, token: &str) -> u16 {
    get_with_token(s, "/api/me", token).await.status
}

#[tokio::test]
async fn deleting_a_device_closes_its_sockets_and_tells_everyone() {
    let s = TestServer::start().await;
    api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let (one, d1, mut ws1) = device_session(&s, "alice", 1).await;
    let (two, d2, mut ws2) = device_session(&s, "alice", 2).await;
    let mut bob_ws = Native::connect(&s, &bob.token).await;
    bob_ws.recv_type("users").await;
    // ws1 also hears of device 2.
    ws1.recv_type("devices").await;

    let not_found = ["ffffffffffffffff", "NOT-AN-ID", "0"];
    for id in not_found {
        let r = delete_with_token(&s, &format!("/api/devices/{id}"), &two.token).await;
        assert_eq!((r.status, r.error_code()), (404, "not_found"), "{id}");
    }
    let d1_id = d1["id"].as_str().unwrap();
    let theirs = delete_with_token(&s, &format!("/api/devices/{d1_id}"), &bob.token).await;
    assert_eq!((theirs.status, theirs.error_code()), (404, "not_found"));

    let r = delete_with_token(&s, &format!("/api/devices/{d1_id}"), &two.token).await;
    assert_eq!(r.status, 204, "{}", r.json);
    assert_eq!(ws1.expect_closed().await, Some(1000));
    assert_eq!(me_status(&s, &one.token).await, 401);
    assert_eq!(me_status(&s, &two.token).await, 200);
    let told = json!({"type": "devices", "user": one.id, "devices": [d2]});
    assert_eq!(ws2.recv_type("devices").await, told);
    assert_eq!(bob_ws.recv_type("devices").await, told);
    let again = delete_with_token(&s, &format!("/api/devices/{d1_id}"), &two.token).await;
    assert_eq!(again.status, 404);

    // Deleting the session's own device logs it out too.
    let d2_id = d2["id"].as_str().unwrap();
    let r = delete_with_token(&s, &format!("/api/devices/{d2_id}"), &two.token).await;
    assert_eq!(r.status, 204);
    assert_eq!(ws2.expect_closed().await, Some(1000));
    assert_eq!(me_status(&s, &two.token).await, 401);
    let told = json!({"type": "devices", "user": one.id, "devices": []});
    assert_eq!(bob_ws.recv_type("devices").await, told);
}

#[tokio::test]
async fn logging_out_everywhere_revokes_every_session_and_device() {
    let s = TestServer::start().await;
    let first = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let (one, _, mut ws1) = device_session(&s, "alice", 1).await;
    let (two, _, mut ws2) = device_session(&s, "alice", 2).await;
    let mut compat = Client::connect(&s.chat_url()).await;
    assert_eq!(compat.login("alice", "pw-of-alice").await["valid"], true);
    let compat_token = compat.token.clone().unwrap();
    let mut bob_ws = Native::connect(&s, &bob.token).await;
    bob_ws.recv_type("users").await;

    let r = post_with_token(&s, "/api/logout-all", &first.token, json!({})).await;
    assert_eq!(r.status, 204);
    let cookie = r.header("set-cookie").unwrap();
    assert!(
        cookie.starts_with("sotto_session=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
    assert_eq!(ws1.expect_closed().await, Some(1000));
    assert_eq!(ws2.expect_closed().await, Some(1000));
    assert_eq!(compat.expect_closed().await, Some(1000));
    for token in [&first.token, &one.token, &two.token, &compat_token] {
        assert_eq!(me_status(&s, token).await, 401);
    }
    let told = json!({"type": "devices", "user": first.id, "devices": []});
    assert_eq!(bob_ws.recv_type("devices").await, told);
    // Alice goes offline with her sockets, and is shown so without the
    // devices just removed (the web client once saw them come back here).
    let offline = bob_ws.recv_type("presence").await;
    assert_eq!(offline["online"], false, "{offline}");
    assert_eq!(offline["devices"], json!([]), "{offline}");

    // A new login starts with no devices; bob's session never noticed.
    let fresh = api_login(&s, "alice").await;
    let list = get_with_token(&s, "/api/devices", &fresh.token).await;
    assert_eq!(list.json, json!({"devices": []}));
    assert_eq!(me_status(&s, &bob.token).await, 200);
    let again = post_with_token(&s, "/api/logout-all", &first.token, json!({})).await;
    assert_eq!(again.status, 401);
}
