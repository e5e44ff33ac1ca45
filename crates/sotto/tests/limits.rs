//! Limits on the compat chat port and on connections: the login deadline,
//! unauthenticated and per-address caps, attempt limits, and the
//! handshake gate of `--chat-require-token`.

mod support;

use std::time::Duration;
use support::*;
use tokio::io::AsyncReadExt;

/// Whether the server accepted a WebSocket on `url` (it drops refused
/// sockets at accept, before any handshake).
async fn can_connect(url: &str) -> bool {
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("answer in time")
        .is_ok()
}

#[tokio::test]
async fn unauthenticated_sockets_are_capped_per_address() {
    let s = TestServer::start_with(|c| c.edge.unauthenticated_per_ip = 3).await;
    let url = s.chat_url();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::connect(&url).await);
    }
    assert!(
        !can_connect(&url).await,
        "a fourth anonymous socket is refused"
    );
    // Logging in frees the slot (just after the response is queued).
    assert_eq!(held[0].register("alice", "pw").await["valid"], true);
    for _ in 0..50 {
        if s.metric("sotto_unauthenticated_chat_connections").await == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(can_connect(&url).await);
    assert_eq!(
        s.metric("sotto_connections_refused_total{limit=\"per_ip\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn connections_are_capped_per_address_on_both_ports() {
    let s = TestServer::start_with(|c| c.edge.max_connections_per_ip = 3).await;
    let chat = s.chat_url();
    let mut held = Vec::new();
    held.push(Client::connect(&chat).await);
    held.push(Client::connect(&chat).await);
    let http = tokio::net::TcpStream::connect(s.server.http_addr())
        .await
        .unwrap();
    // The third slot is the raw HTTP connection; the fourth is refused on
    // either port, before any byte is read.
    assert!(!can_connect(&chat).await);
    let mut refused = tokio::net::TcpStream::connect(s.server.http_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(WAIT, refused.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a response");
    drop(held.pop());
    drop(http);
    // Refused until the server has seen the two sockets close.
    assert!(eventually(|| can_connect(&chat)).await);
}

#[tokio::test]
async fn compat_logins_are_rate_limited() {
    use std::num::NonZeroU32;
    let s =
        TestServer::start_with(|c| c.edge.throttle.per_name_per_minute = NonZeroU32::new(2)).await;
    let mut c = Client::connect(&s.chat_url()).await;
    assert_eq!(c.register("alice", "pw").await["valid"], true);
    assert_eq!(c.login("alice", "wrong").await["valid"], false);
    let limited = c.login("alice", "pw").await;
    assert_eq!(limited["valid"], false);
    assert_eq!(limited["event"], 1);
    let text = limited["error"].as_str().unwrap();
    assert!(
        text.starts_with("Too many attempts; try again in "),
        "{text}"
    );
}

#[tokio::test]
async fn chat_require_token_checks_the_handshake() {
    let s = TestServer::start_with(|c| c.edge.chat_require_token = true).await;
    let chat = s.chat_url();
    match upgrade(&chat, Cred::None, None).await {
        Err((status, body)) => assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        ),
        Ok(_) => panic!("accepted without a token"),
    }
    match upgrade(&chat, Cred::Bearer("bad"), None).await {
        Err((status, _)) => assert_eq!(status, 401),
        Ok(_) => panic!("accepted a bad token"),
    }
    let alice = api_user(&s, "alice").await;
    let (ws, resp) = upgrade(&chat, Cred::Bearer(&alice.token), None)
        .await
        .expect("101");
    assert_eq!(resp.status(), 101);
    // Then the compat protocol as usual: Authorize with the same token.
    let mut c = Client {
        ws,
        token: None,
        id: None,
    };
    let r = c.authorize(&alice.token).await;
    assert_eq!(r["valid"], true, "{r}");
}

/// A WebSocket to the chat port from `source` (any 127/8 address routes
/// to the loopback on Linux); `None` if the server dropped it at accept.
async fn connect_from(source: std::net::Ipv4Addr, server: std::net::SocketAddr) -> Option<Client> {
    use tokio_tungstenite::MaybeTlsStream;
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind((source, 0).into()).ok()?;
    let stream = socket.connect(server).await.ok()?;
    let url = format!("ws://{server}/");
    let handshake = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream));
    let (ws, _) = tokio::time::timeout(WAIT, handshake).await.ok()?.ok()?;
    Some(Client {
        ws,
        token: None,
        id: None,
    })
}

/// One attacking socket, for ever: opened from `source`, held until the
/// server closes it, reopened at once.
async fn attack(source: std::net::Ipv4Addr, server: std::net::SocketAddr) {
    use futures_util::StreamExt;
    loop {
        match connect_from(source, server).await {
            Some(mut c) => while let Some(Ok(_)) = c.ws.next().await {},
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Issue 13, finding 8: a few addresses holding every anonymous slot and
/// reopening each one as soon as it closes no longer keep a user from
/// another address out; the user's socket takes a slot from the largest
/// holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_capacity_is_shared_fairly_between_addresses() {
    use std::net::Ipv4Addr;
    let s = TestServer::start_with(|c| {
        c.edge.unauthenticated_per_ip = 32;
        c.edge.unauthenticated_total = 40;
    })
    .await;
    let server = s.server.chat_addr();
    let attackers: Vec<_> = (2..=5)
        .flat_map(|i| (0..16).map(move |_| Ipv4Addr::new(127, 0, 0, i)))
        .map(|source| tokio::spawn(attack(source, server)))
        .collect();
    let s_ref = &s;
    let full =
        move || async move { s_ref.metric("sotto_unauthenticated_chat_connections").await == 40.0 };
    assert!(eventually(full).await, "the attackers fill the pool");

    let mut user = None;
    for _ in 0..5 {
        user = connect_from(Ipv4Addr::new(127, 0, 0, 9), server).await;
        if user.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut user = user.expect("a socket for an address holding none");
    assert_eq!(user.register("alice", "pw").await["valid"], true);
    assert!(s.metric("sotto_unauthenticated_evicted_total").await >= 1.0);
    // The attackers still have the rest of the pool.
    assert!(s.metric("sotto_unauthenticated_chat_connections").await >= 30.0);
    for a in attackers {
        a.abort();
    }
}
