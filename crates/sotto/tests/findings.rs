//! Issue 13's findings, each reproduced against the real binary as the
//! attacker did it: `sotto serve` as a child process, driven over its
//! ports from outside, judged by what a client sees, by `/metrics`, by the
//! child's resident memory and by its log. (Finer-grained tests of the
//! same fixes run the server in-process: slow_readers, http_deadlines,
//! dtls_spoofed, send_limits, limits, metrics_access.)

mod dtls_support;
mod real_binary;
mod support;

use dtls_support::relay::LossyRelay;
use dtls_support::{connect_to, demo_key, recv_text};
use futures_util::{SinkExt, StreamExt};
use real_binary::Sotto;
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use support::{Client, Cred, Native, WAIT, eventually, upgrade};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A compat client registered as `name`.
async fn compat_user(s: &Sotto, name: &str) -> Client {
    let mut c = Client::connect(&s.chat_url()).await;
    let r = c.register(name, "pw").await;
    assert_eq!(r["valid"], true, "register {name}: {r}");
    c
}

/// Registers over the API and logs in; (id, token).
async fn api_user(s: &Sotto, name: &str) -> (String, String) {
    let http = reqwest::Client::new();
    let body = json!({"name": name, "password": "a password"});
    let r = http
        .post(format!("{}/api/register", s.http_base()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r: Value = http
        .post(format!("{}/api/login", s.http_base()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        r["user"]["id"].as_str().unwrap().to_owned(),
        r["token"].as_str().unwrap().to_owned(),
    )
}

async fn native(s: &Sotto, token: &str) -> Native {
    let (ws, _) = upgrade(&s.ws_url(), Cred::Bearer(token), None)
        .await
        .unwrap_or_else(|(st, b)| panic!("upgrade refused: {st} {b}"));
    Native { ws }
}

/// Finding 1: compat sockets that never read, sent 60 KiB messages. The
/// server's memory stays bounded (it was +65 MB per socket), and each such
/// socket is closed and released within seconds of its write deadline.
#[tokio::test]
async fn f01_readers_that_never_read_cost_bounded_memory_and_are_released() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sotto::start(
        dir.path(),
        &[
            "--write-timeout-secs",
            "2",
            "--send-rate-per-user",
            "0",
            "--send-bytes-per-minute",
            "0",
            "--db-cache-mib",
            "2",
        ],
    )
    .await;
    let s = &s;
    let mut loud = compat_user(s, "loud").await;
    let mut deaf = Vec::new();
    for i in 0..3 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(s.chat).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(
            s.chat_url(),
            tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        )
        .await
        .unwrap();
        let mut c = Client {
            ws,
            token: None,
            id: None,
        };
        assert_eq!(c.register(&format!("deaf{i}"), "pw").await["valid"], true);
        deaf.push(c);
    }
    let targets: Vec<String> = deaf.iter().map(|c| c.id.clone().unwrap()).collect();
    let tcp_idle = s.metric("sotto_tcp_connections").await - 3.0;
    let baseline = s.rss();
    let mut peak = baseline;
    let body = "y".repeat(60_000);
    for _ in 0..100 {
        for t in &targets {
            loud.message(t, &body).await;
        }
        peak = peak.max(s.rss());
    }
    // 3 x 100 x 60 KB = 18 MB were sent at the readers.
    let released = eventually(|| async move {
        s.metric("sotto_tcp_connections").await <= tcp_idle
            && s.metric("sotto_online_users").await == 1.0
    })
    .await;
    peak = peak.max(s.rss());
    let growth = peak.saturating_sub(baseline) >> 20;
    eprintln!("RSS {} MiB, peak +{growth} MiB", baseline >> 20);
    assert!(released, "deaf sockets still held");
    assert!(growth < 24, "the server grew by {growth} MiB");
    // The sender is still served.
    let mut friend = compat_user(s, "friend").await;
    loud.message(friend.id.as_ref().unwrap(), "still here")
        .await;
    assert_eq!(friend.recv_message().await["message"], "still here");
}

/// Finding 2: request bodies that never arrive do not hold connection
/// slots: each such request is answered 408 and its connection closed
/// after `--body-timeout-secs`, and the slots serve others again.
#[tokio::test]
async fn f02_bodies_that_never_arrive_lose_their_slots() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sotto::start(
        dir.path(),
        &["--body-timeout-secs", "1", "--max-connections-per-ip", "6"],
    )
    .await;
    let started = Instant::now();
    let mut stuck = Vec::new();
    for _ in 0..6 {
        let mut c = TcpStream::connect(s.http).await.unwrap();
        let head = format!(
            "POST /api/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: 16000\r\n\r\n{{",
            s.http
        );
        c.write_all(head.as_bytes()).await.unwrap();
        stuck.push(c);
    }
    for mut c in stuck {
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, c.read_to_end(&mut answer))
            .await
            .expect("closed in time")
            .unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, _, _) = support::http_get(s.http, "/healthz").await;
    assert_eq!(status, 200);
}

