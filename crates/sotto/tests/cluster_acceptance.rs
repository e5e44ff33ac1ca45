//! The acceptance test of issue 12: three real `sotto serve` processes on
//! one fresh PostgreSQL database and a NATS server this test starts on a
//! free port, each node reaching both through TCP relays the test cuts.
//! Users on different nodes talk in both protocols and through a DTLS
//! device; presence, logout, key changes and the compat log-in-again rule
//! cross nodes; thousands of numbered messages arrive exactly once and in
//! order; a node's database and then its NATS link are cut during traffic
//! and it recovers with every acknowledged message delivered once; and a
//! node killed with SIGKILL has its users shown offline elsewhere within
//! the node timeout, their messages waiting for them on another node.
//!
//! Skipped with a printed reason when PostgreSQL or `nats-server` is
//! absent, failed instead under SOTTO_REQUIRE_SERVICES=1.

mod acceptance_support;
mod cluster_support;
mod dtls_support;
mod impair;
mod real_binary;
mod support;

use acceptance_support::*;
use cluster_support::{body_from, presence_of};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sotto_dtls::PskKey;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use support::*;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Numbered messages per sender in the sequence check.
const PER_SENDER: u32 = 1000;
/// Sends a sender has unanswered at most.
const WINDOW: usize = 32;
/// The longest wait for one ack: three nodes' writers take turns on the
/// recipient's inbox row, each holding it for a whole batch, which on a
/// busy machine and a debug build takes seconds.
const ACK_WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_postgres_and_nats() {
    let started = Instant::now();
    let Some(mut c) = cluster("three-node acceptance", 3).await else {
        return;
    };
    let t = started;
    eprintln!("cluster up: {:?}", t.elapsed());
    both_protocols_and_a_device(&c).await;
    eprintln!("both protocols and a device: {:?}", t.elapsed());
    numbered_messages_arrive_once_in_order(&c).await;
    eprintln!("numbered messages: {:?}", t.elapsed());
    database_then_nats_cut_during_traffic(&c).await;
    eprintln!("cuts during traffic: {:?}", t.elapsed());
    a_killed_node_s_users_go_offline_and_their_messages_wait(&mut c).await;
    eprintln!("kill -9: {:?}", t.elapsed());
    for node in &mut c.nodes {
        if let Some(s) = node.sotto.take() {
            s.stop().await;
        }
    }
    c.nats.stop().await;
}

/// The next JSON datagram a device gets.
async fn device_json(dev: &mut sotto_dtls::client::Association) -> Value {
    serde_json::from_str(&dtls_support::recv_text(dev).await).expect("JSON datagram")
}

