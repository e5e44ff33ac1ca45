//! Shared helpers: start a real server on ephemeral ports with a temporary
//! SQLite file, connect real WebSocket clients, and speak the compat
//! protocol, so each test reads like a scenario.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sotto_server::{Config, Server};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod devices;
#[allow(unused_imports)] // not every test binary uses them
pub use devices::*;

pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `check` until it holds, for at most [`WAIT`]: for an effect that
/// follows a step the test cannot await (the server noticing a socket
/// close, a counter bumped after the response). Returns whether it held,
/// for the test's own assertion; unlike a fixed sleep, it waits only as
/// long as the server needs.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server plus the temporary directory holding its database.
pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = start_in(&dir, tweak).await;
        TestServer { server, dir }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("sotto.db")
    }

    pub fn chat_url(&self) -> String {
        format!("ws://{}/", self.server.chat_addr())
    }

    /// Stops the server and starts a new one on the same database.
    pub async fn restart_with(self, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = self.dir;
        self.server.shutdown().await;
        let server = start_in(&dir, tweak).await;
        TestServer { server, dir }
    }
}

async fn start_in(dir: &tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Server {
    let db = dir.path().join("sotto.db");
    let mut config = Config::for_tests(db.to_str().expect("utf-8 path"));
    config.hub.presence_interval = Duration::from_millis(20);
    tweak(&mut config);
    Server::start(config).await.expect("server starts")
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A compat-protocol client over a real WebSocket.
pub struct Client {
    pub ws: Ws,
    pub token: Option<String>,
    pub id: Option<String>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Client {
            ws,
            token: None,
            id: None,
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Next text frame as JSON; skips pings. Panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        self.try_recv(WAIT).await.expect("a frame in time")
    }

    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match next.ok()? {
                Message::Text(t) => return Some(serde_json::from_str(&t).expect("JSON frame")),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Next frame that is not a user-list broadcast.
    pub async fn recv_non_presence(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            if v["event"] != 4 {
                return v;
            }
        }
    }

    /// Waits for the server to close the connection; returns the close code.
    pub async fn expect_closed(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection not closed in time"),
                Ok(None) => return None,
                Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub async fn register(&mut self, name: &str, password: &str) -> Value {
        self.credentials(1, name, password).await
    }

    pub async fn login(&mut self, name: &str, password: &str) -> Value {
        self.credentials(0, name, password).await
    }

    async fn credentials(&mut self, action: u8, name: &str, password: &str) -> Value {
        self.send_json(json!({"action": action, "name": name, "password": password, "pubKey": format!("key-of-{name}")}))
            .await;
        let r = self.recv_non_presence().await;
        if r["valid"] == true {
            self.token = r["token"].as_str().map(str::to_owned);
            self.id = r["users"]
                .as_array()
                .and_then(|u| u.iter().find(|e| e["name"] == name))
                .and_then(|e| e["id"].as_str())
                .map(str::to_owned);
        }
        r
    }

    pub async fn authorize(&mut self, token: &str) -> Value {
        self.send_json(json!({"action": 4, "token": token})).await;
        let r = self.recv_non_presence().await;
        if r["valid"] == true {
            self.token = Some(token.to_owned());
        }
        r
    }

    pub async fn message(&mut self, target: &str, text: &str) {
        let token = self.token.clone().unwrap_or_default();
        self.send_json(json!({"action": 3, "token": token, "target": target, "message": text}))
            .await;
    }

    /// Receives the next direct message, skipping presence broadcasts.
    pub async fn recv_message(&mut self) -> Value {
        let v = self.recv_non_presence().await;
        assert_eq!(v["event"], 2, "expected a MessageEvent, got {v}");
        v
    }
}

/// Connects and registers a user; returns the logged-in client.
pub async fn registered(server: &TestServer, name: &str) -> Client {
    let mut c = Client::connect(&server.chat_url()).await;
    let r = c.register(name, "pw").await;
    assert_eq!(r["valid"], true, "register {name}: {r}");
    c
}

/// A raw HTTP/1.1 request (no normalization of the path), returning status,
/// headers (lower-cased names) and body bytes.
pub async fn http_raw(
    addr: std::net::SocketAddr,
    request: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("http in time")
        .expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let body = buf[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body)
}

pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// ---- sotto's own protocol and the HTTP API ----

impl TestServer {
    pub fn http_base(&self) -> String {
        format!("http://{}", self.server.http_addr())
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.server.http_addr())
    }

    /// Reads one value from `/metrics`, e.g. `sotto_tcp_connections` or
    /// `sotto_upgrades_total{outcome="unauthorized"}`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.http_base()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
    }
}

/// An HTTP response: status, headers and JSON body (Null when empty).
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn error_code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

pub async fn reply(r: reqwest::Response) -> Reply {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.expect("body");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    Reply {
        status,
        headers,
        json,
    }
}

pub async fn post_json(server: &TestServer, path: &str, body: Value) -> Reply {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", server.http_base()))
        .json(&body)
        .send()
        .await
        .expect("POST");
    reply(r).await
}

pub async fn get_with_token(server: &TestServer, path: &str, token: &str) -> Reply {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", server.http_base()))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    reply(r).await
}

/// A registered and logged-in API user.
pub struct ApiUser {
    pub id: String,
    pub name: String,
    pub token: String,
}

pub async fn api_user(server: &TestServer, name: &str) -> ApiUser {
    let r = post_json(
        server,
        "/api/register",
        json!({"name": name, "password": "pw-of-" .to_owned() + name}),
    )
    .await;
    assert_eq!(r.status, 201, "register {name}: {}", r.json);
    api_login(server, name).await
}

/// A new session for an existing user.
pub async fn api_login(server: &TestServer, name: &str) -> ApiUser {
    let r = post_json(
        server,
        "/api/login",
        json!({"name": name, "password": "pw-of-".to_owned() + name}),
    )
    .await;
    assert_eq!(r.status, 200, "login {name}: {}", r.json);
    ApiUser {
        id: r.json["user"]["id"].as_str().expect("id").to_owned(),
        name: name.to_owned(),
        token: r.json["token"].as_str().expect("token").to_owned(),
    }
}

/// How an upgrade request carries its credential.
pub enum Cred<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a str),
    Subprotocol(&'a str),
}

