//! The HTTP port: the web UI (embedded, see `ui`, or a folder given by
//! `--html-dir`), the generated enums, and `/healthz`.
//!
//! A path is served only if [`web::relative_path`] maps it to a file (every
//! segment a plain name) and the resolved file, symlinks followed, is
//! still inside the folder. Anything else is a 404 that says nothing more.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sotto_core::untrusted::Untrusted;
use sotto_proto::compat;
use sotto_proto::web::{self, valid_host};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest file served from the UI folder; the folder holds a web UI, not
/// downloads.
const MAX_FILE: u64 = 32 * 1024 * 1024;

/// What the HTTP port needs to know.
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    /// Canonical path of the UI folder, or None for the built-in page.
    pub html_dir: Option<PathBuf>,
    /// Port of the chat WebSocket, for `%SERVER_PORT%`.
    pub chat_port: u16,
    /// `-serverIp`: when set, `%SERVER_ADDRESS%` is always this.
    pub server_address: Option<String>,
    /// Used for `%SERVER_ADDRESS%` when the Host header is missing or bad.
    pub fallback_address: String,
    /// `ws` or (once TLS lands) `wss`.
    pub chat_protocol: &'static str,
}

pub(crate) fn router(settings: HttpSettings) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/enums.mjs", get(enums_module))
        .route("/enums.js", get(enums_script))
        .fallback(static_file)
        .with_state(Arc::new(settings))
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

async fn enums_module() -> Response {
    javascript(compat::enums_module())
}

async fn enums_script() -> Response {
    javascript(compat::enums_script())
}

fn javascript(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn static_file(
    State(settings): State<Arc<HttpSettings>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "method not allowed\n",
        )
            .into_response();
    }
    if settings.html_dir.is_none() && super::ui::embedded() {
        return super::ui::serve(uri.path(), &headers)
            .unwrap_or_else(|| super::ui::not_found(&headers));
    }
    let Some(relative) = web::relative_path(uri.path()) else {
        return not_found();
    };
    match &settings.html_dir {
        None if relative == Path::new("index.html") => builtin_page(&settings),
        None => not_found(),
        Some(root) => serve_from(root, &relative, &settings, &headers).await,
    }
}

async fn serve_from(
    root: &Path,
    relative: &Path,
    settings: &HttpSettings,
    headers: &HeaderMap,
) -> Response {
    // canonicalize resolves symlinks, so a link pointing out of the folder
    // is caught by the prefix check.
    let Ok(path) = tokio::fs::canonicalize(root.join(relative)).await else {
        return not_found();
    };
    if !path.starts_with(root) {
        tracing::warn!(path = %Untrusted::new(&relative.to_string_lossy()), "refused path outside the UI folder");
        return not_found();
    }
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() && m.len() <= MAX_FILE => {}
        _ => return not_found(),
    }
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read UI file");
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read file\n").into_response();
        }
    };
    let mime = mime_guess::from_path(&path).first_or_octet_stream();
    let body = if is_template(&path) {
        match String::from_utf8(bytes) {
            Ok(text) => Body::from(substitute(&text, settings, headers)),
            Err(e) => Body::from(e.into_bytes()),
        }
    } else {
        Body::from(bytes)
    };
    file_response(content_type(&mime), body)
}

fn is_template(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("js" | "mjs" | "html" | "htm")
    )
}

pub(crate) fn content_type(mime: &mime_guess::Mime) -> String {
    let essence = match mime.essence_str() {
        // Browsers insist on a JavaScript type for modules.
        "application/javascript" => "text/javascript",
        other => other,
    };
    let textual =
        essence.starts_with("text/") || matches!(essence, "application/json" | "image/svg+xml");
    if textual {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_owned()
    }
}

fn file_response(content_type: String, body: Body) -> Response {
    let mut response = Response::new(body);
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Fills QMessageServer's placeholders. The address comes from `-serverIp`
/// or from the Host header only after [`valid_host`] has checked it, so a
/// forged header cannot inject script.
fn substitute(text: &str, settings: &HttpSettings, headers: &HeaderMap) -> String {
    let address = settings
        .server_address
        .clone()
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(valid_host)
        })
        .unwrap_or_else(|| settings.fallback_address.clone());
    web::fill_placeholders(text, settings.chat_protocol, &address, settings.chat_port)
}

fn builtin_page(settings: &HttpSettings) -> Response {
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sotto</title></head>\n<body>\n\
         <h1>sotto is running</h1>\n\
         <p>No web UI folder is configured. Start the server with <code>--html-dir DIR</code> \
         (or put an <code>html</code> folder in its working directory) to serve one.</p>\n\
         <p>QMessageServer-compatible clients connect to the chat WebSocket on port {port} \
         (<code>{proto}://HOST:{port}/</code>); the enums are at \
         <a href=\"/enums.mjs\">/enums.mjs</a> and <a href=\"/enums.js\">/enums.js</a>.</p>\n\
         </body></html>\n",
        port = settings.chat_port,
        proto = settings.chat_protocol,
    );
    file_response("text/html; charset=utf-8".to_owned(), Body::from(page))
}
