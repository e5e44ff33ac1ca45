//! HTTPS and WSS with rustls: certificates made in-process, real rustls
//! clients, and checks by tools nobody here wrote (`openssl s_client`,
//! `curl`).

mod support;

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use sotto_server::config::TlsFiles;
use sotto_server::transport::tls::self_signed;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn write_pair(dir: &Path, name: &str) -> (TlsFiles, Vec<u8>) {
    let (cert, key) = self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let files = TlsFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert, &cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    (files, cert.into_bytes())
}

fn connector(cert_pem: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn tls_stream(
    addr: std::net::SocketAddr,
    cert_pem: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector(cert_pem)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// A GET over a TLS stream; returns the raw response text.
async fn https_get(addr: std::net::SocketAddr, cert_pem: &[u8], path: &str) -> String {
    let mut s = tls_stream(addr, cert_pem).await;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

async fn tls_server(
    dir: &Path,
    tweak: impl FnOnce(&mut sotto_server::Config),
) -> (TestServer, Vec<u8>) {
    let (files, cert) = write_pair(dir, "server");
    let s = TestServer::start_with(|c| {
        c.tls = Some(files);
        tweak(c);
    })
    .await;
    (s, cert)
}

#[tokio::test]
async fn https_wss_and_redirects() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("html");
    std::fs::create_dir(&html).unwrap();
    std::fs::write(
        html.join("app.js"),
        "connect('%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%')",
    )
    .unwrap();
    let (s, cert) = tls_server(dir.path(), |c| c.html_dir = Some(html.clone())).await;
    let https = s.server.https_addr().expect("HTTPS port");

    let res = https_get(https, &cert, "/healthz").await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    assert!(
        res.to_ascii_lowercase()
            .contains("strict-transport-security: max-age="),
        "{res}"
    );
    let res = https_get(https, &cert, "/app.js").await;
    let chat = s.server.chat_addr().port();
    assert!(
        res.ends_with(&format!("connect('wss://localhost:{chat}')")),
        "{res}"
    );

    // Plain HTTP redirects every request to the same path on HTTPS.
    let (status, headers, _) = http_get(s.server.http_addr(), "/app.js?x=1").await;
    assert_eq!(status, 301);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("https://localhost:{}/app.js?x=1", https.port()).as_str())
    );

    // WSS on the chat port, compat protocol.
    let stream = tls_stream(s.server.chat_addr(), &cert).await;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{chat}/"), stream)
        .await
        .unwrap();
    use futures_util::{SinkExt, StreamExt};
    let register = json!({"action": 1, "name": "alice", "password": "pw", "pubKey": "k"});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        register.to_string(),
    ))
    .await
    .unwrap();
    let reply: Value =
        serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(
        (reply["valid"].as_bool(), reply["event"].as_i64()),
        (Some(true), Some(1))
    );

    // WSS /ws on the HTTPS port with a bearer token from the API over HTTPS.
    let mut api = tls_stream(https, &cert).await;
    let body = json!({"name": "bob", "password": "pw-of-bob"}).to_string();
    for path in ["/api/register", "/api/login"] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        api.write_all(req.as_bytes()).await.unwrap();
    }
    let mut buf = vec![0u8; 8192];
    let mut text = String::new();
    while !text.contains("\"token\"") || !text.ends_with('}') {
        let n = tokio::time::timeout(WAIT, api.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        text.contains("Secure"),
        "the cookie is Secure under TLS: {text}"
    );
    let login: Value = serde_json::from_str(&text[text.rfind("\r\n\r\n").unwrap() + 4..]).unwrap();
    let token = login["token"].as_str().unwrap();
    let stream = tls_stream(https, &cert).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("wss://localhost:{}/ws", https.port()),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("\"users\""));
}

