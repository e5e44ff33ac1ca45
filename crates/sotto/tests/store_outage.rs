//! A store outage never logs anyone out: the real server on a real SQLite
//! file, with a switch in front of the store that makes every call fail
//! as "unavailable" and then lets them through again.

mod support;

use serde_json::json;
use sotto_core::ports::fault::{FaultSwitch, FaultyStore};
use sotto_server::{Config, Server};
use std::time::Duration;
use support::*;

/// A server whose store can be switched off and on.
async fn start_faulty() -> (TestServer, FaultSwitch) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sotto.db");
    let mut config = Config::for_tests(db.to_str().unwrap());
    config.hub.presence_interval = Duration::from_millis(20);
    let mut switch = None;
    let server = Server::start_wrapping_store(config, |real| {
        let (store, s) = FaultyStore::wrap(real);
        switch = Some(s);
        store
    })
    .await
    .unwrap();
    (TestServer { server, dir }, switch.unwrap())
}

#[tokio::test]
async fn an_outage_answers_503_and_sessions_survive_it() {
    let (server, switch) = start_faulty().await;
    let alice = api_user(&server, "alice").await;
    let bob = api_user(&server, "bob").await;
    let mut open_ws = Native::connect(&server, &alice.token).await;
    open_ws.recv_type("users").await;

    switch.fail();
    let login = post_json(
        &server,
        "/api/login",
        json!({"name": "alice", "password": "pw-of-alice"}),
    )
    .await;
    assert_eq!(
        (login.status, login.error_code()),
        (503, "unavailable"),
        "{}",
        login.json
    );
    assert!(login.header("retry-after").is_some());
    let me = get_with_token(&server, "/api/me", &alice.token).await;
    assert_eq!(
        (me.status, me.error_code()),
        (503, "unavailable"),
        "{}",
        me.json
    );
    assert!(
        me.header("www-authenticate").is_none(),
        "not a credential problem"
    );

    match upgrade(&server.ws_url(), Cred::Bearer(&bob.token), None).await {
        Err((status, body)) => {
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "unavailable");
        }
        Ok(_) => panic!("upgrade accepted while the store is down"),
    }

    open_ws
        .send(json!({"type": "send", "to": bob.id, "body": "hi", "client_id": "c-1"}))
        .await;
    let error = open_ws.recv_type("error").await;
    assert_eq!(
        (error["code"].as_str(), error["ref"].as_str()),
        (Some("internal"), Some("c-1"))
    );

    let mut compat = Client::connect(&server.chat_url()).await;
    let reply = compat.authorize(&bob.token).await;
    assert_eq!(reply["valid"], false, "{reply}");
    assert!(
        reply["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{reply}"
    );
    assert!(
        reply.get("event").is_none(),
        "no logout event during an outage: {reply}"
    );

    switch.restore();
    // Same sockets, same tokens: nothing was logged out.
    let reply = compat.authorize(&bob.token).await;
    assert_eq!(reply["valid"], true, "{reply}");
    let me = get_with_token(&server, "/api/me", &alice.token).await;
    assert_eq!(me.status, 200, "{}", me.json);
    let ack = open_ws.send_message(&bob.id, "hi again", "c-2").await;
    assert_eq!(ack["status"], "stored", "{ack}");
    assert!(
        upgrade(&server.ws_url(), Cred::Bearer(&bob.token), None)
            .await
            .is_ok()
    );
    server.server.shutdown().await;
}

/// An authenticated compat connection that authorizes again during an
/// outage stays authenticated and open.
#[tokio::test]
async fn a_compat_session_is_not_logged_out_by_an_outage() {
    let (server, switch) = start_faulty().await;
    let mut carol = registered(&server, "carol").await;
    let token = carol.token.clone().unwrap();
    switch.fail();
    let reply = carol.authorize(&token).await;
    assert_eq!(reply["valid"], false, "{reply}");
    assert!(reply.get("event").is_none(), "{reply}");
    switch.restore();
    let reply = carol.authorize(&token).await;
    assert_eq!(reply["valid"], true, "{reply}");
    server.server.shutdown().await;
}

/// Logging in again over compat revokes the previous compat token. When
/// the store cannot revoke it, the new login is refused (a retryable
/// error, not a token) and the old token keeps working: never two.
#[tokio::test]
async fn a_compat_login_that_cannot_revoke_the_old_token_is_refused() {
    let (server, switch) = start_faulty().await;
    let mut first = registered(&server, "dora").await;
    let old = first.token.clone().unwrap();

    switch.fail_only("delete_other_sessions");
    let mut second = Client::connect(&server.chat_url()).await;
    let reply = second.login("dora", "pw").await;
    assert_eq!(reply["valid"], false, "{reply}");
    assert!(reply.get("token").is_none(), "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("temporarily unavailable")),
        "{reply}"
    );

    switch.restore();
    // The first connection was not replaced and its token still works.
    let again = first.authorize(&old).await;
    assert_eq!(again["valid"], true, "{again}");
    // Once the store is back, the login goes through and replaces it.
    let reply = second.login("dora", "pw").await;
    assert_eq!(reply["valid"], true, "{reply}");
    let revoked = Client::connect(&server.chat_url())
        .await
        .authorize(&old)
        .await;
    assert_eq!(revoked["valid"], false, "{revoked}");
    server.server.shutdown().await;
}
