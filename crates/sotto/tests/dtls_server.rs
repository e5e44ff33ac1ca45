//! The DTLS endpoint driven by sotto's own client: many associations at
//! once, session limits, timeouts, revocation, close_notify both ways,
//! IPv6, and a wrong key failing fast.

mod dtls_support;

use dtls_support::{Dtls, WAIT, connect, connect_to, demo_key, recv_text};
use sotto_bench::dtls_client::{DtlsClientArgs, associate};
use sotto_dtls::client::ClientError;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn client_args(count: u64) -> DtlsClientArgs {
    DtlsClientArgs {
        servers: vec![],
        associations: 1,
        name: "dev".into(),
        identity: None,
        psk: None,
        psk_file: None,
        interval: 0.05,
        count: Some(count),
        handshake_timeout: 10.0,
        linger: 3.0,
        max_payload: 1200,
        ciphers: sotto_dtls::ossl::DEFAULT_CIPHERS.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_associations_at_once_all_ping_and_are_acked() {
    let dtls = Dtls::start(|c| c.demo_psk = true).await;
    let server = dtls.endpoint.local_addr();
    let ctx = sotto_dtls::client::context(sotto_dtls::ossl::DEFAULT_CIPHERS).unwrap();
    let args = client_args(3);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=50 {
        let (ctx, args) = (ctx.clone(), args.clone());
        tasks.spawn(async move {
            associate(
                &ctx,
                server,
                format!("dev-{i}"),
                demo_key(),
                &args,
                CancellationToken::new(),
            )
            .await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(o) = tasks.join_next().await {
        outcomes.push(o.unwrap());
    }
    for o in &outcomes {
        assert!(o.established && o.error.is_none(), "{o:?}");
        assert_eq!((o.pings, o.replies), (3, 3), "{o:?}");
    }
    dtls.wait_for("all closed", |s| s.closed_by_peer == 50 && s.sessions == 0)
        .await;
    assert_eq!(dtls.stats().handshakes_ok, 50);
    dtls.stop().await;
}

#[tokio::test]
async fn ecdhe_psk_is_preferred_and_the_ack_names_the_peer() {
    let dtls = Dtls::start(|_| {}).await;
    let key = dtls.add_key("meter-7", None);
    let mut a = connect(dtls.port(), "meter-7", &key).await.unwrap();
    assert_eq!(a.cipher(), "ECDHE-PSK-CHACHA20-POLY1305");
    a.send(b"hello").await.unwrap();
    let local = a.local_addr().unwrap();
    assert_eq!(
        recv_text(&mut a).await,
        format!("to 127.0.0.1:{}: ACK", local.port())
    );
    a.close().await;
    dtls.stop().await;
}

#[tokio::test]
async fn a_plain_psk_only_client_is_accepted() {
    let dtls = Dtls::start(|_| {}).await;
    let key = dtls.add_key("tiny", None);
    let ctx = sotto_dtls::client::context("PSK-AES128-GCM-SHA256").unwrap();
    let server = dtls.endpoint.local_addr();
    let mut a = sotto_dtls::client::Association::connect(&ctx, server, b"tiny", key, 1248, WAIT)
        .await
        .unwrap();
    assert_eq!(a.cipher(), "PSK-AES128-GCM-SHA256");
    a.send(b"x").await.unwrap();
    assert!(recv_text(&mut a).await.ends_with(": ACK"));
    dtls.stop().await;
}

#[tokio::test]
async fn a_wrong_key_fails_at_once_on_both_sides() {
    let dtls = Dtls::start(|_| {}).await;
    dtls.add_key("meter-8", None);
    let started = std::time::Instant::now();
    let r = connect(dtls.port(), "meter-8", &demo_key()).await;
    assert!(matches!(r, Err(ClientError::Handshake(_))), "{:?}", r.err());
    assert!(started.elapsed() < Duration::from_secs(2));
    let s = dtls.stats();
    assert_eq!((s.psk_wrong_key, s.handshaking, s.sessions), (1, 0, 0));
    dtls.stop().await;
}

#[tokio::test]
async fn session_limits_hold() {
    let dtls = Dtls::start(|c| {
        c.demo_psk = true;
        c.limits.max_sessions = 3;
        c.limits.max_per_ip = 2;
    })
    .await;
    let short = Duration::from_millis(1500);
    let v4 = dtls.endpoint.local_addr();
    let mut kept = Vec::new();
    for i in 0..2 {
        kept.push(
            connect_to(v4, &format!("d{i}"), &demo_key(), short)
                .await
                .unwrap(),
        );
    }
    let third = connect_to(v4, "d2", &demo_key(), short).await;
    assert!(matches!(third, Err(ClientError::HandshakeTimeout)));
    assert!(dtls.stats().refused_per_ip_limit >= 1);
    // Another address (127.0.0.2 is loopback too) gets the last slot...
    kept.push(connect_from("127.0.0.2", v4.port(), "d3").await.unwrap());
    // ...and then the total limit holds.
    assert!(connect_from("127.0.0.3", v4.port(), "d4").await.is_err());
    let s = dtls.stats();
    assert!(s.refused_sessions_limit >= 1, "{s:?}");
    assert_eq!(s.sessions, 3);
    dtls.stop().await;
}

/// A handshake from a given loopback source address.
async fn connect_from(
    source: &str,
    port: u16,
    identity: &str,
) -> Result<sotto_dtls::client::Association, ClientError> {
    let ctx = sotto_dtls::client::context(sotto_dtls::ossl::DEFAULT_CIPHERS).unwrap();
    let server = format!("127.0.0.1:{port}").parse().unwrap();
    let source = source.parse().unwrap();
    sotto_dtls::client::Association::connect_from(
        &ctx,
        source,
        server,
        identity.as_bytes(),
        demo_key(),
        1248,
        Duration::from_millis(1500),
    )
    .await
}

#[tokio::test]
async fn idle_sessions_are_closed_with_close_notify() {
    let dtls = Dtls::start(|c| {
        c.demo_psk = true;
        c.limits.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut a = connect(dtls.port(), "sleepy", &demo_key()).await.unwrap();
    let r = tokio::time::timeout(WAIT, a.recv()).await.unwrap();
    assert!(matches!(r, Err(ClientError::Closed)), "{r:?}");
    assert_eq!(dtls.stats().idle_timeouts, 1);
    dtls.stop().await;
}

#[tokio::test]
async fn revoking_an_identity_ends_its_sessions_and_refuses_it() {
    let dtls = Dtls::start(|_| {}).await;
    let key = dtls.add_key("lost-phone", None);
    let other = dtls.add_key("kept-phone", None);
    let mut a = connect(dtls.port(), "lost-phone", &key).await.unwrap();
    let mut b = connect(dtls.port(), "kept-phone", &other).await.unwrap();
    assert_eq!(dtls.endpoint.revoke("lost-phone").await, 1);
    let r = tokio::time::timeout(WAIT, a.recv()).await.unwrap();
    assert!(matches!(r, Err(ClientError::Closed)), "{r:?}");
    b.send(b"still here").await.unwrap();
    assert!(recv_text(&mut b).await.ends_with(": ACK"));
    let again = connect(dtls.port(), "lost-phone", &key).await;
    assert!(
        matches!(again, Err(ClientError::Handshake(_))),
        "{:?}",
        again.err()
    );
    assert_eq!(dtls.stats().psk_unknown_identity, 1);
    dtls.stop().await;
}

#[tokio::test]
async fn shutdown_sends_close_notify_to_every_peer() {
    let dtls = Dtls::start(|c| c.demo_psk = true).await;
    let mut a = connect(dtls.port(), "a", &demo_key()).await.unwrap();
    let mut b = connect(dtls.port(), "b", &demo_key()).await.unwrap();
    dtls.stop().await;
    for c in [&mut a, &mut b] {
        let r = tokio::time::timeout(WAIT, c.recv()).await.unwrap();
        assert!(matches!(r, Err(ClientError::Closed)), "{r:?}");
    }
}

#[tokio::test]
async fn ipv6_peers_are_served() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    }
    let dtls = Dtls::start(|c| {
        c.demo_psk = true;
        c.listen = "::1".parse().unwrap();
    })
    .await;
    let server = dtls.endpoint.local_addr();
    let mut a = connect_to(server, "v6", &demo_key(), WAIT).await.unwrap();
    a.send(b"over v6").await.unwrap();
    assert!(recv_text(&mut a).await.starts_with("to [::1]:"));
    dtls.stop().await;
}

#[tokio::test]
async fn a_handshake_without_a_psk_is_never_a_session() {
    // An operator's cipher list that admits anonymous DH must not let
    // unauthenticated peers in.
    let anon = "ADH-AES128-GCM-SHA256:@SECLEVEL=0";
    let dtls = Dtls::start(|c| c.ciphers = anon.into()).await;
    let ctx = sotto_dtls::client::context(anon).unwrap();
    let server = dtls.endpoint.local_addr();
    let r =
        sotto_dtls::client::Association::connect(&ctx, server, b"x", demo_key(), 1248, WAIT).await;
    if let Ok(mut a) = r {
        let closed = tokio::time::timeout(WAIT, a.recv()).await.unwrap();
        assert!(matches!(closed, Err(ClientError::Closed)), "{closed:?}");
    }
    let s = dtls.stats();
    assert_eq!((s.handshakes_ok, s.sessions), (0, 0), "{s:?}");
    assert_eq!(s.handshakes_failed, 1, "{s:?}");
    dtls.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_every_phase() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: sotto_bench::dtls::DtlsBenchArgs,
    }
    let dtls = Dtls::start(|c| c.demo_psk = true).await;
    let server = dtls.endpoint.local_addr().to_string();
    let cli = Cli::parse_from([
        "bench",
        "--server",
        &server,
        "--associations",
        "20",
        "--duration",
        "0.3",
        "--flood",
        "200",
    ]);
    let r = sotto_bench::dtls::run_dtls_bench(cli.args).await.unwrap();
    assert_eq!((r.established, r.acked_first), (20, 20), "{r:?}");
    assert!(r.acks > 20, "{r:?}");
    assert_eq!(r.flood_answered, 200, "{r:?}");
    dtls.wait_for("associations closed", |s| s.sessions == 0)
        .await;
    assert_eq!(dtls.stats().hello_verify_sent, 220);
    dtls.stop().await;
}
