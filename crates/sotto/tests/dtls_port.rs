//! The DTLS port follows the chat port's number unless `--dtls-port` says
//! otherwise: two servers with different chat ports run side by side with
//! default DTLS settings, and a taken UDP port names the options to change.

mod support;

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn sotto() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
    c.env_remove("SOTTO_LOG")
        .env_remove("SOTTO_DTLS_PORT")
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    c
}

/// A port free for TCP and UDP on 127.0.0.1 (held for a moment only).
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `sotto serve` on `chat_port` with default DTLS options; returns once
/// DTLS listens, with the address its log line gives.
async fn serve(dir: &std::path::Path, chat_port: u16) -> (Child, String) {
    let db = dir.join(format!("{chat_port}.db"));
    let mut child = sotto()
        .args(["serve", "--http-port", "0", "--chat-port"])
        .arg(chat_port.to_string())
        .arg("--database")
        .arg(&db)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("DTLS 1.2 (PSK) listening") {
                return line;
            }
        }
        panic!("server {chat_port} exited before DTLS listened");
    })
    .await
    .expect("DTLS listens in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, line)
}

#[tokio::test]
async fn two_servers_with_different_chat_ports_start_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (free_port(), free_port());
    let (mut first, first_log) = serve(dir.path(), a).await;
    let (mut second, second_log) = serve(dir.path(), b).await;
    assert!(first_log.contains(&format!("127.0.0.1:{a}")), "{first_log}");
    assert!(
        second_log.contains(&format!("127.0.0.1:{b}")),
        "{second_log}"
    );
    // Both are still running: neither lost a fight over a DTLS port.
    assert!(first.try_wait().unwrap().is_none());
    assert!(second.try_wait().unwrap().is_none());
    first.kill().await.unwrap();
    second.kill().await.unwrap();
}

#[tokio::test]
async fn a_taken_udp_port_names_the_options_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Only UDP is taken: the chat port's TCP listener still binds.
    let _udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let out = sotto()
        .args(["serve", "--http-port", "0", "--chat-port"])
        .arg(port.to_string())
        .arg("--database")
        .arg(dir.path().join("x.db"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "sotto: error: cannot listen on 127.0.0.1:{port} (dtls): "
        )),
        "{lines:?}"
    );
    assert!(
        lines[0].contains("--dtls-port") && lines[0].contains("--disable-dtls"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn an_ephemeral_chat_port_lends_its_number_to_dtls() {
    let s = support::TestServer::start_with(|c| {
        c.dtls_port = sotto_server::config::DtlsPort::SameAsChat;
    })
    .await;
    let dtls = s.server.dtls().expect("DTLS on");
    assert_eq!(dtls.local_addr().port(), s.server.chat_addr().port());
}
