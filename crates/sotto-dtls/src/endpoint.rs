//! The DTLS endpoint as the rest of sotto sees it: bind, start, read the
//! counters, revoke an identity, stop. The work happens in one task that
//! owns the UDP socket and every session ([`worker`](super::worker)); this
//! file sets it up and talks to it through channels.

use super::bridge::DeviceBridge;
use super::config::DtlsConfig;
use super::cookie::CookieJar;
use super::keyring::KeyRing;
use super::keys;
use super::ossl::{self, Listener, TlsError};
use super::stats::{Stats, StatsSnapshot};
use super::worker::{Command, Worker};
use sotto_core::psk::PskStore;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Socket buffers asked for: a burst of thousands of ClientHellos must not
/// overflow the kernel's default 208 KiB while the worker is busy. Linux
/// caps the request at `net.core.rmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    #[error("cannot listen on {addr} (dtls): {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("PSK store: {0}")]
    Store(String),
}

/// A running endpoint.
pub struct DtlsEndpoint {
    addr: SocketAddr,
    stats: Arc<Stats>,
    commands: mpsc::Sender<Command>,
    keys: Arc<KeyRing>,
}

/// Binds the UDP socket (IPv4, or IPv6 with IPv4-mapped peers on `::`).
/// Separate from [`DtlsEndpoint::start`] so a server can fail on a taken
/// port before it starts anything else.
pub fn bind(config: &DtlsConfig) -> Result<UdpSocket, DtlsError> {
    let addr = SocketAddr::new(config.listen, config.port);
    let fail = |error| DtlsError::Bind { addr, error };
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(fail)?;
    if addr.is_ipv6() {
        // Serve IPv4 peers too when bound to `::`, whatever the OS default.
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    UdpSocket::from_std(socket.into()).map_err(fail)
}

impl DtlsEndpoint {
    /// Starts serving on `socket`. With a `store`, keys are loaded from it
    /// before the first datagram is read and refreshed every
    /// `config.psk_refresh`; without one, `keys` is used as given (tests).
    /// The worker stops, sending close_notify to every peer, when
    /// `shutdown` is cancelled; `tasks` tracks it.
    pub async fn start(
        config: DtlsConfig,
        socket: UdpSocket,
        keys: Arc<KeyRing>,
        store: Option<Arc<dyn PskStore>>,
        bridge: Option<Arc<dyn DeviceBridge>>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<DtlsEndpoint, DtlsError> {
        let addr = socket.local_addr().map_err(|error| DtlsError::Bind {
            addr: SocketAddr::new(config.listen, config.port),
            error,
        })?;
        let cookies = Arc::new(CookieJar::new());
        let ctx = ossl::server(
            &config.ciphers,
            u32::try_from(config.max_payload).unwrap_or(u32::MAX),
            &config.identity_hint,
            keys.clone(),
            cookies.clone(),
        )?;
        let listener = Listener::new(ctx, config.mtu())?;
        let stats = Arc::new(Stats::default());
        let (commands, command_rx) = mpsc::channel(64);
        if let Some(store) = store {
            let rev = keys::load_all(store.as_ref(), &keys)
                .await
                .map_err(DtlsError::Store)?;
            tasks.spawn(keys::refresh(
                store,
                keys.clone(),
                rev,
                config.psk_refresh,
                commands.clone(),
                shutdown.clone(),
            ));
        }
        announce(&config, addr, keys.len());
        let worker = Worker::new(
            config,
            socket,
            listener,
            cookies,
            stats.clone(),
            bridge,
            command_rx,
        );
        tasks.spawn(worker.run(shutdown));
        Ok(DtlsEndpoint {
            addr,
            stats,
            commands,
            keys,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters now (sessions, handshakes, every drop reason).
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The live counters, for a reader that outlives this handle's borrow
    /// (the `/metrics` route).
    pub fn stats_source(&self) -> Arc<super::stats::Stats> {
        self.stats.clone()
    }

    /// Forgets `identity`'s key and ends its live sessions (close_notify
    /// sent); returns how many ended. The store is not touched: `sotto psk
    /// revoke` does that, and the refresher calls this.
    pub async fn revoke(&self, identity: &str) -> usize {
        self.keys.remove(identity);
        let (done, ended) = oneshot::channel();
        let cmd = Command::Revoke {
            identity: identity.to_owned(),
            done,
        };
        if self.commands.send(cmd).await.is_err() {
            return 0;
        }
        ended.await.unwrap_or(0)
    }
}

fn announce(config: &DtlsConfig, addr: SocketAddr, keys: usize) {
    tracing::info!(
        %addr,
        hint = %config.identity_hint,
        keys,
        max_payload = config.max_payload,
        "DTLS 1.2 (PSK) listening"
    );
    if config.demo_psk {
        tracing::warn!(
            "!!! --dtls-demo-psk is ON: ANY identity is accepted with the PUBLIC demo key \
             1a2b3c4d5e6f. Anyone can connect. Use this only to try Qt's examples. !!!"
        );
    }
}
