//! The traffic of `cluster_acceptance.rs`: numbered messages streamed on
//! `/ws` (pipelined, or one by one resending what was refused), read back
//! and checked for order and duplicates, and a DTLS device association.

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sotto_dtls::PskKey;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Sends a sender has unanswered at most.
pub const WINDOW: usize = 32;
/// The longest wait for one ack: three nodes' writers take turns on the
/// recipient's inbox row, each holding it for a whole batch, which on a
/// busy machine and a debug build takes seconds.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// The next JSON datagram a device gets.
pub async fn device_json(dev: &mut sotto_dtls::client::Association) -> Value {
    serde_json::from_str(&crate::dtls_support::recv_text(dev).await).expect("JSON datagram")
}

/// A device association on `addr`, once the node has loaded its key (the
/// key ring is refreshed from the database every 2 s).
pub async fn device(
    addr: std::net::SocketAddr,
    identity: &str,
    key: &PskKey,
) -> sotto_dtls::client::Association {
    let deadline = Instant::now() + WAIT;
    loop {
        match crate::dtls_support::connect_to(addr, identity, key, Duration::from_secs(2)).await {
            Ok(a) => return a,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the device never connects: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `count` numbered messages to `to` on one `/ws` connection
/// without waiting for each ack (at most [`WINDOW`] unanswered, as a
/// client keeping its link busy would), reading acks meanwhile; returns
/// how many were acked.
pub async fn stream_numbered(
    url: String,
    token: String,
    to: String,
    tag: &'static str,
    count: u32,
) -> usize {
    let (ws, _) = upgrade(&url, Cred::Bearer(&token), None)
        .await
        .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"));
    let (mut tx, mut rx) = ws.split();
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let room = window.clone();
    let reader = tokio::spawn(async move {
        let mut acked = 0usize;
        while acked < count as usize {
            let f: Value = match tokio::time::timeout(ACK_WAIT, rx.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(&t).expect("JSON frame"),
                Ok(Some(Ok(_))) => continue,
                other => {
                    eprintln!("{tag}: acks stopped after {acked}: {other:?}");
                    return acked;
                }
            };
            match f["type"].as_str() {
                Some("ack") => {
                    assert_eq!(f["status"], "stored", "{f}");
                    acked += 1;
                    room.add_permits(1);
                }
                Some("error") => panic!("{tag}: a send refused: {f}"),
                _ => {}
            }
        }
        acked
    });
    for n in 0..count {
        window.acquire().await.expect("open").forget();
        let frame = json!({"type": "send", "to": to, "body": format!("{tag} {n}"), "client_id": format!("{tag}-{n}")});
        tx.send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }
    let acked = reader.await.expect("reader");
    let _ = tx.close().await;
    acked
}

/// The number in a body `TAG N`.
pub fn number(body: &Value) -> u32 {
    let b = body.as_str().expect("body");
    b.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not numbered: {b}"))
}

/// Reads messages on `r` until each of `senders` has sent `upto` (its
/// last number, exclusive), confirming as it goes; returns the numbers
/// per sender in arrival order. A short quiet spell afterwards shows no
/// duplicate trails.
pub async fn collect(r: &mut Native, senders: &[&str], upto: u32) -> HashMap<String, Vec<u32>> {
    let mut got: HashMap<String, Vec<u32>> = HashMap::new();
    let done = |got: &HashMap<String, Vec<u32>>| {
        senders
            .iter()
            .all(|s| got.get(*s).is_some_and(|v| v.last() == Some(&(upto - 1))))
    };
    let mut unconfirmed = 0;
    while !done(&got) {
        let m = r.recv_type("message").await;
        let from = m["from"].as_str().expect("from").to_owned();
        if senders.contains(&from.as_str()) {
            got.entry(from).or_default().push(number(&m["body"]));
        }
        unconfirmed += 1;
        if unconfirmed >= 100 {
            r.send(json!({"type": "confirm", "up_to": m["pos"]})).await;
            unconfirmed = 0;
        }
    }
    r.expect_no("message", Duration::from_millis(300)).await;
    got
}

/// Exactly 0..n, in order.
pub fn assert_sequence(what: &str, got: Option<&Vec<u32>>, range: std::ops::Range<u32>) {
    let got = got.cloned().unwrap_or_default();
    let want: Vec<u32> = range.collect();
    if got != want {
        let dup = got.windows(2).find(|w| w[1] <= w[0]);
        panic!(
            "{what}: {} numbers arrived, {} expected; first out of order or repeated: {dup:?}",
            got.len(),
            want.len()
        );
    }
}

/// What the steady sender saw.
#[derive(Default)]
pub struct Tally {
    pub acked: AtomicU64,
    pub refused: AtomicU64,
}

/// Sends numbered messages one by one until `stop`, like a real client:
/// a send refused (or unanswered) is sent again with the same client_id
/// until acked. Returns how many were acked (numbers 0..that) and the
/// error codes seen.
pub async fn steady_sender(
    mut n: Native,
    to: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> (u32, Vec<String>) {
    let mut codes = Vec::new();
    let mut next = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let id = format!("f-{next}");
        n.send(json!({"type": "send", "to": to, "body": format!("f {next}"), "client_id": id}))
            .await;
        let answer = loop {
            let f = n
                .try_recv(Duration::from_secs(30))
                .await
                .expect("an answer to every send");
            if (f["type"] == "ack" || f["type"] == "error")
                && f["ref"].as_str().or(f["client_id"].as_str()) == Some(&id)
            {
                break f;
            }
        };
        if answer["type"] == "ack" {
            next += 1;
            tally.acked.fetch_add(1, Ordering::SeqCst);
        } else {
            codes.push(answer["code"].as_str().unwrap_or("?").to_owned());
            tally.refused.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Paced: the point is traffic during the cuts, not load.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (next, codes)
}

/// Waits until the sender has `n` more acks than `from`.
pub async fn acks_grow(t: &Tally, by: u64) {
    let from = t.acked.load(Ordering::SeqCst);
    assert!(
        eventually(|| async { t.acked.load(Ordering::SeqCst) >= from + by }).await,
        "sends are acked again"
    );
}
