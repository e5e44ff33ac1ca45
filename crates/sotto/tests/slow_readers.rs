//! Clients that stop reading (issue 13, finding 1). Each opens a real TCP
//! connection with a tiny receive buffer, logs in and never reads again,
//! while another user sends it 60 KiB messages. What such a connection
//! holds in memory is bounded by `--outbound-queue-bytes` (the rest waits
//! in the store, bounded by the pending cap); it is closed as a slow
//! consumer once a write makes no progress for `--write-timeout`, then its
//! task, socket and memory are released; other users' messages keep
//! flowing meanwhile, and the sender is never held up.

mod support;

use std::time::Instant;
use support::{Client, TestServer, WAIT, eventually, registered};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;

/// Readers that never read, all at once.
const DEAF: usize = 4;
/// Rounds of one 60 KiB message to each reader. Without a byte bound,
/// this is 18 MB queued per reader: under the 1,024-frame limit, so none
/// would even be closed.
const ROUNDS: usize = 300;
/// The write deadline of this test's server: what ends a deaf reader.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How much the server may grow while the readers exist.
const RSS_BOUND: u64 = 32 << 20;

/// This process's resident memory (the in-process server's included).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    kib * 1024
}

/// A compat client whose socket has a 4 KiB receive buffer, set before
/// connecting so the window it announces stays small: the server's writes
/// block as soon as a few frames are in flight.
async fn deaf(s: &TestServer, name: &str) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp: TcpStream = socket.connect(s.server.chat_addr()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(s.chat_url(), MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let mut c = Client {
        ws,
        token: None,
        id: None,
    };
    assert_eq!(c.register(name, "pw").await["valid"], true);
    c
}

#[tokio::test]
async fn readers_that_never_read_are_dropped_and_their_memory_released() {
    let s = TestServer::start_with(|c| c.write_timeout = WRITE_TIMEOUT).await;
    let hub = s.server.hub().clone();
    let mut loud = registered(&s, "loud").await;
    let mut friend = registered(&s, "friend").await;
    let friend_id = friend.id.clone().unwrap();
    let tcp_before = s.metric("sotto_tcp_connections").await;
    let tasks_before = s.metric("sotto_tasks").await;
    let mut readers = Vec::new();
    for i in 0..DEAF {
        readers.push(deaf(&s, &format!("deaf{i}")).await);
    }
    let targets: Vec<String> = readers.iter().map(|r| r.id.clone().unwrap()).collect();
    // A user is announced online just after its login response.
    let all_online = eventually(|| {
        let hub = &hub;
        async move { hub.online_count() == 2 + DEAF }
    })
    .await;
    assert!(all_online, "{} users online", hub.online_count());

    // The friend reads everything, concurrently: one message per round.
    let friend_reader = tokio::spawn(async move {
        let mut got = 0;
        while let Some(v) = friend.try_recv(WAIT).await {
            if v["event"] == 2 {
                got += 1;
                if v["message"] == "last" {
                    break;
                }
            }
        }
        got
    });

    let body = "y".repeat(60_000);
    let baseline = rss();
    let mut peak = baseline;
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < ROUNDS {
        for target in &targets {
            loud.message(target, &body).await;
        }
        loud.message(&friend_id, &format!("round {rounds}")).await;
        rounds += 1;
        peak = peak.max(rss());
    }
    let sent_after = started.elapsed();
    // The deadline drops every deaf reader, however much was sent.
    let dropped = eventually(|| {
        let hub = &hub;
        async move { hub.online_count() == 2 }
    })
    .await;
    let dropped_after = started.elapsed();
    // (The friend leaves once it has this one.)
    loud.message(&friend_id, "last").await;
    // The server let go of each socket and task, not just of the user.
    let server = &s;
    let released = eventually(|| async move {
        server.metric("sotto_tcp_connections").await <= tcp_before
            && server.metric("sotto_tasks").await <= tasks_before
    })
    .await;
    let released_after = started.elapsed();
    peak = peak.max(rss());
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{DEAF} readers: {rounds} rounds of 60 KiB each sent in {sent_after:?}, offline after {dropped_after:?}, \
         released: {released} after {released_after:?}, RSS {} -> peak {} MiB (+{} MiB)",
        baseline >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(
        dropped,
        "deaf readers still online: {} users online",
        hub.online_count()
    );
    // Generous: a loaded CI machine is slow by itself. Before the feeds, a
    // sender waited on deaf readers' full queues for as long as they lived.
    assert!(
        sent_after < WRITE_TIMEOUT * 15,
        "the sender was held up by readers that do not read: {sent_after:?}"
    );
    assert!(released, "sockets or tasks of dropped readers still held");
    assert!(
        growth < RSS_BOUND,
        "RSS grew by {} MiB with {DEAF} readers that never read",
        growth >> 20
    );
    // The friend got every message, the last one included.
    assert_eq!(friend_reader.await.unwrap(), rounds + 1);
    drop(readers);
    // A reader that comes back finds what it missed stored.
    let mut back = Client::connect(&s.chat_url()).await;
    assert_eq!(back.login("deaf0", "pw").await["valid"], true);
    let got = back.recv_message().await;
    assert_eq!(got["message"].as_str().map(str::len), Some(60_000));
}
