//! What peers can put into the server's log: a PSK identity is the
//! client's choice of up to 128 bytes, so it is logged escaped and
//! truncated, and a flood of failing handshakes costs a line per second,
//! not a line per datagram.

mod dtls_support;

use dtls_support::{Dtls, connect};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything the subscriber writes, as one string.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn lines_with(&self, what: &str) -> Vec<String> {
        let text = self.text();
        text.lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect()
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

/// Logs of this thread (the test runtime and the endpoint's task) go to
/// the returned buffer while the guard lives.
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

const FAILED: &str = "unknown PSK identity";

/// The `suppressed=N` field of a log line.
fn suppressed_in(line: &str) -> usize {
    let (_, rest) = line.split_once("suppressed=").expect("a suppressed count");
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

#[tokio::test]
async fn identities_are_logged_escaped_and_truncated() {
    let (log, _guard) = capture();
    let dtls = Dtls::start(|_| {}).await;
    let key = dtls_support::demo_key();
    let forged = "dev\nERROR sotto: forged line \u{1b}[31mred\r";
    assert!(connect(dtls.port(), forged, &key).await.is_err());
    dtls.wait_for("the failure", |s| s.psk_unknown_identity == 1)
        .await;
    let text = log.text();
    assert!(!text.contains('\u{1b}'), "raw escape in the log:\n{text}");
    assert!(
        !text.contains('\r'),
        "raw carriage return in the log:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("ERROR sotto: forged")),
        "forged line in the log:\n{text}"
    );
    let lines = log.lines_with(FAILED);
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains(r"dev\nERROR sotto: forged line \u{1b}[31mred\r"),
        "{text}"
    );
    // A second second passes, so the throttle lets the next line through.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let long = "x".repeat(128);
    assert!(connect(dtls.port(), &long, &key).await.is_err());
    dtls.wait_for("the failure", |s| s.psk_unknown_identity == 2)
        .await;
    let lines = log.lines_with(FAILED);
    assert_eq!(lines.len(), 2, "{}", log.text());
    assert!(
        lines[1].contains(&format!("{}…", "x".repeat(64))),
        "{}",
        lines[1]
    );
    assert!(!lines[1].contains(&"x".repeat(65)), "{}", lines[1]);
    dtls.stop().await;
}

#[tokio::test]
async fn a_flood_of_unknown_identities_is_logged_once_a_second() {
    let (log, _guard) = capture();
    let dtls = Dtls::start(|_| {}).await;
    let key = dtls_support::demo_key();
    let started = Instant::now();
    let flood = 20;
    for i in 0..flood {
        assert!(
            connect(dtls.port(), &format!("stranger-{i}"), &key)
                .await
                .is_err()
        );
    }
    let elapsed = started.elapsed().as_secs() as usize;
    let lines = log.lines_with(FAILED).len();
    assert!(
        lines <= elapsed + 2 && lines < flood,
        "{lines} lines in {elapsed} s:\n{}",
        log.text()
    );
    // The next line after a quiet second says how many were left out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(connect(dtls.port(), "one-more", &key).await.is_err());
    // Every failure is either a line or counted in a later line.
    let lines = log.lines_with(FAILED);
    let suppressed: usize = lines.iter().map(|l| suppressed_in(l)).sum();
    assert_eq!(lines.len() + suppressed, flood + 1, "{}", log.text());
    assert!(suppressed > 0, "{}", log.text());
    assert_eq!(dtls.stats().psk_unknown_identity, flood as u64 + 1);
    dtls.stop().await;
}
