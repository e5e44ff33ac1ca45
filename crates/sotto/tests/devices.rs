//! The device directory over real HTTP and /ws, on a real SQLite file:
//! registration and its refusals, deletion, log out everywhere, and the
//! `devices` frames that tell every online session.

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

#[tokio::test]
async fn a_session_registers_one_device_and_a_new_login_finds_it_by_key() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let r = add_device(&s, &alice, 1, "Firefox").await;
    assert_eq!(r.status, 201, "{}", r.json);
    let device = r.json["device"].clone();
    let id = device["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 16);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(device["public_key"], device_key(1));
    assert_eq!(device["name"], "Firefox");
    assert!(device["created_at"].as_i64().unwrap() > 1_700_000_000_000);

    // The same key again, from this session or a new login: same device.
    let again = add_device(&s, &alice, 1, "renamed").await;
    assert_eq!((again.status, &again.json["device"]), (200, &device));
    let second = api_login(&s, "alice").await;
    let rebound = add_device(&s, &second, 1, "Firefox").await;
    assert_eq!((rebound.status, &rebound.json["device"]), (200, &device));
    let me = get_with_token(&s, "/api/me", &second.token).await;
    assert_eq!(me.json["device"], device);

    // Another key from a session that has one: 409.
    let other = add_device(&s, &alice, 2, "Chrome").await;
    assert_eq!((other.status, other.error_code()), (409, "device_exists"));
    let third = api_login(&s, "alice").await;
    let chrome = add_device(&s, &third, 2, "Chrome").await;
    assert_eq!(chrome.status, 201);
    let list = get_with_token(&s, "/api/devices", &third.token).await;
    let seen: Vec<_> = list.json["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d["current"].as_bool().unwrap()))
        .collect();
    assert_eq!(seen, [("Firefox", false), ("Chrome", true)]);
}

#[tokio::test]
async fn bad_keys_and_names_are_refused_and_the_limit_holds() {
    let s = TestServer::start_with(|c| c.hub.max_devices_per_user = 2).await;
    let alice = api_user(&s, "alice").await;
    let short = base64url(&[4u8; 64]);
    let compressed = base64url(&[2u8; 65]);
    let padded = format!("{}=", device_key(1));
    for key in [short.as_str(), &compressed, &padded, "", "not base64!"] {
        let body = json!({"public_key": key, "name": "x"});
        let r = post_with_token(&s, "/api/devices", &alice.token, body).await;
        assert_eq!((r.status, r.error_code()), (400, "invalid"), "{key}");
    }
    for name in ["", "line\nbreak", &"n".repeat(65)] {
        let body = json!({"public_key": device_key(1), "name": name});
        let r = post_with_token(&s, "/api/devices", &alice.token, body).await;
        assert_eq!((r.status, r.error_code()), (400, "invalid"), "{name:?}");
    }
    let extra = json!({"public_key": device_key(1), "name": "x", "admin": true});
    let r = post_with_token(&s, "/api/devices", &alice.token, extra).await;
    assert_eq!(r.status, 400);
    let anon = post_json(
        &s,
        "/api/devices",
        json!({"public_key": device_key(1), "name": "x"}),
    )
    .await;
    assert_eq!(anon.status, 401);

    assert_eq!(add_device(&s, &alice, 1, "one").await.status, 201);
    let b = api_login(&s, "alice").await;
    assert_eq!(add_device(&s, &b, 2, "two").await.status, 201);
    let c = api_login(&s, "alice").await;
    let r = add_device(&s, &c, 3, "three").await;
    assert_eq!((r.status, r.error_code()), (409, "too_many_devices"));
    // An existing key still binds at the limit.
    assert_eq!(add_device(&s, &c, 1, "one").await.status, 200);
}

#[tokio::test]
async fn everyone_online_is_told_when_a_users_devices_change() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut bob_ws = Native::connect(&s, &bob.token).await;
    let mut alice_ws = Native::connect(&s, &alice.token).await;
    // The snapshot comes just before a connection is attached: from then
    // on it is told of every change.
    for ws in [&mut bob_ws, &mut alice_ws] {
        ws.recv_type("users").await;
    }
    let r = add_device(&s, &alice, 7, "laptop").await;
    assert_eq!(r.status, 201);
    for ws in [&mut bob_ws, &mut alice_ws] {
        let f = ws.recv_type("devices").await;
        assert_eq!(
            f,
            json!({"type": "devices", "user": alice.id, "devices": [r.json["device"]]})
        );
    }
    // A re-bind changes nothing: no frame.
    add_device(&s, &alice, 7, "laptop").await;
    bob_ws
        .expect_no("devices", Duration::from_millis(300))
        .await;

    // Users and presence entries carry the devices.
    let mut carol_ws = Native::connect(&s, &api_user(&s, "carol").await.token).await;
    let users = carol_ws.recv_type("users").await;
    let entry = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == alice.id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(entry["devices"], json!([r.json["device"]]));
    drop(alice_ws);
    let gone = carol_ws.recv_type("presence").await;
    let gone = if gone["user"] == alice.id.as_str() {
        gone
    } else {
        carol_ws.recv_type("presence").await
    };
    assert_eq!(
        (gone["online"].as_bool(), &gone["devices"]),
        (Some(false), &json!([r.json["device"]]))
    );
    let dir = get_with_token(&s, &format!("/api/users/{}", alice.id), &bob.token).await;
    assert_eq!(dir.json["devices"], json!([r.json["device"]]));
}

/// Device writes count against the user's send limits: a client cannot
/// make the server write at will.
#[tokio::test]
async fn device_writes_count_against_the_send_limits() {
    use std::num::NonZeroU32;
    let s = TestServer::start_with(|c| {
        c.hub.send_limits = sotto_core::hub::SendLimits {
            per_second: NonZeroU32::new(1),
            burst: NonZeroU32::new(2).unwrap(),
            bytes_per_minute: None,
        };
    })
    .await;
    let alice = api_user(&s, "alice").await;
    assert_eq!(add_device(&s, &alice, 1, "one").await.status, 201);
    assert_eq!(add_device(&s, &alice, 1, "one").await.status, 200);
    let r = add_device(&s, &alice, 1, "one").await;
    assert_eq!((r.status, r.error_code()), (429, "rate_limited"));
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = delete_with_token(&s, "/api/devices/0123456789abcdef", &alice.token).await;
    assert_eq!(r.status, 429);
}

/// Device writes and log out everywhere are state changes: a page of
/// another origin cannot make them with the user's cookie.
#[tokio::test]
async fn other_origins_cannot_change_devices() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let client = reqwest::Client::new();
    let base = s.http_base();
    let cookie = format!("sotto_session={}", alice.token);
    let attempts = [
        client
            .post(format!("{base}/api/devices"))
            .json(&json!({"public_key": device_key(1), "name": "x"})),
        client.delete(format!("{base}/api/devices/0123456789abcdef")),
        client.post(format!("{base}/api/logout-all")),
    ];
    for attempt in attempts {
        let r = attempt
            .header("cookie", &cookie)
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        let r = reply(r).await;
        assert_eq!((r.status, r.error_code()), (403, "forbidden_origin"));
    }
    assert_eq!(
        get_with_token(&s, "/api/me", &alice.token).await.status,
        200
    );
}
