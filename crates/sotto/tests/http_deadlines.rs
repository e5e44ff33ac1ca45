//! Issue 13, finding 2: HTTP clients that stop moving lose their
//! connection slot. A request body that does not arrive in time is a 408
//! and the connection closes; a response the client does not take closes
//! the connection; a kept-alive connection idles only up to the header
//! deadline. Each test allows one connection per address, so "the slot
//! is free" is observable twice: `sotto_tcp_connections` (read from
//! another loopback address) drops, and the same address is served again.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The deadline under test; real deployments use seconds.
const DEADLINE: Duration = Duration::from_millis(800);
/// How long past the deadline a close may take on a busy test machine.
const SLACK: Duration = Duration::from_secs(4);
const SCRAPER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn one_per_address(c: &mut sotto_server::Config) {
    c.edge.max_connections_per_ip = 1;
    c.edge.http.header = DEADLINE;
    c.edge.http.body = DEADLINE;
    c.edge.http.write_stall = DEADLINE;
}

/// Open TCP connections as `/metrics` counts them, scraped from
/// [`SCRAPER`] on a fresh connection (which counts itself) that the server
/// closes after answering. Retried, since the scraper's address is under
/// the same one-connection limit and the previous scrape's socket may not
/// be gone yet.
async fn tcp_connections(s: &TestServer) -> usize {
    for _ in 0..100 {
        if let Some(n) = scrape_once(s.server.http_addr()).await {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("/metrics never answered");
}

async fn scrape_once(addr: SocketAddr) -> Option<usize> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(SCRAPER, 0)).ok()?;
    let mut s = socket.connect(addr).await.ok()?;
    let req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8(buf).ok()?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("sotto_tcp_connections "))?;
    value.trim().parse().ok()
}

/// Whether a new connection from 127.0.0.1 gets `/healthz` answered
/// (false when the per-address limit closed it at accept).
async fn healthz_answered(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    let req = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}

/// Reads until the server closes; returns what it sent and how long the
/// close took from `since`. Panics if the server keeps the connection.
async fn until_closed(s: &mut TcpStream, since: Instant) -> (String, Duration) {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(DEADLINE + SLACK, s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection still open after {:?}",
        since.elapsed()
    );
    (String::from_utf8_lossy(&buf).into_owned(), since.elapsed())
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_and_frees_its_slot() {
    let s = TestServer::start_with(one_per_address).await;
    let addr = s.server.http_addr();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    let head = "POST /api/login HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/json\r\nContent-Length: 16000\r\n\r\n{";
    stalled.write_all(head.as_bytes()).await.unwrap();
    let sent = Instant::now();
    assert_eq!(
        tcp_connections(&s).await,
        2,
        "the stalled POST and the scrape"
    );
    assert!(!healthz_answered(addr).await, "its address is at its limit");

    let (reply, took) = until_closed(&mut stalled, sent).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"timeout\""), "{reply}");
    // The server's clock starts when it has parsed the headers, which may
    // be a hair before `sent` was taken.
    assert!(
        took >= DEADLINE * 3 / 4,
        "closed before the deadline: {took:?}"
    );
    assert!(
        eventually(|| async { tcp_connections(&s).await == 1 }).await,
        "the slot is given back"
    );
    assert!(healthz_answered(addr).await, "the address is served again");
}

#[tokio::test]
async fn a_response_nobody_reads_frees_its_slot() {
    let html = tempfile::tempdir().unwrap();
    std::fs::write(html.path().join("big.bin"), vec![7u8; 8 << 20]).unwrap();
    let dir = html.path().to_owned();
    let s = TestServer::start_with(move |c| {
        one_per_address(c);
        c.html_dir = Some(dir);
    })
    .await;
    let addr = s.server.http_addr();
    // A small receive buffer, so the kernel cannot take the file for the
    // client that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut sink = socket.connect(addr).await.unwrap();
    let req = "GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n";
    sink.write_all(req.as_bytes()).await.unwrap();
    let sent = Instant::now();
    assert_eq!(tcp_connections(&s).await, 2, "the download and the scrape");

    assert!(
        eventually(|| async { tcp_connections(&s).await == 1 }).await,
        "a response nobody takes ends its connection"
    );
    let took = sent.elapsed();
    assert!(
        took >= DEADLINE * 3 / 4 && took < DEADLINE + SLACK,
        "{took:?}"
    );
    assert!(healthz_answered(addr).await, "the address is served again");
    drop(sink);
}

#[tokio::test]
async fn a_kept_alive_connection_idles_only_until_the_header_deadline() {
    let s = TestServer::start_with(one_per_address).await;
    let mut idle = TcpStream::connect(s.server.http_addr()).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(WAIT, idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();

    let (_, took) = until_closed(&mut idle, answered).await;
    assert!(took >= DEADLINE / 2, "closed too early: {took:?}");
}

#[tokio::test]
async fn a_body_in_time_is_served_as_before() {
    let s = TestServer::start_with(one_per_address).await;
    let mut slow = TcpStream::connect(s.server.http_addr()).await.unwrap();
    let body = r#"{"name":"alice","password":"pw-of-alice"}"#;
    let head = format!(
        "POST /api/register HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    // In two halves, well within the deadline.
    let (a, b) = body.split_at(10);
    slow.write_all(a.as_bytes()).await.unwrap();
    tokio::time::sleep(DEADLINE / 4).await;
    slow.write_all(b.as_bytes()).await.unwrap();
    let (reply, _) = until_closed(&mut slow, Instant::now()).await;
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
}
