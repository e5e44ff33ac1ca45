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

use acceptance_support::traffic::*;
use acceptance_support::*;
use cluster_support::{body_from, presence_of};
use serde_json::{Value, json};
use sotto_dtls::PskKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// Numbered messages per sender in the sequence check.
const PER_SENDER: u32 = 1000;

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

async fn both_protocols_and_a_device(c: &Cluster) {
    let (a, b, cn) = (c.nodes[0].s(), c.nodes[1].s(), c.nodes[2].s());
    let alice = register(a, "alice").await;
    let bob = register(b, "bob").await;
    let carol = register(cn, "carol").await;
    let dave = register(b, "dave").await;
    let mut d = native(b, &dave.token).await;
    d.recv_type("users").await;
    // Presence goes to contacts and watchers only: dave watches alice.
    d.watch(&[&alice.id]).await;
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
    o.watch(&[&vic.id]).await;
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
