//! The device bridge against the real hub: a DTLS device bound to a user
//! sends a JSON message that a WebSocket client of another user receives,
//! and gets the reply back over DTLS, also when it was away.

mod dtls_support;
mod support;

use dtls_support::{connect, recv_text};
use serde_json::{Value, json};
use sotto_dtls::{PskIdentity, PskKey, PskStore};
use sotto_store_sqlite::SqliteStore;
use std::time::Duration;
use support::*;

async fn recv_json(a: &mut sotto_dtls::client::Association) -> Value {
    serde_json::from_str(&recv_text(a).await).expect("JSON datagram")
}

#[tokio::test]
async fn a_device_and_a_websocket_user_talk_through_the_hub() {
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let key = PskKey::generate();
    let store = SqliteStore::open(s.db_path().to_str().unwrap())
        .await
        .unwrap();
    let psks = store.psks();
    psks.add_psk(
        &PskIdentity::parse("thermostat").unwrap(),
        &key,
        Some(&alice.id),
        0,
    )
    .await
    .unwrap();
    let port = s.server.dtls().expect("DTLS on").local_addr().port();

    let mut b = Native::connect(&s, &bob.token).await;
    b.recv_type("users").await;
    b.watch(&[&alice.id]).await;
    // The endpoint picks new keys up from the store within its refresh period.
    let mut dev = None;
    for _ in 0..50 {
        if let Ok(d) = connect(port, "thermostat", &key).await {
            dev = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut dev = dev.expect("the device connects once its key is loaded");

    let note = json!({"to": bob.id, "body": "21.5 C"}).to_string();
    dev.send(note.as_bytes()).await.unwrap();
    let ack = recv_json(&mut dev).await;
    // The message, and Alice's presence, online with her device (in
    // either order: the presence broadcast may come first).
    let (mut m, mut online) = (None, false);
    while m.is_none() || !online {
        let f = b.recv().await;
        match f["type"].as_str() {
            Some("message") => m = Some(f),
            Some("presence") => {
                assert_eq!(f["user"].as_str(), Some(alice.id.as_str()));
                online |= f["online"] == true;
            }
            _ => {}
        }
    }
    let m = m.unwrap();
    assert_eq!(
        (m["from"].as_str(), m["body"].as_str()),
        (Some(alice.id.as_str()), Some("21.5 C"))
    );
    assert_eq!(ack, json!({"ack": m["id"]}));

    let reply = b.send_message(&alice.id, "set 20 C", "r1").await;
    assert_eq!(reply["status"], "stored");
    assert_eq!(
        recv_json(&mut dev).await,
        json!({"id": reply["id"], "from": bob.id, "body": "set 20 C"})
    );

    // While the device is away, messages are stored, and replayed when it
    // comes back.
    dev.close().await;
    // (An earlier "online" may still be on its way: the broadcast and the
    // new-contact notice can both say so.)
    let mut gone = b.recv_type("presence").await;
    while gone["online"] == true {
        gone = b.recv_type("presence").await;
    }
    assert_eq!(gone["user"].as_str(), Some(alice.id.as_str()));
    let stored = b.send_message(&alice.id, "while you were out", "r2").await;
    assert_eq!(stored["status"], "stored");
    let mut dev = connect(port, "thermostat", &key).await.unwrap();
    assert_eq!(recv_json(&mut dev).await["body"], "while you were out");
    assert_eq!(b.recv_type("delivered").await["id"], stored["id"]);

    assert_eq!(
        s.metric("sotto_dtls_sessions").await,
        1.0,
        "DTLS sessions in /metrics"
    );
    let unknown = json!({"to": "nobody", "body": "?"}).to_string();
    dev.send(unknown.as_bytes()).await.unwrap();
    assert_eq!(
        recv_json(&mut dev).await,
        json!({"error": "unknown recipient"})
    );
}
