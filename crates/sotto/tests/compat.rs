//! The QMessageServer-compatible protocol, driven over real WebSockets
//! against a real server with a temporary SQLite file.

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

#[tokio::test]
async fn register_login_and_message() {
    let s = TestServer::start().await;
    let mut alice = registered(&s, "alice").await;
    let mut bob = registered(&s, "bob").await;
    let bob_id = bob.id.clone().unwrap();
    alice.message(&bob_id, "hello bob").await;
    let m = bob.recv_message().await;
    assert_eq!(
        m,
        json!({"valid": true, "event": 2, "sender": alice.id.clone().unwrap(), "message": "hello bob"})
    );
    // The sender gets no acknowledgement, as in QMessageServer.
    assert!(
        alice
            .try_recv(Duration::from_millis(200))
            .await
            .is_none_or(|v| v["event"] == 4)
    );
}

#[tokio::test]
async fn login_response_has_the_compat_shape() {
    let s = TestServer::start().await;
    let _bob = registered(&s, "bob").await;
    let mut alice = Client::connect(&s.chat_url()).await;
    let r = alice.register("Alice", "pw").await;
    assert_eq!(r["valid"], true);
    assert_eq!(r["event"], 1);
    assert_eq!(r["username"], "Alice");
    let token = r["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let users = r["users"].as_array().unwrap();
    let names: Vec<_> = users.iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"Alice") && names.contains(&"bob"),
        "{names:?}"
    );
    for u in users {
        let id = u["id"].as_str().unwrap();
        assert_eq!(id.len(), 6);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(
            u["publicKey"],
            format!("key-of-{}", u["name"].as_str().unwrap())
        );
    }
}

#[tokio::test]
async fn login_errors() {
    let s = TestServer::start().await;
    let mut c = registered(&s, "carol").await;
    let mut d = Client::connect(&s.chat_url()).await;
    let bad = json!({"valid": false, "event": 1, "error": "User or password is invalid."});
    assert_eq!(d.login("carol", "wrong").await, bad);
    assert_eq!(d.login("nobody", "pw").await, bad);
    assert_eq!(
        d.login("", "pw").await,
        json!({"valid": false, "event": 1, "error": "Please fill all fields."})
    );
    assert_eq!(
        d.register("CAROL", "pw").await,
        json!({"valid": false, "event": 1, "error": "Username already exists."})
    );
    let r = d.register("bad name", "pw").await;
    assert_eq!(r["valid"], false);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("User name may contain only")
    );
    let r = d.register(&"x".repeat(33), "pw").await;
    assert_eq!(r["error"], "User name is longer than 32 characters.");
    // Names are case-insensitive for login too, and keep their spelling.
    let r = d.login("CaRoL", "pw").await;
    assert_eq!(r["valid"], true);
    assert_eq!(r["username"], "carol");
    // That login replaced carol's first socket.
    assert_eq!(c.expect_closed().await, Some(1000));
}

#[tokio::test]
async fn relogin_elsewhere_closes_the_old_socket_but_not_on_the_same_socket() {
    let s = TestServer::start().await;
    let mut first = registered(&s, "dave").await;
    // The same socket logging in again stays open.
    let r = first.login("dave", "pw").await;
    assert_eq!(r["valid"], true);
    first
        .send_json(json!({"action": 4, "token": first.token.clone().unwrap()}))
        .await;
    assert_eq!(
        first.recv_non_presence().await,
        json!({"valid": true, "event": 0})
    );
    // Another socket logging in closes the first one.
    let mut second = Client::connect(&s.chat_url()).await;
    assert_eq!(second.login("dave", "pw").await["valid"], true);
    assert_eq!(first.expect_closed().await, Some(1000));
    // Messages now reach the new socket.
    let mut eve = registered(&s, "eve").await;
    eve.message(&second.id.clone().unwrap(), "to the new socket")
        .await;
    assert_eq!(second.recv_message().await["message"], "to the new socket");
}