/// Finding 2, responses: a client that asks for a large file and reads
/// none of it loses its connection after `--response-stall-secs`.
#[tokio::test]
async fn f02_responses_nobody_reads_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("html");
    std::fs::create_dir(&html).unwrap();
    std::fs::write(html.join("big.bin"), vec![7u8; 8 << 20]).unwrap();
    let html = html.display().to_string();
    let s = Sotto::start(
        dir.path(),
        &["--response-stall-secs", "1", "--html-dir", &html],
    )
    .await;
    let s = &s;
    let idle = s.metric("sotto_tcp_connections").await;
    let mut readers = Vec::new();
    for _ in 0..4 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut c = socket.connect(s.http).await.unwrap();
        c.write_all(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        readers.push(c);
    }
    let released =
        eventually(|| async move { s.metric("sotto_tcp_connections").await <= idle }).await;
    assert!(released, "stalled responses still hold their connections");
    drop(readers);
}

/// Finding 3 (and 7): datagrams anyone can send from a device's address
/// (a 15-byte application-data record, a replayed ClientHello flight, a
/// late duplicate) do not end its established DTLS session.
#[tokio::test]
async fn f03_f07_spoofed_datagrams_do_not_end_a_device_session() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sotto::start(dir.path(), &["--dtls-demo-psk"]).await;
    let server: SocketAddr = s.dtls.expect("DTLS listening");
    let relay = LossyRelay::start(server, &[], &[]).await;
    let mut a = connect_to(relay.addr, "victim", &demo_key(), WAIT)
        .await
        .expect("handshake");
    alive(&mut a, "before").await;
    // The datagram: type 23, DTLS 1.2, epoch 1, sequence 5, 2 bytes.
    let mut forged = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 5, 0, 2];
    forged.extend_from_slice(&[0xaa, 0xbb]);
    assert_eq!(forged.len(), 15);
    relay.back.send_to(&forged, server).await.unwrap();
    alive(&mut a, "after the 15-byte record").await;
    // The device's own first flight again (a re-sent ClientHello), and
    // every datagram of its handshake once more, late.
    let flights: Vec<Vec<u8>> = relay.up.lock().unwrap().clone();
    for d in &flights {
        relay.back.send_to(d, server).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    alive(&mut a, "after the replayed handshake").await;
    s.stop().await;
}

/// The device's session still answers a plain-text ping.
async fn alive(a: &mut sotto_dtls::client::Association, what: &str) {
    a.send(what.as_bytes()).await.unwrap();
    let reply = recv_text(a).await;
    assert!(reply.ends_with(": ACK"), "{what}: {reply}");
}

/// Finding 4: a compat login revokes the user's earlier compat token; a
/// `/ws` socket opened with it closes at once, and the token is refused.
#[tokio::test]
async fn f04_a_socket_closes_when_its_token_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sotto::start(dir.path(), &[]).await;
    let mut first = Client::connect(&s.chat_url()).await;
    let reply = first.register("dora", "pw").await;
    let old = reply["token"].as_str().unwrap().to_owned();
    let mut tab = native(&s, &old).await;
    let mut second = Client::connect(&s.chat_url()).await;
    assert_eq!(second.login("dora", "pw").await["valid"], true);
    assert!(tab.expect_closed().await.is_some(), "a close frame");
    let me = reqwest::Client::new()
        .get(format!("{}/api/me", s.http_base()))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
}

