//! The browser client embedded at build time (see `build.rs`), served
//! with a strict Content-Security-Policy (docs/PROTOCOL.md §9.6).
//!
//! `/` and `/index.html` are the page, `no-cache` so a new release is
//! seen at once; it names its files under `/assets/<bundle hash>/`, and
//! those are `immutable`: any change to any file changes the hash, so a
//! cached copy is never stale. Another hash is a 404, never a stale or
//! mismatched file.
//!
//! Every response here carries the same security headers; the CSP's
//! `connect-src` names this server's own WebSocket origins, from the Host
//! header only once [`valid_host`] has accepted it.

use super::http::content_type;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sotto_proto::web::{self, valid_host};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_ui.rs"));
}

pub(crate) use embedded::BUNDLE_HASH;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Whether the binary holds a UI (a checkout without `web/index.html`
/// builds one that serves the built-in page instead).
pub(crate) fn embedded() -> bool {
    embedded::INDEX_HTML.is_some()
}

/// The embedded UI's answer for `path`, or None when it has no such file.
pub(crate) fn serve(path: &str, headers: &HeaderMap) -> Option<Response> {
    let (bytes, mime, cache) = match path {
        "/" | "/index.html" => (
            embedded::INDEX_HTML?,
            "text/html; charset=utf-8".to_owned(),
            "no-cache",
        ),
        _ => {
            let rest = path.strip_prefix("/assets/")?;
            let (hash, file) = rest.split_once('/')?;
            if hash != BUNDLE_HASH {
                return None;
            }
            let bytes = asset(file)?;
            let mime = mime_guess::from_path(file).first_or_octet_stream();
            (bytes, content_type(&mime), IMMUTABLE)
        }
    };
    let mut response = Response::new(Body::from(bytes));
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    secure(h, headers);
    Some(response)
}

/// A 404 from the UI, with the same headers as its files.
pub(crate) fn not_found(headers: &HeaderMap) -> Response {
    let mut response = (StatusCode::NOT_FOUND, "not found\n").into_response();
    secure(response.headers_mut(), headers);
    response
}

/// The embedded file at `file` (a path under `assets/`), if its every
/// segment is a plain name.
fn asset(file: &str) -> Option<&'static [u8]> {
    web::relative_path(file)?;
    if file.ends_with('/') || file.is_empty() {
        return None;
    }
    let i = embedded::ASSETS
        .binary_search_by(|(name, _)| (*name).cmp(file))
        .ok()?;
    Some(embedded::ASSETS[i].1)
}

/// The security headers of every UI response.
fn secure(h: &mut HeaderMap, request: &HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(&csp(request)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The policy: nothing inline, nothing from elsewhere, WebSockets only
/// to this server. Without a valid Host, `'self'` alone (browsers that
/// follow CSP 3 let it cover same-origin WebSockets too).
pub(crate) fn csp(request: &HeaderMap) -> String {
    let host = request
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| valid_host(h).is_some());
    let sockets = match host {
        // The whole header, port included: `valid_host` checked all of it.
        Some(h) => format!(" ws://{h} wss://{h}"),
        None => String::new(),
    };
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{sockets}; frame-ancestors 'none'; base-uri 'none'; \
         form-action 'self'; object-src 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn the_policy_names_only_a_valid_host() {
        let p = csp(&host("chat.example:8443"));
        assert!(
            p.contains("connect-src 'self' ws://chat.example:8443 wss://chat.example:8443;"),
            "{p}"
        );
        assert!(csp(&host("[::1]:8080")).contains("ws://[::1]:8080 "));
        for bad in ["evil.example; script-src *", "a b", "x:y", ""] {
            let p = csp(&host(bad));
            assert!(p.contains("connect-src 'self'; "), "{bad}: {p}");
        }
        assert!(csp(&HeaderMap::new()).contains("connect-src 'self'; "));
    }

    #[test]
    fn the_bundle_hash_is_16_hex_digits() {
        assert_eq!(BUNDLE_HASH.len(), 16);
        assert!(BUNDLE_HASH.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn assets_are_sorted_and_looked_up_by_plain_paths_only() {
        assert!(embedded::ASSETS.windows(2).all(|w| w[0].0 < w[1].0));
        if let Some((name, bytes)) = embedded::ASSETS.first() {
            assert_eq!(asset(name), Some(*bytes));
        }
        for bad in ["", "../index.html", "x/../../etc", ".hidden", "a//b"] {
            assert_eq!(asset(bad), None, "{bad}");
        }
    }
}
