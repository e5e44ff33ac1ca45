//! Coalesced presence, sent only to whom it concerns.
//!
//! QMessageServer sends the whole active-user list to every active user on
//! every login, logout and disconnect: n logins cost n² frames (measured
//! here: 10,000 logins, 67.6 GB). Here a change is only recorded
//! ([`Changes`], last state per user wins) and a
//! [`Notify`](tokio::sync::Notify) permit set; this task wakes, waits
//! `presence_interval` for more changes to pile up, then:
//! - compat connections get the list (see `compat_view`: the first
//!   `user_list_max` arrivals) only if it changed since they last had it,
//!   so at most once per interval, encoded once for all;
//! - native connections get one small delta per change about a user they
//!   care about (see `interest`: contacts and watched users), or, past
//!   [`DELTAS_MAX`] of them in one window, one snapshot of their view.
//!
//! The cost of one login is then its interested connections plus, while
//! the compat list is not full, one list per compat connection per
//! interval: never N² frames.

use super::compat_view::CompatView;
use super::conn::{ConnId, Outbound};
use super::event::{self, Event, Listed, PresenceChange, Shared, UserList};
use super::{Hub, Protocol};
use crate::auth::UserId;
use crate::untrusted::LogBudget;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};

/// Presence changes since the last broadcast, and the compat list, which
/// follows every change as it happens (so a login's answer is current).
pub(super) struct Changes {
    /// Per user: the profile, and Some(online) for a come/go, None for a
    /// profile (key) change. The last state within one window wins.
    pending: Mutex<HashMap<UserId, Change>>,
    /// Numbers the changes, so a window's arrivals keep their order in
    /// the compat list.
    next: std::sync::atomic::AtomicU64,
    view: Mutex<CompatView>,
    /// Compat list broadcasts so far: the clock of [`Listing`]'s pacing.
    ticks: std::sync::atomic::AtomicU64,
}

struct Change {
    order: u64,
    user: Listed,
    online: Option<bool>,
    key_changed: bool,
}

impl Changes {
    /// No changes yet; compat lists of at most `list_max` users.
    pub(super) fn new(list_max: usize) -> Changes {
        Changes {
            pending: Mutex::default(),
            next: Default::default(),
            view: Mutex::new(CompatView::new(list_max)),
            ticks: Default::default(),
        }
    }

    /// The compat list.
    pub(super) fn view(&self) -> MutexGuard<'_, CompatView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `user` came online anywhere (`Some(true)`), went offline everywhere
    /// (`Some(false)`), or changed their key (`None`).
    pub(super) fn changed(&self, user: &Listed, online: Option<bool>) {
        self.record(user, online);
        let mut view = self.view();
        match online {
            Some(true) => view.online(&user.profile),
            Some(false) => view.offline(&user.id),
            None => view.changed(&user.profile),
        }
    }

    fn record(&self, user: &Listed, online: Option<bool>) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let order = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = map.entry(user.id.clone()).or_insert_with(|| Change {
            order,
            user: user.clone(),
            online: None,
            key_changed: false,
        });
        entry.user = user.clone();
        match online {
            // The last state wins, even one back to where the window
            // started: a snapshot or a new contact's notice taken within
            // the window may have shown the state in between.
            Some(now) => entry.online = Some(now),
            None => entry.key_changed = true,
        }
    }

    fn take(&self) -> Vec<Change> {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut changes: Vec<Change> = map.drain().map(|(_, c)| c).collect();
        changes.sort_unstable_by_key(|c| c.order);
        changes
    }
}

/// More changes than this in one window, for one native connection, are
/// sent to it as one `users` snapshot of its view instead of deltas.
const DELTAS_MAX: usize = 64;

