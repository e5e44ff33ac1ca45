//! The broker port on NATS (core NATS, no JetStream): every node
//! publishes its announcements on `PREFIX.KIND` and subscribes to
//! `PREFIX.>`. Core NATS delivers at most once; nothing here needs more,
//! because the database is the truth and each announcement only says
//! where to look (see `sotto_core::broker`).
//!
//! The connection is made in the background and remade after every loss
//! (async-nats reconnects and resubscribes); meanwhile the node keeps
//! serving its own users, announcements are dropped and counted, the
//! state says why for `/readyz`, and each change of state is logged once.
//! When the link comes back the hub is told ([`Incoming::Reconnected`])
//! and catches its users up from the store.

use bytes::Bytes;
use futures_util::StreamExt;
use sotto_core::broker::{Broker, BrokerState, BrokerStats, Envelope, Incoming, wire};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Announcements waiting to be published, at most; more are dropped.
const OUTGOING: usize = 8192;
/// Received announcements waiting for the hub, at most.
const INCOMING: usize = 8192;
/// Longest announcement accepted (the NATS server's default limit).
const PAYLOAD_MAX: usize = 1024 * 1024;
/// Longest wait for one publish before it counts as dropped.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(1);

/// Where the other nodes are.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port` (several comma-separated for a NATS cluster).
    pub url: String,
    /// The first part of every subject: nodes with another prefix on the
    /// same NATS server are another cluster.
    pub prefix: String,
}

/// Why a NATS broker cannot start; one line each.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(
        "--broker-prefix {0:?}: use 1-64 letters, digits, '-', '_' or '.', not starting or ending with '.'"
    )]
    BadPrefix(String),
    #[error("--broker {url}: {error}")]
    Connect { url: String, error: String },
}

/// Whether the link is up, and why not: shared with the event callback.
struct Link {
    up: AtomicBool,
    why_not: Mutex<String>,
    /// The node is stopping: the link going down now is its own doing.
    closing: AtomicBool,
    stats: BrokerStats,
}

impl Link {
    /// Records a change of state; logs only real changes. Losing NATS
    /// while serving is an error (announcements are lost until it is
    /// back); the node closing its own connection at shutdown is not.
    fn set(&self, up: bool, why: &str) {
        *self.why_not.lock().unwrap_or_else(|p| p.into_inner()) = why.to_owned();
        if self.up.swap(up, Ordering::SeqCst) == up {
            return;
        }
        match (up, self.closing.load(Ordering::SeqCst)) {
            (true, _) => tracing::info!("broker: connected to NATS"),
            (false, true) => {
                tracing::info!(reason = why, "broker: NATS connection closed at shutdown")
            }
            (false, false) => tracing::error!(
                reason = why,
                "broker: NATS unreachable; serving local users only"
            ),
        }
    }

    /// From now on the link going down is expected (see [`Link::set`]).
    fn closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }
}

pub struct NatsBroker {
    prefix: String,
    outgoing: mpsc::Sender<Envelope>,
    incoming: Mutex<Option<mpsc::Receiver<Incoming>>>,
    link: Arc<Link>,
}

impl NatsBroker {
    /// Starts connecting to NATS in the background (a node whose NATS is
    /// down still starts, degraded) and spawns the publisher and the
    /// subscriber on `tasks`; they stop with `shutdown`.
    pub async fn start(
        config: NatsConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<NatsBroker, NatsError> {
        if !prefix_ok(&config.prefix) {
            return Err(NatsError::BadPrefix(config.prefix));
        }
        let link = Arc::new(Link {
            up: AtomicBool::new(false),
            why_not: Mutex::new("connecting to NATS".into()),
            closing: AtomicBool::new(false),
            stats: BrokerStats::default(),
        });
        let (in_tx, in_rx) = mpsc::channel(INCOMING);
        let client = connect(&config.url, link.clone(), in_tx.clone()).await?;
        let subject = format!("{}.>", config.prefix);
        let subscriber = client
            .subscribe(subject)
            .await
            .map_err(|e| NatsError::Connect {
                url: config.url.clone(),
                error: e.to_string(),
            })?;
        let (out_tx, out_rx) = mpsc::channel(OUTGOING);
        let prefix = config.prefix.clone();
        tasks.spawn(publish(
            client,
            prefix,
            out_rx,
            link.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(receive(subscriber, in_tx, link.clone(), shutdown));
        Ok(NatsBroker {
            prefix: config.prefix,
            outgoing: out_tx,
            incoming: Mutex::new(Some(in_rx)),
            link,
        })
    }
}

/// A NATS subject word (or dotted words) without wildcards or spaces.
fn prefix_ok(p: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    (1..=64).contains(&p.len())
        && p.chars().all(allowed)
        && !p.starts_with('.')
        && !p.ends_with('.')
        && !p.contains("..")
}

async fn connect(
    url: &str,
    link: Arc<Link>,
    incoming: mpsc::Sender<Incoming>,
) -> Result<async_nats::Client, NatsError> {
    let events = move |event: async_nats::Event| {
        let (link, incoming) = (link.clone(), incoming.clone());
        async move {
            match event {
                async_nats::Event::Connected => {
                    link.set(true, "");
                    // The hub catches up from the store: what was
                    // announced while the link was down is gone.
                    if incoming.try_send(Incoming::Reconnected).is_err() {
                        BrokerStats::count(&link.stats.dropped);
                    }
                }
                async_nats::Event::Disconnected => link.set(false, "NATS connection lost"),
                // Only dropping the last client handle closes the
                // connection (a loss is Disconnected, then a reconnect):
                // this node is stopping, or its broker was dropped.
                async_nats::Event::Closed => {
                    link.closing();
                    link.set(false, "NATS connection closed");
                }
                _ => {}
            }
        }
    };
    async_nats::ConnectOptions::new()
        .name("sotto")
        .retry_on_initial_connect()
        .max_reconnects(None)
        // Quick to come back: a node without NATS misses announcements.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(250).min(2000))
        })
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(5))
        .event_callback(events)
        .connect(url)
        .await
        .map_err(|e| NatsError::Connect {
            url: url.to_owned(),
            error: e.to_string(),
        })
}

