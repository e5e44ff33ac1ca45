//! The cluster of `cluster_acceptance.rs`: a NATS server of the test's own
//! on a free port, a fresh PostgreSQL database, and real `sotto serve`
//! children that reach both only through TCP relays the test can cut. Also
//! the HTTP and socket steps a user takes against such a child.
#![allow(dead_code)]

pub mod traffic;

use crate::impair::tcp::{Shape, TcpRelay};
use crate::real_binary::Sotto;
use crate::support::*;
use serde_json::{Value, json};
use sotto_store_postgres::testing::TestDatabase;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// `--node-timeout-secs`: short, so a dead node is noticed quickly.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(2);

fn required() -> bool {
    std::env::var("SOTTO_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A `nats-server` child on a free loopback port, killed when dropped.
pub struct Nats {
    child: Child,
    pub addr: SocketAddr,
}

impl Nats {
    /// None (after printing why) when the binary is absent, unless
    /// SOTTO_REQUIRE_SERVICES=1, which makes that a failure.
    pub async fn start(what: &str) -> Option<Nats> {
        if !std::path::Path::new(NATS_SERVER).is_file() {
            assert!(
                !required(),
                "{what}: {NATS_SERVER} is required (SOTTO_REQUIRE_SERVICES=1) but absent"
            );
            eprintln!("skipped {what}: no {NATS_SERVER} (apt-get install nats-server)");
            return None;
        }
        // The kernel picks a free port; nats-server takes it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(NATS_SERVER)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nats-server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = eventually(|| async { tokio::net::TcpStream::connect(addr).await.is_ok() }).await;
        assert!(up, "nats-server listens on {addr}");
        Some(Nats { child, addr })
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One node and the relays it reaches its services through.
pub struct Node {
    /// None once killed.
    pub sotto: Option<Sotto>,
    pub pg: TcpRelay,
    pub nats: TcpRelay,
    _dir: tempfile::TempDir,
}

impl Node {
    pub fn s(&self) -> &Sotto {
        self.sotto.as_ref().expect("node running")
    }

    /// SIGKILL: no goodbye, no flush.
    pub fn kill9(&mut self) {
        let s = self.sotto.take().expect("node running");
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &s.pid().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        drop(s);
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub nats: Nats,
    pub db: TestDatabase,
}

/// The host:port of a postgres:// URL, and a function giving the same URL
/// through another address.
fn split_url(url: &str) -> (SocketAddr, impl Fn(SocketAddr) -> String + '_) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (user, hostport) = match auth.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), auth),
    };
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    let addr = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .expect("PostgreSQL address resolves");
    (addr, move |via| format!("{scheme}://{user}{via}{path}"))
}

/// `n` nodes on a fresh database and a NATS server of their own, all
/// ready and each having heard the others; None when a service is absent.
pub async fn cluster(what: &str, n: usize) -> Option<Cluster> {
    let nats = Nats::start(what).await?;
    let db = TestDatabase::create(what).await?;
    let url = db.url.clone();
    let (pg, via) = split_url(&url);
    let mut nodes = Vec::new();
    // One after the other: the first applies the migrations.
    for i in 0..n as u64 {
        let pg_relay = TcpRelay::start(pg, Shape::default(), Shape::default(), None, 10 + i).await;
        let nats_relay =
            TcpRelay::start(nats.addr, Shape::default(), Shape::default(), None, 20 + i).await;
        let url = via(pg_relay.addr);
        let broker = format!("nats://{}", nats_relay.addr);
        let dir = tempfile::tempdir().expect("temp dir");
        let args = [
            "--database",
            &url,
            "--broker",
            &broker,
            "--broker-prefix",
            "acceptance",
            "--node-timeout-secs",
            "2",
            "--send-rate-per-user",
            "0",
            "--send-bytes-per-minute",
            "0",
            "--offline-queue-max",
            "100000",
            "--login-rate-per-ip",
            "0",
            "--login-rate-per-name",
            "0",
            "--presence-interval-ms",
            "20",
        ];
        let sotto = Sotto::start(dir.path(), &args).await;
        nodes.push(Node {
            sotto: Some(sotto),
            pg: pg_relay,
            nats: nats_relay,
            _dir: dir,
        });
    }
    for node in &nodes {
        let s = node.s();
        assert!(
            eventually(|| async { readyz(s).await.0 == 200 }).await,
            "node ready"
        );
    }
    // Every node has heard announcements (heartbeats, every 400 ms) from
    // the others before users act.
    for node in &nodes {
        let s = node.s();
        let heard = eventually(|| async {
            s.metric("sotto_broker_announcements_received_total").await >= 2.0 * n as f64
        })
        .await;
        assert!(heard, "node hears the others");
    }
    Some(Cluster { nodes, nats, db })
}

pub async fn readyz(s: &Sotto) -> (u16, Value) {
    let r = reqwest::get(format!("{}/readyz", s.http_base()))
        .await
        .expect("readyz");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `/readyz` until it answers `status`; returns that body.
pub async fn readyz_becomes(s: &Sotto, status: u16) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (st, body) = readyz(s).await;
        if st == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never answered {status}: {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(s: &Sotto, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{}{path}", s.http_base()))
        .json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Registers `name` (password `pw-of-NAME`) and logs in.
pub async fn register(s: &Sotto, name: &str) -> ApiUser {
    let password = format!("pw-of-{name}");
    let (st, body) = post(
        s,
        "/api/register",
        json!({"name": name, "password": password}),
        None,
    )
    .await;
    assert_eq!(st, 201, "register {name}: {body}");
    login(s, name).await
}

/// A new session of an existing user.
pub async fn login(s: &Sotto, name: &str) -> ApiUser {
    let password = format!("pw-of-{name}");
    let (st, body) = post(
        s,
        "/api/login",
        json!({"name": name, "password": password}),
        None,
    )
    .await;
    assert_eq!(st, 200, "login {name}: {body}");
    ApiUser {
        id: body["user"]["id"].as_str().expect("id").to_owned(),
        name: name.to_owned(),
        token: body["token"].as_str().expect("token").to_owned(),
    }
}

pub async fn logout(s: &Sotto, token: &str) -> u16 {
    post(s, "/api/logout", json!({}), Some(token)).await.0
}

/// A `/ws` connection of the session `token`.
pub async fn native(s: &Sotto, token: &str) -> Native {
    let (ws, _) = upgrade(&s.ws_url(), Cred::Bearer(token), None)
        .await
        .unwrap_or_else(|(st, b)| panic!("upgrade refused: {st} {b}"));
    Native { ws }
}

/// `sotto psk add IDENTITY --user USER` against `db`; the key it prints.
pub async fn psk_add(db: &str, identity: &str, user: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["psk", "add", identity, "--user", user, "--database", db])
        .env_remove("SOTTO_LOG")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("psk add in time")
        .expect("psk add runs");
    assert!(
        out.status.success(),
        "psk add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
