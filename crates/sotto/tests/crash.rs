//! An acknowledged message survives the server being killed (SIGKILL, no
//! shutdown of any kind) at a random moment of a stream of sends: after a
//! restart on the same file, every acked message is in the recipient's
//! replay exactly once, in order.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Cred, upgrade};
use tokio_tungstenite::tungstenite::Message;

const MESSAGES: usize = 10_000;
/// Sends in flight at once.
const WINDOW: usize = 256;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `sotto serve` on `db` and waits until it listens.
fn serve(db: &Path, http: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .env_remove("SOTTO_LOG")
        .env("NO_COLOR", "1")
        .args([
            "serve",
            "--listen=127.0.0.1",
            "--chat-port=0",
            "--disable-dtls",
            &format!("--http-port={http}"),
            &format!("--database={}", db.display()),
            "--argon2-memory-kib=64",
            "--argon2-iterations=1",
            "--send-rate-per-user=0",
            "--send-bytes-per-minute=0",
            "--offline-queue-max=20000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sotto");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("HTTP listening") => break,
            Ok(_) => continue,
            Err(_) => panic!("the server did not start"),
        }
    }
    // Keep draining, so the server never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    child
}

async fn post(http: u16, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http}{path}"))
        .json(&body)
        .send()
        .await
        .expect("request");
    r.json().await.expect("JSON")
}

/// Registers and logs in; returns (id, token).
async fn account(http: u16, name: &str) -> (String, String) {
    let cred = json!({"name": name, "password": "pw-pw-pw"});
    post(http, "/api/register", cred.clone()).await;
    let login = post(http, "/api/login", cred).await;
    let id = login["user"]["id"].as_str().expect("id").to_owned();
    let token = login["token"].as_str().expect("token").to_owned();
    (id, token)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(http: u16, token: &str, after: Option<i64>) -> Ws {
    let query = after.map(|a| format!("?after={a}")).unwrap_or_default();
    let url = format!("ws://127.0.0.1:{http}/ws{query}");
    upgrade(&url, Cred::Bearer(token), None)
        .await
        .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"))
        .0
}

async fn next_json(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Sends up to MESSAGES, `WINDOW` at a time, until the connection breaks;
/// kills the server once `kill_after` acks arrived. Returns the acked ids.
async fn send_until_killed(
    ws: &mut Ws,
    to: &str,
    kill_after: usize,
    server: &mut Child,
) -> Vec<i64> {
    let mut acked = Vec::new();
    let mut sent = 0;
    let mut killed = false;
    loop {
        while sent < MESSAGES && sent - acked.len() < WINDOW {
            let frame = json!({"type": "send", "to": to, "body": format!("m{sent}"), "client_id": format!("c{sent}")});
            if ws.send(Message::text(frame.to_string())).await.is_err() {
                return acked;
            }
            sent += 1;
        }
        match next_json(ws, Duration::from_secs(10)).await {
            Some(f) if f["type"] == "ack" => {
                assert_eq!(f["status"], "stored", "{f}");
                acked.push(f["id"].as_i64().expect("an id"));
            }
            Some(f) if f["type"] == "error" => panic!("refused: {f}"),
            Some(_) => {}
            None => return acked,
        }
        if !killed && acked.len() >= kill_after {
            // No shutdown, no flush: the process is gone at once.
            server.kill().expect("SIGKILL");
            killed = true;
        }
        if acked.len() == MESSAGES {
            return acked;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_sigkill_exactly_once_and_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("sotto.db");
    let http = free_port();
    let mut server = serve(&db, http);
    let (alice_id, alice) = account(http, "alice").await;
    let (bob_id, bob) = account(http, "bob").await;
    let _ = alice_id;
    let mut a = ws(http, &alice, None).await;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(0);
    let kill_after = 1_000 + nanos % 8_000;
    let acked = send_until_killed(&mut a, &bob_id, kill_after, &mut server).await;
    let _ = server.wait();
    eprintln!("killed after {} acks (aimed at {kill_after})", acked.len());
    assert!(acked.len() >= kill_after, "acks stopped before the kill");
    assert!(
        acked.len() < MESSAGES,
        "the kill came too late to test anything"
    );

    let mut server = serve(&db, http);
    let mut b = ws(http, &bob, Some(0)).await;
    let mut seen = Vec::new();
    let wanted: HashSet<i64> = acked.iter().copied().collect();
    let mut last_pos = 0;
    while let Some(f) = next_json(&mut b, Duration::from_secs(3)).await {
        if f["type"] != "message" {
            continue;
        }
        let pos = f["pos"].as_i64().expect("a pos");
        assert_eq!(pos, last_pos + 1, "positions in order, none repeated");
        last_pos = pos;
        seen.push(f["id"].as_i64().expect("an id"));
    }
    let _ = server.kill();
    let _ = server.wait();
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a message was replayed twice");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "replayed out of order"
    );
    let missing: Vec<i64> = wanted.difference(&unique).copied().collect();
    assert!(
        missing.is_empty(),
        "{} acked messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "replayed {} messages: all {} acked ones, once each, in order",
        seen.len(),
        acked.len()
    );
}
