//! Many clients at once: nothing lost, nothing duplicated.

mod support;

use std::collections::HashSet;
use support::*;

const CLIENTS: usize = 100;
const PER_CLIENT: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clients_exchange_ten_thousand_messages() {
    let s = TestServer::start().await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(registered(&s, &format!("user{i}")).await);
    }
    let ids: Vec<String> = clients.iter().map(|c| c.id.clone().unwrap()).collect();
    // Every client sends PER_CLIENT messages, spread over all others, and
    // receives exactly PER_CLIENT (each sender's k-th message goes to
    // client (i + 1 + k % (CLIENTS-1)) % CLIENTS).
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let sender = async {
                for k in 0..PER_CLIENT {
                    let to = (i + 1 + k % (CLIENTS - 1)) % CLIENTS;
                    let token = c.token.clone().unwrap();
                    let body = format!("{i}:{k}");
                    let req = serde_json::json!({"action": 3, "token": token, "target": ids[to], "message": body});
                    futures_util::SinkExt::send(&mut c.ws, tokio_tungstenite::tungstenite::Message::text(req.to_string()))
                        .await
                        .unwrap();
                }
            };
            sender.await;
            let mut seen = HashSet::new();
            while seen.len() < PER_CLIENT {
                let m = c.recv_message().await;
                let body = m["message"].as_str().unwrap().to_owned();
                assert!(seen.insert(body.clone()), "duplicate {body}");
            }
            assert!(c.try_recv(std::time::Duration::from_millis(200)).await.is_none_or(|v| v["event"] == 4));
            seen
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), CLIENTS * PER_CLIENT);
}
