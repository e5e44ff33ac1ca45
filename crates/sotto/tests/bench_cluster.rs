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

/// `converge`: a node of three is killed and every observer on the other
/// two must see each of its users go offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_users_are_seen_offline_everywhere() {
    let what = "a_killed_node_s_users_are_seen_offline_everywhere";
    let Some(probe) = TestDatabase::create(what).await else {
        return;
    };
    drop(probe);
    if !nats_server_present(what) {
        return;
    }
    let admin = std::env::var("SOTTO_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    for protocol in ["native", "compat"] {
        let state = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sotto"))
            .args(["bench", "converge", "--protocol", protocol, "--spawn"])
            .args(["--nodes", "3", "--database", &admin, "--users", "9"])
            .args(["--chat-port", "0", "--http-port", "0"])
            .args(["--state-dir", state.path().to_str().unwrap()])
            .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
            .args(["--server-arg=--node-timeout-secs=1", "--wait", "30"])
            .output()
            .await
            .expect("run sotto bench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        // 6 observers on the surviving nodes, each following the 3 users
        // of the killed one.
        assert!(
            stdout.contains("before the kill: 18 of 18 (observer, user) pairs online"),
            "{protocol}: {stdout}"
        );
        assert!(
            stdout.contains("after the kill: 18 of 18 pairs"),
            "{protocol}: {stdout}"
        );
    }
}

/// `storm` over two nodes, compat and then native, the second run on the
/// database the first kept: every login succeeds, CPU and RSS are read
/// per node, and the second run registers nobody (its chatters come
/// online with the tokens the first cached, its storm users exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_node_storm_runs_twice_on_one_kept_database() {
    let what = "a_two_node_storm_runs_twice_on_one_kept_database";
    let Some(probe) = TestDatabase::create(what).await else {
        return;
    };
    drop(probe);
    if !nats_server_present(what) {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let (first, stderr) = storm(state.path(), &["--keep-state"]).await;
    let name = kept_database(&stderr);
    // Dropped at the end of the test, whatever happens in between.
    let _kept = name.as_deref().map(TestDatabase::adopt);
    let name = name.unwrap_or_else(|| panic!("no database kept:\n{first}\n{stderr}"));
    assert!(first.contains("2 spawned nodes on PostgreSQL"), "{first}");
    assert!(
        first.contains("storm users: 0 authorized with cached tokens, 0 logged in, 40 registered"),
        "{first}"
    );
    assert_storm_went_well(&first);

    let (second, _) = storm(state.path(), &["--native", "--reuse-database", &name]).await;
    assert!(
        second.contains(&format!("/{name} (reused, kept)")),
        "{second}"
    );
    assert!(
        second.contains("0 registered, 40 already registered"),
        "{second}"
    );
    assert!(
        second.contains("chatters: 4 authorized with cached tokens, 0 logged in, 0 registered"),
        "{second}"
    );
    assert_storm_went_well(&second);
    assert!(
        state.path().join(format!("tokens-{name}.tsv")).is_file(),
        "the kept database's token cache stays for the next run"
    );
}

/// A small storm over two nodes of a spawned cluster; its report and what
/// it said on stderr. A failed run's report is empty.
async fn storm(state: &Path, extra: &[&str]) -> (String, String) {
    let admin = std::env::var("SOTTO_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args([
            "bench",
            "storm",
            "--spawn",
            "--nodes",
            "2",
            "--database",
            &admin,
        ])
        .args(["--chat-port", "0", "--http-port", "0"])
        .args(["--state-dir", state.to_str().unwrap()])
        .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
        .args(["--logins", "40", "--chatters", "4", "--rate", "200"])
        .args(["--before", "0.3", "--after", "0.3"])
        .args(extra)
        .output()
        .await
        .expect("run sotto bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        eprintln!("{stderr}");
        return (String::new(), stderr);
    }
    (stdout, stderr)
}

fn assert_storm_went_well(report: &str) {
    assert!(
        report.contains("\nlogins: 40 ok, 0 refused, 0 failed"),
        "{report}"
    );
    assert!(
        report.contains(" delivered, 0 lost, 0 duplicates"),
        "{report}"
    );
    assert!(
        report.contains("server CPU during the storm, all nodes: "),
        "{report}"
    );
    assert!(
        report.contains("server CPU and RSS per node during the storm:\nnode 0: CPU ")
            && report.contains("\nnode 1: CPU "),
        "{report}"
    );
}

/// The database a `--keep-state` run says on stderr it kept (also when
/// the run failed after creating it).
fn kept_database(stderr: &str) -> Option<String> {
    let rest = stderr.split("kept database ").nth(1)?;
    Some(rest.split(';').next()?.to_owned())
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
