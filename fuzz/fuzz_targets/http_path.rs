//! What the HTTP port takes from a request for its UI files
//! (`sotto_proto::web`): the path mapped to a file under the folder, the
//! Host header, and the placeholders filled with it. Input: Host header,
//! newline, path, newline, page template. Beyond "no panic": a mapped path
//! is relative, plain names only (no `..`, no root, no NUL, no `%` that a
//! later decoding could turn into one) and exactly the request's segments;
//! an accepted host is a prefix of the header with nothing a page could
//! execute; filling a page with it adds no markup and stays bounded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_proto::web::{fill_placeholders, relative_path, valid_host};
use std::collections::BTreeSet;
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let host = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let template = parts.next().unwrap_or("");
    resolve(path);
    let address = accepted_host(host);
    fill(template, address.as_deref().unwrap_or("fallback.example"));
});

fn plain(segment: &str) -> bool {
    !segment.is_empty()
        && !segment.starts_with('.')
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn resolve(path: &str) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(relative) = relative_path(path) else {
        assert!(!segments.iter().all(|s| plain(s)), "{path:?} refused");
        return;
    };
    assert!(segments.iter().all(|s| plain(s)), "{path:?} accepted");
    assert!(relative.is_relative() && !path.contains('%'), "{path:?}");
    let names: Vec<&str> = relative
        .components()
        .map(|c| match c {
            Component::Normal(name) => name.to_str().expect("UTF-8"),
            other => panic!("{path:?} → {relative:?} has {other:?}"),
        })
        .collect();
    assert!(names.iter().all(|n| plain(n)), "{relative:?}");
    // Exactly the request's segments, and `index.html` for a directory.
    let mut expected = segments.clone();
    if path.ends_with('/') || segments.is_empty() {
        expected.push("index.html");
    }
    assert_eq!(names, expected);
    let root = Path::new("/srv/ui");
    assert!(root.join(&relative).starts_with(root));
}

/// What a page may not receive from a header: markup, quotes, escapes,
/// spaces, and `%` (which could form another placeholder).
fn risky(c: char) -> bool {
    !(c.is_ascii_alphanumeric() || "-.:[]".contains(c))
}

fn accepted_host(host: &str) -> Option<String> {
    let address = valid_host(host)?;
    assert!(host.starts_with(&address), "{host:?} → {address:?}");
    assert!(!address.is_empty() && address.len() <= 253, "{address:?}");
    assert!(!address.chars().any(risky), "{address:?}");
    if let Some(inside) = address.strip_prefix('[') {
        let inside = inside.strip_suffix(']').expect("bracketed");
        assert!(inside.parse::<std::net::Ipv6Addr>().is_ok(), "{address:?}");
    }
    Some(address)
}

fn fill(template: &str, address: &str) {
    let out = fill_placeholders(template, "wss", address, 65535);
    // Each risky character of the page was in the template: none came in.
    let seen: BTreeSet<char> = out.chars().filter(|&c| risky(c)).collect();
    for c in seen {
        let count = |s: &str| s.chars().filter(|&d| d == c).count();
        assert!(count(&out) <= count(template), "{c:?} injected");
    }
    // A placeholder is at least 13 bytes; none is replaced by more than
    // the address or five digits.
    let bound = template.len() + template.len() / 13 * address.len().max(5);
    assert!(out.len() <= bound, "{} > {bound}", out.len());
    if !template.contains('%') {
        assert_eq!(out, template);
    }
}