pub(super) async fn run(hub: std::sync::Arc<Hub>) {
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

/// Sends the pending changes to whom they concern.
pub(super) fn broadcast(hub: &Hub) {
    let changes = hub.presence.take();
    let version = compat_view_version(hub);
    let lists = send_compat_lists(hub, version);
    let deltas = send_native_deltas(hub, &changes);
    tracing::debug!(changes = changes.len(), lists, deltas, "presence broadcast");
}

/// The compat list's version (noting when it is capped).
fn compat_view_version(hub: &Hub) -> u64 {
    let view = hub.presence.view();
    let online = view.online_count();
    if online > hub.config.user_list_max {
        static BUDGET: LogBudget = LogBudget::new(1);
        if let Some(suppressed) = BUDGET.allow() {
            tracing::info!(
                online,
                listed = hub.config.user_list_max,
                suppressed,
                "compat user list capped at --user-list-max"
            );
        }
    }
    view.version()
}

/// Sends the compat list to each compat connection that has not had
/// `version` yet, paced during a storm (see [`Listing`]); returns how many
/// got it. When some were held back, another broadcast follows.
fn send_compat_lists(hub: &Hub, version: u64) -> usize {
    let stale: Vec<(UserId, super::Live)> = {
        let map = hub.online_map();
        map.iter()
            .flat_map(|(u, o)| o.conns.iter().map(move |l| (u, l)))
            .filter(|(_, l)| l.protocol == Protocol::Compat)
            .filter(|(_, l)| l.listed.version.load(Ordering::Relaxed) != version)
            .map(|(u, l)| (u.clone(), l.clone()))
            .collect()
    };
    if stale.is_empty() {
        return 0;
    }
    let list = hub.presence.view().list();
    let storm = stale.len().saturating_mul(list.weight()) > STORM_BYTES;
    let tick = hub.presence.ticks.fetch_add(1, Ordering::Relaxed);
    let list = Event::Users(list);
    let mut sent = 0;
    for (user, l) in &stale {
        if !l.listed.may_send(tick, storm) {
            continue;
        }
        sent += 1;
        l.listed.version.store(version, Ordering::Relaxed);
        if l.out.push(list.clone()).is_err() {
            hub.detach(user, l.out.id());
        }
    }
    if sent < stale.len() {
        hub.presence_changed.notify_one();
    }
    sent
}

/// One broadcast sending more list bytes than this (stale connections ×
/// the list's weight) is a storm: connections are then paced.
const STORM_BYTES: usize = 4 << 20;

/// Most broadcasts between two lists to one connection during a storm:
/// 2^5, 8 s at the default 250 ms interval.
const PACE_MAX_SHIFT: u64 = 5;

/// What a compat connection had of the list, and when it may have more.
///
/// While the list keeps changing (a login storm filling it), every
/// broadcast would send it to every connection: bytes = connections ×
/// list × broadcasts, so the slower the storm, the more. During a storm,
/// a connection that got a list waits 2, 4, 8, … up to 32 broadcasts
/// before the next one; it always ends with the last version, since a
/// broadcast that held someone back is followed by another. Outside a
/// storm every change is sent at the next broadcast, as before.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// The version of the list it last got (`u64::MAX`: none).
    pub(super) version: std::sync::atomic::AtomicU64,
    /// The broadcast it may next get one at, shifted left by 8, ORed with
    /// how many it got in a row during a storm.
    pace: std::sync::atomic::AtomicU64,
}

impl From<u64> for Listing {
    /// A connection that has list `version`.
    fn from(version: u64) -> Listing {
        Listing {
            version: version.into(),
            pace: 0.into(),
        }
    }
}

