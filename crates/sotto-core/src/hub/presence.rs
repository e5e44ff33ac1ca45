//! Coalesced presence: full lists for compat connections, deltas for
//! native ones.
//!
//! QMessageServer sends the whole active-user list to every active user on
//! every login, logout and disconnect: n logins cost n² frames. Here a
//! change is only recorded ([`Changes`], last state per user wins) and a
//! [`Notify`](tokio::sync::Notify) permit set; this task wakes, waits
//! `presence_interval` for more changes to pile up, then sends compat
//! connections one list, encoded once, and native connections one small
//! delta per user whose state actually changed. 1,000 logins in a second
//! become a handful of broadcasts.

use super::event::{self, Event, Listed, PresenceChange, Shared, UserList};
use super::{Hub, Protocol};
use crate::auth::UserId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Presence changes since the last broadcast.
#[derive(Default)]
pub(super) struct Changes {
    /// Per user: the profile, and Some(online) for a come/go, None for a
    /// profile (key) change. A come-and-go within one window cancels out.
    pending: Mutex<HashMap<UserId, Change>>,
}

struct Change {
    user: Listed,
    online: Option<bool>,
    key_changed: bool,
}

impl Changes {
    pub(super) fn changed(&self, user: &Listed, online: Option<bool>) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(user.id.clone()).or_insert_with(|| Change {
            user: user.clone(),
            online: None,
            key_changed: false,
        });
        entry.user = user.clone();
        match online {
            // Back to the state the others last saw: nothing to tell.
            Some(now) if entry.online == Some(!now) => entry.online = None,
            Some(now) => entry.online = Some(now),
            None => entry.key_changed = true,
        }
    }

    fn take(&self) -> Vec<Change> {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        map.drain().map(|(_, c)| c).collect()
    }
}

/// More changes than this in one window are sent to native connections as
/// one `users` snapshot instead of deltas.
const DELTAS_MAX: usize = 64;

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

/// Sends the pending changes: every compat connection gets one list and
/// every native one the deltas about others, each a value shared by all
/// queues so an edge encodes it once per protocol.
pub(super) fn broadcast(hub: &Hub) {
    let changes = hub.presence.take();
    let (profiles, conns): (Vec<_>, Vec<_>) = {
        let map = hub.online_map();
        let profiles = map.values().map(super::OnlineUser::listed).collect();
        let conns = map
            .iter()
            .flat_map(|(u, o)| o.conns.iter().map(move |l| (u.clone(), l.clone())))
            .collect();
        (profiles, conns)
    };
    let mut profiles: Vec<Listed> = profiles;
    profiles.extend(hub.remote_profiles().into_iter().map(Listed::from));
    let snapshot = compat_list(hub, profiles);
    // Compat lists carry no devices: leaving them out keeps each queue
    // from being charged for bytes its frames never hold.
    let plain = snapshot.0.iter().map(|l| Listed::from(l.profile.clone()));
    let list = Event::Users(Shared::new(UserList(plain.collect())));
    // Each event with the user it is about (None: about everyone).
    let deltas: Vec<(Option<UserId>, Event)> = if changes.len() > DELTAS_MAX {
        // A storm: one snapshot says it all, instead of an event per change
        // for every connection (which would fill their queues).
        vec![(None, Event::Users(Shared::new(snapshot)))]
    } else {
        changes.iter().flat_map(deltas_of).collect()
    };
    for (user, l) in &conns {
        match l.protocol {
            // Devices are not told who is online.
            Protocol::Device => {}
            Protocol::Compat => {
                let _ = l.out.push(list.clone());
            }
            Protocol::Native => {
                // Nobody is told about themselves.
                for (_, d) in deltas
                    .iter()
                    .filter(|(about, _)| about.as_ref() != Some(user))
                {
                    if l.out.push(d.clone()).is_err() {
                        hub.detach(user, l.out.id());
                        break;
                    }
                }
            }
        }
    }
    tracing::debug!(
        connections = conns.len(),
        deltas = deltas.len(),
        "presence broadcast"
    );
}

/// The online users truncated to `user_list_max`: the compat list, and the
/// native snapshot after a storm.
fn compat_list(hub: &Hub, mut profiles: Vec<Listed>) -> UserList {
    let max = hub.config.user_list_max;
    if profiles.len() > max {
        tracing::warn!(
            online = profiles.len(),
            listed = max,
            "user list truncated to --user-list-max"
        );
    }
    profiles.truncate(max);
    UserList(profiles)
}

/// The native deltas of one user's change, each with whom it is about.
fn deltas_of(c: &Change) -> Vec<(Option<UserId>, Event)> {
    let mut kinds = Vec::new();
    if let Some(online) = c.online {
        kinds.push(if online {
            event::Change::Online
        } else {
            event::Change::Offline
        });
    }
    if c.key_changed {
        kinds.push(event::Change::KeyChanged);
    }
    kinds
        .into_iter()
        .map(|change| {
            let value = PresenceChange {
                profile: c.user.profile.clone(),
                devices: c.user.devices.clone(),
                change,
            };
            (Some(c.user.id.clone()), Event::Presence(Shared::new(value)))
        })
        .collect()
}
