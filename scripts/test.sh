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

# The DTLS code links OpenSSL (libssl-dev, pkg-config) and its tests drive
# the openssl command-line tool. Install them on a bare Debian machine.
if ! pkg-config --exists openssl 2>/dev/null || ! command -v openssl >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing libssl-dev, pkg-config and openssl"
        apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config openssl >/dev/null
    else
        echo "missing: libssl-dev, pkg-config and openssl (apt-get install them)" >&2
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