impl Listing {
    /// Whether the connection gets the list at broadcast `tick`; if so,
    /// records when it may next get one.
    fn may_send(&self, tick: u64, storm: bool) -> bool {
        let pace = self.pace.load(Ordering::Relaxed);
        match next_pace(pace, tick, storm) {
            Some(next) => {
                self.pace.store(next, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

/// The pace after a list sent at `tick`, or None if it is too early.
fn next_pace(pace: u64, tick: u64, storm: bool) -> Option<u64> {
    if !storm {
        return Some(0);
    }
    let (next, streak) = (pace >> 8, pace & 0xff);
    if tick < next {
        return None;
    }
    let streak = (streak + 1).min(PACE_MAX_SHIFT);
    Some((tick.saturating_add(1 << streak) << 8) | streak)
}

/// Sends each change to the native connections that care about its
/// user; returns how many events were queued.
fn send_native_deltas(hub: &Hub, changes: &[Change]) -> usize {
    let mut to: HashMap<ConnId, (UserId, Outbound, Vec<Event>)> = HashMap::new();
    for c in changes {
        let events = deltas_of(c);
        if events.is_empty() {
            continue;
        }
        for (user, out) in hub.interest.audience(&c.user.id) {
            // Nobody is told about themselves.
            if user == c.user.id {
                continue;
            }
            let entry = to
                .entry(out.id())
                .or_insert_with(|| (user, out, Vec::new()));
            entry.2.extend(events.iter().cloned());
        }
    }
    let mut queued = 0;
    for (user, out, events) in to.into_values() {
        let events = match events.len() > DELTAS_MAX {
            // A storm among this user's contacts: one snapshot says it all,
            // instead of an event per change (which would fill the queue).
            true => vec![hub.native_snapshot(&user, out.id())],
            false => events,
        };
        for e in events {
            if out.push(e).is_err() {
                hub.detach(&user, out.id());
                break;
            }
            queued += 1;
        }
    }
    queued
}

impl Hub {
    /// The `users` snapshot of connection `conn` of `user`: the online
    /// users (here or on another node) among its contacts and watched
    /// users.
    pub(super) fn native_snapshot(&self, user: &UserId, conn: ConnId) -> Event {
        let ids = self.interest.view_of(user, conn);
        Event::Users(Shared::new(UserList(self.online_among(&ids))))
    }

    /// Those of `ids` online here or on another node. The two maps are
    /// read one after the other, never one inside the other.
    fn online_among(&self, ids: &[UserId]) -> Vec<Listed> {
        let (mut listed, elsewhere) = {
            let map = self.online_map();
            let mut listed = Vec::new();
            let mut elsewhere = Vec::new();
            for id in ids {
                match map.get(id) {
                    Some(o) => listed.push(o.listed()),
                    None => elsewhere.push(id.clone()),
                }
            }
            (listed, elsewhere)
        };
        if !elsewhere.is_empty() {
            listed.extend(self.remote_listed(&elsewhere));
        }
        listed
    }

    /// Tells the native connections of `user` that `other`, now one of
    /// their contacts, is online, if they are.
    pub(super) fn introduce_contact(&self, user: &UserId, other: &UserId) {
        let Some(listed) = self.online_among(std::slice::from_ref(other)).pop() else {
            return;
        };
        let change = PresenceChange {
            profile: listed.profile,
            devices: listed.devices,
            change: event::Change::Online,
        };
        let event = Event::Presence(Shared::new(change));
        for out in self.interest.conns_of(user) {
            let _ = out.push(event.clone());
        }
    }
}

/// The native deltas of one user's change.
fn deltas_of(c: &Change) -> Vec<Event> {
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
            Event::Presence(Shared::new(value))
        })
        .collect()
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    /// The broadcasts at which one connection gets a list when every
    /// broadcast from 0 to `to` finds it stale.
    fn sends(storm: bool, to: u64) -> Vec<u64> {
        let l = Listing::from(0);
        (0..=to).filter(|&t| l.may_send(t, storm)).collect()
    }

    #[test]
    fn outside_a_storm_every_broadcast_sends() {
        assert_eq!(sends(false, 5), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn during_a_storm_a_connection_waits_twice_as_long_each_time_up_to_a_cap() {
        let gap = 1 << PACE_MAX_SHIFT;
        assert_eq!(
            sends(true, 30 + 3 * gap),
            [0, 2, 6, 14, 30, 30 + gap, 30 + 2 * gap, 30 + 3 * gap]
        );
    }

    #[test]
    fn a_quiet_broadcast_ends_the_streak() {
        let l = Listing::from(0);
        assert!(l.may_send(0, true) && l.may_send(2, true) && !l.may_send(3, true));
        assert!(l.may_send(4, false));
        // The next storm starts the pacing afresh.
        assert!(l.may_send(5, true) && !l.may_send(6, true) && l.may_send(7, true));
    }
}