#[tokio::test]
async fn disable_wss_leaves_the_chat_port_plain() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("html");
    std::fs::create_dir(&html).unwrap();
    std::fs::write(html.join("app.js"), "'%SERVER_PROTOCOL%'").unwrap();
    let (s, cert) = tls_server(dir.path(), |c| {
        c.disable_wss = true;
        c.html_dir = Some(html.clone());
    })
    .await;
    let mut c = Client::connect(&s.chat_url()).await;
    assert_eq!(c.register("alice", "pw").await["valid"], true);
    let res = https_get(s.server.https_addr().unwrap(), &cert, "/app.js").await;
    assert!(
        res.starts_with("HTTP/1.1 200") && res.ends_with("'ws'"),
        "{res}"
    );
}

#[tokio::test]
async fn stalled_and_garbage_handshakes_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (s, cert) = tls_server(dir.path(), |c| {
        c.handshake_timeout = Duration::from_millis(500)
    })
    .await;
    let mut garbage = TcpStream::connect(s.server.chat_addr()).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut stalled = TcpStream::connect(s.server.chat_addr()).await.unwrap();
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(WAIT, garbage.read(&mut buf))
        .await
        .expect("garbage answered or closed");
    let n = tokio::time::timeout(Duration::from_secs(3), stalled.read(&mut buf))
        .await
        .expect("stalled handshake dropped");
    assert_eq!(n.unwrap_or(0), 0);
    // Meanwhile the server serves.
    let stream = tls_stream(s.server.chat_addr(), &cert).await;
    let url = format!("wss://localhost:{}/", s.server.chat_addr().port());
    assert!(tokio_tungstenite::client_async(url, stream).await.is_ok());
}

