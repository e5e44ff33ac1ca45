//! The real binaries end to end: `sotto psk` provisions keys in the
//! database, `sotto serve` serves them over DTLS, `sotto dtls-client` runs
//! 50 associations against it, and a revocation takes effect on the live
//! server.

mod dtls_support;

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn sotto() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
    c.env_remove("SOTTO_LOG").env("NO_COLOR", "1");
    c.kill_on_drop(true);
    c
}

/// Runs to completion: (exit code, stdout, stderr).
async fn run(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), sotto().args(args).output())
        .await
        .expect("finishes in time")
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sotto serve` with DTLS on `port`; returns once it listens. Its log is
/// drained in the background so the pipe never fills.
async fn serve(db: &str, port: u16) -> Child {
    let mut child = sotto()
        .args([
            "serve",
            "--chat-port",
            "0",
            "--http-port",
            "0",
            "--database",
            db,
        ])
        .args(["--dtls-port", &port.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("DTLS 1.2 (PSK) listening") {
                return;
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server listens in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

fn client_args<'a>(port: &'a str, identity: &'a str, key: &'a str) -> Vec<&'a str> {
    vec![
        "dtls-client",
        "--server",
        port,
        "--identity",
        identity,
        "--psk",
        key,
        "--interval",
        "0.2",
        "--handshake-timeout",
        "3",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_serve_fifty_associations_then_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let db = db.to_str().unwrap();

    let (code, key, _) = run(&["psk", "add", "fleet-1", "--database", db]).await;
    assert_eq!(code, 0);
    let key = key.trim().to_owned();
    assert_eq!(key.len(), 64, "a 256-bit key in hex: {key:?}");
    let (code, _, err) = run(&["psk", "add", "fleet-1", "--database", db]).await;
    assert_ne!(code, 0);
    assert!(err.contains("already has a key"), "{err}");
    let (code, _, err) = run(&["psk", "add", "x", "--user", "ghost", "--database", db]).await;
    assert_ne!(code, 0);
    assert!(err.contains("no user named ghost"), "{err}");

    let port = dtls_support::free_udp_port();
    let mut server = serve(db, port).await;
    let addr = format!("127.0.0.1:{port}");

    let mut args = client_args(&addr, "fleet-1", &key);
    args.extend(["--associations", "50", "--count", "2"]);
    let (code, out, err) = run(&args).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(
            "summary: 50 associations, 50 established, 100 pings sent, 100 replies, 0 failed"
        ),
        "{out}"
    );
    assert_eq!(out.matches(": ACK").count(), 100);

    // A long-running association, then the identity is revoked elsewhere:
    // the live server closes it and refuses the identity from then on.
    let mut args = client_args(&addr, "fleet-1", &key);
    args.extend(["--count", "1000"]);
    let mut long = sotto()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Revoke once the association is up: at its first reply.
    let mut lines = BufReader::new(long.stdout.take().unwrap()).lines();
    let first_ack = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(": ACK") {
                return;
            }
        }
        panic!("the client ended before its first reply");
    };
    tokio::time::timeout(Duration::from_secs(10), first_ack)
        .await
        .expect("the association comes up");
    // Keep its stdout drained so the pipe never fills.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (code, _, _) = run(&["psk", "revoke", "fleet-1", "--database", db]).await;
    assert_eq!(code, 0);
    let out = tokio::time::timeout(Duration::from_secs(10), long.wait_with_output())
        .await
        .expect("the revoked association ends")
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shutdown alert received"));
    let (code, out, _) = run(&args[..args.len() - 2]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("0 established"), "{out}");

    let (code, out, _) = run(&["psk", "list", "--database", db]).await;
    assert_eq!(code, 0);
    assert!(out.contains("fleet-1") && out.contains("revoked"), "{out}");
    assert!(!out.contains(&key), "keys are never listed");
    server.kill().await.unwrap();
}
