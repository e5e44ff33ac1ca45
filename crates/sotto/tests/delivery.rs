//! Delivery you can count on (issue 10), against a real server on a real
//! SQLite file: a message counts as delivered only once a client confirms
//! it, a reconnect resumes from a position with nothing lost or repeated,
//! resends are recognised per recipient, receipts are checked against the
//! conversation, compat messages are stored like the others, and a slow
//! or deaf reader costs only itself.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::*;

const QUIET: Duration = Duration::from_millis(300);

/// Connects and waits for the `users` snapshot (the catch-up follows it).
async fn online(s: &TestServer, token: &str) -> Native {
    let mut c = Native::connect(s, token).await;
    c.recv_type("users").await;
    c
}

/// The next `n` messages' (pos, id, body).
async fn messages(c: &mut Native, n: usize) -> Vec<(i64, i64, String)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let m = c.recv_type("message").await;
        got.push((
            m["pos"].as_i64().expect("a pos"),
            m["id"].as_i64().expect("an id"),
            m["body"].as_str().expect("a body").to_owned(),
        ));
    }
    got
}

#[tokio::test]
async fn frames_written_but_never_confirmed_come_again_on_reconnect() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut a = online(&s, &alice.token).await;
    let mut b = online(&s, &bob.token).await;
    for i in 1..=3 {
        let ack = a
            .send_message(&bob.id, &format!("m{i}"), &format!("c{i}"))
            .await;
        assert_eq!(ack["status"], "stored", "{ack}");
    }
    // The server wrote all three to bob's socket; bob read them but
    // crashed before processing (no confirm). The sender is not told
    // they were delivered.
    assert_eq!(messages(&mut b, 3).await.len(), 3);
    a.expect_no("delivered", QUIET).await;
    drop(b);
    let mut b = online(&s, &bob.token).await;
    let again = messages(&mut b, 3).await;
    let bodies: Vec<&str> = again.iter().map(|m| m.2.as_str()).collect();
    assert_eq!(bodies, ["m1", "m2", "m3"], "all of them, in order");
    b.send(json!({"type": "confirm", "up_to": again[2].0}))
        .await;
    // One receipt covers all three: receipts are cumulative.
    assert_eq!(a.recv_type("delivered").await["id"], 3);
    a.expect_no("delivered", QUIET).await;
    drop(b);
    let mut b = online(&s, &bob.token).await;
    b.expect_no("message", QUIET).await;
}

#[tokio::test]
async fn resuming_from_a_position_across_a_restart_loses_and_repeats_nothing() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut a = online(&s, &alice.token).await;
    let mut b = online(&s, &bob.token).await;
    for i in 1..=5 {
        a.send_message(&bob.id, &format!("m{i}"), &format!("c{i}"))
            .await;
    }
    let first = messages(&mut b, 5).await;
    assert_eq!(
        first.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    // Bob processed up to position 3 and keeps that himself.
    drop((a, b));
    let s = s.restart_with(|_| {}).await;
    let mut a = online(&s, &alice.token).await;
    let mut b = Native::connect_after(&s, &bob.token, 3).await;
    b.recv_type("users").await;
    let resumed = messages(&mut b, 2).await;
    assert_eq!(
        resumed
            .iter()
            .map(|m| (m.0, m.2.as_str()))
            .collect::<Vec<_>>(),
        [(4, "m4"), (5, "m5")]
    );
    // Then live traffic, at the next position: nothing lost at the seam.
    a.send_message(&bob.id, "m6", "c6").await;
    assert_eq!(messages(&mut b, 1).await[0].0, 6);
    b.expect_no("message", QUIET).await;
    // A position from the future is clamped to the head: the client still
    // gets what comes next.
    let mut c = Native::connect_after(&s, &bob.token, 1_000_000).await;
    c.recv_type("users").await;
    a.send_message(&bob.id, "m7", "c7").await;
    assert_eq!(messages(&mut c, 1).await[0], (7, 7, "m7".to_owned()));
    // A malformed position is refused at the handshake.
    let url = format!("{}?after=minus-one", s.ws_url());
    let refused = upgrade(&url, Cred::Bearer(&bob.token), None).await;
    assert_eq!(refused.err().map(|(status, _)| status), Some(400));
}

#[tokio::test]
async fn a_client_id_reused_towards_someone_else_is_a_new_message() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let carol = api_user(&s, "carol").await;
    let mut a = online(&s, &alice.token).await;
    let mut c = online(&s, &carol.token).await;
    let to_bob = a.send_message(&bob.id, "for bob", "same").await;
    let to_carol = a.send_message(&carol.id, "for carol", "same").await;
    assert_eq!(to_carol["to"], carol.id.as_str());
    assert_eq!(to_carol["status"], "stored", "{to_carol}");
    assert_eq!(
        (to_bob["id"].as_i64(), to_carol["id"].as_i64()),
        (Some(1), Some(1))
    );
    let m = c.recv_type("message").await;
    assert_eq!(
        m["body"], "for carol",
        "delivered, not swallowed as a resend"
    );
    // The same client_id to the same recipient is still a resend.
    let again = a.send_message(&carol.id, "for carol", "same").await;
    assert_eq!(again["id"], 1);
    c.expect_no("message", QUIET).await;
}

