//! Datagrams anyone can send from an established device's address and
//! port (UDP has no source check): forged records, fresh ClientHellos and
//! late duplicates of the device's own handshake. None of them may end the
//! session; it must keep answering pings.

mod dtls_support;

use dtls_support::relay::LossyRelay;
use dtls_support::{Dtls, WAIT, connect_to, demo_key, recv_text};
use sotto_dtls::client::Association;
use sotto_dtls::ossl::{self, Conn};
use std::time::Duration;

/// One record: content type, DTLS 1.2, `epoch`, sequence 5, `body`.
fn record(kind: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
    let mut r = vec![kind, 0xfe, 0xfd];
    r.extend_from_slice(&epoch.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0, 0, 5]);
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

async fn assert_alive(a: &mut Association, what: &str) {
    a.send(what.as_bytes()).await.unwrap();
    let reply = recv_text(a).await;
    assert!(reply.ends_with(": ACK"), "{what}: {reply}");
}

/// The attack: 15 bytes, application data, epoch 1, 2-byte body.
/// OpenSSL 3 would take any sealed record shorter than its tag as a fatal
/// error; the sweep covers every short length and every content type.
#[tokio::test]
async fn forged_short_records_do_not_end_a_session() {
    // Types 24 and 25 at every length, and every epoch-1 body under 16
    // bytes (ChaCha20's tag) of the four defined types, and the 15-byte one.
    let dropped = sweep("ECDHE-PSK-CHACHA20-POLY1305").await;
    assert_eq!(dropped, 2 * 41 + 4 * 16 + 1);
}

/// GCM needs 24 bytes (explicit nonce and tag), CCM8 16 (8 and 8).
#[tokio::test]
async fn the_minimum_follows_the_negotiated_suite() {
    assert_eq!(sweep("PSK-AES128-GCM-SHA256").await, 2 * 41 + 4 * 24 + 1);
    assert_eq!(sweep("PSK-AES128-CCM8").await, 2 * 41 + 4 * 16 + 1);
}

/// Establishes a session under `cipher`, sends the 15-byte record and a
/// sweep of forged records from its address, checks that it still
/// answers; returns how many datagrams were dropped unread.
async fn sweep(cipher: &str) -> u64 {
    let dtls = Dtls::start(|c| {
        c.demo_psk = true;
        c.ciphers = cipher.to_owned();
    })
    .await;
    let server = dtls.endpoint.local_addr();
    let relay = LossyRelay::start(server, &[], &[]).await;
    let mut a = connect_to(relay.addr, "victim", &demo_key(), WAIT)
        .await
        .unwrap();
    assert_eq!(a.cipher(), cipher);
    let attack = record(23, 1, &[0xaa, 0xbb]);
    assert_eq!(attack.len(), 15);
    relay.back.send_to(&attack, server).await.unwrap();
    assert_alive(&mut a, "after the 15-byte record").await;
    let mut sent = 1;
    for kind in [20u8, 21, 22, 23, 24, 25] {
        for len in 0..=40usize {
            relay
                .back
                .send_to(&record(kind, 1, &vec![0x41; len]), server)
                .await
                .unwrap();
            sent += 1;
        }
    }
    dtls.wait_for("every forged datagram read", |s| s.datagrams_in >= sent + 4)
        .await;
    assert_alive(&mut a, "after the sweep").await;
    let s = dtls.stats();
    assert_eq!((s.sessions, s.handshakes_ok), (1, 1), "{cipher}: {s:?}");
    dtls.stop().await;
    s.dropped_unsafe
}

/// A genuine ClientHello for a second association, and its Conn.
fn fresh_hello() -> (Conn, Vec<u8>) {
    let ctx = ossl::client(ossl::DEFAULT_CIPHERS).unwrap();
    let mut conn = Conn::client(&ctx, 1248, b"intruder", demo_key()).unwrap();
    let _ = conn.handshake();
    let mut out = Vec::new();
    conn.drain_output(&mut out);
    (conn, out.remove(0))
}

