//! The device path into the hub and back, through the DeviceBridge trait,
//! with a small in-test hub standing in for the real one.

mod dtls_support;

use async_trait::async_trait;
use dtls_support::{Dtls, connect, recv_text};
use serde_json::{Value, json};
use sotto_core::auth::UserId;
use sotto_dtls::{
    BridgeError, DeliverError, DeviceBridge, DeviceMessage, DeviceOutbox, DeviceSessionId,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Records what devices send; keeps the outboxes of attached users.
#[derive(Default)]
struct TestHub {
    sent: Mutex<Vec<(String, String, String)>>,
    outboxes: Mutex<HashMap<String, DeviceOutbox>>,
    detached: Mutex<Vec<(String, DeviceSessionId)>>,
    bounced: Mutex<Vec<DeviceMessage>>,
}

#[async_trait]
impl DeviceBridge for TestHub {
    async fn send(&self, from: &str, to: &str, body: String) -> Result<u64, BridgeError> {
        if to == "nobody" {
            return Err(BridgeError::UnknownRecipient);
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push((from.into(), to.into(), body));
        Ok(100 + sent.len() as u64)
    }

    fn attach(&self, user_id: &str, outbox: DeviceOutbox) {
        self.outboxes.lock().unwrap().insert(user_id.into(), outbox);
    }

    fn detach(&self, user_id: &str, session: DeviceSessionId) {
        self.outboxes.lock().unwrap().remove(user_id);
        self.detached
            .lock()
            .unwrap()
            .push((user_id.into(), session));
    }

    fn bounce(&self, _user_id: &str, msg: DeviceMessage) {
        self.bounced.lock().unwrap().push(msg);
    }
}

fn user_id(id: &str) -> UserId {
    UserId::parse(id).expect("a valid user id")
}

impl TestHub {
    fn outbox(&self, user: &str) -> DeviceOutbox {
        self.outboxes
            .lock()
            .unwrap()
            .get(user)
            .cloned()
            .expect("attached")
    }
}

async fn recv_json(a: &mut sotto_dtls::client::Association) -> Value {
    serde_json::from_str(&recv_text(a).await).expect("JSON datagram")
}

#[tokio::test]
async fn a_bound_device_sends_into_the_hub_and_receives_from_it() {
    let hub = Arc::new(TestHub::default());
    let dtls = Dtls::start_with(|_| {}, Some(hub.clone())).await;
    let key = dtls.add_key("thermostat", Some("alice1"));
    let mut dev = connect(dtls.port(), "thermostat", &key).await.unwrap();
    dtls.wait_for("attached", |s| s.sessions == 1).await;

    dev.send(br#"{"to": "bob222", "body": "21.5 C"}"#)
        .await
        .unwrap();
    assert_eq!(recv_json(&mut dev).await, json!({"ack": 101}));
    assert_eq!(
        hub.sent.lock().unwrap().as_slice(),
        [(
            "alice1".to_string(),
            "bob222".to_string(),
            "21.5 C".to_string()
        )]
    );

    let outbox = hub.outbox("alice1");
    let reply = DeviceMessage {
        id: 7,
        from: user_id("bob222"),
        body: "set 20 C".into(),
    };
    outbox.try_deliver(reply).unwrap();
    assert_eq!(
        recv_json(&mut dev).await,
        json!({"id": 7, "from": "bob222", "body": "set 20 C"})
    );

    dev.send(br#"{"to": "nobody", "body": "?"}"#).await.unwrap();
    assert_eq!(
        recv_json(&mut dev).await,
        json!({"error": "unknown recipient"})
    );
    dev.send(b"plain text still gets the example's ACK")
        .await
        .unwrap();
    assert!(recv_text(&mut dev).await.ends_with(": ACK"));

    dev.close().await;
    dtls.wait_for("closed", |s| s.sessions == 0).await;
    assert_eq!(hub.detached.lock().unwrap().len(), 1);
    // The session is gone: a late message is bounced back to the hub.
    let late = DeviceMessage {
        id: 8,
        from: user_id("bob222"),
        body: "late".into(),
    };
    outbox.try_deliver(late).unwrap();
    dtls.wait_for("bounced", |_| hub.bounced.lock().unwrap().len() == 1)
        .await;
    dtls.stop().await;
    assert!(matches!(
        outbox.try_deliver(DeviceMessage {
            id: 9,
            from: user_id("xxxxxx"),
            body: "y".into()
        }),
        Err(DeliverError::Closed(_))
    ));
}

#[tokio::test]
async fn sizes_are_enforced_both_ways_with_error_datagrams() {
    let hub = Arc::new(TestHub::default());
    let dtls = Dtls::start_with(|c| c.max_payload = 300, Some(hub.clone())).await;
    let key = dtls.add_key("camera", Some("carol3"));
    let mut dev = connect(dtls.port(), "camera", &key).await.unwrap();
    let big = format!(r#"{{"to": "bob222", "body": "{}"}}"#, "x".repeat(400));
    dev.send(big.as_bytes()).await.unwrap();
    let e = recv_json(&mut dev).await;
    assert_eq!(e["max"], 300, "{e}");
    assert!(hub.sent.lock().unwrap().is_empty());

    dtls.wait_for("attached", |_| {
        hub.outboxes.lock().unwrap().contains_key("carol3")
    })
    .await;
    let huge = DeviceMessage {
        id: 5,
        from: user_id("bob222"),
        body: "y".repeat(400),
    };
    hub.outbox("carol3").try_deliver(huge).unwrap();
    let e = recv_json(&mut dev).await;
    assert_eq!(
        (e["id"].clone(), e["max"].clone()),
        (json!(5), json!(300)),
        "{e}"
    );
    assert_eq!(dtls.stats().too_large, 2);
    dtls.stop().await;
}

#[tokio::test]
async fn unbound_identities_and_bad_json_get_errors() {
    let hub = Arc::new(TestHub::default());
    let dtls = Dtls::start_with(|_| {}, Some(hub.clone())).await;
    let key = dtls.add_key("loner", None);
    let mut dev = connect(dtls.port(), "loner", &key).await.unwrap();
    dev.send(br#"{"to": "bob222", "body": "hi"}"#)
        .await
        .unwrap();
    let e = recv_json(&mut dev).await;
    assert!(e["error"].as_str().unwrap().contains("not bound"), "{e}");
    dev.send(br#"{"to": "bob222""#).await.unwrap();
    let e = recv_json(&mut dev).await;
    assert!(e["error"].as_str().unwrap().contains("expected"), "{e}");
    assert!(hub.sent.lock().unwrap().is_empty());
    dtls.stop().await;
}

/// A device that restarts on the same address and port: its old session
/// stays attached until the new handshake completes, then the hub is told
/// to detach the old session and attach the new one, in that order, and
/// messages reach the new association.
#[tokio::test]
async fn a_restarted_device_is_reattached_once_its_new_handshake_completes() {
    use dtls_support::relay::LossyRelay;
    let hub = Arc::new(TestHub::default());
    let dtls = Dtls::start_with(|_| {}, Some(hub.clone())).await;
    let key = dtls.add_key("thermostat", Some("alice1"));
    let relay = LossyRelay::start(dtls.endpoint.local_addr(), &[], &[]).await;
    let wait = dtls_support::WAIT;
    let first = dtls_support::connect_to(relay.addr, "thermostat", &key, wait)
        .await
        .unwrap();
    dtls.wait_for("attached", |s| s.sessions == 1).await;
    let old = hub.outbox("alice1").session();
    drop(first);
    let mut second = dtls_support::connect_to(relay.addr, "thermostat", &key, wait)
        .await
        .unwrap();
    dtls.wait_for("second handshake", |s| s.handshakes_ok == 2)
        .await;
    assert_eq!(
        hub.detached.lock().unwrap().as_slice(),
        [("alice1".to_string(), old)]
    );
    let outbox = hub.outbox("alice1");
    assert_ne!(outbox.session(), old);
    let msg = DeviceMessage {
        id: 11,
        from: user_id("bob222"),
        body: "welcome back".into(),
    };
    outbox.try_deliver(msg).unwrap();
    assert_eq!(
        recv_json(&mut second).await,
        json!({"id": 11, "from": "bob222", "body": "welcome back"})
    );
    assert_eq!(dtls.stats().sessions, 1);
    dtls.stop().await;
}
