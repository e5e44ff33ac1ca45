//! WebSocket clients of `/ws` across a broken TCP link (issue 13): the
//! TCP impairment relay sits between a client and the real server (real
//! SQLite file) and cuts, stalls or delays the link while messages flow.
//! Whatever the link does, a recipient that resumes from the position it
//! processed ends with every acked message exactly once and in order; one
//! that relies on the server's record of its confirmations gets what it
//! did not confirm and nothing else; a stalled reader never slows its
//! sender's acks; and a sender that resends what it has no ack for, with
//! the same `client_id`, delivers each message once.

mod impair;
mod support;

use futures_util::{SinkExt, StreamExt};
use impair::tcp::{Dir, Shape, TcpRelay};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use support::*;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long each scenario may take in all, far above what it needs.
const SCENARIO: Duration = Duration::from_secs(30);
/// Upgrades tried in one scenario before it fails (most fail only when an
/// armed cut or `set_down` hits the handshake).
const CONNECTS_MAX: usize = 40;

/// An upgrade through `relay`, or `None` if the link broke during it.
async fn through(relay: &TcpRelay, token: &str, after: Option<i64>) -> Option<Ws> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let query = after.map(|a| format!("?after={a}")).unwrap_or_default();
    let mut req = format!("ws://{}/ws{query}", relay.addr)
        .into_client_request()
        .expect("request");
    let bearer = format!("Bearer {token}").parse().unwrap();
    req.headers_mut().insert("authorization", bearer);
    let connect = tokio_tungstenite::connect_async(req);
    match tokio::time::timeout(WAIT, connect).await {
        Ok(Ok((ws, _))) => Some(ws),
        Ok(Err(_)) => None,
        Err(_) => panic!("an upgrade through the relay hung"),
    }
}

/// The next text frame as JSON, or `None` once the connection is broken
/// or closed. Panics if nothing comes by `deadline`.
async fn next_frame(ws: &mut Ws, deadline: Instant) -> Option<Value> {
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        match next.expect("a frame or a broken link before the deadline") {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).expect("JSON")),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// What a recipient processed: (pos, id, body), in the order processed.
#[derive(Default)]
struct Processed {
    got: Vec<(i64, i64, String)>,
}

impl Processed {
    fn last_pos(&self) -> i64 {
        self.got.last().map_or(0, |m| m.0)
    }

    /// Takes one `message` frame. A position that is not the next one is
    /// a repeat or a gap at a seam: the very failure these tests look for.
    fn take(&mut self, m: &Value, seam: usize) {
        let pos = m["pos"].as_i64().expect("a pos");
        assert_eq!(
            pos,
            self.last_pos() + 1,
            "after reconnect {seam}, expected the next position: {m}"
        );
        let id = m["id"].as_i64().expect("an id");
        let body = m["body"].as_str().expect("a body").to_owned();
        self.got.push((pos, id, body));
    }
}

/// Reads `message` frames into `p` until it holds `want` or the link
/// breaks, confirming every `every` messages (the confirm may be lost
/// with the link; that is part of the test). Returns whether it is done.
async fn read_until_broken(
    ws: &mut Ws,
    p: &mut Processed,
    want: usize,
    every: usize,
    seam: usize,
    deadline: Instant,
) -> bool {
    while p.got.len() < want {
        let Some(f) = next_frame(ws, deadline).await else {
            return false;
        };
        if f["type"] != "message" {
            continue;
        }
        p.take(&f, seam);
        if p.got.len() % every == 0 {
            let confirm = json!({"type": "confirm", "up_to": p.last_pos()});
            let _ = ws.send(Message::text(confirm.to_string())).await;
        }
    }
    true
}

/// Sends `n` messages `m1`… to `to`, at most `window` unacked at once;
/// returns the ack ids by body and the slowest ack.
async fn pipelined(c: &mut Native, to: &str, n: usize, window: usize) -> (Vec<i64>, Duration) {
    let mut ids = Vec::with_capacity(n);
    let mut sent_at = HashMap::new();
    let mut slowest = Duration::ZERO;
    let mut next = 1;
    while ids.len() < n {
        while next <= n && sent_at.len() < window {
            let f = json!({"type": "send", "to": to, "body": format!("m{next}"), "client_id": format!("c{next}")});
            c.send(f).await;
            sent_at.insert(format!("c{next}"), Instant::now());
            next += 1;
        }
        let ack = c.recv_type("ack").await;
        assert_eq!(ack["status"], "stored", "{ack}");
        let cid = ack["client_id"].as_str().expect("client_id");
        let at = sent_at.remove(cid).expect("an ack for a send in flight");
        slowest = slowest.max(at.elapsed());
        ids.push(ack["id"].as_i64().expect("id"));
    }
    (ids, slowest)
}

/// Connects directly and waits for the `users` snapshot.
async fn online(s: &TestServer, token: &str) -> Native {
    let mut c = Native::connect(s, token).await;
    c.recv_type("users").await;
    c
}

#[tokio::test]
async fn a_reader_cut_mid_stream_resumes_with_every_message_once_in_order() {
    const N: usize = 2_000;
    const CUTS: u64 = 5;
    // Every message unconfirmed at once must fit the pending cap.
    let s = TestServer::start_with(|c| c.hub.offline_queue_max = 2 * N as u32).await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let delay = Shape {
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(2),
        rate: 0,
    };
    let relay = TcpRelay::start(s.server.http_addr(), delay, delay, None, 13).await;
    let mut a = online(&s, &alice.token).await;
    let to = bob.id.clone();
    let sender = tokio::spawn(async move { pipelined(&mut a, &to, N, 100).await.0 });

    let deadline = Instant::now() + SCENARIO;
    let mut p = Processed::default();
    let mut seam = 0;
    for _ in 0..CONNECTS_MAX {
        // Resume after what this device processed, as a client that keeps
        // its place would; `after=0` the first time is "from the start".
        let Some(mut ws) = through(&relay, &bob.token, Some(p.last_pos())).await else {
            continue;
        };
        if relay.cuts() < CUTS {
            // A cut somewhere in the next 2-40 KiB, mid-frame as likely as not.
            relay.arm_cut(Dir::Down, 2_000..40_000);
        }
        if read_until_broken(&mut ws, &mut p, N, 50, seam, deadline).await {
            break;
        }
        seam += 1;
    }
    let acked = sender.await.expect("the sender");
    assert_eq!(p.got.len(), N, "not everything arrived in {CONNECTS_MAX} connections");
    eprintln!(
        "{N} messages over {} connections, {} cuts, {} delayed chunks, {} bytes down",
        relay.counts.accepted.load(std::sync::atomic::Ordering::SeqCst),
        relay.cuts(),
        relay.delayed(),
        relay.bytes(Dir::Down)
    );
    assert!(relay.cuts() >= 3, "the link was cut only {} times", relay.cuts());
    // Positions 1..=N (checked one by one as they came), and the messages
    // at them are the acked ones, in the order they were sent.
    let ids: Vec<i64> = p.got.iter().map(|m| m.1).collect();
    let want: Vec<i64> = (1..=N as i64).collect();
    assert_eq!(ids, want, "ids in order, each once");
    let mut sorted_acks = acked.clone();
    sorted_acks.sort_unstable();
    assert_eq!(sorted_acks, want, "every send acked once");
    for (i, m) in p.got.iter().enumerate() {
        assert_eq!(m.2, format!("m{}", i + 1), "the message at {}", m.0);
    }
}
