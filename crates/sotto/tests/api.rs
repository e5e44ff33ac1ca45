//! The HTTP account API: real HTTP client, real server, real SQLite.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn register_login_me_and_users() {
    let s = TestServer::start().await;
    let r = post_json(
        &s,
        "/api/register",
        json!({"name": "Alice", "password": "pw-of-Alice", "public_key": "ka"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json, json!({"id": id, "name": "Alice"}));
    assert_eq!(r.header("content-type"), Some("application/json"));

    let taken = post_json(
        &s,
        "/api/register",
        json!({"name": "alice", "password": "x"}),
    )
    .await;
    assert_eq!((taken.status, taken.error_code()), (409, "name_taken"));
    let bad = post_json(
        &s,
        "/api/register",
        json!({"name": "no spaces!", "password": "x"}),
    )
    .await;
    assert_eq!((bad.status, bad.error_code()), (400, "invalid"));

    let r = post_json(
        &s,
        "/api/login",
        json!({"name": "alice", "password": "pw-of-Alice"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let token = r.json["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 64);
    assert_eq!(r.json["user"], json!({"id": id, "name": "Alice"}));
    assert!(r.json["expires_at"].as_i64().unwrap() > 1_700_000_000_000);
    let cookie = r.header("set-cookie").unwrap();
    assert!(
        cookie.starts_with(&format!("sotto_session={token};")),
        "{cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Secure"), "no Secure without TLS");

    let wrong = post_json(
        &s,
        "/api/login",
        json!({"name": "alice", "password": "nope"}),
    )
    .await;
    assert_eq!(
        (wrong.status, wrong.error_code()),
        (401, "invalid_credentials")
    );
    let unknown = post_json(
        &s,
        "/api/login",
        json!({"name": "nobody", "password": "nope"}),
    )
    .await;
    assert_eq!(
        unknown.json, wrong.json,
        "unknown names look like wrong passwords"
    );

    let me = get_with_token(&s, "/api/me", &token).await;
    assert_eq!(
        me.json,
        json!({"id": id, "name": "Alice", "public_key": "ka", "device": null})
    );
    let by_cookie = reqwest::Client::new()
        .get(format!("{}/api/me", s.http_base()))
        .header("cookie", format!("sotto_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200);
    let anon = reply(
        reqwest::get(format!("{}/api/me", s.http_base()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((anon.status, anon.error_code()), (401, "unauthorized"));
    assert_eq!(anon.header("www-authenticate"), Some("Bearer"));

    let bob = api_user(&s, "bob").await;
    let _online = Native::connect(&s, &bob.token).await;
    // The socket is attached just after the upgrade completes: poll, bounded.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let users = loop {
        let dir = get_with_token(&s, "/api/users", &token).await;
        assert_eq!(dir.status, 200);
        let mut users = dir.json["users"].as_array().unwrap().clone();
        users.sort_by_key(|u| u["name"].as_str().unwrap().to_owned());
        if users[1]["online"] == true || tokio::time::Instant::now() > deadline {
            break users;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(
        users[0],
        json!({"id": id, "name": "Alice", "online": false, "public_key": "ka", "devices": []})
    );
    assert_eq!(
        (users[1]["name"].as_str(), users[1]["online"].as_bool()),
        (Some("bob"), Some(true))
    );
    let bad_limit = get_with_token(&s, "/api/users?limit=lots", &token).await;
    assert_eq!(bad_limit.status, 400);
}

#[tokio::test]
async fn bodies_are_checked() {
    let s = TestServer::start().await;
    let url = format!("{}/api/register", s.http_base());
    let c = reqwest::Client::new();
    let form = reply(
        c.post(&url)
            .body("name=a&password=b")
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (form.status, form.error_code()),
        (415, "unsupported_media_type")
    );
    let none = reply(c.post(&url).body("{}").send().await.unwrap()).await;
    assert_eq!(none.status, 415);
    let big = "x".repeat(20 * 1024);
    let huge = reply(
        c.post(&url)
            .json(&json!({"name": "a", "password": big}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((huge.status, huge.error_code()), (413, "too_large"));
    let broken = reply(
        c.post(&url)
            .header("content-type", "application/json")
            .body("{\"name\":")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((broken.status, broken.error_code()), (400, "bad_request"));
    let extra = post_json(
        &s,
        "/api/register",
        json!({"name": "a", "password": "b", "admin": true}),
    )
    .await;
    assert_eq!(extra.status, 400, "unknown fields are refused");
    let typed = post_json(&s, "/api/register", json!({"name": 5, "password": "b"})).await;
    assert_eq!(typed.status, 400);
    let missing = post_json(&s, "/api/login", json!({"name": "a"})).await;
    assert_eq!(missing.status, 400);
    let get = reqwest::get(&url).await.unwrap();
    assert_eq!(get.status(), 405);
    // Nothing above created an account.
    let r = post_json(&s, "/api/register", json!({"name": "a", "password": "b"})).await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn login_attempts_are_rate_limited_per_name_and_per_address() {
    use std::num::NonZeroU32;
    let s = TestServer::start_with(|c| {
        c.edge.throttle.per_name_per_minute = NonZeroU32::new(3);
        c.edge.throttle.per_ip_per_minute = NonZeroU32::new(6);
    })
    .await;
    let attempt = |name: &'static str| {
        let s = &s;
        async move { post_json(s, "/api/login", json!({"name": name, "password": "guess"})).await }
    };
    for _ in 0..3 {
        assert_eq!(attempt("victim").await.status, 401);
    }
    let limited = attempt("victim").await;
    assert_eq!(
        (limited.status, limited.error_code()),
        (429, "rate_limited")
    );
    let secs: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&secs), "Retry-After {secs}");
    // Other names still work from this address until its own limit.
    assert_eq!(attempt("other").await.status, 401);
    assert_eq!(attempt("other").await.status, 401);
    assert_eq!(
        attempt("third").await.status,
        429,
        "the address's 6 are used"
    );
    assert_eq!(s.metric("sotto_rate_limited_total").await, 2.0);
    assert_eq!(s.metric("sotto_login_failures_total").await, 5.0);
}
