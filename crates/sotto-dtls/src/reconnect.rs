//! A ClientHello from the address of an established session.
//!
//! It may be the device starting over (it restarted on the same address
//! and port), a late network copy of the handshake that built the session,
//! or anyone at all: UDP source addresses prove nothing, and a cookie stays
//! valid for up to two minutes. So such a hello never touches the session:
//!
//! - a copy of the session's own hello (same client random) is ignored;
//! - anything else goes through the cookie exchange like a stranger's, and
//!   a verified one starts a *pending* handshake beside the session (at
//!   most one per address; a newer verified hello replaces it), bounded by
//!   the handshake deadline and the handshakes-in-progress limit;
//! - only when that handshake completes does it replace the session. If it
//!   fails or times out, it is dropped and the session goes on.

use super::ossl::{Conn, Offer, Progress};
use super::record;
use super::stats::Stats;
use super::worker::{Pending, Session, Worker};
use std::net::SocketAddr;
use tokio::time::Instant;

impl Worker {
    pub(super) fn on_reconnect(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        let random = record::client_random(data);
        let Some(e) = self.table.get_mut(&peer) else {
            return;
        };
        if random.is_some() && random == e.value.hello_random {
            Stats::bump(&self.stats.hello_duplicates);
            tracing::debug!(%peer, "ignoring a late copy of the session's own ClientHello");
            return;
        }
        if random.is_some() && e.value.pending.as_ref().map(|p| p.hello_random) == Some(random) {
            // The pending handshake's client repeating its hello: OpenSSL
            // knows what to do with that.
            self.pending_step(peer, data, now);
            return;
        }
        let offer = self.listener.offer(peer, data, &mut self.scratch);
        self.out.extend(self.scratch.drain(..).map(|d| (peer, d)));
        match offer {
            Ok(Offer::Verified(conn)) => self.start_pending(peer, conn, random, now),
            Ok(Offer::Challenged) => Stats::bump(&self.stats.hello_verify_sent),
            Ok(Offer::Rejected) => Stats::bump(&self.stats.hello_rejected),
            Err(e) => tracing::error!(%peer, error = %e, "cookie exchange failed"),
        }
    }

    fn start_pending(
        &mut self,
        peer: SocketAddr,
        mut conn: Conn,
        hello_random: Option<[u8; 32]>,
        now: Instant,
    ) {
        if !self.table.has_pending(&peer)
            && let Err(refusal) = self.table.admit_handshake()
        {
            self.refused(peer, refusal, now);
            return;
        }
        let Some(e) = self.table.get_mut(&peer) else {
            return;
        };
        tracing::info!(%peer, "verified a new handshake from an established peer; its session stays until it completes");
        let progress = conn.handshake();
        e.value.pending = Some(Box::new(Pending { conn, hello_random }));
        self.table.start_pending(&peer, now);
        self.after_pending_step(peer, progress, now);
    }

    /// Feeds a handshake datagram to the pending handshake at `peer`.
    pub(super) fn pending_step(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        let Some(p) = self
            .table
            .get_mut(&peer)
            .and_then(|e| e.value.pending.as_mut())
        else {
            return;
        };
        let progress = p.conn.handshake_with(data);
        self.after_pending_step(peer, progress, now);
    }

    fn after_pending_step(&mut self, peer: SocketAddr, progress: Progress, now: Instant) {
        self.queue_output(peer);
        match progress {
            Progress::Pending => self.arm(peer, now),
            Progress::Done => self.promote(peer, now),
            Progress::Failed(failure) => {
                self.handshake_failed(peer, failure, now);
                self.drop_pending(peer);
            }
        }
    }

    /// Forgets the pending handshake at `peer`; its session goes on.
    pub(super) fn drop_pending(&mut self, peer: SocketAddr) {
        if let Some(e) = self.table.get_mut(&peer) {
            e.value.pending = None;
        }
        self.table.end_pending(&peer);
    }

    /// The pending handshake completed: it becomes the session at `peer`
    /// and the old one ends (without close_notify: the device that
    /// started over no longer has its keys).
    fn promote(&mut self, peer: SocketAddr, now: Instant) {
        let Some(e) = self.table.get_mut(&peer) else {
            return;
        };
        let Some(p) = e.value.pending.take() else {
            return;
        };
        let old = std::mem::replace(&mut e.value, Session::new(p.conn, p.hello_random));
        let Some(old_id) = self.table.promote_pending(&peer, now) else {
            return;
        };
        tracing::info!(%peer, "the new handshake completed; it replaces the session");
        if let (Some(bridge), Some(user)) = (&self.bridge, &old.user_id) {
            bridge.detach(user, old_id);
        }
        self.established(peer, now);
    }
}
