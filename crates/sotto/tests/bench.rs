//! `sotto bench` itself, run briefly with a handful of users so the load
//! tool cannot silently rot: every message it sends must be reported
//! delivered, with no loss, and a second run must reuse the cached tokens.

mod support;

use clap::Parser;
use sotto::cli::{Cli, Command};
use sotto_bench::traffic::{self, MessagesArgs};
use sotto_bench::{Scenario, idle, native, storm};
use support::TestServer;

fn scenario(args: &[&str]) -> Scenario {
    let argv = ["sotto", "bench"].iter().chain(args);
    match Cli::try_parse_from(argv)
        .expect("valid bench arguments")
        .command
    {
        Command::Bench(b) => b.scenario,
        other => panic!("not bench: {other:?}"),
    }
}

fn messages_args(args: &[&str]) -> MessagesArgs {
    let argv = [&["messages"], args].concat();
    match scenario(&argv) {
        Scenario::Messages(m) => *m,
        other => panic!("not the messages scenario: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_every_message_delivered() {
    let s = TestServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let url = s.chat_url();
    let state_dir = state.path().to_str().unwrap();
    let common = [
        "--url",
        &url,
        "--state-dir",
        state_dir,
        "--users",
        "6",
        "--senders",
        "4",
        "--duration",
        "1",
        "--settle",
        "0.1",
    ];

    let rated = [&common[..], &["--rate", "1000"]].concat();
    let r = traffic::run(messages_args(&rated)).await.unwrap();
    assert_eq!(r.setup.registered, 6, "first run registers the users");
    assert!(r.load.sent >= 500, "sent only {}", r.load.sent);
    assert_eq!(r.load.delivered, r.load.sent);
    assert_eq!(
        (r.load.lost(), r.load.duplicates, r.load.corrupt),
        (0, 0, 0)
    );
    assert_eq!((r.load.refused, r.load.dropped_connections), (0, 0));
    assert_eq!(r.latency_all.count, r.load.delivered);

    // Flat out with one message in flight per sender, bounded by
    // --max-messages; users come back by token. Each message must go out
    // on its own: were one held back until the next, a sender with a
    // window of 1 would stall after its first.
    let flat = [
        &common[..],
        &["--rate", "0", "--window", "1", "--max-messages", "8000"],
    ]
    .concat();
    let r = traffic::run(messages_args(&flat)).await.unwrap();
    assert_eq!(r.setup.authorized, 6, "second run reuses cached tokens");
    assert!(
        r.load.sent >= 200 && r.load.sent <= 8000,
        "sent {}",
        r.load.sent
    );
    assert_eq!(r.load.delivered, r.load.sent);
    assert_eq!(r.load.lost(), 0);
}

/// The native protocol: users log in over the API and send on /ws; every
/// message acked must reach its recipient once, rated and flat out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_bench_delivers_every_acked_message_once() {
    let s = TestServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let url = s.chat_url();
    let http = s.server.http_addr().port().to_string();
    let common = [
        "--protocol",
        "native",
        "--url",
        &url,
        "--http-port",
        &http,
        "--state-dir",
        state.path().to_str().unwrap(),
        "--users",
        "6",
        "--senders",
        "4",
        "--duration",
        "1",
        "--settle",
        "0.1",
    ];
    for pace in [
        &["--rate", "1000"][..],
        &["--rate", "0", "--window", "4", "--max-messages", "8000"][..],
    ] {
        let r = native::run(messages_args(&[&common[..], pace].concat()))
            .await
            .unwrap();
        let l = &r.load;
        assert!(l.sent >= 200, "{pace:?}: sent only {}\n{r}", l.sent);
        assert_eq!(l.acked, l.sent, "{pace:?}: every send acked\n{r}");
        assert_eq!(l.delivered, l.acked, "{pace:?}: every ack delivered\n{r}");
        assert_eq!(
            (l.lost, l.duplicates, l.delivered_unacked),
            (0, 0, 0),
            "{r}"
        );
        assert_eq!(
            (l.corrupt, l.malformed, l.dropped_connections),
            (0, 0, 0),
            "{r}"
        );
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        assert_eq!(l.receipts, l.receipts_expected, "{r}");
        assert_eq!(r.ack_all.count, l.acked);
        assert_eq!(r.delivery_all.count, l.delivered);
    }
}

/// The binary with --spawn: starts its own server, reads its CPU and RSS.
#[test]
fn spawned_bench_prints_server_figures() {
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args([
            "bench",
            "messages",
            "--spawn",
            "--chat-port",
            "0",
            "--http-port",
            "0",
        ])
        .args(["--state-dir", state.path().to_str().unwrap()])
        .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
        .args([
            "--users",
            "4",
            "--rate",
            "400",
            "--duration",
            "1",
            "--settle",
            "0.1",
        ])
        .output()
        .expect("run sotto bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("lost: 0 · duplicates: 0"), "{stdout}");
    assert!(
        stdout.contains("server CPU per delivered message:"),
        "{stdout}"
    );
    assert!(stdout.contains("Argon2id m=64 KiB, t=1, p=1"), "{stdout}");
}

/// Native mode through the binary with --spawn and --http-port 0: the
/// spawned server's HTTP port is the one the users log in on.
#[test]
fn spawned_native_bench_prints_server_figures() {
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["bench", "messages", "--protocol", "native", "--spawn"])
        .args(["--chat-port", "0", "--http-port", "0"])
        .args(["--state-dir", state.path().to_str().unwrap()])
        .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
        .args(["--users", "4", "--window", "2", "--duration", "1"])
        .args(["--settle", "0.1"])
        .output()
        .expect("run sotto bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("lost: 0 · duplicates: 0"), "{stdout}");
    assert!(stdout.contains("dropped connections: 0"), "{stdout}");
    assert!(stdout.contains("server CPU per acked message:"), "{stdout}");
}

/// The idle and storm scenarios, tiny, against a test server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_storm_scenarios_run() {
    let s = TestServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let url = s.chat_url();
    let common = ["--url", &url, "--state-dir", state.path().to_str().unwrap()];

    let Scenario::Idle(a) = scenario(
        &[
            &["idle"],
            &common[..],
            &["--connections", "8", "--settle", "0.2"],
        ]
        .concat(),
    ) else {
        panic!("not idle")
    };
    let r = idle::run(*a).await.unwrap();
    assert_eq!((r.connections, r.dropped), (8, 0));
    assert_eq!(r.setup.as_ref().map(|s| s.registered), Some(8));

    let storm_args = [
        "--logins",
        "12",
        "--chatters",
        "4",
        "--rate",
        "400",
        "--before",
        "0.3",
        "--after",
        "0.3",
    ];
    let Scenario::Storm(a) = scenario(&[&["storm"], &common[..], &storm_args[..]].concat()) else {
        panic!("not storm")
    };
    let r = storm::run(*a).await.unwrap();
    assert_eq!(r.logins.ok, 12, "{:?}", r.logins);
    assert_eq!(r.registration.registered, 12);
    assert!(r.load.sent > 0);
    assert_eq!((r.load.lost(), r.load.duplicates), (0, 0));
}

/// The soak scenario, for three seconds: traffic, churn and abuse together,
/// sampled every second; nothing lost and no hostile request accepted.
#[test]
fn a_short_soak_samples_the_server_and_loses_nothing() {
    let state = tempfile::tempdir().unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["bench", "soak", "--spawn", "--chat-port", "0"])
        .args(["--http-port", &http])
        .args(["--state-dir", state.path().to_str().unwrap()])
        .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
        .args(["--users", "6", "--rate", "300", "--churn", "3"])
        .args(["--duration", "3", "--interval", "1"])
        .output()
        .expect("run sotto bench soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("| t (s) | server RSS | open fds |"),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 lost, 0 duplicates"), "{stdout}");
    assert!(stdout.contains(", 0 hostile requests accepted"), "{stdout}");
    assert!(!stdout.contains("churn: 0 cycles"), "{stdout}");
}

/// `idle --clients`: the connections are held by several client processes
/// from their own source addresses; the second run finds every token the
/// processes saved side by side in the shared cache.
#[test]
fn idle_connections_spread_over_client_processes() {
    let state = tempfile::tempdir().unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sotto"))
            .args(["bench", "idle", "--spawn", "--chat-port", "0"])
            .args(["--http-port", &http])
            .args(["--state-dir", state.path().to_str().unwrap()])
            .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
            .args([
                "--connections",
                "12",
                "--clients",
                "3",
                "--source-addrs",
                "2",
            ])
            .args(["--settle", "0.2"])
            .output()
            .expect("run sotto bench idle");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        stdout
    };
    let first = run();
    assert!(
        first.contains("connections: 12 authenticated, from 3 client processes (2 source addresses each); 0 closed"),
        "{first}"
    );
    assert!(first.contains("12 registered"), "{first}");
    assert!(first.contains("node 0: 12 connections; RSS"), "{first}");
    let second = run();
    assert!(
        second.contains("12 authorized with cached tokens"),
        "{second}"
    );
}
