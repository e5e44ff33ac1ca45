//! What the worker does with each datagram: cookie exchange for strangers,
//! handshake steps, decryption and the device protocol for known peers,
//! plus the bridge's answers and the hub's messages going out.

use super::bridge::{DeviceMessage, DeviceOutbox, DeviceSessionId};
use super::device::{self, Meaning};
use super::logsafe::Untrusted;
use super::ossl::{Conn, Failure, Offer, Progress, PskOutcome, Received};
use super::record;
use super::stats::Stats;
use super::table::Refusal;
use super::worker::{Sent, Session, Worker};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// Lower-case hex with a space between bytes, as Qt's example shows it.
struct Hex<'a>(&'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Worker {
    pub(super) fn on_datagram(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        Stats::bump(&self.stats.datagrams_in);
        let Some(e) = self.table.get_mut(&peer) else {
            self.on_stranger(peer, data, now);
            return;
        };
        if !e.handshaking && record::is_client_hello(data) {
            // RFC 6347 §4.2.8: a ClientHello on an established session may
            // be a device that restarted on the same address and port, or
            // a copy of the old handshake, or a spoofer: it never touches
            // the session itself (see `reconnect`).
            self.on_reconnect(peer, data, now);
            return;
        }
        if !e.handshaking && e.value.pending.is_some() && record::is_handshake(data) {
            self.pending_step(peer, data, now);
            return;
        }
        if e.handshaking {
            e.last_seen = now;
            let progress = e.value.conn.handshake_with(data);
            self.after_step(peer, progress, now);
        } else {
            self.on_established(peer, data, now);
        }
    }

    /// A peer with no session: only a ClientHello is worth anything, and
    /// until its cookie checks nothing is kept.
    fn on_stranger(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        if !record::is_client_hello(data) {
            Stats::bump(&self.stats.garbage);
            tracing::trace!(%peer, len = data.len(), "dropping a datagram from an unknown peer");
            return;
        }
        let offer = self.listener.offer(peer, data, &mut self.scratch);
        let written = !self.scratch.is_empty();
        self.out.extend(self.scratch.drain(..).map(|d| (peer, d)));
        match offer {
            Ok(Offer::Challenged) if written => Stats::bump(&self.stats.hello_verify_sent),
            Ok(Offer::Challenged) | Ok(Offer::Rejected) => Stats::bump(&self.stats.hello_rejected),
            Ok(Offer::Verified(conn)) => self.admit(peer, conn, record::client_random(data), now),
            Err(e) => tracing::error!(%peer, error = %e, "cookie exchange failed"),
        }
    }

    fn admit(
        &mut self,
        peer: SocketAddr,
        mut conn: Conn,
        hello_random: Option<[u8; 32]>,
        now: Instant,
    ) {
        if let Err(refusal) = self.table.admit(peer) {
            self.refused(peer, refusal, now);
            return;
        }
        tracing::info!(%peer, "verified, starting a handshake");
        let progress = conn.handshake();
        self.table
            .insert(peer, Session::new(conn, hello_random), now);
        self.after_step(peer, progress, now);
    }

    pub(super) fn refused(&mut self, peer: SocketAddr, refusal: Refusal, now: Instant) {
        let (counter, what) = match refusal {
            Refusal::Sessions => (&self.stats.refused_sessions_limit, "sessions"),
            Refusal::Handshakes => (
                &self.stats.refused_handshakes_limit,
                "handshakes in progress",
            ),
            Refusal::PerIp => (&self.stats.refused_per_ip_limit, "sessions per IP"),
        };
        Stats::bump(counter);
        if let Some(suppressed) = self.limit_log.admit(now) {
            tracing::warn!(%peer, limit = what, suppressed, "refusing a new session: limit reached");
        }
    }

    /// Acts on a handshake step: send what OpenSSL wrote, then wait,
    /// celebrate or clean up.
    pub(super) fn after_step(&mut self, peer: SocketAddr, progress: Progress, now: Instant) {
        self.queue_output(peer);
        match progress {
            Progress::Pending => {
                tracing::info!(%peer, "handshake is in progress ...");
                self.arm(peer, now);
            }
            Progress::Done => self.established(peer, now),
            Progress::Failed(failure) => {
                self.handshake_failed(peer, failure, now);
                self.end(peer, false);
            }
        }
    }