/// `openssl s_client` and `curl`: TLS version, ALPN, HTTPS and redirect.
#[tokio::test]
async fn foreign_clients_agree() {
    let require = std::env::var("SOTTO_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    for tool in ["openssl", "curl"] {
        if which(tool).is_none() {
            assert!(
                !require,
                "{tool} is required (SOTTO_REQUIRE_SERVICES=1) but not installed"
            );
            eprintln!("skipping: {tool} not installed");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = tls_server(dir.path(), |_| {}).await;
    let https = s.server.https_addr().unwrap();
    let cert_path = dir.path().join("server.crt");

    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &https.to_string(),
            "-alpn",
            "http/1.1",
            "-servername",
            "localhost",
            "-CAfile",
        ])
        .arg(&cert_path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Protocol  : TLSv1.3") || text.contains("New, TLSv1.3"),
        "{text}"
    );
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    for old in ["-tls1_1", "-tls1"] {
        let out = tokio::process::Command::new("openssl")
            // SECLEVEL=0 lets the client offer the old version at all, so
            // only the server can refuse it.
            .args([
                "s_client",
                "-connect",
                &https.to_string(),
                old,
                "-cipher",
                "DEFAULT:@SECLEVEL=0",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{old} must be refused");
    }
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &https.to_string(),
            "-tls1_2",
            "-CAfile",
        ])
        .arg(&cert_path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("TLSv1.2"),
        "TLS 1.2 is accepted"
    );

    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&cert_path)
        .arg(format!("https://localhost:{}/healthz", https.port()))
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        r#"{"status":"ok"}"#,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-L", "--cacert"])
        .arg(&cert_path)
        .arg(format!(
            "http://localhost:{}/healthz",
            s.server.http_addr().port()
        ))
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        r#"{"status":"ok"}"#,
        "curl follows the redirect"
    );
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// SIGHUP to the real binary: the new pair serves new handshakes, an old
/// WSS connection stays open, and a bad pair is refused with the old kept.
#[tokio::test]
async fn sighup_reloads_the_pair_and_keeps_connections() {
    use futures_util::{SinkExt, StreamExt};
    use std::io::BufRead;
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let (files, old_cert) = write_pair(dir.path(), "live");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (chat, http, https) = (free(), free(), free());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args([
            "serve",
            "--chat-port",
            &chat.to_string(),
            "--http-port",
            &http.to_string(),
        ])
        .args([
            "--https-port",
            &https.to_string(),
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
        ])
        .arg("--database")
        .arg(dir.path().join("s.db"))
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let wait_line = |needle: &str| {
        let deadline = std::time::Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        panic!("no log line with {needle:?}");
    };
    wait_line("HTTPS listening");
    let chat_addr: std::net::SocketAddr = format!("127.0.0.1:{chat}").parse().unwrap();
    let stream = tls_stream(chat_addr, &old_cert).await;
    let (mut old, _) = tokio_tungstenite::client_async(format!("wss://localhost:{chat}/"), stream)
        .await
        .unwrap();
    let register = json!({"action": 1, "name": "alice", "password": "pw", "pubKey": "k"});
    old.send(Message::text(register.to_string())).await.unwrap();
    let reply: Value =
        serde_json::from_str(old.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    let token = reply["token"].as_str().unwrap().to_owned();

    let (_, new_cert) = write_pair(dir.path(), "live");
    let hup = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
    };
    assert!(hup(child.id()).success());
    wait_line("TLS certificate and key reloaded");
    let tcp = TcpStream::connect(chat_addr).await.unwrap();
    let refused = connector(&old_cert)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(
        refused.is_err(),
        "new handshakes present the new certificate"
    );
    let _ = tls_stream(chat_addr, &new_cert).await;
    let https_addr: std::net::SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
    assert!(
        https_get(https_addr, &new_cert, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );

    // The old connection was not dropped.
    let authorize = json!({"action": 4, "token": token});
    old.send(Message::text(authorize.to_string()))
        .await
        .unwrap();
    loop {
        let r: Value =
            serde_json::from_str(old.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
        if r["event"] == 0 {
            assert_eq!(r["valid"], true);
            break;
        }
    }

    std::fs::write(&files.key, "not a key").unwrap();
    assert!(hup(child.id()).success());
    wait_line("TLS reload refused, keeping the old pair");
    let _ = tls_stream(chat_addr, &new_cert).await;

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
}

/// Keys and chains as operators have them, made by openssl: RSA (PKCS#8
/// and PKCS#1), ECDSA, Ed25519, and a leaf with its CA in one file.
#[test]
fn rsa_ecdsa_ed25519_keys_and_chains_load() {
    let require = std::env::var("SOTTO_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    if which("openssl").is_none() {
        assert!(!require, "openssl is required (SOTTO_REQUIRE_SERVICES=1)");
        eprintln!("skipping: openssl not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(d)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let self_signed = |key_args: &[&str], name: &str| {
        let key = format!("{name}.key");
        let crt = format!("{name}.crt");
        let mut args = vec![
            "req",
            "-x509",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key,
            "-out",
            &crt,
        ];
        args.extend_from_slice(key_args);
        openssl(&args);
    };
    self_signed(&["-newkey", "rsa:2048"], "rsa");
    self_signed(
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "ec",
    );
    self_signed(&["-newkey", "ed25519"], "ed");
    openssl(&["rsa", "-in", "rsa.key", "-traditional", "-out", "rsa1.key"]);
    // A CA and a leaf it signed; the certificate file holds the chain.
    self_signed(
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "ca",
    );
    openssl(&[
        "req",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(d.join("leaf.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.crt",
    ]);
    let chain = [
        std::fs::read(d.join("leaf.crt")).unwrap(),
        std::fs::read(d.join("ca.crt")).unwrap(),
    ]
    .concat();
    std::fs::write(d.join("chain.crt"), chain).unwrap();
    let pem = std::fs::read_to_string(d.join("rsa1.key")).unwrap();
    assert!(
        pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "PKCS#1 really"
    );
    for (cert, key) in [
        ("rsa", "rsa"),
        ("rsa", "rsa1"),
        ("ec", "ec"),
        ("ed", "ed"),
        ("chain", "leaf"),
    ] {
        let files = TlsFiles {
            cert: d.join(format!("{cert}.crt")),
            key: d.join(format!("{key}.key")),
        };
        if let Err(e) = sotto_server::transport::tls::Tls::load(files) {
            panic!("{cert}/{key}: {e}");
        }
    }
}
