//! The endpoint's one task: it owns the UDP socket, the cookie listener and
//! every session, so no state is shared and nothing is locked. Each loop
//! turn handles one event — a batch of datagrams, a due timer, a bridge
//! answer, a hub message, a command — then sends what it produced.
//! Per-datagram handling is in [`datagram`](super::datagram).

use super::bridge::{DeviceBridge, DeviceSessionId, Outbound};
use super::config::DtlsConfig;
use super::cookie::CookieJar;
use super::logsafe::{Throttle, Untrusted};
use super::ossl::{Conn, Listener, PskOutcome, TimeoutOutcome};
use super::stats::Stats;
use super::table::{Table, TimerKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Largest UDP datagram; reading into a smaller buffer would truncate.
const RECV_BUFFER: usize = 65_536;
/// Datagrams handled per loop turn before timers and channels get a look.
const BATCH: usize = 256;
/// Hub messages queued for all devices before the hub is told "full".
const OUTBOX_CAPACITY: usize = 4_096;
/// Device messages awaiting the bridge per session.
pub(super) const IN_FLIGHT_PER_SESSION: usize = 16;
/// How often the counters are logged while anything changes.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// Limit refusals are logged at most this often (a flood would otherwise
/// become a log flood).
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(5);
/// Handshake failures any stranger can cause (unknown identity, wrong key,
/// timeouts) are logged at most this often, each kind on its own.
const FAILURE_WARNING_EVERY: Duration = Duration::from_secs(1);

pub enum Command {
    /// End every session of this identity; reply with how many ended.
    Revoke {
        identity: String,
        done: oneshot::Sender<usize>,
    },
}

/// A bridge answer for a device message.
pub(super) struct Sent {
    pub session: DeviceSessionId,
    pub result: Result<u64, super::bridge::BridgeError>,
}

/// What the worker keeps per peer.
pub(super) struct Session {
    pub conn: Conn,
    /// Set when the handshake completes.
    pub identity: Option<String>,
    pub user_id: Option<Arc<str>>,
    pub in_flight: usize,
    /// The random of the ClientHello this session began with: a late copy
    /// of that hello is a duplicate, not a device starting over.
    pub hello_random: Option<[u8; 32]>,
    /// A new handshake from this session's address, run beside it until
    /// it completes (see [`reconnect`](super::reconnect)).
    pub pending: Option<Box<Pending>>,
}

/// A handshake started by a verified ClientHello from the address of an
/// established session.
pub(super) struct Pending {
    pub conn: Conn,
    pub hello_random: Option<[u8; 32]>,
}

impl Session {
    pub fn new(conn: Conn, hello_random: Option<[u8; 32]>) -> Session {
        Session {
            conn,
            identity: None,
            user_id: None,
            in_flight: 0,
            hello_random,
            pending: None,
        }
    }

    /// The association whose handshake runs: the pending one if there is
    /// one, else the session's own.
    pub(crate) fn handshake_conn(&mut self) -> &mut Conn {
        match &mut self.pending {
            Some(p) => &mut p.conn,
            None => &mut self.conn,
        }
    }
}

pub(super) struct Worker {
    pub config: DtlsConfig,
    pub socket: UdpSocket,
    pub listener: Listener,
    pub cookies: Arc<CookieJar>,
    pub table: Table<Session>,
    pub stats: Arc<Stats>,
    pub bridge: Option<Arc<dyn DeviceBridge>>,
    pub bridge_permits: Arc<Semaphore>,
    pub outbox_tx: mpsc::Sender<Outbound>,
    outbox_rx: mpsc::Receiver<Outbound>,
    pub sent_tx: mpsc::Sender<Sent>,
    sent_rx: mpsc::Receiver<Sent>,
    commands: mpsc::Receiver<Command>,
    /// Datagrams to send at the end of this turn.
    pub out: Vec<(SocketAddr, Vec<u8>)>,
    /// Scratch for what OpenSSL wrote.
    pub scratch: Vec<Vec<u8>>,
    /// Decrypted plaintext lands here.
    pub plain: Vec<u8>,
    /// Warnings that floods could multiply; see [`logsafe`](super::logsafe).
    pub limit_log: Throttle,
    pub unknown_identity_log: Throttle,
    pub failure_log: Throttle,
}

impl Worker {
    pub fn new(
        config: DtlsConfig,
        socket: UdpSocket,
        listener: Listener,
        cookies: Arc<CookieJar>,
        stats: Arc<Stats>,
        bridge: Option<Arc<dyn DeviceBridge>>,
        commands: mpsc::Receiver<Command>,
    ) -> Worker {
        let (outbox_tx, outbox_rx) = mpsc::channel(OUTBOX_CAPACITY);
        let (sent_tx, sent_rx) = mpsc::channel(config.bridge_in_flight.max(1));
        Worker {
            table: Table::new(config.limits.clone()),
            bridge_permits: Arc::new(Semaphore::new(config.bridge_in_flight.max(1))),
            config,
            socket,
            listener,
            cookies,
            stats,
            bridge,
            outbox_tx,
            outbox_rx,
            sent_tx,
            sent_rx,
            commands,
            out: Vec::new(),
            scratch: Vec::new(),
            plain: vec![0; RECV_BUFFER],
            limit_log: Throttle::new(LIMIT_WARNING_EVERY),
            unknown_identity_log: Throttle::new(FAILURE_WARNING_EVERY),
            failure_log: Throttle::new(FAILURE_WARNING_EVERY),
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut rotate =
            tokio::time::interval(self.config.cookie_rotation.max(Duration::from_secs(1)));
        rotate.tick().await;
        let mut report = tokio::time::interval(REPORT_EVERY);
        report.tick().await;
        let mut reported = self.stats.snapshot();
        loop {
            let next = self
                .table
                .next_due()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next) => self.on_timers(Instant::now()),
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                Some(sent) = self.sent_rx.recv() => self.on_sent(sent),
                Some((sid, user, msg)) = self.outbox_rx.recv() => self.on_outbound(sid, user, msg),
                r = self.socket.recv_from(&mut buf) => self.on_readable(r, &mut buf),
                _ = rotate.tick() => self.cookies.rotate(),
                _ = report.tick() => reported = self.report(reported),
            }
            self.update_gauges();
            self.flush().await;
        }
        self.close_all();
        self.flush().await;
        tracing::info!("DTLS endpoint stopped");
    }

    fn on_readable(&mut self, first: std::io::Result<(usize, SocketAddr)>, buf: &mut [u8]) {
        let now = Instant::now();
        match first {
            Ok((n, peer)) => self.on_datagram(peer, &buf[..n], now),
            Err(e) => {
                // UDP reports ICMP errors from earlier sends on some systems;
                // none of them is fatal to the endpoint.
                tracing::debug!(error = %e, "UDP receive error");
                return;
            }
        }
        for _ in 1..BATCH {
            match self.socket.try_recv_from(buf) {
                Ok((n, peer)) => self.on_datagram(peer, &buf[..n], now),
                Err(_) => break,
            }
        }
    }

    /// Sends everything queued this turn.
    async fn flush(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        for (peer, datagram) in out.drain(..) {
            match self.socket.send_to(&datagram, peer).await {
                Ok(_) => Stats::bump(&self.stats.datagrams_out),
                Err(e) => tracing::debug!(%peer, error = %e, "UDP send failed"),
            }
        }
        self.out = out;
    }

    /// Moves what OpenSSL wrote for `peer` into the send queue.
    pub(crate) fn queue_output(&mut self, peer: SocketAddr) {
        let Some(e) = self.table.get_mut(&peer) else {
            return;
        };
        e.value.conn.drain_output(&mut self.scratch);
        if let Some(p) = &mut e.value.pending {
            p.conn.drain_output(&mut self.scratch);
        }
        self.out.extend(self.scratch.drain(..).map(|d| (peer, d)));
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some((peer, kind)) = self.table.pop_due(now) {
            match kind {
                TimerKind::Handshake => {
                    Stats::bump(&self.stats.handshake_timeouts);
                    if let Some(suppressed) = self.failure_log.admit(now) {
                        tracing::warn!(%peer, suppressed, "handshake timed out");
                    }
                    self.end(peer, false);
                }
                TimerKind::Idle => {
                    Stats::bump(&self.stats.idle_timeouts);
                    tracing::info!(%peer, "idle; closing the session");
                    self.end(peer, true);
                }
                TimerKind::Retransmit => self.retransmit(peer, now),
                TimerKind::PendingHandshake => {
                    Stats::bump(&self.stats.handshake_timeouts);
                    if let Some(suppressed) = self.failure_log.admit(now) {
                        tracing::warn!(%peer, suppressed, "new handshake from an established peer timed out; the session stays");
                    }
                    self.drop_pending(peer);
                }
            }
        }
    }

    fn retransmit(&mut self, peer: SocketAddr, now: Instant) {
        let Some(e) = self.table.get_mut(&peer) else {
            return;
        };
        let pending = e.value.pending.is_some();
        match e.value.handshake_conn().on_timeout() {
            TimeoutOutcome::Retransmitted => {
                Stats::bump(&self.stats.retransmits);
                tracing::debug!(%peer, "handshake timeout, retransmitting the last flight");
            }
            TimeoutOutcome::NotDue => {}
            TimeoutOutcome::Failed => {
                Stats::bump(&self.stats.handshakes_failed);
                if let Some(suppressed) = self.failure_log.admit(now) {
                    tracing::warn!(%peer, suppressed, "handshake failed: retransmissions exhausted");
                }
                if pending {
                    self.drop_pending(peer);
                } else {
                    self.end(peer, false);
                }
                return;
            }
        }
        self.queue_output(peer);
        self.arm(peer, now);
    }

    /// Schedules the session's retransmission from OpenSSL's timer.
    pub(crate) fn arm(&mut self, peer: SocketAddr, now: Instant) {
        let Some(e) = self.table.get_mut(&peer) else {
            return;
        };
        let at = e.value.handshake_conn().retransmit_in().map(|d| now + d);
        self.table.set_retransmit(&peer, at);
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Revoke { identity, done } => {
                let ended = self.revoke(&identity);
                let _ = done.send(ended);
            }
        }
    }

    fn revoke(&mut self, identity: &str) -> usize {
        let doomed: Vec<SocketAddr> = self
            .table
            .iter()
            .filter(|e| session_identity(&e.value) == Some(identity))
            .map(|e| e.peer)
            .collect();
        for &peer in &doomed {
            Stats::bump(&self.stats.revoked);
            let identity = Untrusted::new(identity);
            tracing::info!(%peer, %identity, "identity revoked; closing the session");
            self.end(peer, true);
        }
        doomed.len()
    }

    /// Removes a session; with `notify`, sends close_notify first.
    pub fn end(&mut self, peer: SocketAddr, notify: bool) {
        if notify {
            if let Some(e) = self.table.get_mut(&peer) {
                e.value.conn.close();
            }
            self.queue_output(peer);
        }
        let Some(e) = self.table.remove(peer) else {
            return;
        };
        if let (Some(bridge), Some(user)) = (&self.bridge, &e.value.user_id) {
            bridge.detach(user, e.id);
        }
    }

    fn close_all(&mut self) {
        let peers = self.table.peers();
        tracing::info!(sessions = peers.len(), "sending close_notify to every peer");
        for peer in peers {
            self.end(peer, true);
        }
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let hs = self.table.handshaking();
        Stats::set(&self.stats.handshaking, hs);
        Stats::set(&self.stats.sessions, self.table.established());
    }

    fn report(&self, before: super::stats::StatsSnapshot) -> super::stats::StatsSnapshot {
        let now = self.stats.snapshot();
        if now != before {
            tracing::info!(
                sessions = now.sessions,
                handshaking = now.handshaking,
                handshakes_ok = now.handshakes_ok,
                garbage = now.garbage,
                undecryptable = now.undecryptable,
                dropped_unsafe = now.dropped_unsafe,
                hello_verify_sent = now.hello_verify_sent,
                "DTLS counters"
            );
        }
        now
    }
}

/// The identity a session authenticated as (or is authenticating as).
fn session_identity(s: &Session) -> Option<&str> {
    if let Some(id) = &s.identity {
        return Some(id);
    }
    match s.conn.psk_outcome() {
        Some(PskOutcome::Granted(e)) => Some(e.identity.as_str()),
        _ => None,
    }
}
