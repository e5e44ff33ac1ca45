//! Keeps the in-memory [`KeyRing`] in step with the [`PskStore`]: a full
//! load at start, then a poll for changes (by change number) so keys added
//! or revoked by `sotto psk` in another process take effect within one
//! refresh period.

use super::keyring::KeyRing;
use super::worker::Command;
use sotto_core::psk::{PskChange, PskStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Rows read per query.
const PAGE: u32 = 5_000;

/// Loads every live key; returns the last change number seen.
pub(crate) async fn load_all(store: &dyn PskStore, ring: &KeyRing) -> Result<i64, String> {
    let mut rev = 0;
    loop {
        let page = store
            .psk_changes(rev, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let n = page.len();
        for change in page {
            rev = change.rev;
            match change.entry {
                Some(entry) => ring.insert(entry),
                None => {
                    ring.remove(change.identity.as_str());
                }
            }
        }
        if n < PAGE as usize {
            return Ok(rev);
        }
    }
}

/// Polls for changes until `shutdown`; revocations also end live sessions.
pub async fn refresh(
    store: Arc<dyn PskStore>,
    ring: Arc<KeyRing>,
    mut rev: i64,
    every: Duration,
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.psk_changes(rev, PAGE).await {
            Ok(page) => {
                for change in page {
                    rev = change.rev;
                    apply(&ring, change, &commands).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot refresh PSKs; keeping the keys loaded"),
        }
    }
}

async fn apply(ring: &KeyRing, change: PskChange, commands: &mpsc::Sender<Command>) {
    let identity = change.identity.to_string();
    match change.entry {
        Some(entry) => {
            tracing::info!(%identity, user = ?entry.user_id, "PSK identity added");
            ring.insert(entry);
        }
        None => {
            ring.remove(&identity);
            tracing::info!(%identity, "PSK identity revoked; ending its sessions");
            let (done, _ignored) = oneshot::channel();
            let _ = commands.send(Command::Revoke { identity, done }).await;
        }
    }
}