    /// Counts and logs a failed handshake (throttled: strangers choose how
    /// many), and tells a peer with the wrong key so.
    pub(super) fn handshake_failed(&mut self, peer: SocketAddr, failure: Failure, now: Instant) {
        match failure {
            Failure::UnknownIdentity(identity) => {
                Stats::bump(&self.stats.psk_unknown_identity);
                if let Some(suppressed) = self.unknown_identity_log.admit(now) {
                    let identity = Untrusted::new(&identity);
                    tracing::warn!(%peer, %identity, suppressed, "handshake failed: unknown PSK identity");
                }
            }
            Failure::WrongKey(identity) => {
                Stats::bump(&self.stats.psk_wrong_key);
                if let Some(suppressed) = self.failure_log.admit(now) {
                    let identity = Untrusted::new(&identity);
                    tracing::warn!(%peer, %identity, suppressed, "handshake failed: the client's key is not this identity's key");
                }
                let alert = record::fatal_alert(record::DECRYPT_ERROR);
                self.out.push((peer, alert));
            }
            Failure::Tls(detail) => {
                Stats::bump(&self.stats.handshakes_failed);
                if let Some(suppressed) = self.failure_log.admit(now) {
                    tracing::warn!(%peer, error = %detail, suppressed, "handshake failed");
                }
            }
        }
    }

    pub(super) fn established(&mut self, peer: SocketAddr, now: Instant) {
        let outbox_tx = self.outbox_tx.clone();
        let Some(e) = self.table.get_mut(&peer) else {
            return;
        };
        let cipher = e.value.conn.cipher();
        let Some(PskOutcome::Granted(entry)) = e.value.conn.psk_outcome() else {
            // Only reachable if --dtls-ciphers admits a suite without a PSK
            // (anonymous DH, say): such a peer proved nothing.
            Stats::bump(&self.stats.handshakes_failed);
            tracing::warn!(%peer, %cipher, "handshake finished without a PSK; refused");
            self.end(peer, true);
            return;
        };
        e.value.identity = Some(entry.identity.to_string());
        e.value.user_id = entry.user_id.as_deref().map(Arc::from);
        let identity = entry.identity.to_string();
        self.table.mark_established(&peer, now);
        Stats::bump(&self.stats.handshakes_ok);
        let Some(e) = self.table.get_mut(&peer) else {
            return;
        };
        let identity = Untrusted::new(&identity);
        tracing::info!(%peer, %identity, user = ?e.value.user_id.as_deref(), %cipher, "connection encrypted");
        if let (Some(bridge), Some(user)) = (&self.bridge, &e.value.user_id) {
            let outbox = DeviceOutbox {
                session: e.id,
                user: user.clone(),
                tx: outbox_tx,
            };
            bridge.attach(user, outbox);
        }
    }

    /// A datagram for an established session. Only what decrypts counts as
    /// the peer being alive: forged datagrams from its address must not
    /// keep a session from its idle timeout any more than end it.
    fn on_established(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        let Some(e) = self.table.get_mut(&peer) else {
            return;
        };
        let conn = &mut e.value.conn;
        // Nothing unauthenticated may end a session: what OpenSSL would
        // take as fatal without checking a tag never reaches it.
        match record::screen(data, record::sealed_minimum(conn.cipher())) {
            Ok(()) => {}
            Err(record::Unsafe::Malformed) => {
                Stats::bump(&self.stats.garbage);
                return;
            }
            Err(why) => {
                Stats::bump(&self.stats.dropped_unsafe);
                tracing::debug!(%peer, ?why, len = data.len(), "dropping a record OpenSSL would take as fatal");
                return;
            }
        }
        if !conn.push(data) {
            return;
        }
        let mut plaintexts = Vec::new();
        let mut end = None;
        loop {
            match conn.read(&mut self.plain) {
                Received::Data(n) => plaintexts.push(self.plain[..n].to_vec()),
                Received::Nothing => break,
                Received::Closed => {
                    end = Some(None);
                    break;
                }
                Received::Failed(err) => {
                    end = Some(Some(err));
                    break;
                }
            }
        }
        conn.drain_output(&mut self.scratch);
        if !plaintexts.is_empty() {
            e.last_seen = now;
        }
        if plaintexts.is_empty() && self.scratch.is_empty() && end.is_none() {
            Stats::bump(&self.stats.undecryptable);
        }
        self.out.extend(self.scratch.drain(..).map(|d| (peer, d)));
        for text in plaintexts {
            let text_shown = String::from_utf8_lossy(&text);
            let plaintext = Untrusted::long(&text_shown);
            tracing::debug!(%peer, ciphertext = %Hex(data), %plaintext, "datagram received");
            self.on_plaintext(peer, &text);
        }
        match end {
            Some(None) => {
                Stats::bump(&self.stats.closed_by_peer);
                tracing::info!(%peer, "shutdown alert received (close_notify)");
                self.end(peer, true);
            }
            Some(Some(err)) => {
                // Only records that passed the screen get here, so this is
                // the authenticated peer's fatal alert (or OpenSSL's own
                // failure); the session cannot go on either way.
                tracing::warn!(%peer, error = %err, "session failed");
                self.end(peer, false);
            }
            None => {}
        }
    }

