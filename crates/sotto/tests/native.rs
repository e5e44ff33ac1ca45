//! sotto's own protocol on `/ws`: durable sends with acks, fan-out to
//! every session, dedupe, history, receipts, presence deltas and keys.

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

const QUIET: Duration = Duration::from_millis(300);

/// Connects and waits until the hub lists the connection: its `users`
/// snapshot is queued before the replay and the attach (so stored messages
/// come first), so the snapshot alone does not say others can see it yet.
async fn connected(s: &TestServer, token: &str) -> Native {
    let before = s.metric("sotto_authenticated_connections").await;
    let mut c = Native::connect(s, token).await;
    c.recv_type("users").await;
    let attached = support::eventually(|| async {
        s.metric("sotto_authenticated_connections").await > before
    })
    .await;
    assert!(attached, "the connection was never attached");
    c
}

#[tokio::test]
async fn messages_reach_every_session_and_resends_are_deduplicated() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let alice2 = api_login(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut phone = connected(&s, &alice.token).await;
    let mut laptop = connected(&s, &alice2.token).await;
    let mut b1 = connected(&s, &bob.token).await;
    let mut b2 = connected(&s, &bob.token).await;

    let ack = phone.send_message(&bob.id, "hello", "c-1").await;
    assert_eq!(
        ack,
        json!({"type": "ack", "client_id": "c-1", "id": 1, "to": bob.id, "status": "stored", "pos": 1})
    );
    for b in [&mut b1, &mut b2] {
        let m = b.recv_type("message").await;
        assert_eq!(
            (m["id"].as_i64(), m["from"].as_str(), m["to"].as_str()),
            (Some(1), Some(alice.id.as_str()), Some(bob.id.as_str()))
        );
        assert_eq!(m["body"], "hello");
        assert!(m["sent_at"].as_i64().unwrap() > 1_700_000_000_000);
    }
    // The sender's other session sees its own message; the sending one
    // has the ack instead.
    assert_eq!(laptop.recv_type("message").await["body"], "hello");
    phone.expect_no("message", QUIET).await;

    // A resend (say, after a lost ack) gets the same id and is not
    // delivered twice.
    let again = phone.send_message(&bob.id, "hello", "c-1").await;
    assert_eq!((again["id"].as_i64(), again.get("pos")), (Some(1), None));
    b1.expect_no("message", QUIET).await;

    let next = phone.send_message(&bob.id, "second", "c-2").await;
    assert_eq!(next["id"], 2, "ids grow per conversation");
    let reply = b1.send_message(&alice.id, "hi back", "b-1").await;
    assert_eq!(reply["id"], 3, "one sequence for both directions");
}

#[tokio::test]
async fn offline_messages_are_stored_then_delivered_with_a_receipt() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut a = connected(&s, &alice.token).await;
    for i in 1..=3 {
        let ack = a
            .send_message(&bob.id, &format!("m{i}"), &format!("c{i}"))
            .await;
        assert_eq!(
            (ack["status"].as_str(), ack["id"].as_i64()),
            (Some("stored"), Some(i))
        );
    }
    let mut b = Native::connect(&s, &bob.token).await;
    b.recv_type("users").await;
    for i in 1..=3 {
        let m = b.recv_type("message").await;
        assert_eq!(
            (m["id"].as_i64(), m["body"].as_str(), m["pos"].as_i64()),
            (Some(i), Some(format!("m{i}").as_str()), Some(i))
        );
    }
    // Not confirmed yet: received is not delivered, and another session
    // of bob that gives no position gets them too.
    a.expect_no("delivered", QUIET).await;
    let mut b2 = connected(&s, &bob.token).await;
    assert_eq!(b2.recv_type("message").await["pos"], 1);
    b.send(json!({"type": "confirm", "up_to": 3})).await;
    // alice's inbox holds her own three copies (answered by acks on this
    // connection), then one receipt: cumulative, up to id 3.
    assert_eq!(
        a.recv_type("delivered").await,
        json!({"type": "delivered", "with": bob.id, "id": 3, "pos": 4})
    );
    // Delivered once: a new session of bob does not get them again.
    let mut b3 = connected(&s, &bob.token).await;
    b3.expect_no("message", QUIET).await;
}