#[tokio::test]
async fn a_new_login_revokes_the_previous_token() {
    let s = TestServer::start().await;
    let mut tab_a = registered(&s, "kim").await;
    let token_a = tab_a.token.clone().unwrap();
    let mut tab_b = Client::connect(&s.chat_url()).await;
    assert_eq!(tab_b.login("kim", "pw").await["valid"], true);
    assert_eq!(tab_a.expect_closed().await, Some(1000));
    // Tab A reloads and tries its old token: refused, so it shows the login
    // form instead of taking the user back from tab B.
    let mut reloaded = Client::connect(&s.chat_url()).await;
    assert_eq!(reloaded.authorize(&token_a).await["event"], 3);
    let token_b = tab_b.token.clone().unwrap();
    let mut other = Client::connect(&s.chat_url()).await;
    assert_eq!(other.authorize(&token_b).await["valid"], true);
}

#[tokio::test]
async fn authorize_binds_the_token_and_survives_a_closed_socket() {
    let s = TestServer::start().await;
    let mut a = registered(&s, "frank").await;
    let token = a.token.clone().unwrap();
    let id = a.id.clone().unwrap();
    a.ws.close(None).await.unwrap();
    // A reloaded page authorizes again with the same token.
    let mut b = Client::connect(&s.chat_url()).await;
    assert_eq!(
        b.authorize(&token).await,
        json!({"valid": true, "event": 0})
    );
    // A second socket authorizing with it takes over and closes b.
    let mut c = Client::connect(&s.chat_url()).await;
    assert_eq!(c.authorize(&token).await["valid"], true);
    assert_eq!(b.expect_closed().await, Some(1000));
    let mut g = registered(&s, "grace").await;
    g.message(&id, "after authorize").await;
    assert_eq!(c.recv_message().await["message"], "after authorize");
}

#[tokio::test]
async fn empty_malformed_and_unknown_tokens_never_match() {
    let s = TestServer::start().await;
    let mut victim = registered(&s, "heidi").await;
    victim.ws.close(None).await.unwrap();
    let mut c = Client::connect(&s.chat_url()).await;
    let invalid = json!({"valid": false, "event": 3, "error": "Invalid or expired token."});
    for t in ["", "abc", &"0".repeat(64), &"G".repeat(64)] {
        assert_eq!(c.authorize(t).await, invalid, "token {t:?}");
    }
    // A message with an empty token is refused, not sent in anyone's name.
    c.send_json(json!({"action": 3, "token": "", "target": "AAAAAA", "message": "x"}))
        .await;
    assert_eq!(c.recv_non_presence().await, invalid);
    c.send_json(json!({"action": 2, "token": ""})).await;
    assert_eq!(c.recv_non_presence().await, invalid);
}

#[tokio::test]
async fn logout_revokes_the_token_and_closes_the_socket() {
    let s = TestServer::start().await;
    let mut a = registered(&s, "ivan").await;
    let token = a.token.clone().unwrap();
    a.send_json(json!({"action": 2, "token": token})).await;
    assert_eq!(a.expect_closed().await, Some(1000));
    let mut b = Client::connect(&s.chat_url()).await;
    assert_eq!(b.authorize(&token).await["valid"], false);
}

#[tokio::test]
async fn message_errors() {
    let s = TestServer::start().await;
    let mut a = registered(&s, "judy").await;
    a.message("nope!!", "x").await;
    assert_eq!(
        a.recv_non_presence().await,
        json!({"valid": false, "error": "Unknown target user."})
    );
    a.message("ZZZZZZ", "x").await;
    assert_eq!(
        a.recv_non_presence().await,
        json!({"valid": false, "error": "Unknown target user."})
    );
    // Not logged in: no token to speak with.
    let mut anon = Client::connect(&s.chat_url()).await;
    anon.message("ZZZZZZ", "x").await;
    assert_eq!(anon.recv_non_presence().await["event"], 3);
}

