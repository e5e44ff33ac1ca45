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

# Peers the tests talk to that nobody here wrote: the openssl CLI (TLS and
# DTLS interop) and curl (HTTPS, redirects). Installed when missing and
# possible; otherwise their tests skip, or fail under SOTTO_REQUIRE_SERVICES=1.
need=()
for tool in openssl curl; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if ((${#need[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing ${need[*]}"
        apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "== missing ${need[*]}: their interop tests will skip (or fail if required)"
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    # The crate has no doctests (nextest does not run them); add
    # `cargo test --doc` here if that changes.
    cargo nextest run --locked --no-fail-fast
else
    cargo test --locked --no-fail-fast
fi
