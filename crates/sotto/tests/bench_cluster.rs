//! `sotto bench --spawn --nodes 2` through the binary: the bench starts a
//! nats-server and two nodes on a fresh PostgreSQL database of its own,
//! spreads the users over both, and every acked message must arrive at
//! its recipient on the other node.
//!
//! Skipped with a printed reason when PostgreSQL or `nats-server` is
//! absent; under SOTTO_REQUIRE_SERVICES=1 that is a failure instead.

use sotto_store_postgres::testing::{DEFAULT_URL, TestDatabase};
use std::path::Path;

fn required() -> bool {
    std::env::var("SOTTO_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Whether `nats-server` is where the bench looks for it (PATH, then
/// /usr/sbin); otherwise why the test is skipped.
fn nats_server_present(what: &str) -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()));
    if on_path || Path::new("/usr/sbin/nats-server").is_file() {
        return true;
    }
    assert!(
        !required(),
        "{what}: nats-server is required (SOTTO_REQUIRE_SERVICES=1) but absent"
    );
    eprintln!("skipped {what}: no nats-server (apt-get install nats-server)");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_node_native_run_loses_nothing() {
    let what = "a_two_node_native_run_loses_nothing";
    // Only to learn whether PostgreSQL answers (skip or fail as the other
    // PostgreSQL tests do); the bench creates a database of its own.
    let Some(probe) = TestDatabase::create(what).await else {
        return;
    };
    drop(probe);
    if !nats_server_present(what) {
        return;
    }
    let admin = std::env::var("SOTTO_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let state = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["bench", "messages", "--protocol", "native", "--spawn"])
        .args(["--nodes", "2", "--database", &admin])
        .args(["--chat-port", "0", "--http-port", "0"])
        .args(["--state-dir", state.path().to_str().unwrap()])
        .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
        .args(["--users", "6", "--window", "2", "--duration", "1"])
        .args(["--settle", "0.5"])
        .output()
        .await
        .expect("run sotto bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("2 spawned nodes on PostgreSQL"), "{stdout}");
    assert!(
        stdout.contains("\nnode 0: ") && stdout.contains("\nnode 1: "),
        "{stdout}"
    );
    assert!(
        stdout.contains("every recipient on another node than its sender"),
        "{stdout}"
    );
    assert!(stdout.contains("lost: 0 · duplicates: 0"), "{stdout}");
    assert!(stdout.contains("dropped connections: 0"), "{stdout}");
    assert!(stdout.contains("errors: none"), "{stdout}");
    assert!(stdout.contains("server CPU and RSS per node:"), "{stdout}");
    let acked = figure(&stdout, "acked: ");
    assert!(acked > 0, "{stdout}");
    assert_eq!(figure(&stdout, "delivered: "), acked, "{stdout}");
}

/// The number after `label` at the start of a line of the report.
fn figure(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in the report:\n{report}"))
}
