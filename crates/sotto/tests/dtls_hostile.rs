//! The endpoint under a hostile or lossy network: flights lost each way,
//! floods of cookieless and replayed ClientHellos, and garbage.

mod dtls_support;

use dtls_support::relay::LossyRelay;
use dtls_support::{Dtls, WAIT, connect_to, demo_key, recv_text};
use sotto_dtls::ossl::{self, Conn};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::UdpSocket;

/// A genuine first ClientHello, as OpenSSL's client sends it.
fn client_hello() -> (Conn, Vec<u8>) {
    let ctx = ossl::client(ossl::DEFAULT_CIPHERS).unwrap();
    let mut conn = Conn::client(&ctx, 1248, b"spoof", demo_key()).unwrap();
    let _ = conn.handshake();
    let mut out = Vec::new();
    conn.drain_output(&mut out);
    assert_eq!(out.len(), 1);
    (conn, out.remove(0))
}

#[tokio::test]
async fn cookieless_and_replayed_client_hellos_leave_no_state() {
    let dtls = Dtls::start(|c| c.demo_psk = true).await;
    let server = dtls.endpoint.local_addr();
    let (mut conn, hello) = client_hello();
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..500 {
        attacker.send_to(&hello, server).await.unwrap();
    }
    dtls.wait_for("500 HelloVerifyRequests", |s| s.hello_verify_sent == 500)
        .await;
    // A ClientHello carrying a valid cookie, replayed from another port
    // (as a spoofer who saw one would): the cookie is bound to the address
    // and port it was issued to, so it earns only a new challenge.
    let mut buf = [0u8; 2048];
    let (n, _) = attacker.recv_from(&mut buf).await.unwrap();
    conn.push(&buf[..n]);
    let _ = conn.handshake();
    let mut out = Vec::new();
    conn.drain_output(&mut out);
    let with_cookie = out.pop().expect("ClientHello with cookie");
    let elsewhere = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    elsewhere.send_to(&with_cookie, server).await.unwrap();
    dtls.wait_for("a new challenge", |s| s.hello_verify_sent == 501)
        .await;
    // The HelloVerifyRequest is smaller than the ClientHello: no amplification.
    assert!(
        n < hello.len(),
        "HVR {n} bytes vs ClientHello {}",
        hello.len()
    );
    let s = dtls.stats();
    assert_eq!((s.sessions, s.handshaking), (0, 0), "{s:?}");
    dtls.stop().await;
}

#[tokio::test]
async fn garbage_is_counted_and_ignored() {
    let dtls = Dtls::start(|c| c.demo_psk = true).await;
    let server = dtls.endpoint.local_addr();
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..100u8 {
        let d: Vec<u8> = (0..(i as usize % 40 + 1)).map(|j| i ^ j as u8).collect();
        junk.send_to(&d, server).await.unwrap();
    }
    dtls.wait_for("100 garbage datagrams", |s| s.garbage == 100)
        .await;
    // An established session shrugs off garbage and forged records sent
    // from its own address (through the relay's socket, which is the
    // session's address as the server sees it).
    let relay = LossyRelay::start(server, &[], &[]).await;
    let mut a = connect_to(relay.addr, "steady", &demo_key(), WAIT)
        .await
        .unwrap();
    let mut forged = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 99, 0, 32];
    forged.extend([0x5a; 32]);
    relay.back.send_to(&forged, server).await.unwrap();
    relay
        .back
        .send_to(b"not DTLS at all", server)
        .await
        .unwrap();
    dtls.wait_for("forged record dropped", |s| {
        s.undecryptable == 1 && s.garbage == 101
    })
    .await;
    a.send(b"ping").await.unwrap();
    assert!(recv_text(&mut a).await.ends_with(": ACK"));
    let s = dtls.stats();
    assert_eq!(
        (s.sessions, s.handshaking, s.handshakes_ok),
        (1, 0, 1),
        "{s:?}"
    );
    dtls.stop().await;
}

#[tokio::test]
async fn lost_flights_each_way_are_retransmitted() {
    let dtls = Dtls::start(|c| c.demo_psk = true).await;
    // Up: the ClientHello with the cookie is lost, so the client must
    // retransmit. Down: the server's first handshake flight is lost, so
    // the server must retransmit it on its own timer.
    let relay = LossyRelay::start(dtls.endpoint.local_addr(), &[1], &[1]).await;
    let started = std::time::Instant::now();
    let mut a = connect_to(relay.addr, "lossy", &demo_key(), Duration::from_secs(8))
        .await
        .expect("handshake completes through retransmission");
    assert!(started.elapsed() < Duration::from_secs(6));
    a.send(b"made it").await.unwrap();
    assert!(recv_text(&mut a).await.ends_with(": ACK"));
    let s = dtls.stats();
    assert!(s.retransmits >= 1, "the server retransmitted: {s:?}");
    assert_eq!(s.handshakes_ok, 1);
    assert!(relay.forwarded.load(Ordering::Relaxed) >= 6);
    dtls.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_holds_a_slot_only_until_its_deadline() {
    let dtls = Dtls::start(|c| {
        c.demo_psk = true;
        c.limits.max_handshakes = 1;
        c.limits.handshake_timeout = Duration::from_millis(800);
    })
    .await;
    let server = dtls.endpoint.local_addr();
    // A client that passes the cookie check and then goes silent.
    let (mut conn, hello) = client_hello();
    let staller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    staller.send_to(&hello, server).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = staller.recv_from(&mut buf).await.unwrap();
    conn.push(&buf[..n]);
    let _ = conn.handshake();
    let mut out = Vec::new();
    conn.drain_output(&mut out);
    staller.send_to(&out[0], server).await.unwrap();
    dtls.wait_for("one handshake in progress", |s| s.handshaking == 1)
        .await;
    // While it holds the only slot, others are turned away; once its
    // deadline passes they get in (the client retransmits meanwhile).
    let started = std::time::Instant::now();
    let mut a = connect_to(server, "patient", &demo_key(), WAIT)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    a.send(b"in").await.unwrap();
    assert!(recv_text(&mut a).await.ends_with(": ACK"));
    let s = dtls.stats();
    assert_eq!(s.handshake_timeouts, 1, "{s:?}");
    assert!(s.refused_handshakes_limit >= 1, "{s:?}");
    dtls.stop().await;
}

#[tokio::test]
async fn a_device_that_restarts_on_the_same_port_gets_a_new_session() {
    let dtls = Dtls::start(|c| c.demo_psk = true).await;
    let relay = LossyRelay::start(dtls.endpoint.local_addr(), &[], &[]).await;
    // The first association vanishes without close_notify (a reboot)...
    let first = connect_to(relay.addr, "rebooter", &demo_key(), WAIT)
        .await
        .unwrap();
    drop(first);
    // ...and the device comes back from the same address and port (the
    // relay's socket): its new handshake replaces the stale session.
    let mut second = connect_to(relay.addr, "rebooter", &demo_key(), WAIT)
        .await
        .unwrap();
    second.send(b"back").await.unwrap();
    assert!(recv_text(&mut second).await.ends_with(": ACK"));
    let s = dtls.stats();
    assert_eq!((s.handshakes_ok, s.sessions), (2, 1), "{s:?}");
    dtls.stop().await;
}
