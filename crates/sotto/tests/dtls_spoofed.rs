//! Datagrams anyone can send from an established device's address and
//! port (UDP has no source check): forged records. None of them may end the
//! session; it must keep answering pings.

mod dtls_support;

use dtls_support::relay::LossyRelay;
use dtls_support::{Dtls, WAIT, connect_to, demo_key, recv_text};
use sotto_dtls::client::Association;

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
    let dtls = Dtls::start(|c| c.demo_psk = true).await;
    let server = dtls.endpoint.local_addr();
    let relay = LossyRelay::start(server, &[], &[]).await;
    let mut a = connect_to(relay.addr, "victim", &demo_key(), WAIT)
        .await
        .unwrap();
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
    assert_eq!((s.sessions, s.handshakes_ok), (1, 1), "{s:?}");
    // Types 24 and 25 and every epoch-1 body under 16 bytes (ChaCha20's
    // tag) of the four defined types, and the 15-byte one.
    assert_eq!(s.dropped_unsafe, 2 * 41 + 4 * 16 + 1, "{s:?}");
    dtls.stop().await;
}