/// A device association on `addr`, once the node has loaded its key (the
/// key ring is refreshed from the database every 2 s).
async fn device(
    addr: std::net::SocketAddr,
    identity: &str,
    key: &PskKey,
) -> sotto_dtls::client::Association {
    let deadline = Instant::now() + WAIT;
    loop {
        match dtls_support::connect_to(addr, identity, key, Duration::from_secs(2)).await {
            Ok(a) => return a,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the device never connects: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn both_protocols_and_a_device(c: &Cluster) {
    let (a, b, cn) = (c.nodes[0].s(), c.nodes[1].s(), c.nodes[2].s());
    let alice = register(a, "alice").await;
    let bob = register(b, "bob").await;
    let carol = register(cn, "carol").await;
    let dave = register(b, "dave").await;
    let mut d = native(b, &dave.token).await;
    d.recv_type("users").await;
    let mut al = native(a, &alice.token).await;
    al.recv_type("users").await;
    assert!(
        presence_of(&mut d, &alice.id).await,
        "alice, on node A, shows online on node B"
    );

    // Native (A) ↔ compat (B).
    let mut bc = Client::connect(&b.chat_url()).await;
    let r = bc.login("bob", "pw-of-bob").await;
    assert_eq!(r["valid"], true, "{r}");
    let ack = al.send_message(&bob.id, "alice to bob", "ab1").await;
    assert_eq!(ack["status"], "stored", "{ack}");
    let m = bc.recv_message().await;
    assert_eq!(
        (m["sender"].as_str(), m["message"].as_str()),
        (Some(alice.id.as_str()), Some("alice to bob"))
    );
    bc.message(&alice.id, "bob to alice").await;
    assert_eq!(body_from(&mut al, &bob.id).await, "bob to alice");

    // Native (A) ↔ carol's DTLS device (C).
    let key = psk_add(&c.db.url, "carol-thermostat", "carol").await;
    let key = PskKey::from_hex(&key).expect("a hex key");
    let mut dev = device(cn.dtls.expect("DTLS on node C"), "carol-thermostat", &key).await;
    let note = json!({"to": alice.id, "body": "21.5 C"}).to_string();
    dev.send(note.as_bytes()).await.expect("device sends");
    let ack = device_json(&mut dev).await;
    assert!(ack["ack"].is_i64(), "the device's send is acked: {ack}");
    let m = loop {
        let m = al.recv_type("message").await;
        if m["from"] == carol.id {
            break m;
        }
    };
    assert_eq!(m["body"], "21.5 C");
    assert_eq!(m["id"], ack["ack"]);
    let ack = al.send_message(&carol.id, "set 20 C", "ac1").await;
    assert_eq!(
        device_json(&mut dev).await,
        json!({"id": ack["id"], "from": alice.id, "body": "set 20 C"})
    );
    dev.close().await;

    // A key change on A reaches B.
    al.send(json!({"type": "set_key", "public_key": "alice's new key"}))
        .await;
    let changed = loop {
        let f = d.recv_type("key_changed").await;
        if f["user"] == alice.id {
            break f;
        }
    };
    assert_eq!(changed["public_key"], "alice's new key");

    // A logout on A closes that session's socket on B, and only that one.
    let second = login(a, "alice").await;
    let mut on_b = native(b, &second.token).await;
    on_b.recv_type("users").await;
    assert_eq!(logout(a, &second.token).await, 204);
    assert_eq!(on_b.expect_closed().await, Some(1000), "closed on node B");
    al.send(json!({"type": "history", "with": bob.id})).await;
    al.recv_type("history").await;

    // Logging in on C over the compat protocol closes bob's compat socket on B.
    let mut again = Client::connect(&cn.chat_url()).await;
    let r = again.login("bob", "pw-of-bob").await;
    assert_eq!(r["valid"], true, "{r}");
    bc.expect_closed().await;
}

/// Sends `count` numbered messages to `to` on one `/ws` connection
/// without waiting for each ack (at most [`WINDOW`] unanswered, as a
/// client keeping its link busy would), reading acks meanwhile; returns
/// how many were acked.
async fn stream_numbered(
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
fn number(body: &Value) -> u32 {
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
async fn collect(r: &mut Native, senders: &[&str], upto: u32) -> HashMap<String, Vec<u32>> {
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
fn assert_sequence(what: &str, got: Option<&Vec<u32>>, range: std::ops::Range<u32>) {
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

async fn numbered_messages_arrive_once_in_order(c: &Cluster) {
    let (a, b, cn) = (c.nodes[0].s(), c.nodes[1].s(), c.nodes[2].s());
    let s1 = register(a, "seq1").await;
    let s2 = register(b, "seq2").await;
    let r = register(cn, "seqr").await;
    let mut rx = native(cn, &r.token).await;
    rx.recv_type("users").await;
    let t1 = tokio::spawn(stream_numbered(
        a.ws_url(),
        s1.token.clone(),
        r.id.clone(),
        "s1",
        PER_SENDER,
    ));
    let t2 = tokio::spawn(stream_numbered(
        b.ws_url(),
        s2.token.clone(),
        r.id.clone(),
        "s2",
        PER_SENDER,
    ));
    let got = collect(&mut rx, &[&s1.id, &s2.id], PER_SENDER).await;
    let (n1, n2) = (t1.await.expect("sender one"), t2.await.expect("sender two"));
    if (n1, n2) != (PER_SENDER as usize, PER_SENDER as usize) {
        for (i, node) in c.nodes.iter().enumerate() {
            let log = node.s().log().0;
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(" INFO "))
                .take(40)
                .collect();
            eprintln!("node {i}:\n{}", tail.join("\n"));
        }
        panic!("acks: {n1} {n2}");
    }
    assert_sequence("from node A", got.get(&s1.id), 0..PER_SENDER);
    assert_sequence("from node B", got.get(&s2.id), 0..PER_SENDER);
}

/// What the steady sender saw.
#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    refused: AtomicU64,
}

/// Sends numbered messages one by one until `stop`, like a real client:
/// a send refused (or unanswered) is sent again with the same client_id
/// until acked. Returns how many were acked (numbers 0..that) and the
/// error codes seen.
async fn steady_sender(
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
async fn acks_grow(t: &Tally, by: u64) {
    let from = t.acked.load(Ordering::SeqCst);
    assert!(
        eventually(|| async { t.acked.load(Ordering::SeqCst) >= from + by }).await,
        "sends are acked again"
    );
}

async fn database_then_nats_cut_during_traffic(c: &Cluster) {
    let node = &c.nodes[1];
    let (b, cn) = (node.s(), c.nodes[2].s());
    let fs = register(b, "fsend").await;
    let fr = register(cn, "frecv").await;
    let mut rx = native(cn, &fr.token).await;
    rx.recv_type("users").await;
    let mut tx = native(b, &fs.token).await;
    tx.recv_type("users").await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let sender = tokio::spawn(steady_sender(
        tx,
        fr.id.clone(),
        stop.clone(),
        tally.clone(),
    ));
    acks_grow(&tally, 20).await;

    // PostgreSQL gone for node B: not ready, naming the database; sends
    // are refused, not acked.
    node.pg.set_down(true);
    node.pg.cut();
    let cut_at = Instant::now();
    let body = readyz_becomes(b, 503).await;
    assert_eq!(body["status"], "store unavailable", "{body}");
    assert!(body["down"]["database"].is_string(), "{body}");
    assert!(
        eventually(|| async { tally.refused.load(Ordering::SeqCst) >= 1 }).await,
        "a send during the cut is refused"
    );
    tokio::time::sleep_until(cut_at + Duration::from_secs(3)).await;
    node.pg.set_down(false);
    readyz_becomes(b, 200).await;
    acks_grow(&tally, 20).await;

    // NATS gone for node B: not ready, naming the broker; sends go on.
    node.nats.set_down(true);
    node.nats.cut();
    let cut_at = Instant::now();
    let body = readyz_becomes(b, 503).await;
    assert_eq!(body["status"], "broker unavailable", "{body}");
    assert!(body["down"]["broker"].is_string(), "{body}");
    tokio::time::sleep_until(cut_at + Duration::from_secs(3)).await;
    node.nats.set_down(false);
    readyz_becomes(b, 200).await;
    acks_grow(&tally, 20).await;

    stop.store(true, Ordering::SeqCst);
    let (acked, codes) = sender.await.expect("sender");
    assert!(
        codes.iter().all(|c| c == "internal" || c == "unavailable"),
        "refusals use the protocol's error: {codes:?}"
    );
    assert!(!codes.is_empty(), "the database cut refused sends");
    let got = collect(&mut rx, &[&fs.id], acked).await;
    assert_sequence("through the cuts", got.get(&fs.id), 0..acked);
}

async fn a_killed_node_s_users_go_offline_and_their_messages_wait(c: &mut Cluster) {
    let (a, b) = (c.nodes[0].s(), c.nodes[1].s());
    let vic = register(a, "victor").await;
    let obs = register(b, "olga").await;
    let mut o = native(b, &obs.token).await;
    o.recv_type("users").await;
    let mut v = native(a, &vic.token).await;
    v.recv_type("users").await;
    assert!(
        presence_of(&mut o, &vic.id).await,
        "victor shows online on B"
    );
    // Ten delivered and confirmed before the kill.
    let mut last = Value::Null;
    for n in 0..10 {
        last = o
            .send_message(&vic.id, &format!("k {n}"), &format!("k-{n}"))
            .await;
    }
    let mut pos = Value::Null;
    for n in 0..10 {
        let m = loop {
            let m = v.recv_type("message").await;
            if m["from"] == obs.id {
                break m;
            }
        };
        assert_eq!(number(&m["body"]), n);
        pos = m["pos"].clone();
    }
    v.send(json!({"type": "confirm", "up_to": pos})).await;
    let delivered = o.recv_type("delivered").await;
    assert_eq!(
        delivered["id"], last["id"],
        "the confirm crossed: {delivered}"
    );

    c.nodes[0].kill9();
    let killed_at = Instant::now();
    // Sent while the node is dead but before anyone knows.
    for n in 10..20 {
        o.send(json!({"type": "send", "to": vic.id, "body": format!("k {n}"), "client_id": format!("k-{n}")}))
            .await;
    }
    let mut offline_after = None;
    let mut acks = 0;
    while acks < 10 || offline_after.is_none() {
        let f = o.recv().await;
        match f["type"].as_str() {
            Some("ack") => acks += 1,
            Some("error") => panic!("a send refused: {f}"),
            Some("presence") if f["user"] == vic.id && f["online"] == false => {
                offline_after = Some(killed_at.elapsed());
            }
            _ => {}
        }
    }
    let took = offline_after.expect("offline seen");
    assert!(
        took <= NODE_TIMEOUT + Duration::from_secs(2),
        "victor shown offline after {took:?}"
    );
    for n in 20..30 {
        let ack = o
            .send_message(&vic.id, &format!("k {n}"), &format!("k-{n}"))
            .await;
        assert_eq!(ack["status"], "stored", "{ack}");
    }
    drop(v);
    let cn = c.nodes[2].s();
    let mut v = native(cn, &vic.token).await;
    let got = collect(&mut v, &[&obs.id], 30).await;
    assert_sequence("after the kill", got.get(&obs.id), 10..30);
    assert!(
        presence_of(&mut o, &vic.id).await,
        "victor online again, on C"
    );
}
