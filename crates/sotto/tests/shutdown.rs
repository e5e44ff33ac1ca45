//! Graceful shutdown during a burst of sends: every message the server
//! acknowledged is in the store after a restart.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_shutdown_mid_burst() {
    let s = TestServer::start().await;
    let bob = api_user(&s, "bob").await;
    let mut senders = Vec::new();
    for i in 0..4 {
        let u = api_user(&s, &format!("sender{i}")).await;
        let c = Native::connect(&s, &u.token).await;
        senders.push((u, c));
    }
    let mut bursts = Vec::new();
    for (u, mut c) in senders {
        let to = bob.id.clone();
        bursts.push(tokio::spawn(async move {
            for n in 0..1000 {
                let f = json!({"type": "send", "to": to, "body": format!("{} {n}", u.name), "client_id": format!("{n}")});
                if c.ws.send(Message::text(f.to_string())).await.is_err() {
                    break;
                }
            }
            // Collect acks until the server closes the socket.
            let mut acked = BTreeSet::new();
            let mut close = None;
            while let Ok(Some(frame)) = tokio::time::timeout(WAIT, c.ws.next()).await {
                match frame {
                    Ok(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(&t).unwrap();
                        if v["type"] == "ack" {
                            acked.insert(v["id"].as_i64().unwrap());
                        }
                    }
                    Ok(Message::Close(f)) => {
                        close = f.map(|f| u16::from(f.code));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            (u.id, acked, close)
        }));
    }
    // Restart mid-burst: once the first messages are stored.
    let server = &s;
    let stored = || async move { server.metric("sotto_messages_stored_total").await > 0.0 };
    assert!(eventually(stored).await, "nothing stored");
    let s = s.restart_with(|_| {}).await;
    let mut acked_total = 0;
    for b in bursts {
        let (sender, acked, close) = b.await.unwrap();
        assert_eq!(close, Some(1001), "a close frame 'going away'");
        assert!(acked.len() < 1000, "the shutdown came mid-burst");
        acked_total += acked.len();
        let stored = history_ids(&s, &bob, &sender).await;
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    }
    assert!(
        acked_total > 0,
        "some sends were acknowledged before the shutdown"
    );
}

async fn history_ids(s: &TestServer, bob: &ApiUser, with: &str) -> BTreeSet<i64> {
    let me = api_login(s, &bob.name).await;
    let mut c = Native::connect(s, &me.token).await;
    let mut ids = BTreeSet::new();
    let mut before: Option<i64> = None;
    loop {
        let mut q = json!({"type": "history", "with": with, "limit": 100});
        if let Some(b) = before {
            q["before"] = json!(b);
        }
        c.send(q).await;
        let page = c.recv_type("history").await;
        let msgs = page["messages"].as_array().unwrap();
        if msgs.is_empty() {
            return ids;
        }
        for m in msgs {
            ids.insert(m["id"].as_i64().unwrap());
        }
        before = msgs.last().and_then(|m| m["id"].as_i64());
    }
}
