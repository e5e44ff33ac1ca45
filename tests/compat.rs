//! The QMessageServer-compatible protocol, driven over real WebSockets
//! against a real server with a temporary SQLite file.

mod support;

use serde_json::json;
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
}