#[tokio::test]
async fn receipts_are_checked_against_the_conversation() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut a = online(&s, &alice.token).await;
    let mut b = online(&s, &bob.token).await;
    for i in 1..=3 {
        a.send_message(&bob.id, &format!("m{i}"), &format!("c{i}"))
            .await;
    }
    b.send(json!({"type": "read", "with": alice.id, "up_to": 1_000_000}))
        .await;
    let read = a.recv_type("read").await;
    assert_eq!(read["up_to"], 3, "clamped to the newest message: {read}");
    // Nothing new to read: no receipt.
    b.send(json!({"type": "read", "with": alice.id, "up_to": 3}))
        .await;
    a.expect_no("read", QUIET).await;
    b.send(json!({"type": "history", "with": alice.id, "limit": 0}))
        .await;
    let page = b.recv_type("history").await;
    assert_eq!(page["messages"], json!([]), "limit 0 means none");
}

#[tokio::test]
async fn a_compat_message_reaches_the_senders_own_sessions_and_history() {
    let s = TestServer::start().await;
    let mut carol = registered(&s, "carol").await;
    let mut dave = registered(&s, "dave").await;
    let dave_id = dave.id.clone().unwrap();
    // Carol also has a browser session (her compat password is "pw").
    let login = post_json(&s, "/api/login", json!({"name": "carol", "password": "pw"})).await;
    assert_eq!(login.status, 200, "{}", login.json);
    let token = login.json["token"].as_str().unwrap().to_owned();
    let mut tab = online(&s, &token).await;
    carol.message(&dave_id, "compat to compat").await;
    assert_eq!(dave.recv_message().await["message"], "compat to compat");
    let copy = tab.recv_type("message").await;
    assert_eq!(
        (copy["to"].as_str(), copy["body"].as_str()),
        (Some(dave_id.as_str()), Some("compat to compat"))
    );
    tab.send(json!({"type": "history", "with": dave_id})).await;
    let page = tab.recv_type("history").await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1));
}

/// A receipt for the sender once a compat recipient's socket has the
/// message: compat clients cannot confirm, so written means delivered.
#[tokio::test]
async fn a_compat_recipient_confirms_by_being_written_to() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let mut a = online(&s, &alice.token).await;
    let mut carol = registered(&s, "carol").await;
    let carol_id = carol.id.clone().unwrap();
    let ack = a.send_message(&carol_id, "hello compat", "c1").await;
    assert_eq!(carol.recv_message().await["message"], "hello compat");
    let receipt = a.recv_type("delivered").await;
    assert_eq!(
        (receipt["with"].as_str(), &receipt["id"]),
        (Some(carol_id.as_str()), &ack["id"])
    );
}

/// One user who stops reading while messages pour in must not slow the
/// others down: their messages keep arriving within a tight bound.
#[tokio::test]
async fn a_reader_that_stalls_does_not_delay_other_users() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let stuck = api_user(&s, "stuck").await;
    let mut a = online(&s, &alice.token).await;
    let mut b = online(&s, &bob.token).await;
    // Connected, then never read again.
    let _stuck = online(&s, &stuck.token).await;
    let big = "z".repeat(50_000);
    let mut worst = Duration::ZERO;
    for i in 0..40 {
        // Flood the stuck reader...
        for j in 0..5 {
            let ack = a.send_message(&stuck.id, &big, &format!("s{i}-{j}")).await;
            assert_eq!(ack["status"], "stored", "{ack}");
        }
        // ...while timing a message between two users who do read.
        let started = Instant::now();
        a.send_message(&bob.id, &format!("ping {i}"), &format!("p{i}"))
            .await;
        let m = b.recv_type("message").await;
        assert_eq!(m["body"], format!("ping {i}"));
        worst = worst.max(started.elapsed());
    }
    eprintln!("worst alice -> bob latency beside a stalled reader: {worst:?}");
    assert!(
        worst < Duration::from_millis(500),
        "delivery between other users took {worst:?}"
    );
}

/// A sender flooding one recipient is refused once the recipient has the
/// maximum of unconfirmed messages; the recipient stays connected and
/// gets everything that was accepted.
#[tokio::test]
async fn a_flooding_sender_is_refused_while_its_receiver_stays_connected() {
    let s = TestServer::start_with(|c| c.hub.offline_queue_max = 50).await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let mut a = online(&s, &alice.token).await;
    let mut b = online(&s, &bob.token).await;
    let mut stored = 0;
    let mut refused = 0;
    for i in 0..80 {
        a.send(
            json!({"type": "send", "to": bob.id, "body": "flood", "client_id": format!("f{i}")}),
        )
        .await;
    }
    for _ in 0..80 {
        let reply = next_reply(&mut a).await;
        match reply["type"].as_str() {
            Some("ack") => stored += 1,
            Some("error") => {
                assert_eq!(reply["code"], "queue_full", "{reply}");
                refused += 1;
            }
            _ => panic!("unexpected {reply}"),
        }
    }
    assert_eq!((stored, refused), (50, 30));
    // Bob, connected all along, gets the 50 and frees the queue by
    // confirming; alice can send again.
    let got = messages(&mut b, 50).await;
    b.send(json!({"type": "confirm", "up_to": got[49].0})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    for attempt in 0.. {
        let cid = format!("after-{attempt}");
        a.send(json!({"type": "send", "to": bob.id, "body": "after", "client_id": cid}))
            .await;
        if next_reply(&mut a).await["type"] == "ack" {
            break;
        }
        assert!(Instant::now() < deadline, "still refused after confirming");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(messages(&mut b, 1).await[0].2, "after");
}

/// The next ack or error, skipping everything else.
async fn next_reply(c: &mut Native) -> Value {
    loop {
        let f = c.recv().await;
        if f["type"] == "ack" || f["type"] == "error" {
            return f;
        }
    }
}
