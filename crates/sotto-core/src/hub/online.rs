//! Coming online: one path for compat, native and device connections.
//!
//! The greeting goes first (a compat login answer, a native `users`
//! snapshot, nothing for a device); then the connection is attached with
//! its feed catching up from where the client left off: the inbox after
//! the position it gave, or after what its user last confirmed. Live
//! entries offered meanwhile wait for the catch-up (see `feed`), so
//! nothing is lost or repeated at the seam, and no lock is held while the
//! store is read or the socket written.

use super::conn::Outbound;
use super::event::{Event, Failure};
use super::feed::Feed;
use super::{Hub, Live, LiveSession, Protocol};
use crate::auth::UserId;
use crate::ports::UserProfile;
use crate::untrusted::LogBudget;
use std::sync::Arc;

/// A connection about to come online; what differs between protocols is
/// the protocol itself, the session (none for a device) and the greeting.
pub(super) struct Arrival<'a> {
    pub(super) out: &'a Outbound,
    pub(super) protocol: Protocol,
    pub(super) profile: Arc<UserProfile>,
    pub(super) session: Option<LiveSession>,
    /// The last inbox position the client processed, if it said.
    pub(super) after: Option<i64>,
    /// Compat: the version of the user list its greeting carries.
    pub(super) listed: Option<u64>,
}

impl Hub {
    /// Queues the greeting `greet` builds, attaches the connection and
    /// starts its catch-up. A compat arrival first closes the user's other
    /// compat connection: QMessageServer allows one. False if the
    /// connection went away on the way, or the inbox could not be read
    /// (the client is told); it is then not attached.
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
            after,
            listed,
        } = arrival;
        let user = profile.id.clone();
        let found = match self.store.inbox_state(&user).await {
            Ok(state) => self.devices_for(&user).await.map(|d| (state, d)),
            Err(e) => Err(e),
        };
        let (state, loaded) = match found {
            Ok(found) => found,
            Err(e) => {
                static BUDGET: LogBudget = LogBudget::new(10);
                if let Some(suppressed) = BUDGET.allow() {
                    tracing::error!(error = %e, suppressed, "cannot read the inbox position or devices");
                }
                self.reply_error(out, Failure::Unavailable);
                return false;
            }
        };
        // A position beyond the head cannot have been processed: such a
        // client would skip what comes next.
        let start = after.map_or(state.confirmed, |a| a.clamp(0, state.head));
        if protocol == Protocol::Compat {
            self.close_other_compat(&user, out);
        }
        let (announcements, devices) = match self.settle_devices(&user, loaded).await {
            Ok(settled) => settled,
            Err(e) => {
                tracing::error!(error = %e, "cannot read devices");
                self.reply_error(out, Failure::Unavailable);
                return false;
            }
        };
        if let Some(greeting) = greet(self)
            && out.push(greeting).is_err()
        {
            return false;
        }
        if out.is_closed() {
            return false;
        }
        if protocol != Protocol::Native {
            self.confirm_when_written(out, &user);
        }
        let live = Live {
            out: out.clone(),
            protocol,
            session,
            feed: Feed::catching_up_from(start),
            listed: Arc::new(super::presence::Listing::from(listed.unwrap_or(u64::MAX))),
        };
        self.attach(profile, devices, live.clone());
        drop(announcements);
        self.catch_up(&user, &live).await;
        !out.is_closed()
    }

    /// Clients of QMessageServer's protocol and devices cannot confirm:
    /// for them a message is delivered once written to their socket.
    fn confirm_when_written(&self, out: &Outbound, user: &UserId) {
        let (hub, user) = (self.me.clone(), user.clone());
        out.on_written(Arc::new(move |pos| {
            let Some(hub) = hub.upgrade() else { return };
            let user = user.clone();
            hub.tasks
                .clone()
                .spawn(async move { hub.confirm(user, pos).await });
        }));
    }

    /// The same connection logging in again is not closed; the user's
    /// compat connections on other nodes are.
    fn close_other_compat(&self, user: &UserId, out: &Outbound) {
        self.announce(crate::broker::Announcement::CloseCompat { user: user.clone() });
        self.close_compat_here(user, Some(out.id()));
    }
}
