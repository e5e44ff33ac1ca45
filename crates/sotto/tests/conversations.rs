//! The contact-list reads: conversations with last message and unread
//! count (which drops after a `read`), users by name prefix, one user.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn conversations_show_the_last_message_and_what_is_unread() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let carol = api_user(&s, "carol").await;
    let mut a = Native::connect(&s, &alice.token).await;
    let mut b = Native::connect(&s, &bob.token).await;
    let mut c = Native::connect(&s, &carol.token).await;
    b.send_message(&alice.id, "b1", "1").await;
    b.send_message(&alice.id, "b2", "2").await;
    c.send_message(&alice.id, "c1", "3").await;
    let mine = a.send_message(&bob.id, "a1", "4").await;

    let r = get_with_token(&s, "/api/conversations", &alice.token).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let list = r.json["conversations"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    let last = &list[0]["last"];
    assert_eq!(
        (&list[0]["with"], &list[0]["name"], &list[0]["unread"]),
        (&json!(bob.id), &json!("bob"), &json!(2))
    );
    assert_eq!(
        (
            &last["id"],
            &last["from"],
            &last["to"],
            &last["body"],
            &last["client_id"]
        ),
        (
            &mine["id"],
            &json!(alice.id),
            &json!(bob.id),
            &json!("a1"),
            &json!("4")
        )
    );
    assert!(last["sent_at"].as_i64().unwrap() > 0);
    assert!(last.get("pos").is_none(), "{last}");
    assert_eq!(last["read"], false);
    assert_eq!(
        (
            &list[1]["with"],
            &list[1]["unread"],
            &list[1]["last"]["body"]
        ),
        (&json!(carol.id), &json!(1), &json!("c1"))
    );

    // Reading bob's messages clears his count; bob hears of it.
    a.send(json!({"type": "read", "with": bob.id, "up_to": 2}))
        .await;
    b.recv_type("read").await;
    let r = get_with_token(&s, "/api/conversations?limit=1", &alice.token).await;
    let list = r.json["conversations"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (&list[0]["with"], &list[0]["unread"]),
        (&json!(bob.id), &json!(0))
    );
    let bobs = get_with_token(&s, "/api/conversations", &bob.token).await;
    assert_eq!(bobs.json["conversations"][0]["unread"], 1, "alice's a1");

    let bad = get_with_token(&s, "/api/conversations?limit=many", &alice.token).await;
    assert_eq!(bad.status, 400);
    let clamped = get_with_token(&s, "/api/conversations?limit=0", &alice.token).await;
    assert_eq!(clamped.json["conversations"].as_array().unwrap().len(), 1);
    let anon = reqwest::get(format!("{}/api/conversations", s.http_base()))
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
}

#[tokio::test]
async fn users_are_searched_by_prefix_and_found_by_id() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "Alice").await;
    api_user(&s, "alfred").await;
    api_user(&s, "bob").await;
    let names = |r: &Reply| -> Vec<String> {
        r.json["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let r = get_with_token(&s, "/api/users?q=AL", &alice.token).await;
    assert_eq!(names(&r), ["alfred", "Alice"]);
    let r = get_with_token(&s, "/api/users?q=ali&limit=5", &alice.token).await;
    assert_eq!(names(&r), ["Alice"]);
    let r = get_with_token(&s, "/api/users?q=", &alice.token).await;
    assert_eq!(names(&r).len(), 3);
    for bad in ["a%20b", "%25", &"a".repeat(33)] {
        let r = get_with_token(&s, &format!("/api/users?q={bad}"), &alice.token).await;
        assert_eq!(r.status, 400, "{bad}");
    }

    let r = get_with_token(&s, &format!("/api/users/{}", alice.id), &alice.token).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json,
        json!({"id": alice.id, "name": "Alice", "online": false, "public_key": "", "devices": []})
    );
    for missing in ["zzzzzz", "not-an-id"] {
        let r = get_with_token(&s, &format!("/api/users/{missing}"), &alice.token).await;
        assert_eq!((r.status, r.error_code()), (404, "not_found"), "{missing}");
    }
}
