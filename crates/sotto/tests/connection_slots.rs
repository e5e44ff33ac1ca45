//! Connection slots outlive HTTP upgrades: an authorized WebSocket, on
//! `/ws` or on the chat port under `--chat-require-token`, holds its
//! connection slot until it closes, so one token cannot open more sockets
//! than `--max-connections-per-ip` allows and `sotto_tcp_connections`
//! counts every open socket.
//!
//! `/metrics` is read from another loopback address (127.0.0.2), so the
//! scrape is never refused by the per-address limit under test; its own
//! connection is the one socket counted besides the WebSockets.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PER_IP: usize = 3;
const EXTRA: usize = 5;
const SCRAPER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket opened with the bearer token, or `None` when the server
/// refused it (at accept, below HTTP).
async fn open(url: &str, token: &str) -> Option<Ws> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let attempt = tokio_tungstenite::connect_async(req);
    match tokio::time::timeout(WAIT, attempt)
        .await
        .expect("an answer")
    {
        Ok((ws, resp)) => {
            assert_eq!(resp.status(), 101);
            Some(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            panic!("refused above TCP: {}", resp.status())
        }
        Err(_) => None,
    }
}

/// Reads `/metrics` from [`SCRAPER`] over one kept-alive connection.
struct Scraper {
    client: reqwest::Client,
    url: String,
}

impl Scraper {
    fn new(s: &TestServer) -> Scraper {
        let client = reqwest::Client::builder()
            .local_address(SCRAPER)
            .build()
            .unwrap();
        let url = format!("{}/metrics", s.http_base());
        Scraper { client, url }
    }

    async fn tcp_connections(&self) -> usize {
        let text = self
            .client
            .get(&self.url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix("sotto_tcp_connections "))
            .unwrap();
        value.trim().parse().unwrap()
    }

    /// Waits (bounded) for the count to become `want`; returns the last
    /// value seen, for the assertion.
    async fn settle(&self, want: usize) -> usize {
        let mut seen = 0;
        for _ in 0..100 {
            seen = self.tcp_connections().await;
            if seen == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    }
}

/// Opens `PER_IP + EXTRA` authorized sockets on `url`: only `PER_IP` are
/// accepted and counted; closing two frees exactly two slots.
async fn slots_hold_after_upgrade(s: &TestServer, url: &str) {
    let alice = api_user(s, "alice").await;
    let scraper = Scraper::new(s);
    // The API calls' own connections are gone: only the scrape is open.
    assert_eq!(scraper.settle(1).await, 1, "before opening sockets");

    let mut open_sockets = Vec::new();
    let mut refused = 0;
    for _ in 0..PER_IP + EXTRA {
        match open(url, &alice.token).await {
            Some(ws) => open_sockets.push(ws),
            None => refused += 1,
        }
    }
    assert_eq!(
        open_sockets.len(),
        PER_IP,
        "one address holds PER_IP sockets"
    );
    assert_eq!(refused, EXTRA);
    assert_eq!(scraper.settle(PER_IP + 1).await, PER_IP + 1);

    // Closing sockets gives their slots back, and new sockets fit again.
    for mut ws in open_sockets.drain(..2) {
        let _ = ws.close(None).await;
    }
    assert_eq!(scraper.settle(PER_IP - 1).await, PER_IP - 1);
    for _ in 0..2 {
        open_sockets.push(open(url, &alice.token).await.expect("a freed slot"));
    }
    assert!(open(url, &alice.token).await.is_none(), "full again");
    assert_eq!(scraper.settle(PER_IP + 1).await, PER_IP + 1);
}

fn limited(c: &mut sotto_server::Config) {
    c.edge.max_connections_per_ip = PER_IP as u32;
    // The compat sockets below never log in; keep them open for the test.
    c.edge.login_deadline = Duration::from_secs(60);
}

#[tokio::test]
async fn ws_sockets_hold_their_connection_slot() {
    let s = TestServer::start_with(limited).await;
    slots_hold_after_upgrade(&s, &s.ws_url()).await;
}

#[tokio::test]
async fn gated_chat_sockets_hold_their_connection_slot() {
    let s = TestServer::start_with(|c| {
        limited(c);
        c.edge.chat_require_token = true;
    })
    .await;
    slots_hold_after_upgrade(&s, &s.chat_url()).await;
}
