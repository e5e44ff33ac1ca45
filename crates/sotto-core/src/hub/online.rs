//! Coming online: one path for compat, native and device connections.
//!
//! Under the user's stripe lock (see `delivery`): the greeting goes first
//! (a compat login answer, a native `users` snapshot, nothing for a
//! device), then what was stored while the user was away, and only then
//! is the connection attached, so live messages never overtake stored
//! ones and nothing sent meanwhile is lost.

use super::conn::{CloseReason, Outbound};
use super::event::Event;
use super::{Hub, Live, LiveSession, Protocol};
use crate::auth::UserId;
use crate::ports::UserProfile;
use std::sync::Arc;

/// A connection about to come online; what differs between protocols is
/// the protocol itself, the session (none for a device) and the greeting.
pub(super) struct Arrival<'a> {
    pub(super) out: &'a Outbound,
    pub(super) protocol: Protocol,
    pub(super) profile: Arc<UserProfile>,
    pub(super) session: Option<LiveSession>,
}

impl Hub {
    /// Queues the greeting `greet` builds (under the lock, so a snapshot
    /// is current), replays stored messages, then attaches. A compat
    /// arrival first closes the user's other compat connection:
    /// QMessageServer allows one. False if the connection went away on the
    /// way; it is then not attached.
    pub(super) async fn come_online(
        &self,
        arrival: Arrival<'_>,
        greet: impl FnOnce(&Hub) -> Option<Event>,
    ) -> bool {
        let Arrival {
            out,
            protocol,
            profile,
            session,
        } = arrival;
        let user = profile.id.clone();
        let _turn = self.stripes.lock(&user).await;
        if protocol == Protocol::Compat {
            self.close_other_compat(&user, out);
        }
        if let Some(greeting) = greet(self)
            && out.push(greeting).is_err()
        {
            return false;
        }
        if !self.replay_undelivered(out, &user).await {
            return false;
        }
        let live = Live {
            out: out.clone(),
            protocol,
            session,
        };
        self.attach(profile, live);
        true
    }

    /// The same connection logging in again is not closed.
    fn close_other_compat(&self, user: &UserId, out: &Outbound) {
        let replaced = self
            .conns_of(user)
            .into_iter()
            .find(|l| l.protocol == Protocol::Compat && l.out.id() != out.id());
        if let Some(old) = replaced {
            tracing::info!(user = %user, "closing previous compat connection");
            self.detach(user, old.out.id());
            old.out.close(CloseReason::Replaced);
        }
    }
}
