//! What the HTTP port reads from a request for its files: the path, mapped
//! to a file under the UI folder, and the Host header, which may end up in
//! a page through QMessageServer's `%SERVER_ADDRESS%` placeholder.
//!
//! QMessageServer served files by joining the request path to its folder,
//! so `GET /../users.db` returned the user database. Here a path maps to a
//! file only if every segment is a plain name (letters, digits, `_`, `-`,
//! `.`, not starting with a dot); `%` is not among them, so no encoding of
//! a dot or a slash gets through. The server still checks that the file,
//! symlinks followed, is inside the folder.

use std::path::PathBuf;

/// Maps a request path (as sent: percent-encoded) to a relative file path,
/// or None if any segment is not a plain file name. `/` and directory
/// paths mean `index.html`.
pub fn relative_path(path: &str) -> Option<PathBuf> {
    let plain = |s: &str| {
        !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    let mut out = PathBuf::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if !plain(segment) {
            return None;
        }
        out.push(segment);
    }
    if path.ends_with('/') || out.as_os_str().is_empty() {
        out.push("index.html");
    }
    Some(out)
}

/// The host part of a Host header if it is a DNS name, an IPv4 address or a
/// bracketed IPv6 address; None for anything else. What it returns can go
/// into a page or a `Location` unescaped.
pub fn valid_host(host: &str) -> Option<String> {
    if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        let ok = port_ok && inside.parse::<std::net::Ipv6Addr>().is_ok();
        return ok.then(|| format!("[{inside}]"));
    }
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if port.is_some_and(|p| !is_port(p)) {
        return None;
    }
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let ok = !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok);
    ok.then(|| name.to_owned())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok()
}

/// Fills QMessageServer's placeholders in a UI file. `address` must come
/// from `-serverIp` (the operator's) or from [`valid_host`], so that a
/// forged Host header cannot inject script.
pub fn fill_placeholders(text: &str, protocol: &str, address: &str, port: u16) -> String {
    text.replace("%SERVER_PROTOCOL%", protocol)
        .replace("%SERVER_ADDRESS%", address)
        .replace("%SERVER_PORT%", &port.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_hidden_paths_are_refused() {
        for bad in [
            "/../users.db",
            "/a/../../x",
            "/.env",
            "/%2e%2e/x",
            "/a\\b",
            "/x/.git/config",
        ] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
        assert_eq!(relative_path("/"), Some(PathBuf::from("index.html")));
        assert_eq!(
            relative_path("/js/app.js"),
            Some(PathBuf::from("js/app.js"))
        );
        assert_eq!(
            relative_path("/sub/"),
            Some(PathBuf::from("sub/index.html"))
        );
    }

    #[test]
    fn host_validation() {
        assert_eq!(valid_host("example.com:8080"), Some("example.com".into()));
        assert_eq!(valid_host("127.0.0.1"), Some("127.0.0.1".into()));
        assert_eq!(valid_host("[::1]:8080"), Some("[::1]".into()));
        for bad in [
            "",
            "a\"b",
            "x.com:99999",
            "<script>",
            "[zz]",
            "a..b",
            "x.com:80:80",
        ] {
            assert_eq!(valid_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn placeholders_are_filled() {
        let page = "%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%/";
        assert_eq!(fill_placeholders(page, "ws", "h", 9), "ws://h:9/");
    }
}
