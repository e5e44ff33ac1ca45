//! sotto's DTLS against peers nobody here wrote: the openssl command-line
//! tool as client (s_client) and as server (s_server).

mod dtls_support;

use dtls_support::{Dtls, WAIT, openssl};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

fn s_client(openssl: &std::path::Path, port: u16, identity: &str, key_hex: &str) -> Child {
    Command::new(openssl)
        .args(["s_client", "-dtls1_2", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-psk_identity", identity, "-psk", key_hex])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn openssl s_client")
}

#[tokio::test]
async fn s_client_handshakes_sends_a_line_and_gets_the_ack() {
    let Some(openssl) = openssl() else { return };
    let dtls = Dtls::start(|_| {}).await;
    let key = dtls.add_key("sensor-1", None);
    let mut child = s_client(&openssl, dtls.port(), "sensor-1", &key.to_hex());
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    dtls.wait_for("handshake", |s| s.handshakes_ok == 1).await;
    stdin.write_all(b"hello from s_client\n").await.unwrap();
    // Without -quiet (which implies -ign_eof) s_client also prints its
    // session details; the reply (no newline) comes after them.
    let seen = read_until(&mut stdout, ": ACK").await;
    let reply = &seen[seen.rfind("to 127.0.0.1:").expect("the ACK names the peer")..];
    assert!(reply.ends_with(": ACK"), "{reply:?}");
    drop(stdin);
    dtls.wait_for("close_notify", |s| s.closed_by_peer == 1 && s.sessions == 0)
        .await;
    let _ = tokio::time::timeout(WAIT, child.wait()).await;
    dtls.stop().await;
}

#[tokio::test]
async fn s_client_with_a_wrong_key_or_unknown_identity_fails_fast() {
    let Some(openssl) = openssl() else { return };
    let dtls = Dtls::start(|_| {}).await;
    dtls.add_key("sensor-2", None);
    for (identity, key) in [("sensor-2", "00112233"), ("nobody", "00112233")] {
        let started = std::time::Instant::now();
        let mut child = s_client(&openssl, dtls.port(), identity, key);
        let status = tokio::time::timeout(Duration::from_secs(8), child.wait())
            .await
            .expect("s_client gives up quickly")
            .unwrap();
        assert!(!status.success(), "{identity}: handshake must fail");
        assert!(started.elapsed() < Duration::from_secs(5), "{identity}");
    }
    let s = dtls.stats();
    assert_eq!((s.psk_wrong_key, s.psk_unknown_identity), (1, 1), "{s:?}");
    assert_eq!((s.sessions, s.handshaking, s.handshakes_ok), (0, 0, 0));
    dtls.stop().await;
}

/// Reads `from` until the text contains `marker`; panics after WAIT.
async fn read_until(from: &mut (impl AsyncRead + Unpin), marker: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(&seen).contains(marker) {
            let n = from.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "EOF before {marker:?}: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {marker:?} in time: {}", String::from_utf8_lossy(&seen)));
    String::from_utf8_lossy(&seen).into_owned()
}

/// `sotto dtls-client` (the real binary) against `openssl s_server`, which
/// starts late: the client's first ClientHellos meet a closed port (and
/// ICMP port-unreachable), and it must keep going until the server is up.
#[tokio::test]
async fn sotto_dtls_client_pings_openssl_s_server_that_starts_late() {
    let Some(openssl) = openssl() else { return };
    let port = dtls_support::free_udp_port();
    let client = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["dtls-client", "--server", &format!("127.0.0.1:{port}")])
        .args(["--psk", "1a2b3c4d5e6f", "--count", "3", "--interval", "0.2"])
        .args(["--linger", "0.3", "--handshake-timeout", "8"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sotto dtls-client");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // s_server ends when its stdin closes, so keep a pipe open.
    let mut server = Command::new(&openssl)
        .args(["s_server", "-dtls1_2", "-nocert", "-psk", "1a2b3c4d5e6f"])
        .args(["-accept", &format!("127.0.0.1:{port}"), "-naccept", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn openssl s_server");
    let mut stdout = server.stdout.take().unwrap();
    let seen = read_until(&mut stdout, "accept our ping 2").await;
    assert!(
        seen.contains("CIPHER is ECDHE-PSK-CHACHA20-POLY1305"),
        "{seen}"
    );
    for n in 0..3 {
        assert!(seen.contains(&format!("I am dtls-client-1, please, accept our ping {n}")));
    }
    let out = tokio::time::timeout(WAIT, client.wait_with_output())
        .await
        .expect("client exits")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("summary: 1 associations, 1 established, 3 pings sent"),
        "{text}"
    );
    // The client's close_notify ends s_server's session.
    read_until(&mut stdout, "CONNECTION CLOSED").await;
}

/// What Qt's example client presents: identity "Alice (clone number N)"
/// and the demo key, accepted only with --dtls-demo-psk.
#[tokio::test]
async fn the_qt_example_identity_and_demo_key_work_in_demo_mode_only() {
    let Some(openssl) = openssl() else { return };
    for demo in [true, false] {
        let dtls = Dtls::start(|c| c.demo_psk = demo).await;
        let mut child = s_client(
            &openssl,
            dtls.port(),
            "Alice (clone number 1)",
            "1a2b3c4d5e6f",
        );
        let mut stdin = child.stdin.take().unwrap();
        if demo {
            let mut stdout = child.stdout.take().unwrap();
            stdin
                .write_all(b"I am Alice (clone number 1), please, accept our ping 0\n")
                .await
                .unwrap();
            read_until(&mut stdout, ": ACK").await;
        } else {
            let status = tokio::time::timeout(WAIT, child.wait())
                .await
                .unwrap()
                .unwrap();
            assert!(!status.success());
            assert_eq!(dtls.stats().psk_unknown_identity, 1);
        }
        drop(stdin);
        dtls.stop().await;
    }
}
