//! The embedded browser client over real HTTP: the page, its hashed
//! assets, their caching and security headers, and `--html-dir` taking
//! over. Reads the repository's `web/` folder to know what must be served.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use support::*;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn web_assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web/assets")
}

/// Every file under `web/assets`, as a path below it.
fn asset_files() -> Vec<String> {
    fn walk(root: &PathBuf, dir: &PathBuf, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(rel);
            }
        }
    }
    let root = web_assets();
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let host = format!("127.0.0.1:{}", addr.port());
    http_raw(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// The CSP, nosniff, referrer and frame headers every UI response has.
fn assert_secure(headers: &[(String, String)], addr: SocketAddr) {
    let host = format!("127.0.0.1:{}", addr.port());
    let csp = header(headers, "content-security-policy").expect("a CSP");
    let expected = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' ws://{host} wss://{host}; frame-ancestors 'none'; base-uri 'none'; \
         form-action 'self'; object-src 'none'"
    );
    assert_eq!(csp, expected);
    assert_eq!(header(headers, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(headers, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(headers, "x-frame-options"), Some("DENY"));
}

/// The bundle hash the page names its assets under.
fn bundle_hash(page: &str) -> String {
    let at = page.find("/assets/").expect("the page names an asset") + "/assets/".len();
    let hash = &page[at..at + 16];
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");
    hash.to_owned()
}

#[tokio::test]
async fn the_page_names_its_assets_by_hash_with_strict_headers() {
    let s = TestServer::start().await;
    let addr = s.server.http_addr();
    let (status, headers, body) = request(addr, "GET", "/").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
    assert_secure(&headers, addr);
    let page = String::from_utf8(body).unwrap();
    let hash = bundle_hash(&page);
    let bare = page.matches("/assets/").count();
    let hashed = page.matches(&format!("/assets/{hash}/")).count();
    assert_eq!(bare, hashed, "every asset reference carries the hash");
    assert!(
        !page.contains("<style") && !page.contains(" style="),
        "no inline style"
    );

    let (status, headers, again) = request(addr, "GET", "/index.html").await;
    assert_eq!((status, String::from_utf8(again).unwrap()), (200, page));
    assert_secure(&headers, addr);

    // HEAD: the same headers, no body.
    let (status, headers, body) = request(addr, "HEAD", "/").await;
    assert_eq!(status, 200);
    assert_secure(&headers, addr);
    assert!(body.is_empty());
}

#[tokio::test]
async fn every_asset_is_served_immutable_under_the_hash_only() {
    let s = TestServer::start().await;
    let addr = s.server.http_addr();
    let (_, _, page) = request(addr, "GET", "/").await;
    let hash = bundle_hash(&String::from_utf8(page).unwrap());
    let files = asset_files();
    assert!(files.iter().any(|f| f == "app.css"), "{files:?}");
    for file in &files {
        let (status, headers, body) = request(addr, "GET", &format!("/assets/{hash}/{file}")).await;
        assert_eq!(status, 200, "{file}");
        assert_eq!(
            body,
            std::fs::read(web_assets().join(file)).unwrap(),
            "{file}"
        );
        assert_eq!(header(&headers, "cache-control"), Some(IMMUTABLE), "{file}");
        assert_secure(&headers, addr);
        let expected = match file.rsplit('.').next() {
            Some("js" | "mjs") => Some("text/javascript; charset=utf-8"),
            Some("css") => Some("text/css; charset=utf-8"),
            Some("svg") => Some("image/svg+xml; charset=utf-8"),
            _ => None,
        };
        if let Some(t) = expected {
            assert_eq!(header(&headers, "content-type"), Some(t), "{file}");
        }
    }
    let (status, headers, body) = request(addr, "HEAD", &format!("/assets/{hash}/app.css")).await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(header(&headers, "cache-control"), Some(IMMUTABLE));

    let wrong = if hash.starts_with('0') { "1" } else { "0" }.to_owned() + &hash[1..];
    for path in [
        format!("/assets/{wrong}/app.css"),
        "/assets/app.css".to_owned(),
        format!("/assets/{hash}/missing.js"),
        format!("/assets/{hash}/../index.html"),
        format!("/assets/{hash}/%2e%2e/index.html"),
        "/test/crypto.test.mjs".to_owned(),
        "/package.json".to_owned(),
    ] {
        let (status, headers, _) = request(addr, "GET", &path).await;
        assert_eq!(status, 404, "{path}");
        assert_secure(&headers, addr);
    }
    let (status, _, _) = request(addr, "POST", "/").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn a_ui_folder_replaces_the_embedded_ui() {
    let html = tempfile::tempdir().unwrap();
    std::fs::write(html.path().join("index.html"), "<p>%SERVER_PORT%</p>").unwrap();
    let path = html.path().to_owned();
    let s = TestServer::start_with(|c| c.html_dir = Some(path)).await;
    let addr = s.server.http_addr();
    let (status, headers, body) = request(addr, "GET", "/").await;
    assert_eq!(status, 200);
    let port = s.server.chat_addr().port();
    assert_eq!(String::from_utf8(body).unwrap(), format!("<p>{port}</p>"));
    // The folder's pages keep today's headers: QMessageServer-style UIs
    // use inline script, which the embedded UI's policy would block.
    assert_eq!(header(&headers, "content-security-policy"), None);
    let (status, _, _) = request(addr, "GET", "/assets/0123456789abcdef/app.css").await;
    assert_eq!(status, 404);
}