    fn on_plaintext(&mut self, peer: SocketAddr, text: &[u8]) {
        Stats::bump(&self.stats.app_in);
        let max = self.config.max_payload;
        if text.len() > max {
            Stats::bump(&self.stats.too_large);
            self.reply(peer, &device::too_large_json(max, None));
            return;
        }
        match device::interpret(text) {
            Meaning::Plain => self.reply(peer, &device::ack_text(peer)),
            Meaning::Invalid(why) => self.reply(peer, &device::error_json(why)),
            Meaning::Message { to, body } => self.forward(peer, to, body),
        }
    }

    /// Encrypts one datagram for `peer` and queues it.
    pub(super) fn reply(&mut self, peer: SocketAddr, plaintext: &[u8]) {
        let Some(e) = self.table.get_mut(&peer) else {
            return;
        };
        if let Err(err) = e.value.conn.write(plaintext) {
            tracing::warn!(%peer, error = %err, "cannot encrypt a reply");
            return;
        }
        Stats::bump(&self.stats.app_out);
        self.queue_output(peer);
    }

    /// A device message for the hub: checked here, sent on its own task so
    /// a slow hub never stalls the socket.
    fn forward(&mut self, peer: SocketAddr, to: String, body: String) {
        let Some(bridge) = self.bridge.clone() else {
            self.reply(
                peer,
                &device::error_json("this endpoint has no message hub"),
            );
            return;
        };
        let permits = self.bridge_permits.clone();
        let sent_tx = self.sent_tx.clone();
        let Some(e) = self.table.get_mut(&peer) else {
            return;
        };
        let Some(from) = e.value.user_id.clone() else {
            self.reply(
                peer,
                &device::error_json("this identity is not bound to a user"),
            );
            return;
        };
        let permit = match permits.try_acquire_owned() {
            Ok(p) if e.value.in_flight < super::worker::IN_FLIGHT_PER_SESSION => p,
            _ => {
                self.reply(peer, &device::error_json("server busy, try again"));
                return;
            }
        };
        e.value.in_flight += 1;
        let session = e.id;
        tokio::spawn(async move {
            let result = bridge.send(&from, &to, body).await;
            drop(permit);
            let _ = sent_tx.send(Sent { session, result }).await;
        });
    }

    pub(super) fn on_sent(&mut self, sent: Sent) {
        let Some(peer) = self.table.peer_of(sent.session) else {
            return;
        };
        if let Some(e) = self.table.get_mut(&peer) {
            e.value.in_flight = e.value.in_flight.saturating_sub(1);
        }
        match sent.result {
            Ok(id) => {
                Stats::bump(&self.stats.bridged_in);
                self.reply(peer, &device::ack_json(id));
            }
            Err(err) => self.reply(peer, &device::error_json(&err.to_string())),
        }
    }

    /// A hub message for a device session.
    pub(super) fn on_outbound(
        &mut self,
        session: DeviceSessionId,
        user: Arc<str>,
        msg: DeviceMessage,
    ) {
        let Some(peer) = self.table.peer_of(session) else {
            if let Some(bridge) = &self.bridge {
                bridge.bounce(&user, msg);
            }
            return;
        };
        let datagram = device::delivery_json(&msg);
        if datagram.len() > self.config.max_payload {
            Stats::bump(&self.stats.too_large);
            tracing::warn!(%peer, id = msg.id, len = datagram.len(), "message too large for one datagram; device told");
            self.reply(
                peer,
                &device::too_large_json(self.config.max_payload, Some(msg.id)),
            );
            return;
        }
        Stats::bump(&self.stats.bridged_out);
        self.reply(peer, &datagram);
    }
}
