//! Issue 13's findings that need the real binary: what a peer sends must
//! not forge or flood the server's log (6); the database is private (9).

mod support;

use serde_json::json;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::Client;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn rate_limited_logins_cannot_forge_or_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, http) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .env_remove("SOTTO_LOG")
        .env("NO_COLOR", "1")
        .args(["serve", "--chat-port", &chat.to_string()])
        .args(["--http-port", &http.to_string(), "--dtls-port", "0"])
        .args(["--login-rate-per-ip", "1", "--login-rate-per-name", "0"])
        .arg("--database")
        .arg(dir.path().join("s.db"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all);
        all
    });
    let url = format!("ws://127.0.0.1:{chat}/");
    let mut c = connect_when_up(&url).await;
    // A 60 KB name that carries a forged log line and a terminal escape.
    let forged = "\n2026-12-02T00:00:00.000000Z  INFO sotto: admin logged in\u{1b}[2J";
    let name = format!("{forged}{}", "x".repeat(60_000));
    let attempts = 300;
    for _ in 0..attempts {
        c.send_json(json!({"action": 0, "name": name, "password": "pw", "pubKey": ""}))
            .await;
    }
    // Every attempt is answered (refused), so all of them reached the limit.
    for _ in 0..attempts {
        let reply = c.recv().await;
        assert_eq!(reply["valid"], false, "{reply}");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(!log.contains('\u{1b}'), "a raw escape reached the log");
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-12-02T00:00:00.000000Z")),
        "a forged line reached the log:\n{log}"
    );
    let limited = log.lines().filter(|l| l.contains("rate-limited")).count();
    assert!(limited >= 1, "the refusals are logged:\n{log}");
    // 300 refusals with 60 KB names were 18 MB of log before; now each
    // line is cut and the lines per second are bounded.
    assert!(log.len() < 32 * 1024, "{} bytes of log", log.len());
}

async fn connect_when_up(url: &str) -> Client {
    for _ in 0..200 {
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches('/')),
        )
        .await
        {
            return Client::connect(url).await;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server did not come up");
}

#[tokio::test]
async fn the_database_and_its_wal_are_created_private() {
    let server = support::TestServer::start().await;
    let db = server.db_path();
    let mut c = support::registered(&server, "ann").await;
    c.message("nobody", "hello").await;
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.display());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{path} is {mode:o}");
    }
}

#[tokio::test]
async fn a_page_on_another_port_cannot_log_a_user_out() {
    let server = support::TestServer::start().await;
    let user = support::api_user(&server, "cat").await;
    let addr = server.server.http_addr();
    let logout = |origin: String| {
        format!(
            "POST /api/logout HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
             Cookie: sotto_session={}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            user.token
        )
    };
    // Same site (127.0.0.1), another port: SameSite=Strict sends the cookie.
    let (status, _, body) = support::http_raw(addr, &logout("http://127.0.0.1:1".into())).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let me = support::get_with_token(&server, "/api/me", &user.token).await;
    assert_eq!(me.status, 200, "the session survived");
    // The server's own page may.
    let (status, _, _) = support::http_raw(addr, &logout(format!("http://{addr}"))).await;
    assert_eq!(status, 204);
    let me = support::get_with_token(&server, "/api/me", &user.token).await;
    assert_eq!(me.status, 401);
}

/// Finding 4: a compat login revokes the user's earlier compat token; a
/// `/ws` socket opened with that token must close at once, not keep
/// speaking for the user until the token's 30-day lifetime.
#[tokio::test]
async fn a_socket_closes_when_the_token_it_was_opened_with_is_revoked() {
    let server = support::TestServer::start().await;
    let mut first = Client::connect(&server.chat_url()).await;
    let reply = first.register("dora", "pw").await;
    let old_token = reply["token"].as_str().unwrap().to_owned();
    let mut tab = support::Native::connect(&server, &old_token).await;
    // The same user logs in again on the chat port: the old token is revoked.
    let mut second = Client::connect(&server.chat_url()).await;
    assert_eq!(second.login("dora", "pw").await["valid"], true);
    let code = tab.expect_closed().await;
    assert!(code.is_some(), "the /ws socket got a close frame");
    let refused = support::get_with_token(&server, "/api/me", &old_token).await;
    assert_eq!(refused.status, 401);
}

/// Finding 10: after an Argon2 cost change, a known user's old, cheaper
/// hash made their failed logins faster than an unknown name's (which pays
/// today's costs), so timing told which names exist. A login now re-hashes
/// at today's costs (and an old hash costs a hash at today's costs too,
/// right password or wrong; see `PasswordHasher::verify`).
#[tokio::test]
async fn a_login_rehashes_a_password_made_with_older_costs() {
    let server = support::TestServer::start().await;
    let mut c = Client::connect(&server.chat_url()).await;
    assert_eq!(c.register("edna", "pw").await["valid"], true);
    drop(c);
    // Config::for_tests hashes with m=64; the restarted server with m=128.
    let costs = 128;
    let server = server
        .restart_with(|cfg| cfg.password.memory_kib = costs)
        .await;
    let mut c = Client::connect(&server.chat_url()).await;
    assert_eq!(c.login("edna", "pw").await["valid"], true);
    let store = sotto_store_sqlite::SqliteStore::open(server.db_path().to_str().unwrap())
        .await
        .unwrap();
    let name = sotto_core::auth::UserName::parse("edna").unwrap();
    let record = sotto_core::ports::UserStore::user_by_name(&store, &name)
        .await
        .unwrap()
        .unwrap();
    assert!(
        record.password_hash.contains(&format!("m={costs},")),
        "{}",
        record.password_hash
    );
}
