//! Embeds the browser client (`web/index.html` and `web/assets/**` at the
//! repository root) into the server at build time, so one binary serves
//! it with no files beside it (docs/PROTOCOL.md §9.6).
//!
//! Writes `$OUT_DIR/web_ui.rs` with:
//! - `BUNDLE_HASH`: the first 16 hex digits of SHA-256 over every embedded
//!   path and content, so any change to any file gives every asset a new
//!   URL and browsers may cache them for ever;
//! - `INDEX_HTML`: `web/index.html` with every `/assets/` turned into
//!   `/assets/<hash>/` (None when there is no `web/index.html`: the server
//!   then serves its built-in page);
//! - `ASSETS`: `(path under assets/, bytes)` sorted by path, for a binary
//!   search.
//!
//! Cargo re-runs this when an embedded file changes: `web/index.html`,
//! the `web/assets` folder and each folder under it (a new or removed
//! file), and each file. `web/test`, `web/e2e`, `web/node_modules` and the
//! npm files are neither embedded nor watched.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let web = manifest.join("../../web");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    // Not `web/` itself: Cargo scans a watched folder recursively, and
    // web/node_modules and the browser tests' output live there.
    let index_path = web.join("index.html");
    println!("cargo:rerun-if-changed={}", index_path.display());
    let assets_dir = web.join("assets");
    let mut assets = Vec::new();
    collect(&assets_dir, &assets_dir, &mut assets);
    assets.sort();
    let index = std::fs::read(&index_path).ok();

    let mut hasher = Sha256::new();
    let mut feed = |name: &str, bytes: &[u8]| {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    if let Some(bytes) = &index {
        feed("index.html", bytes);
    }
    let mut contents = Vec::new();
    for (name, path) in &assets {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        feed(&format!("assets/{name}"), &bytes);
        contents.push(bytes);
    }
    let hash: String = hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let mut code = String::new();
    writeln!(
        code,
        "/// First 16 hex digits of SHA-256 over every embedded path and file."
    )
    .unwrap();
    writeln!(code, "pub const BUNDLE_HASH: &str = {hash:?};").unwrap();
    match &index {
        Some(bytes) => {
            let text =
                String::from_utf8_lossy(bytes).replace("/assets/", &format!("/assets/{hash}/"));
            let rewritten = out.join("index.html");
            std::fs::write(&rewritten, text).expect("write index.html");
            writeln!(
                code,
                "pub const INDEX_HTML: Option<&[u8]> = Some(include_bytes!({:?}));",
                rewritten.display().to_string()
            )
            .unwrap();
        }
        None => writeln!(code, "pub const INDEX_HTML: Option<&[u8]> = None;").unwrap(),
    }
    writeln!(code, "pub static ASSETS: &[(&str, &[u8])] = &[").unwrap();
    for (name, path) in &assets {
        writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    writeln!(code, "];").unwrap();
    std::fs::write(out.join("web_ui.rs"), code).expect("write web_ui.rs");
}

/// Every file under `dir` as (path relative to `root` with `/`, full
/// path); hidden entries are skipped. Each folder and file is watched.
fn collect(root: &Path, dir: &Path, found: &mut Vec<(String, PathBuf)>) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, found);
        } else if path.is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
            let relative = path.strip_prefix(root).expect("under root");
            let parts: Vec<_> = relative
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            found.push((parts.join("/"), path));
        }
    }
}