#[tokio::test]
async fn history_pages_newest_first_and_read_receipts() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut a = connected(&s, &alice.token).await;
    let mut b = connected(&s, &bob.token).await;
    for i in 1..=5 {
        // Bodies are opaque: ciphertext in practice.
        a.send_message(&bob.id, &format!("ct:{i}"), &format!("c{i}"))
            .await;
    }
    b.send(json!({"type": "history", "with": alice.id, "limit": 2}))
        .await;
    let page = b.recv_type("history").await;
    let ids: Vec<i64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [5, 4]);
    assert_eq!(page["with"], alice.id);
    b.send(json!({"type": "history", "with": alice.id, "before": 4, "limit": 10}))
        .await;
    let page = b.recv_type("history").await;
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["ct:3", "ct:2", "ct:1"]);
    // The sender sees the same conversation.
    a.send(json!({"type": "history", "with": bob.id})).await;
    assert_eq!(
        a.recv_type("history").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    b.send(json!({"type": "read", "with": alice.id, "up_to": 3}))
        .await;
    let read = a.recv_type("read").await;
    assert_eq!((&read["with"], &read["up_to"]), (&json!(bob.id), &json!(3)));
    assert!(read["pos"].as_i64().is_some(), "{read}");
    b.send(json!({"type": "history", "with": alice.id, "limit": 5}))
        .await;
    let page = b.recv_type("history").await;
    let read: Vec<bool> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["read"].as_bool().unwrap())
        .collect();
    assert_eq!(read, [false, false, true, true, true]);
}

/// The ids of a `users` frame.
fn listed(users: &serde_json::Value) -> Vec<&str> {
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect()
}

/// Presence goes to contacts (a shared conversation) and watchers only:
/// a stranger is neither in the snapshot nor told of comings and goings.
#[tokio::test]
async fn presence_reaches_contacts_and_watchers_not_strangers() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let carol = api_user(&s, "carol").await;
    let mut a = connected(&s, &alice.token).await;
    let c = connected(&s, &carol.token).await;
    let mut b = Native::connect(&s, &bob.token).await;
    assert!(listed(&b.recv_type("users").await).is_empty(), "strangers");
    // Watching: Bob gets the snapshot of whom he watches, then changes.
    let users = b.watch(&[&carol.id]).await;
    assert_eq!(listed(&users), [carol.id.as_str()]);
    // A conversation makes Alice and Bob contacts: each is told the other
    // is online.
    b.send(json!({"type": "send", "to": alice.id, "body": "hi", "client_id": "c-1"}))
        .await;
    let p = a.recv_type("presence").await;
    assert_eq!(
        (p["user"].as_str(), p["online"].as_bool()),
        (Some(bob.id.as_str()), Some(true))
    );
    // Bob hears of Alice before his ack (his copy's place); Carol's login
    // may come first, in the broadcast that found him watching her.
    let mut p = b.recv_type("presence").await;
    if p["user"] == carol.id.as_str() {
        p = b.recv_type("presence").await;
    }
    assert_eq!(
        (p["user"].as_str(), p["online"].as_bool()),
        (Some(alice.id.as_str()), Some(true))
    );
    b.recv_type("ack").await;
    // A new watch set replaces the old: Carol leaving is not told.
    assert_eq!(listed(&b.watch(&[]).await), [alice.id.as_str()]);
    drop(c);
    // (Bob may hear Alice's login once more, from the broadcast of the
    // window she logged in within: it found her his contact by then. A
    // repeat of a state already told is harmless; Carol is not told.)
    let quiet = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Some(left) = quiet.checked_duration_since(tokio::time::Instant::now()) {
        let Some(f) = b.try_recv(left).await else {
            break;
        };
        if f["type"] == "presence" {
            assert_eq!(f["user"].as_str(), Some(alice.id.as_str()), "{f}");
            assert_eq!(f["online"], true, "{f}");
        }
    }
    // Carol never heard of Bob, and a later login of hers sees Alice only
    // if they share a conversation: they do not.
    let mut c = connected(&s, &carol.token).await;
    drop(b);
    // (Alice may first hear Bob's login again: the broadcast of its window
    // found her a contact by then.)
    let mut p = a.recv_type("presence").await;
    while p["online"] == true {
        p = a.recv_type("presence").await;
    }
    assert_eq!(p["user"].as_str(), Some(bob.id.as_str()));
    c.expect_no("presence", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn presence_comes_as_deltas_and_keys_as_key_changed() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut a = connected(&s, &alice.token).await;
    a.watch(&[&bob.id]).await;
    let mut b = Native::connect(&s, &bob.token).await;
    let users = b.recv_type("users").await;
    assert!(listed(&users).is_empty(), "Alice is not Bob's contact");
    let users = b.watch(&[&alice.id]).await;
    assert_eq!(
        listed(&users),
        [alice.id.as_str()],
        "snapshot of who is online"
    );
    let p = a.recv_type("presence").await;
    assert_eq!(
        (p["user"].as_str(), p["online"].as_bool()),
        (Some(bob.id.as_str()), Some(true))
    );

    b.send(json!({"type": "set_key", "public_key": "bob-key-2"}))
        .await;
    assert_eq!(
        a.recv_type("key_changed").await,
        json!({"type": "key_changed", "user": bob.id, "public_key": "bob-key-2"})
    );
    let dir = get_with_token(&s, "/api/users", &alice.token).await;
    let entry = dir.json["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == bob.id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        (entry["public_key"].as_str(), entry["online"].as_bool()),
        (Some("bob-key-2"), Some(true))
    );

    drop(b);
    let p = a.recv_type("presence").await;
    assert_eq!(
        (p["user"].as_str(), p["online"].as_bool()),
        (Some(bob.id.as_str()), Some(false))
    );
}

