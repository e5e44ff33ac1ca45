#!/usr/bin/env bash
# The DTLS figures in docs/BENCHMARKS.md (section 6): sotto serve and openssl
# s_server, each as its own process on loopback, measured by
# `sotto dtls-bench` (server CPU and RSS read from /proc/PID).
# Usage: scripts/dtls-bench.sh [path/to/sotto]   (default: release build)
set -euo pipefail
cd "$(dirname "$0")/.."
SOTTO=${1:-${CARGO_TARGET_DIR:-target}/release/sotto}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

start_sotto() { # port
    SOTTO_LOG=warn "$SOTTO" serve --chat-port 0 --http-port 0 --database "$WORK/b.db" \
        --dtls-port "$1" --dtls-demo-psk --dtls-max-per-ip 20000 --dtls-max-handshakes 20000 \
        2>"$WORK/sotto-$1.log" &
    PIDS+=($!); SERVER=$!; sleep 1
}
start_s_server() { # port, extra options; s_server stops when its stdin closes
    mkfifo "$WORK/stdin-$1"
    sleep 3600 >"$WORK/stdin-$1" &
    PIDS+=($!)
    openssl s_server -dtls1_2 -nocert -psk 1a2b3c4d5e6f -quiet \
        -accept "127.0.0.1:$1" "${@:2}" <"$WORK/stdin-$1" >"$WORK/s_server-$1.log" 2>&1 &
    PIDS+=($!); SERVER=$!; sleep 1
}
bench() { echo; echo "\$ sotto dtls-bench $*"; uptime; "$SOTTO" dtls-bench --server-pid "$SERVER" "$@"; }

echo "== sotto: 10,000 associations at once"
start_sotto 24100
bench --server 127.0.0.1:24100 --associations 10000 --duration 0
kill "$SERVER"
echo "== sotto: 1,000 associations, closed loop for 10 s"
start_sotto 24101
bench --server 127.0.0.1:24101 --associations 1000 --duration 10 --window 4
echo "== sotto: 100,000 cookieless ClientHellos"
bench --server 127.0.0.1:24101 --associations 0 --duration 0 --flood 100000
echo "== sotto: sequential handshakes (comparable with s_server)"
bench --server 127.0.0.1:24101 --associations 300 --connect-window 1 --churn --no-ack --duration 0
kill "$SERVER"

if command -v openssl >/dev/null; then
    echo "== openssl s_server: sequential handshakes (it serves one association at a time)"
    start_s_server 24102
    bench --server 127.0.0.1:24102 --associations 300 --connect-window 1 --churn --no-ack --duration 0
    kill "$SERVER"
    echo "== openssl s_server -listen (DTLSv1_listen): 50,000 cookieless ClientHellos"
    start_s_server 24103 -listen
    bench --server 127.0.0.1:24103 --associations 0 --duration 0 --flood 50000
fi