#[tokio::test]
async fn bad_input_gets_errors_and_the_server_keeps_serving() {
    let s = TestServer::start().await;
    let mut a = registered(&s, "mallory").await;
    let cases = [
        ("{not json", "Request is not valid JSON."),
        ("[1,2]", "Request must be a JSON object."),
        (r#"{"name":"x"}"#, "Field `action` is missing."),
        (
            r#"{"action":"login"}"#,
            "Field `action` must be an integer.",
        ),
        (r#"{"action":7}"#, "Unknown action."),
        (
            r#"{"action":0,"name":5,"password":"p"}"#,
            "Field `name` must be a string.",
        ),
        (
            r#"{"action":3,"token":"t","target":"x"}"#,
            "Field `message` is missing.",
        ),
    ];
    for (input, error) in cases {
        a.send_text(input).await;
        assert_eq!(
            a.recv_non_presence().await,
            json!({"valid": false, "error": error}),
            "{input}"
        );
    }
    use futures_util::SinkExt;
    a.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await
    .unwrap();
    assert_eq!(
        a.recv_non_presence().await,
        json!({"valid": false, "error": "Binary frames are not supported; send JSON text."})
    );
    // Still logged in and working.
    let mut b = registered(&s, "bob").await;
    a.message(&b.id.clone().unwrap(), "still here").await;
    assert_eq!(b.recv_message().await["message"], "still here");
}

#[tokio::test]
async fn oversized_messages_close_with_1009_and_others_keep_going() {
    let s = TestServer::start_with(|c| c.max_message = 4096).await;
    let mut a = registered(&s, "oscar").await;
    let mut b = registered(&s, "peggy").await;
    let big = format!(
        r#"{{"action":3,"token":"t","target":"x","message":"{}"}}"#,
        "x".repeat(5000)
    );
    a.send_text(&big).await;
    assert_eq!(a.expect_closed().await, Some(1009));
    let mut c = registered(&s, "trent").await;
    c.message(&b.id.clone().unwrap(), "fine").await;
    assert_eq!(b.recv_message().await["message"], "fine");
}

#[tokio::test]
async fn offline_messages_arrive_in_order_exactly_once_after_restart() {
    let s = TestServer::start().await;
    let mut bob = registered(&s, "bob").await;
    let bob_id = bob.id.clone().unwrap();
    bob.ws.close(None).await.unwrap();
    let hub = s.server.hub();
    assert!(eventually(|| async move { hub.online_count() == 0 }).await);
    let mut alice = registered(&s, "alice").await;
    for i in 0..50 {
        alice.message(&bob_id, &format!("m{i}")).await;
    }
    // Make sure all 50 were processed before restarting.
    alice.message("ZZZZZZ", "sync").await;
    assert_eq!(
        alice.recv_non_presence().await["error"],
        "Unknown target user."
    );

    let s = s.restart_with(|_| {}).await;
    let mut bob = Client::connect(&s.chat_url()).await;
    assert_eq!(bob.login("bob", "pw").await["valid"], true);
    for i in 0..50 {
        assert_eq!(bob.recv_message().await["message"], format!("m{i}"));
    }
    // Exactly once: logging in again delivers nothing more.
    bob.ws.close(None).await.unwrap();
    let mut bob = Client::connect(&s.chat_url()).await;
    assert_eq!(bob.login("bob", "pw").await["valid"], true);
    assert!(no_message_within(&mut bob, Duration::from_millis(300)).await);
}

#[tokio::test]
async fn offline_queue_is_capped() {
    let s = TestServer::start_with(|c| c.hub.offline_queue_max = 3).await;
    let mut bob = registered(&s, "bob").await;
    let bob_id = bob.id.clone().unwrap();
    bob.ws.close(None).await.unwrap();
    let hub = s.server.hub();
    assert!(eventually(|| async move { hub.online_count() == 0 }).await);
    let mut alice = registered(&s, "alice").await;
    for i in 0..4 {
        alice.message(&bob_id, &format!("m{i}")).await;
    }
    assert_eq!(
        alice.recv_non_presence().await,
        json!({"valid": false, "error": "Recipient's offline queue is full."})
    );
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let s = TestServer::start().await;
    let mut a = registered(&s, "rupert").await;
    let token = a.token.clone().unwrap();
    a.ws.close(None).await.unwrap();
    let s = s.restart_with(|_| {}).await;
    let mut b = Client::connect(&s.chat_url()).await;
    assert_eq!(b.authorize(&token).await["valid"], true);
}

/// The names in a user-list frame.
fn names(v: &serde_json::Value) -> Vec<String> {
    let users = v["users"].as_array().unwrap();
    users
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Under a login storm each connection gets at most one list per
/// interval, capped at --user-list-max; once the list is full, logins and
/// logouts past it send nothing; a listed user leaving sends one list.
#[tokio::test]
async fn user_lists_are_capped_coalesced_and_sent_only_when_changed() {
    let interval = Duration::from_millis(300);
    let s = TestServer::start_with(|c| {
        c.hub.presence_interval = interval;
        c.hub.user_list_max = 10;
    })
    .await;
    let mut watcher = registered(&s, "watcher").await;
    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    for i in 0..30 {
        clients.push(registered(&s, &format!("u{i}")).await);
    }
    let mut broadcasts = 0;
    let mut last = None;
    while let Some(v) = watcher.try_recv(Duration::from_millis(800)).await {
        assert_eq!(v["event"], 4);
        assert!(names(&v).len() <= 10, "capped: {v}");
        broadcasts += 1;
        last = Some(v);
    }
    let windows = started.elapsed().as_millis() / interval.as_millis() + 1;
    assert!(
        broadcasts >= 1 && broadcasts as u128 <= windows,
        "{broadcasts} lists in {windows} intervals"
    );
    let full = names(&last.unwrap());
    assert_eq!(full.len(), 10);
    assert_eq!(full[0], "watcher", "the first arrivals, in order");
    // Past the cap: a logout and a login change nobody's list.
    clients.pop().unwrap().ws.close(None).await.unwrap();
    let _late = registered(&s, "late").await;
    assert!(watcher.try_recv(Duration::from_millis(800)).await.is_none());
    // A listed user leaving lets the next one up: one new list.
    clients.remove(0).ws.close(None).await.unwrap();
    let v = watcher.recv().await;
    let now = names(&v);
    assert_eq!(now.len(), 10);
    assert!(
        !now.contains(&"u0".to_owned()) && now.contains(&"u9".to_owned()),
        "{now:?}"
    );
    assert!(watcher.try_recv(Duration::from_millis(800)).await.is_none());
}

#[tokio::test]
async fn slow_consumers_are_dropped_and_their_messages_kept() {
    let s = TestServer::start_with(|c| c.outbound_queue = 16).await;
    let slow = registered(&s, "slow").await;
    let slow_id = slow.id.clone().unwrap();
    let mut fast = registered(&s, "fast").await;
    // 16 MB to a client that never reads: socket buffers fill, the queue
    // fills, and the server drops it instead of buffering without bound.
    let body = "y".repeat(60_000);
    for _ in 0..280 {
        fast.message(&slow_id, &body).await;
    }
    drop(slow);
    fast.message("ZZZZZZ", "sync").await;
    assert_eq!(
        fast.recv_non_presence().await["error"],
        "Unknown target user."
    );
    // The sender was never affected, and later messages were stored for
    // the slow user's next login.
    let mut back = Client::connect(&s.chat_url()).await;
    assert_eq!(back.login("slow", "pw").await["valid"], true);
    let got = back.recv_message().await;
    assert_eq!(got["message"].as_str().map(str::len), Some(60_000));
}

async fn no_message_within(c: &mut Client, wait: Duration) -> bool {
    while let Some(v) = c.try_recv(wait).await {
        if v["event"] != 4 {
            return false;
        }
    }
    true
}
