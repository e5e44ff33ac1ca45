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
        if p.got.len().is_multiple_of(every) {
            let confirm = json!({"type": "confirm", "up_to": p.last_pos()});
            let _ = ws.send(Message::text(confirm.to_string())).await;
        }
    }
    true
}

/// Sends messages `m<i>` (then `pad`) with client ids `c<i>` for each `i`
/// of `range` to `to`, at most `window` unacked at once; returns the ack
/// ids in the order acked, and the slowest ack.
async fn pipelined(
    c: &mut Native,
    to: &str,
    range: std::ops::RangeInclusive<usize>,
    pad: &str,
    window: usize,
) -> (Vec<i64>, Duration) {
    let n = range.clone().count();
    let mut todo = range;
    let mut ids = Vec::with_capacity(n);
    let mut sent_at = HashMap::new();
    let mut slowest = Duration::ZERO;
    while ids.len() < n {
        while sent_at.len() < window {
            let Some(i) = todo.next() else { break };
            let body = format!("m{i}{pad}");
            c.send(json!({"type": "send", "to": to, "body": body, "client_id": format!("c{i}")}))
                .await;
            sent_at.insert(format!("c{i}"), Instant::now());
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
    // Throttled towards the reader, so the stream is still flowing when
    // the sender is done.
    let down = Shape {
        rate: 2_000_000,
        ..delay
    };
    let relay = TcpRelay::start(s.server.http_addr(), delay, down, None, 13).await;
    let mut a = online(&s, &alice.token).await;
    let to = bob.id.clone();
    let sender = tokio::spawn(async move { pipelined(&mut a, &to, 1..=N, "", 100).await.0 });

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
    assert_eq!(
        p.got.len(),
        N,
        "not everything arrived in {CONNECTS_MAX} connections"
    );
    eprintln!(
        "{N} messages over {} connections, {} cuts, {} delayed chunks, {} bytes down",
        relay.accepted(),
        relay.cuts(),
        relay.delayed(),
        relay.bytes(Dir::Down)
    );
    assert!(
        relay.cuts() >= 3,
        "the link was cut only {} times",
        relay.cuts()
    );
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

#[tokio::test]
async fn a_stalled_reader_is_dropped_and_gets_again_only_what_it_did_not_confirm() {
    const WRITE_TIMEOUT: Duration = Duration::from_millis(2_000);
    // Well under the write timeout: an ack that waited on the stalled
    // reader's socket would take at least that long. (Generous, because a
    // loaded 2-core machine has been seen to take 528 ms for an ack.)
    const ACK_BOUND: Duration = Duration::from_millis(1_200);
    let s = TestServer::start_with(|c| c.write_timeout = WRITE_TIMEOUT).await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let plain = Shape::default();
    // A 4 KiB window on the server's side of the relay: a stalled link
    // blocks the server's writes after a few frames.
    let relay = TcpRelay::start(s.server.http_addr(), plain, plain, Some(4096), 21).await;
    let mut a = online(&s, &alice.token).await;
    let mut b = through(&relay, &bob.token, None).await.expect("connected");
    pipelined(&mut a, &bob.id, 1..=20, "", 20).await;
    let mut p = Processed::default();
    let deadline = Instant::now() + SCENARIO;
    assert!(read_until_broken(&mut b, &mut p, 20, 1_000, 0, deadline).await);
    // Bob processed ten and says so; the receipt shows the server took it.
    let confirm = json!({"type": "confirm", "up_to": p.got[9].0});
    b.send(Message::text(confirm.to_string())).await.unwrap();
    assert_eq!(a.recv_type("delivered").await["id"], 10);

    relay.stall(Dir::Down);
    let stalled_at = Instant::now();
    let pad = "z".repeat(60 * 1024);
    // 7 MiB: more than the server's socket takes in (up to tcp_wmem's
    // maximum, 4 MiB by default) and its connection's queue (1 MiB), so
    // its writes to bob block.
    let (_, slowest) = pipelined(&mut a, &bob.id, 21..=140, &pad, 4).await;
    eprintln!("slowest ack while bob's link stalled: {slowest:?}");
    assert!(
        slowest < ACK_BOUND,
        "an ack took {slowest:?} beside a stalled reader"
    );
    // The server drops bob as a slow consumer once a write has made no
    // progress for the write timeout.
    let hub = s.server.hub().clone();
    let hub = &hub;
    assert!(
        eventually(|| async move { hub.online_count() == 1 }).await,
        "the stalled reader was not dropped"
    );
    // Not before a write could have waited out the deadline.
    assert!(stalled_at.elapsed() >= WRITE_TIMEOUT);
    assert!(relay.stalled() > 0, "the relay never held anything back");
    // What was stuck in the link comes through, then the end: the server
    // closed the socket. Bob processes none of it (he crashed, say).
    relay.resume(Dir::Down);
    while next_frame(&mut b, deadline).await.is_some() {}

    // Without `after`, the server's record of bob's confirmations decides:
    // everything after position 10, once, in order; nothing before it.
    p.got.truncate(10);
    let mut b = through(&relay, &bob.token, None)
        .await
        .expect("reconnected");
    assert!(read_until_broken(&mut b, &mut p, 140, 1_000, 1, deadline).await);
    for (i, m) in p.got.iter().enumerate() {
        let n = i + 1;
        let body = if n <= 20 {
            format!("m{n}")
        } else {
            format!("m{n}{pad}")
        };
        assert!(m.1 == n as i64 && m.2 == body, "message {} at {}", m.1, m.0);
    }
}

/// The client id of a send, `c<i>`, for `i`.
fn index_of(cid: &str) -> usize {
    cid.strip_prefix('c')
        .and_then(|i| i.parse().ok())
        .expect("c<i>")
}

/// Sends through `relay` until every one of `n` messages is acked; after
/// each broken link, resends every send it has no ack for, same client id.
/// Returns the ack ids by index, how many sends were resends, and how
/// many acks were for a message already stored (no `pos`).
async fn send_across_cuts(
    relay: &TcpRelay,
    token: &str,
    to: &str,
    n: usize,
) -> (HashMap<usize, i64>, usize, usize) {
    const WINDOW: usize = 40;
    const CUTS: u64 = 6;
    let deadline = Instant::now() + SCENARIO;
    let (mut acked, mut in_flight) = (HashMap::new(), BTreeSet::new());
    let (mut next, mut resent, mut known) = (1, 0, 0);
    let send = |i: usize| {
        let f = json!({"type": "send", "to": to, "body": format!("m{i}"), "client_id": format!("c{i}")});
        Message::text(f.to_string())
    };
    for _ in 0..CONNECTS_MAX {
        if acked.len() == n {
            break;
        }
        // Past the head: the copies of its own messages are not replayed.
        let Some(mut ws) = through(relay, token, Some(1_000_000)).await else {
            continue;
        };
        match relay.cuts() {
            // Cut while sending (frames cut short)...
            c if c < CUTS && c % 2 == 0 => relay.arm_cut(Dir::Up, 500..6_000),
            // ...or while acks come back (stored, but the sender cannot know).
            c if c < CUTS => relay.arm_cut(Dir::Down, 200..4_000),
            _ => {}
        }
        resent += in_flight.len();
        let mut ok = true;
        for &i in &in_flight {
            ok = ok && ws.send(send(i)).await.is_ok();
        }
        while ok && acked.len() < n {
            while next <= n && in_flight.len() < WINDOW {
                in_flight.insert(next);
                ok = ok && ws.send(send(next)).await.is_ok();
                next += 1;
            }
            let Some(f) = next_frame(&mut ws, deadline).await else {
                break;
            };
            if f["type"] == "error" {
                panic!("a send was refused: {f}");
            }
            if f["type"] != "ack" {
                continue;
            }
            let i = index_of(f["client_id"].as_str().expect("client_id"));
            if in_flight.remove(&i) {
                known += usize::from(f.get("pos").is_none());
                acked.insert(i, f["id"].as_i64().expect("id"));
            }
        }
    }
    assert_eq!(
        acked.len(),
        n,
        "not all acked in {CONNECTS_MAX} connections"
    );
    (acked, resent, known)
}

#[tokio::test]
async fn a_sender_cut_with_sends_in_flight_resends_and_each_arrives_once() {
    const N: usize = 300;
    let s = TestServer::start().await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let delay = Shape {
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(2),
        rate: 0,
    };
    let relay = TcpRelay::start(s.server.http_addr(), delay, delay, None, 7).await;
    // Bob, connected directly, reads until the last message.
    let mut b = online(&s, &bob.token).await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let m = b.recv_type("message").await;
            if m["body"] == "end" {
                return got;
            }
            got.push(m);
        }
    });

    // While the link is down, the relay refuses: the sender learns it at
    // once, not by a timeout.
    relay.set_down(true);
    assert!(through(&relay, &alice.token, None).await.is_none());
    assert_eq!(relay.refused(), 1);
    relay.set_down(false);

    let (acked, resent, known) = send_across_cuts(&relay, &alice.token, &bob.id, N).await;
    eprintln!(
        "{N} messages, {} cuts, {resent} resends, {known} of them already stored",
        relay.cuts()
    );
    assert!(
        relay.cuts() >= 3,
        "the link was cut only {} times",
        relay.cuts()
    );
    assert!(resent > 0, "no send was in flight at a cut");
    // Committed after every other: anything delivered twice would come
    // before it.
    let mut a = Native::connect_after(&s, &alice.token, 1_000_000).await;
    a.send_message(&bob.id, "end", "end").await;
    let got = reader.await.expect("bob's reader");
    let cids: Vec<usize> = got
        .iter()
        .map(|m| index_of(m["client_id"].as_str().unwrap()))
        .collect();
    let mut once = cids.clone();
    once.sort_unstable();
    once.dedup();
    assert_eq!(
        (cids.len(), once.len()),
        (N, N),
        "each message once: {cids:?}"
    );
    for (k, m) in got.iter().enumerate() {
        let i = cids[k];
        assert_eq!(m["id"].as_i64(), Some(k as i64 + 1), "ids in order: {m}");
        assert_eq!(m["id"].as_i64(), Some(acked[&i]), "the acked id for c{i}");
        assert_eq!(m["body"], format!("m{i}"));
    }
}