/// Someone on the path (or a device's second, confused stack) completes
/// the cookie exchange from the device's address and then stops: the old
/// session must keep working beside the pending handshake and after it
/// times out.
#[tokio::test]
async fn a_new_client_hello_does_not_end_the_session_before_its_handshake_completes() {
    let dtls = Dtls::start(|c| {
        c.demo_psk = true;
        c.limits.handshake_timeout = Duration::from_millis(700);
    })
    .await;
    let server = dtls.endpoint.local_addr();
    let relay = LossyRelay::start(server, &[], &[]).await;
    let mut a = connect_to(relay.addr, "victim", &demo_key(), WAIT)
        .await
        .unwrap();
    let (mut conn, hello) = fresh_hello();
    let before = relay.down_count();
    relay.back.send_to(&hello, server).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while relay.down_count() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no HelloVerifyRequest"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hvr = relay.down.lock().unwrap()[before].clone();
    conn.push(&hvr);
    let _ = conn.handshake();
    let mut out = Vec::new();
    conn.drain_output(&mut out);
    let with_cookie = out.pop().expect("ClientHello with the cookie");
    relay.back.send_to(&with_cookie, server).await.unwrap();
    dtls.wait_for("the new handshake in progress", |s| s.handshaking == 1)
        .await;
    assert_alive(&mut a, "beside the pending handshake").await;
    dtls.wait_for("the pending handshake timed out", |s| {
        s.handshake_timeouts == 1 && s.handshaking == 0
    })
    .await;
    assert_alive(&mut a, "after it timed out").await;
    let s = dtls.stats();
    assert_eq!((s.sessions, s.handshakes_ok), (1, 1), "{s:?}");
    dtls.stop().await;
}

/// The network duplicates the device's handshake datagrams and delivers
/// the copies late, after the session is up (the cookie is still valid).
#[tokio::test]
async fn a_late_duplicate_of_the_handshake_is_ignored() {
    let dtls = Dtls::start(|c| c.demo_psk = true).await;
    let server = dtls.endpoint.local_addr();
    let relay = LossyRelay::start(server, &[], &[]).await;
    let mut a = connect_to(relay.addr, "victim", &demo_key(), WAIT)
        .await
        .unwrap();
    let flight = relay.up.lock().unwrap().clone();
    assert!(flight.len() >= 3, "{} handshake datagrams", flight.len());
    tokio::time::sleep(Duration::from_millis(50)).await;
    for d in &flight {
        relay.back.send_to(d, server).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_alive(&mut a, "after the duplicates").await;
    let s = dtls.stats();
    assert_eq!(
        (s.sessions, s.handshaking, s.handshakes_ok),
        (1, 0, 1),
        "{s:?}"
    );
    assert_eq!(
        s.hello_duplicates, 2,
        "both hellos of the first flight: {s:?}"
    );
    dtls.stop().await;
}

/// Forged datagrams from a silent device's address do not count as the
/// device being alive: the session still ends at its idle timeout.
#[tokio::test]
async fn forged_datagrams_do_not_keep_a_session_from_its_idle_timeout() {
    let dtls = Dtls::start(|c| {
        c.demo_psk = true;
        c.limits.idle_timeout = Duration::from_millis(600);
    })
    .await;
    let server = dtls.endpoint.local_addr();
    let relay = LossyRelay::start(server, &[], &[]).await;
    let _a = connect_to(relay.addr, "quiet", &demo_key(), WAIT)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    while dtls.stats().idle_timeouts == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "kept alive by forgeries: {:?}",
            dtls.stats()
        );
        let forged = record(23, 1, &[0x5a; 40]);
        relay.back.send_to(&forged, server).await.unwrap();
        relay.back.send_to(b"garbage", server).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dtls.stats().sessions, 0);
    dtls.stop().await;
}

/// Under a CBC suite OpenSSL 3 ends a session on any forged record with a
/// bad MAC (measured: a 64-byte one under PSK-AES128-CBC-SHA256), which no
/// screening can prevent, so the server refuses to run with one.
#[tokio::test]
async fn the_server_refuses_cbc_suites() {
    for ciphers in [
        "PSK-AES128-CBC-SHA256",
        "PSK",
        "PSK-AES128-GCM-SHA256:PSK-AES128-CBC-SHA",
    ] {
        let mut config = sotto_dtls::DtlsConfig {
            port: 0,
            ciphers: ciphers.to_owned(),
            ..Default::default()
        };
        config.demo_psk = true;
        let socket = sotto_dtls::bind(&config).unwrap();
        let keys = std::sync::Arc::new(sotto_dtls::KeyRing::with_demo_key(true));
        let tasks = tokio_util::task::TaskTracker::new();
        let started = sotto_dtls::DtlsEndpoint::start(
            config,
            socket,
            keys,
            None,
            None,
            tokio_util::sync::CancellationToken::new(),
            &tasks,
        )
        .await;
        let Err(e) = started else {
            panic!("{ciphers}: started");
        };
        assert!(
            e.to_string().contains("not an AEAD suite"),
            "{ciphers}: {e}"
        );
    }
}