/// Finding 5: 60 KiB messages to oneself as fast as the socket takes them
/// are refused long before the disk fills (2,000 of them were 123 MB).
#[tokio::test]
async fn f05_a_user_cannot_fill_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sotto::start(dir.path(), &[]).await;
    let (me, token) = api_user(&s, "hoarder").await;
    let (mut sink, mut stream) = native(&s, &token).await.ws.split();
    let sends = 400;
    // A client that reads what it is sent (its own messages come back to
    // it), counting the answers.
    let counter = tokio::spawn(async move {
        let (mut stored, mut limited) = (0, 0);
        while stored + limited < sends {
            let Ok(Some(Ok(m))) = tokio::time::timeout(WAIT, stream.next()).await else {
                panic!("answers stopped at {stored} stored, {limited} refused");
            };
            let Ok(f) = serde_json::from_str::<Value>(m.to_text().unwrap_or("")) else {
                continue;
            };
            match (f["type"].as_str(), f["code"].as_str()) {
                (Some("ack"), _) => stored += 1,
                (Some("error"), Some("rate_limited")) => limited += 1,
                (Some("error"), _) => panic!("{f}"),
                _ => {}
            }
        }
        (stored, limited)
    });
    let body = "z".repeat(60_000);
    for i in 0..sends {
        let frame = json!({"type": "send", "to": me, "body": body, "client_id": format!("c{i}")});
        sink.send(Message::text(frame.to_string())).await.unwrap();
    }
    let (stored, limited) = counter.await.unwrap();
    // --send-bytes-per-minute defaults to 16 MiB: about 280 such bodies.
    assert!(stored <= 300, "{stored} stored");
    assert!(limited >= 100, "{limited} refused");
    let size: u64 = ["", "-wal"]
        .iter()
        .filter_map(|x| std::fs::metadata(format!("{}{x}", s.db_path().display())).ok())
        .map(|m| m.len())
        .sum();
    assert!(size < 64 << 20, "{size} bytes on disk");
    // Others are unaffected.
    let (_, other) = api_user(&s, "other").await;
    let mut o = native(&s, &other).await;
    let ack = o.send_message(&me, "hi", "x1").await;
    assert_eq!(ack["status"], "stored");
}

/// Finding 6: names in refused logins neither forge log lines nor flood
/// the log (60 KB names were 120 MB of log per second).
#[tokio::test]
async fn f06_rate_limited_logins_cannot_forge_or_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sotto::start(
        dir.path(),
        &["--login-rate-per-ip", "1", "--login-rate-per-name", "0"],
    )
    .await;
    let mut c = Client::connect(&s.chat_url()).await;
    let forged = "\n2026-12-02T00:00:00.000000Z  INFO sotto: admin logged in\u{1b}[2J";
    let name = format!("{forged}{}", "x".repeat(60_000));
    let attempts = 300;
    for _ in 0..attempts {
        c.send_json(json!({"action": 0, "name": name, "password": "pw", "pubKey": ""}))
            .await;
    }
    for _ in 0..attempts {
        assert_eq!(c.recv().await["valid"], false);
    }
    let (log, bytes) = s.log();
    assert!(!log.contains('\u{1b}'), "a raw escape reached the log");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-02T00:00:00")),
        "a forged line reached the log:\n{log}"
    );
    assert!(log.contains("rate-limited"), "refusals are logged:\n{log}");
    assert!(bytes < 32 * 1024, "{bytes} bytes of log");
    s.stop().await;
}

/// Finding 8: a few addresses reopening anonymous chat sockets as fast as
/// they are closed do not keep users from other addresses out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f08_anonymous_sockets_do_not_starve_logins() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sotto::start(
        dir.path(),
        &[
            "--max-unauthenticated",
            "40",
            "--max-unauthenticated-per-ip",
            "32",
            "--login-deadline-secs",
            "2",
        ],
    )
    .await;
    let chat = s.chat;
    let attackers: Vec<_> = (2..=5)
        .flat_map(|i| (0..16).map(move |_| Ipv4Addr::new(127, 0, 0, i)))
        .map(|source| tokio::spawn(attack(source, chat)))
        .collect();
    let s = &s;
    let full =
        eventually(
            || async move { s.metric("sotto_unauthenticated_chat_connections").await >= 40.0 },
        )
        .await;
    assert!(full, "the attackers fill the pool");
    let mut ok = 0;
    for i in 0..10 {
        if let Some(mut c) = connect_from(Ipv4Addr::new(127, 0, 1, 1 + i), chat).await
            && c.register(&format!("user{i}"), "pw").await["valid"] == true
        {
            ok += 1;
        }
    }
    for a in attackers {
        a.abort();
    }
    assert_eq!(ok, 10, "legitimate logins that got through");
}