/// Attempts an upgrade; `Err` holds the HTTP status and body of a refusal.
pub async fn upgrade(
    url: &str,
    cred: Cred<'_>,
    origin: Option<&str>,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    (u16, Value),
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().expect("request");
    let h = req.headers_mut();
    match cred {
        Cred::None => {}
        Cred::Bearer(t) => {
            h.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Cred::Cookie(t) => {
            h.insert("cookie", format!("sotto_session={t}").parse().unwrap());
        }
        Cred::Subprotocol(t) => {
            h.insert(
                "sec-websocket-protocol",
                format!("sotto.v1, sotto.token.{t}").parse().unwrap(),
            );
        }
    }
    if let Some(o) = origin {
        h.insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(ok) => Ok(ok),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("upgrade failed below HTTP: {e}"),
    }
}

/// A client of sotto's own protocol on `/ws`.
pub struct Native {
    pub ws: Ws,
}

impl Native {
    /// Connects resuming after inbox position `after`.
    pub async fn connect_after(server: &TestServer, token: &str, after: i64) -> Native {
        let url = format!("{}?after={after}", server.ws_url());
        let (ws, _) = upgrade(&url, Cred::Bearer(token), None)
            .await
            .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"));
        Native { ws }
    }

    pub async fn connect(server: &TestServer, token: &str) -> Native {
        let (ws, _) = upgrade(&server.ws_url(), Cred::Bearer(token), None)
            .await
            .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"));
        Native { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    /// The next frame of any type.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(WAIT).await.expect("a frame in time")
    }

    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Some(serde_json::from_str(&t).expect("JSON frame"));
                }
                Ok(Some(Ok(Message::Close(f)))) => panic!("closed: {f:?}"),
                Ok(Some(Ok(_))) => continue,
                Ok(other) => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// The next frame of type `t`, skipping others (presence and the like).
    pub async fn recv_type(&mut self, t: &str) -> Value {
        loop {
            let f = self.recv().await;
            if f["type"] == t {
                return f;
            }
        }
    }

    /// No frame of type `t` arrives within `wait`.
    pub async fn expect_no(&mut self, t: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
            match self.try_recv(left).await {
                Some(f) if f["type"] == t => panic!("unexpected {t}: {f}"),
                Some(_) => continue,
                None => return,
            }
        }
    }

    pub async fn send_message(&mut self, to: &str, body: &str, client_id: &str) -> Value {
        self.send(json!({"type": "send", "to": to, "body": body, "client_id": client_id}))
            .await;
        self.recv_type("ack").await
    }

    pub async fn expect_closed(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection not closed in time"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}