/// Publishes queued announcements; while the link is down they are
/// dropped (and counted) rather than piled up.
async fn publish(
    client: async_nats::Client,
    prefix: String,
    mut queue: mpsc::Receiver<Envelope>,
    link: Arc<Link>,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => {
                link.closing();
                return drain(&client, &prefix, queue, &link).await;
            }
            next = queue.recv() => next,
        };
        let Some(envelope) = next else { return };
        send(&client, &prefix, envelope, &link).await;
    }
}

/// At shutdown, what is already queued (the node's goodbye: its users
/// going offline) still goes out, within [`PUBLISH_PATIENCE`] in all.
async fn drain(
    client: &async_nats::Client,
    prefix: &str,
    mut queue: mpsc::Receiver<Envelope>,
    link: &Link,
) {
    let all = async {
        while let Ok(envelope) = queue.try_recv() {
            send(client, prefix, envelope, link).await;
        }
        let _ = client.flush().await;
    };
    let _ = tokio::time::timeout(PUBLISH_PATIENCE, all).await;
}

/// Publishes one announcement, or counts it as dropped.
async fn send(client: &async_nats::Client, prefix: &str, envelope: Envelope, link: &Link) {
    if !link.up.load(Ordering::Relaxed) {
        BrokerStats::count(&link.stats.dropped);
        return;
    }
    let subject = format!("{prefix}.{}", wire::kind(&envelope.announcement));
    let payload = Bytes::from(wire::encode(&envelope));
    let sent = tokio::time::timeout(PUBLISH_PATIENCE, client.publish(subject, payload)).await;
    match sent {
        Ok(Ok(())) => BrokerStats::count(&link.stats.published),
        _ => BrokerStats::count(&link.stats.dropped),
    }
}

/// Hands decoded announcements to the hub. Anything undecodable (another
/// version, a stranger on the subject) is dropped and counted, with a
/// bounded number of log lines.
async fn receive(
    mut subscriber: async_nats::Subscriber,
    incoming: mpsc::Sender<Incoming>,
    link: Arc<Link>,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = subscriber.next() => next,
        };
        let Some(message) = next else { return };
        let decoded = match message.payload.len() <= PAYLOAD_MAX {
            true => wire::decode(&message.payload),
            false => None,
        };
        let Some(envelope) = decoded else {
            BrokerStats::count(&link.stats.dropped);
            static BUDGET: sotto_core::untrusted::LogBudget =
                sotto_core::untrusted::LogBudget::new(10);
            if let Some(suppressed) = BUDGET.allow() {
                tracing::warn!(subject = %message.subject.escape_debug(), bytes = message.payload.len(), suppressed, "broker: undecodable announcement dropped");
            }
            continue;
        };
        BrokerStats::count(&link.stats.received);
        // A hub that cannot keep up loses announcements, not memory; its
        // periodic check of the store finds what they said.
        if incoming.try_send(Incoming::Announcement(envelope)).is_err() {
            BrokerStats::count(&link.stats.dropped);
        }
    }
}

impl Broker for NatsBroker {
    fn publish(&self, envelope: Envelope) {
        if self.outgoing.try_send(envelope).is_err() {
            BrokerStats::count(&self.link.stats.dropped);
        }
    }

    fn subscribe(&self) -> mpsc::Receiver<Incoming> {
        let taken = self
            .incoming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        taken.unwrap_or_else(|| mpsc::channel(1).1)
    }

    fn state(&self) -> BrokerState {
        match self.link.up.load(Ordering::SeqCst) {
            true => BrokerState::Connected,
            false => {
                let why = self.link.why_not.lock().unwrap_or_else(|p| p.into_inner());
                BrokerState::Disconnected(why.clone())
            }
        }
    }

    fn stats(&self) -> &BrokerStats {
        &self.link.stats
    }
}

impl NatsBroker {
    /// The subject prefix this broker uses.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixes_are_plain_subject_words() {
        for ok in ["sotto", "test-1.a_b", "a"] {
            assert!(super::prefix_ok(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a.*", "a.>", &"x".repeat(65)] {
            assert!(!super::prefix_ok(bad), "{bad}");
        }
    }
}
