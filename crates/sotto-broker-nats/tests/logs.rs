//! What the broker logs when its NATS connection goes: an error when NATS
//! is lost while the node serves (an operator must act), a plain info
//! line when the node closes the connection itself at shutdown (a
//! SIGTERM is not an incident). Each test runs its own `nats-server`, so
//! it can be killed without touching the shared one.

use sotto_broker_nats::{NatsBroker, NatsConfig};
use sotto_core::broker::{Broker, BrokerState};
use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// Everything the subscriber writes, as one string.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs of this thread go to the returned buffer while the guard lives.
/// The tests run on tokio's current-thread runtime, so that includes the
/// tasks async-nats spawns (its event callback among them).
fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// A `nats-server` child on a free loopback port, or None (skipped) when
/// the binary is absent, unless SOTTO_REQUIRE_SERVICES=1.
async fn nats(what: &str) -> Option<(Child, SocketAddr)> {
    if !std::path::Path::new(NATS_SERVER).is_file() {
        let required = std::env::var("SOTTO_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        assert!(!required, "{what}: {NATS_SERVER} is required but absent");
        eprintln!("skipped {what}: no {NATS_SERVER} (apt-get install nats-server)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = Command::new(NATS_SERVER)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let up = eventually(|| async move { tokio::net::TcpStream::connect(addr).await.is_ok() });
    assert!(up.await, "nats-server listens on {addr}");
    Some((child, addr))
}

/// Polls `check` for up to 10 s.
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A broker on the NATS at `addr`, linked.
async fn linked(addr: SocketAddr, shutdown: &CancellationToken, tasks: &TaskTracker) -> NatsBroker {
    let config = NatsConfig {
        url: format!("nats://{addr}"),
        prefix: "logs".into(),
    };
    let broker = NatsBroker::start(config, shutdown.clone(), tasks)
        .await
        .unwrap();
    let up = eventually(|| async { broker.state() == BrokerState::Connected });
    assert!(up.await, "the broker reaches NATS");
    broker
}

/// Stops the broker as the server does at SIGTERM: cancel, wait for its
/// tasks, drop it (the last client handle), then give async-nats time to
/// report the closed connection.
async fn stop(broker: NatsBroker, shutdown: CancellationToken, tasks: TaskTracker, log: &Captured) {
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    drop(broker);
    let reported = eventually(|| async { log.text().contains("closed") });
    assert!(
        reported.await,
        "the closed connection is reported:\n{}",
        log.text()
    );
}

#[tokio::test]
async fn closing_at_shutdown_is_not_an_error() {
    let Some((_nats, addr)) = nats("NATS closed at shutdown").await else {
        return;
    };
    let (log, _guard) = capture();
    let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
    let broker = linked(addr, &shutdown, &tasks).await;
    stop(broker, shutdown, tasks, &log).await;
    let text = log.text();
    assert!(!text.contains("ERROR"), "{text}");
    assert!(!text.contains("unreachable"), "{text}");
    let line = text.lines().find(|l| l.contains("closed")).unwrap();
    assert!(line.contains("INFO"), "{text}");
}

#[tokio::test]
async fn losing_nats_while_serving_is_an_error() {
    let Some((mut nats, addr)) = nats("NATS lost while serving").await else {
        return;
    };
    let (log, _guard) = capture();
    let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
    let broker = linked(addr, &shutdown, &tasks).await;
    nats.kill().await.unwrap();
    let lost = eventually(|| async { log.text().contains("unreachable") });
    assert!(lost.await, "the loss is logged:\n{}", log.text());
    let text = log.text();
    let line = text.lines().find(|l| l.contains("unreachable")).unwrap();
    assert!(line.contains("ERROR"), "{text}");
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    drop(broker);
}
