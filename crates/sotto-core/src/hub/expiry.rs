//! Session expiry and history retention: the sweeper that de-authorizes
//! idle and old tokens and deletes messages past their retention.
//!
//! QMessageServer de-authorizes a token unused for 600 s, and counts only
//! sending as use, so a user who only receives is logged out. Here an open
//! connection counts as use: every sweep first marks the sessions of live
//! connections as used, then deletes sessions idle past `session_idle` or
//! older than `session_lifetime`, and closes connections whose session is
//! past its lifetime.

use super::event::{Event, Failure};
use super::{Hub, Live, Protocol};
use crate::clock::millis;
use crate::hub::conn::CloseReason;
use std::sync::Arc;
use std::time::Duration;

/// Retention is enforced at most this often; deleting old history is not
/// urgent and should not compete with live traffic.
const RETENTION_PERIOD: Duration = Duration::from_secs(3600);

pub(super) async fn run(hub: Arc<Hub>) {
    let period = sweep_period(hub.config.session_idle);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retention = tokio::time::interval(RETENTION_PERIOD);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = ticker.tick() => sweep(&hub).await,
            _ = retention.tick() => enforce_retention(&hub).await,
        }
    }
}

/// A quarter of the idle timeout, so a live session's recorded last use
/// never lags by more than that; clamped to [250 ms, 60 s].
fn sweep_period(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
}

async fn sweep(hub: &Hub) {
    sweep_sessions(hub).await;
    hub.senders.forget_idle();
    // After the sweep's own work, whose buffers (one entry per live
    // session) are garbage by now.
    release_free_memory();
}

async fn sweep_sessions(hub: &Hub) {
    let now = hub.now_ms();
    let lifetime = millis(hub.config.session_lifetime);
    let (live, too_old): (Vec<_>, Vec<_>) = {
        let map = hub.online_map();
        map.iter()
            .flat_map(|(u, o)| o.conns.iter().map(move |l| (u.clone(), l.clone())))
            .partition(|(_, l)| {
                l.session
                    .is_none_or(|s| now.saturating_sub(s.created_at) <= lifetime)
            })
    };
    for (user, l) in too_old {
        hub.detach(&user, l.out.id());
        expire(&l);
    }
    let hashes: Vec<_> = live
        .into_iter()
        .filter_map(|(_, l)| l.token_hash())
        .collect();
    if let Err(e) = hub.store.touch_sessions(&hashes, now).await {
        tracing::error!(error = %e, "cannot record use of live sessions");
    }
    let idle_before = now.saturating_sub(millis(hub.config.session_idle));
    match hub
        .store
        .delete_expired_sessions(idle_before, now.saturating_sub(lifetime))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(sessions = n, "expired sessions de-authorized"),
        Err(e) => tracing::error!(error = %e, "cannot delete expired sessions"),
    }
}

/// Gives freed heap pages back to the OS. glibc keeps what a burst freed
/// (a presence storm's user lists queued for thousands of connections, a
/// login storm's Argon2 blocks) as part of the process's RSS for ever;
/// `malloc_trim` returns whole free pages from every arena. It takes
/// milliseconds on a large heap, so it runs only with the sweep.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks;
    // it has no preconditions on the caller.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Tells the client why (its edge says it in its own protocol), then
/// closes. A device has no session to expire and is not told.
fn expire(l: &Live) {
    if l.protocol != Protocol::Device {
        let _ = l.out.push(Event::error(Failure::SessionExpired));
    }
    l.out.close(CloseReason::SessionExpired);
}

async fn enforce_retention(hub: &Hub) {
    let before = hub
        .now_ms()
        .saturating_sub(millis(hub.config.history_retention));
    match hub.store.delete_messages_before(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(messages = n, "history past retention deleted"),
        Err(e) => tracing::error!(error = %e, "cannot enforce history retention"),
    }
}

#[cfg(test)]
mod tests;