async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> Option<Client> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind((source, 0).into()).ok()?;
    let stream = socket.connect(server).await.ok()?;
    let url = format!("ws://{server}/");
    let handshake =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream));
    let (ws, _) = tokio::time::timeout(WAIT, handshake).await.ok()?.ok()?;
    Some(Client {
        ws,
        token: None,
        id: None,
    })
}

/// One attacking socket, for ever: held until the server closes it,
/// reopened at once.
async fn attack(source: Ipv4Addr, server: SocketAddr) {
    loop {
        match connect_from(source, server).await {
            Some(mut c) => while let Some(Ok(_)) = c.ws.next().await {},
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Finding 9: the database and its WAL and SHM files are private to the
/// server's user, whatever the umask.
#[tokio::test]
async fn f09_the_database_files_are_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = Sotto::start(dir.path(), &[]).await;
    let mut c = compat_user(&s, "ann").await;
    c.message("nobody", "hello").await;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", s.db_path().display());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{path} is {mode:o}");
    }
}

/// Finding 10: after an Argon2 cost change, a login re-hashes the password
/// at today's costs, so a known name's failed logins cost what an
/// unknown name's do.
#[tokio::test]
async fn f10_a_login_rehashes_a_password_made_with_older_costs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sotto::start(dir.path(), &[]).await;
    drop(compat_user(&s, "edna").await);
    s.stop().await;
    let s = Sotto::start(dir.path(), &["--argon2-memory-kib", "128"]).await;
    let mut c = Client::connect(&s.chat_url()).await;
    assert_eq!(c.login("edna", "pw").await["valid"], true);
    s.stop().await;
    let store =
        sotto_store_sqlite::SqliteStore::open(dir.path().join("sotto.db").to_str().unwrap())
            .await
            .unwrap();
    let name = sotto_core::auth::UserName::parse("edna").unwrap();
    let user = sotto_core::ports::UserStore::user_by_name(&store, &name)
        .await
        .unwrap()
        .unwrap();
    assert!(
        user.password_hash.contains("m=128,"),
        "{}",
        user.password_hash
    );
}

/// Finding 11: a page on another port of the same host (same site, so
/// the SameSite=Strict cookie goes along) cannot log the user out.
#[tokio::test]
async fn f11_a_page_on_another_port_cannot_log_a_user_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sotto::start(dir.path(), &[]).await;
    let (_, token) = api_user(&s, "cat").await;
    let http = s.http;
    let logout = |origin: String| {
        format!(
            "POST /api/logout HTTP/1.1\r\nHost: {http}\r\nOrigin: {origin}\r\n\
             Cookie: sotto_session={token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    let (status, _, _) = support::http_raw(http, &logout("http://127.0.0.1:1".into())).await;
    assert_eq!(status, 403);
    let me = |t: String| async move {
        reqwest::Client::new()
            .get(format!("http://{http}/api/me"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(me(token.clone()).await, 200, "the session survived");
    let (status, _, _) = support::http_raw(http, &logout(format!("http://{http}"))).await;
    assert_eq!(status, 204);
    assert_eq!(me(token).await, 401);
}

/// "Also": `/metrics` can be taken off the public port.
#[tokio::test]
async fn metrics_can_be_moved_off_the_public_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let s = Sotto::start(dir.path(), &["--metrics-listen", &listen]).await;
    let (public, _, _) = support::http_get(s.http, "/metrics").await;
    assert_eq!(public, 404);
    let private = eventually(|| {
        let url = format!("http://{listen}/metrics");
        async move { matches!(reqwest::get(url).await, Ok(r) if r.status() == 200) }
    })
    .await;
    assert!(private, "metrics on {listen}");
}
