//! The HTTP port: UI folder, placeholders, enums, health, and refusals.

mod support;

use support::*;

/// A server whose UI folder holds a few files; keep the returned folder
/// alive for the test's duration.
async fn with_html() -> (TestServer, tempfile::TempDir) {
    let html = tempfile::tempdir().unwrap();
    std::fs::write(
        html.path().join("index.html"),
        "<script>const u = \"%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%\";</script>",
    )
    .unwrap();
    std::fs::write(
        html.path().join("app.mjs"),
        "export const a = '%SERVER_PORT%';",
    )
    .unwrap();
    std::fs::write(html.path().join("style.css"), "body{}").unwrap();
    let png: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    std::fs::write(html.path().join("logo.png"), &png).unwrap();
    let path = html.path().to_owned();
    (
        TestServer::start_with(|c| c.html_dir = Some(path)).await,
        html,
    )
}

#[tokio::test]
async fn placeholders_are_filled_from_a_validated_host() {
    let (s, _html) = with_html().await;
    let port = s.server.chat_addr().port();
    let (status, headers, body) = http_raw(
        s.server.http_addr(),
        "GET / HTTP/1.1\r\nHost: chat.example.org:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let body = String::from_utf8(body).unwrap();
    assert_eq!(
        body,
        format!("<script>const u = \"ws://chat.example.org:{port}\";</script>")
    );
    // A forged Host cannot inject script: the fallback address is used.
    let (_, _, body) = http_raw(
        s.server.http_addr(),
        "GET /index.html HTTP/1.1\r\nHost: x\";alert(1);//\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body = String::from_utf8(body).unwrap();
    assert!(!body.contains("alert"), "{body}");
    assert!(body.contains(&format!("ws://127.0.0.1:{port}")), "{body}");
}

#[tokio::test]
async fn server_address_option_wins() {
    let html = tempfile::tempdir().unwrap();
    std::fs::write(html.path().join("a.js"), "%SERVER_ADDRESS%").unwrap();
    let path = html.path().to_owned();
    let s = TestServer::start_with(|c| {
        c.html_dir = Some(path);
        c.server_address = Some("fixed.example".into());
    })
    .await;
    let (status, headers, body) = http_get(s.server.http_addr(), "/a.js").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(body, b"fixed.example");
}

#[tokio::test]
async fn files_are_served_intact_with_types() {
    let (s, _html) = with_html().await;
    let (status, headers, body) = http_get(s.server.http_addr(), "/logo.png").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("image/png"));
    let expected: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    assert_eq!(body, expected);
    let (_, headers, _) = http_get(s.server.http_addr(), "/style.css").await;
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/css; charset=utf-8")
    );
    let (_, headers, body) = http_get(s.server.http_addr(), "/app.mjs").await;
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        body,
        format!("export const a = '{}';", s.server.chat_addr().port()).as_bytes()
    );
}

#[tokio::test]
async fn traversal_is_refused() {
    let (s, _html) = with_html().await;
    // The database sits next to nothing the UI folder can reach.
    for path in [
        "/../sotto.db",
        "/..%2fsotto.db",
        "/%2e%2e/sotto.db",
        "/.hidden",
        "/a/../../etc/passwd",
        "//etc/passwd",
    ] {
        let (status, _, body) = http_get(s.server.http_addr(), path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body, b"not found\n", "{path}");
    }
}

#[tokio::test]
async fn symlinks_out_of_the_folder_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let html = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        html.path().join("leak.txt"),
    )
    .unwrap();
    let path = html.path().to_owned();
    let s = TestServer::start_with(|c| c.html_dir = Some(path)).await;
    let (status, _, _) = http_get(s.server.http_addr(), "/leak.txt").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn only_get_and_head() {
    let (s, _html) = with_html().await;
    let addr = s.server.http_addr();
    let (status, headers, _) =
        http_raw(addr, "POST /index.html HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
    let (status, headers, body) = http_raw(
        addr,
        "HEAD /logo.png HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-length"), Some("5000"));
    assert!(body.is_empty());
}

#[tokio::test]
async fn enums_and_health() {
    let s = TestServer::start().await;
    let addr = s.server.http_addr();
    let (status, headers, body) = http_get(addr, "/enums.mjs").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("export const Requests = {LoginRequest: 0, RegisterRequest: 1, LogoutRequest: 2, MessageRequest: 3, AuthorizeRequest: 4};"));
    assert!(text.contains("export const Responses = {AuthorizationEvent: 0, LoginEvent: 1, MessageEvent: 2, InvalidUserEvent: 3, UserlistChangeEvent: 4};"));
    let (status, _, body) = http_get(addr, "/enums.js").await;
    assert_eq!(status, 200);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("var Responses = Object.freeze({AuthorizationEvent: 0")
    );
    let (status, _, body) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body, br#"{"status":"ok"}"#);
}
