//! Coalesced presence broadcasts for the compat protocol.
//!
//! QMessageServer sends the whole active-user list to every active user on
//! every login, logout and disconnect: n logins cost n² frames. Here changes
//! only set a flag ([`tokio::sync::Notify`] keeps one permit); this task
//! wakes, waits `presence_interval` for more changes to pile up, then encodes
//! the list once and queues the same bytes to everyone. 1,000 logins in a
//! second become a handful of broadcasts.

use super::Hub;
use super::delivery::encode_user_list;
use crate::hub::conn::TextFrame;
use crate::protocol::compat::{Event, Response};
use std::sync::Arc;

pub(super) async fn run(hub: Arc<Hub>) {
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = hub.presence_changed.notified() => {}
        }
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tokio::time::sleep(hub.config.presence_interval) => {}
        }
        broadcast(&hub);
    }
}

fn broadcast(hub: &Hub) {
    let max = hub.config.user_list_max;
    let (profiles, recipients): (Vec<_>, Vec<_>) = {
        let map = hub.online_map();
        map.values()
            .map(|o| (o.profile.clone(), o.out.clone()))
            .unzip()
    };
    let listed = &profiles[..profiles.len().min(max)];
    let users = encode_user_list(listed);
    let frame = TextFrame::from(
        Response {
            valid: true,
            event: Some(Event::UserlistChange),
            users: Some(&users),
            ..Default::default()
        }
        .encode(),
    );
    if profiles.len() > max {
        tracing::warn!(
            online = profiles.len(),
            listed = max,
            "user list truncated to --user-list-max"
        );
    }
    for out in &recipients {
        // A full queue closes that connection (slow consumer); the others
        // are unaffected.
        let _ = out.push(frame.clone());
    }
    tracing::debug!(recipients = recipients.len(), "presence broadcast");
}
