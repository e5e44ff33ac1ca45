//! The real `sotto` binary: start-up errors are one line with a non-zero
//! exit, QMessageServer's option spellings work, SIGTERM shuts down cleanly.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::Client;

fn sotto() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
    c.env_remove("SOTTO_LOG").env("NO_COLOR", "1");
    // Parallel tests must not all take the default DTLS port.
    c.env("SOTTO_DTLS_PORT", "0");
    c
}

/// Runs to completion and returns (exit code, stderr lines).
fn run(args: &[&str]) -> (i32, Vec<String>) {
    let out = sotto().args(args).output().expect("run sotto");
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        stderr.lines().map(str::to_owned).collect(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_bad_option_is_one_line_and_exit_2() {
    let (code, lines) = run(&["serve", "--no-such-option"]);
    assert_eq!(code, 2);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--no-such-option"), "{lines:?}");
    let (code, lines) = run(&["serve", "--chat-port", "seventy"]);
    assert_eq!(code, 2);
    assert_eq!(lines.len(), 1, "{lines:?}");
    // A pool without connections could serve nothing.
    let (code, lines) = run(&["serve", "--db-pool-size", "0"]);
    assert_eq!(code, 2);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--db-pool-size"), "{lines:?}");
}

#[test]
fn a_port_in_use_is_one_line_and_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let db = dir.path().join("x.db");
    let (code, lines) = run(&[
        "serve",
        "--chat-port",
        &port,
        "--http-port",
        "0",
        "--database",
        db.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("sotto: error: cannot listen on 127.0.0.1:"),
        "{lines:?}"
    );
}

#[test]
fn an_unusable_database_is_one_line_and_nonzero() {
    let (code, lines) = run(&[
        "serve",
        "--chat-port",
        "0",
        "--http-port",
        "0",
        "--database",
        "/nonexistent-dir/x.db",
    ]);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("cannot open database /nonexistent-dir/x.db"),
        "{lines:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    // Private, as a database should be: a readable one adds a warning line.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, lines) = run(&[
        "serve",
        "--chat-port",
        "0",
        "--http-port",
        "0",
        "--database",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
}

#[test]
fn unreadable_tls_files_are_one_line_naming_the_file() {
    let (code, lines) = run(&["-sslCertificate", "c.pem", "-sslPrivateKey", "k.pem"]);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("cannot read TLS certificate c.pem"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn qt_style_options_serve_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, http) = (free_port(), free_port());
    let db = dir.path().join("s.db");
    let mut child = sotto()
        .args([
            "-chatServerPort",
            &chat.to_string(),
            "--hp",
            &http.to_string(),
            "-ip",
            "example.org",
        ])
        .args([
            "--database",
            db.to_str().unwrap(),
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    wait_for_line(&rx, "HTTP listening");
    let mut c = Client::connect(&format!("ws://127.0.0.1:{chat}/any/path")).await;
    assert_eq!(c.register("zoe", "pw").await["valid"], true);
    let (status, _, _) =
        support::http_get(format!("127.0.0.1:{http}").parse().unwrap(), "/healthz").await;
    assert_eq!(status, 200);

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The client gets a close frame "going away".
    assert_eq!(c.expect_closed().await, Some(1001));
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status, Some(0));
    wait_for_line(&rx, "stopped");
}

fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    panic!("no log line containing {needle:?}");
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

fn write_pair(dir: &std::path::Path, cert: &str, key: &str) -> String {
    let (c, k) = sotto_server::transport::tls::self_signed(&["localhost".into()]).unwrap();
    std::fs::write(dir.join(cert), &c).unwrap();
    std::fs::write(dir.join(key), k).unwrap();
    c
}

#[test]
fn a_mismatched_tls_key_is_one_line_and_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), "a.crt", "a.key");
    write_pair(dir.path(), "b.crt", "b.key");
    let cert = dir.path().join("a.crt");
    let key = dir.path().join("b.key");
    let (code, lines) = run(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--chat-port",
        "0",
        "--http-port",
        "0",
    ]);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("does not fit certificate") && lines[0].contains("b.key"),
        "{lines:?}"
    );
}

#[test]
fn cert_command_writes_a_usable_pair() {
    let dir = tempfile::tempdir().unwrap();
    let out = sotto()
        .args(["cert", "--self-signed", "--host", "localhost", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = dir.path().join("key.pem");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the key is private");
    let files = sotto_server::config::TlsFiles {
        cert: dir.path().join("cert.pem"),
        key,
    };
    assert!(sotto_server::transport::tls::Tls::load(files).is_ok());
}

#[test]
fn config_file_precedence_and_print_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sotto.toml");
    std::fs::write(
        &file,
        "chat-port = 4000\nhttp_port = 4001\nhttps-port = 4002\n\
         allowed-origin = [\"https://a.example\"]\ndatabase = \"postgres://u:hunter2@db/s\"\n\
         db-pool-size = 16\n",
    )
    .unwrap();
    let out = sotto()
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--chat-port", "5000", "--print-config"])
        .env("SOTTO_HTTP_PORT", "6001")
        .env("SOTTO_METRICS_TOKEN", "swordfish")
        .env_remove("SOTTO_HTTPS_PORT")
        .env_remove("SOTTO_DTLS_PORT")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "chat-port = 5000  # command line",
        "http-port = 6001  # environment",
        "https-port = 4002  # config file",
        "allowed-origin = [\"https://a.example\"]  # config file",
        "database = \"postgres://u:***@db/s\"  # config file",
        "db-pool-size = 16  # config file",
        "heartbeat-secs = 30  # default",
        "metrics-token = \"***\"  # environment",
        "outbound-queue-bytes = 1048576  # default",
        "write-timeout-secs = 10  # default",
        "dtls-port = 5000  # default: the chat port's number",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(!text.contains("hunter2"), "secrets are masked");
    assert!(!text.contains("swordfish"), "the metrics token is masked");

    std::fs::write(&file, "no-such-option = 1\n").unwrap();
    let (code, lines) = run(&["serve", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("unknown option \"no-such-option\""),
        "{lines:?}"
    );
}