#[tokio::test]
async fn protocol_errors_keep_the_socket_up() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut a = connected(&s, &alice.token).await;
    a.ws.send(tokio_tungstenite::tungstenite::Message::text("{not json"))
        .await
        .unwrap();
    assert_eq!(a.recv_type("error").await["code"], "bad_request");
    a.send(json!({"type": "fly"})).await;
    assert_eq!(a.recv_type("error").await["code"], "bad_request");
    a.send(json!({"type": "send", "to": "nobody", "body": "x", "client_id": "c9"}))
        .await;
    let e = a.recv_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("unknown_user"), Some("c9"))
    );
    a.send(json!({"type": "send", "to": "zzzzzz", "body": "x", "client_id": "c10"}))
        .await;
    assert_eq!(a.recv_type("error").await["code"], "unknown_user");
    let ack = a.send_message(&bob.id, "fine", "c11").await;
    assert_eq!(ack["status"], "stored");
}

use futures_util::SinkExt;

#[tokio::test]
async fn both_protocols_see_the_same_messages() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let mut a = connected(&s, &alice.token).await;
    let mut carol = registered(&s, "carol").await;
    let carol_id = carol.id.clone().unwrap();

    let ack = a.send_message(&carol_id, "to compat", "c1").await;
    assert_eq!(ack["status"], "stored");
    let m = carol.recv_message().await;
    assert_eq!(
        (m["sender"].as_str(), m["message"].as_str()),
        (Some(alice.id.as_str()), Some("to compat"))
    );

    carol.message(&alice.id, "to native").await;
    let m = a.recv_type("message").await;
    assert_eq!(
        (m["from"].as_str(), m["body"].as_str()),
        (Some(carol_id.as_str()), Some("to native"))
    );
    // Stored in history, since alice's protocol has ids.
    a.send(json!({"type": "history", "with": carol_id})).await;
    assert_eq!(
        a.recv_type("history").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// Messages above the fragment size go out as several WebSocket frames
/// (so no connection keeps a large write buffer) and arrive whole.
#[tokio::test]
async fn large_messages_arrive_whole() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut a = connected(&s, &alice.token).await;
    let mut b = connected(&s, &bob.token).await;
    let body: String = (0..30_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    a.send_message(&bob.id, &body, "big").await;
    assert_eq!(
        b.recv_type("message").await["body"].as_str(),
        Some(body.as_str())
    );
    let mut compat = registered(&s, "carol").await;
    let carol = compat.id.clone().unwrap();
    a.send_message(&carol, &body, "big2").await;
    assert_eq!(
        compat.recv_message().await["message"].as_str(),
        Some(body.as_str())
    );
}
