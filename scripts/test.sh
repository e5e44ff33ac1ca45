#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, then every
# unit and integration test (real servers on ephemeral loopback ports, real
# SQLite files in temp directories, the real binary).
#
# Optional parts (PostgreSQL, NATS, a browser) are skipped with a printed
# reason when absent, unless SOTTO_REQUIRE_SERVICES=1 / SOTTO_REQUIRE_BROWSER=1
# (set by .ci/run) make their absence a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# What building and testing need from the system: OpenSSL's headers and
# pkg-config (the DTLS code links OpenSSL), and peers nobody here wrote: the
# openssl CLI (TLS and DTLS interop) and curl (HTTPS, redirects). Installed
# when missing and possible; otherwise the build says what is missing, and
# interop tests skip, or fail under SOTTO_REQUIRE_SERVICES=1.
need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)
if ((${#need[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing ${need[*]}"
        apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "== missing ${need[*]} (apt-get install them)" >&2
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== the core stays free of I/O crates"
# docs/ARCHITECTURE.md: the hub must not reach SQL, HTTP, WebSocket,
# OpenSSL or the command line. The dependency graph is the check.
forbidden=$(cargo tree -p sotto-core -e normal --prefix none --locked \
    | sed 's/ .*//' | grep -xE 'sqlx|rusqlite|hyper|axum|tungstenite|tokio-tungstenite|openssl|clap' | sort -u || true)
if [[ -n $forbidden ]]; then
    echo "sotto-core depends on: $forbidden" >&2
    exit 1
fi

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    # The crate has no doctests (nextest does not run them); add
    # `cargo test --doc` here if that changes.
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi

echo "== browser tests"
# web/ (docs/E2E.md, issue 11): the crypto module's unit tests under Node's
# own runner, then Playwright (playwright-core from web/package-lock.json)
# driving Debian's Chromium against the binary the tests above built.
# Without node or a browser the step is skipped with the reason, or fails
# under SOTTO_REQUIRE_BROWSER=1 (set by .ci/run).
browser_unavailable() {
    if [[ ${SOTTO_REQUIRE_BROWSER:-} == 1 ]]; then
        echo "browser tests are required (SOTTO_REQUIRE_BROWSER=1) but $1" >&2
        exit 1
    fi
    echo "== browser tests skipped: $1"
}
run_browser_tests() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "== installing nodejs npm"
            apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null || true
        fi
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        browser_unavailable "no node/npm (apt-get install nodejs npm)"
        return
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    if ((major < 20)); then
        browser_unavailable "node $(node --version) is older than 20"
        return
    fi
    local chromium=${SOTTO_CHROMIUM:-/usr/bin/chromium}
    if [[ ! -x $chromium && $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing chromium"
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null || true
    fi
    # The crypto module's tests need nothing from npm.
    (cd web && node --test test/)
    # The lock file pins the browser-test tools; reinstall when it changed.
    if [[ ! -f web/node_modules/.package-lock.json || web/package-lock.json -nt web/node_modules/.package-lock.json ]]; then
        if ! (cd web && npm ci --no-audit --no-fund --loglevel=error); then
            browser_unavailable "npm ci failed in web/ (is the npm registry reachable?)"
            return
        fi
    fi
    if [[ ! -x $chromium ]]; then
        browser_unavailable "no browser at $chromium (apt-get install chromium)"
        return
    fi
    [[ -x target/debug/sotto ]] || cargo build -p sotto --locked
    # One file at a time: each starts its own server and browser, and the
    # machine may be small.
    (cd web && SOTTO_CHROMIUM=$chromium node --test --test-concurrency=1 e2e/)
}
run_browser_tests

echo "== fuzz (every network-input parser, briefly)"
# fuzz/ (docs/SECURITY.md): a few seconds per target, starting from the
# committed seeds, so a regression in a parser's promises fails here. It
# needs a nightly toolchain (not installable from here) and cargo-fuzz
# (installed when missing); without them the step is skipped, or fails
# under SOTTO_REQUIRE_SERVICES=1 like the other optional parts.
fuzz_unavailable() {
    if [[ ${SOTTO_REQUIRE_SERVICES:-} == 1 ]]; then
        echo "fuzzing is required (SOTTO_REQUIRE_SERVICES=1) but $1" >&2
        exit 1
    fi
    echo "== fuzz skipped: $1"
}
run_fuzz() {
    local nightly
    nightly=$(rustup toolchain list 2>/dev/null | awk '/^nightly/ {print $1; exit}')
    if [[ -z $nightly ]]; then
        fuzz_unavailable "no nightly toolchain (rustup toolchain install nightly)"
        return
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "== installing cargo-fuzz"
        cargo install cargo-fuzz --locked --quiet || true
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        fuzz_unavailable "cargo-fuzz cannot be installed (cargo install cargo-fuzz --locked)"
        return
    fi
    # Unoptimized and without AddressSanitizer: half the build time of the
    # default on a 2-core machine, about as many inputs per second, and the
    # code under test is safe Rust (overflow checks stay on).
    local flags=(--dev --sanitizer none)
    cargo "+$nightly" fuzz build "${flags[@]}"
    local target seconds=${SOTTO_FUZZ_SECONDS:-8} failed=()
    for target in $(cargo "+$nightly" fuzz list); do
        # New inputs go to a scratch directory, not into the seeds.
        local scratch log dict=()
        scratch=$(mktemp -d)
        log=$(mktemp)
        case $target in
        compat_request | native_frame | dtls_device) dict=(-dict=fuzz/json.dict) ;;
        esac
        if cargo "+$nightly" fuzz run "${flags[@]}" "$target" "$scratch" "fuzz/corpus/$target" -- \
            -max_total_time="$seconds" -timeout=5 "${dict[@]}" >"$log" 2>&1; then
            echo "$target: $(grep -E '^Done [0-9]+ runs' "$log" || echo done)"
        else
            tail -n 40 "$log" >&2
            echo "$target: FAILED; the input is in fuzz/artifacts/$target/" >&2
            failed+=("$target")
        fi
        rm -rf "$scratch" "$log"
    done
    if ((${#failed[@]})); then
        echo "fuzz targets failed: ${failed[*]}" >&2
        exit 1
    fi
}
run_fuzz
