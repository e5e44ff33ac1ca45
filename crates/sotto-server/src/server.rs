//! Wiring: open the store, start the hub, bind the listeners, and shut all
//! of it down in order. Tests start a [`Server`] on ephemeral ports and
//! drive it as clients would.

use crate::config::{Config, DtlsPort};
use crate::transport::connection::WsLimits;
use crate::transport::http_server::{self, Serve};
use crate::transport::metrics::{self, MetricsState, TokenCheck};
use crate::transport::tls::{Tls, TlsError};
use crate::transport::upgrade::Upgrader;
use crate::transport::{Edge, api, http, ws};
use sotto_core::auth::PasswordHasher;
use sotto_core::auth::accounts::Accounts;
use sotto_core::auth::password::PasswordError;
use sotto_core::broker::{Broker, LocalBroker};
use sotto_core::clock::Clock;
use sotto_core::hub::Hub;
use sotto_core::metrics::Metrics;
use sotto_core::ports::{Store, StoreError};
use sotto_dtls::{DtlsConfig, DtlsError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the server could not start; each message is one line naming the
/// thing to fix, and each variant carries what failed so callers (and
/// tests) need not parse the text.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {error}")]
    Bind {
        /// `chat`, `http`, `https` or `metrics`.
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The DTLS port is a UDP port: a TCP listener elsewhere does not
    /// take it, but a second server (or anything on UDP) does.
    #[error(
        "cannot listen on {addr} (dtls): {error}; choose a free UDP port with --dtls-port, or --disable-dtls"
    )]
    DtlsBind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot read {what} address: {error}")]
    LocalAddr {
        what: &'static str,
        error: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("cannot use UI folder {}: {error}", path.display())]
    HtmlDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Dtls(sotto_dtls::DtlsError),
    #[error(transparent)]
    Broker(#[from] sotto_broker_nats::NatsError),
}

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct Server {
    chat_addr: SocketAddr,
    dtls: Option<sotto_dtls::DtlsEndpoint>,
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Server::start_wrapping_store(config, |store| store).await
    }

    /// Test hook: starts with the chat store passed through `wrap`, e.g. a
    /// fault-injecting wrapper around the real SQLite store for outage tests.
    #[doc(hidden)]
    pub async fn start_wrapping_store(
        config: Config,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Result<Server, StartError> {
        // TLS files first: a bad pair must stop start-up before anything
        // else happens (QMessageServer warns and runs without TLS).
        let tls = match &config.tls {
            Some(files) => Some(Tls::load(files.clone())?),
            None => None,
        };
        let chat_tls = tls.clone().filter(|_| !config.disable_wss);
        let https_tls = tls.clone().filter(|_| !config.disable_https);
        let (store, psks) =
            crate::store::open_store(&config.database, config.db_cache_mib, config.db_pool_size)
                .await
                .map_err(StartError::Store)?;
        let store = wrap(store);
        let hasher =
            PasswordHasher::new(config.password, config.hash_workers, config.hash_queue).await?;
        let chat_listener = bind(config.listen, config.chat_port, "chat").await?;
        let http_listener = bind(config.listen, config.http_port, "http").await?;
        let chat_addr = local_addr(&chat_listener, "chat")?;
        let http_addr = local_addr(&http_listener, "http")?;
        let https_listener = match &https_tls {
            Some(_) => Some(bind(config.listen, config.https_port, "https").await?),
            None => None,
        };
        let https_addr = match &https_listener {
            Some(l) => Some(local_addr(l, "https")?),
            None => None,
        };
        let metrics_listener = match config.metrics.listen {
            Some(a) => Some(bind(a.ip(), a.port(), "metrics").await?),
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(local_addr(l, "metrics")?),
            None => None,
        };
        let dtls_socket = match config.dtls.enabled {
            true => Some(bind_dtls(&config, chat_addr.port())?),
            false => None,
        };
        let html_dir = resolve_html_dir(config.html_dir.as_deref())?;

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let accounts = Arc::new(Accounts::new(
            store.clone(),
            hasher,
            config.hub.account_limits(),
            Clock::system(),
        ));
        let metrics = Arc::new(Metrics::default());
        let broker = start_broker(&config.broker, &shutdown, &tasks).await?;
        let parts = sotto_core::hub::Parts {
            store: store.clone(),
            accounts,
            metrics: metrics.clone(),
            broker,
        };
        let hub = Hub::start_with(parts, config.hub.clone(), shutdown.clone(), &tasks);
        let limits = WsLimits {
            max_message: config.max_message,
            outbound_queue: config.outbound_queue,
            outbound_bytes: config.outbound_queue_bytes,
            write_timeout: config.write_timeout,
            handshake_timeout: config.handshake_timeout,
            heartbeat: config.heartbeat,
        };
        let edge = Edge::new(config.edge.clone(), config.max_connections, metrics);
        let upgrader = Upgrader {
            hub: hub.clone(),
            edge: edge.clone(),
            limits,
            tasks: tasks.clone(),
            tls: https_tls.is_some(),
        };
        tasks.spawn(ws::serve(
            chat_listener,
            upgrader.clone(),
            chat_tls.clone(),
            tasks.clone(),
        ));
        tasks.spawn(forget_idle_attempts(edge.clone(), shutdown.clone()));
        // Devices bound to a user are hub connections of that user.
        let dtls = match dtls_socket {
            Some((dtls_config, socket)) => Some(
                sotto_dtls::DtlsEndpoint::start(
                    dtls_config,
                    socket,
                    Arc::new(sotto_dtls::KeyRing::with_demo_key(config.dtls.demo_psk)),
                    Some(psks),
                    Some(crate::device_bridge::HubBridge::new(hub.clone())),
                    shutdown.clone(),
                    &tasks,
                )
                .await
                .map_err(StartError::Dtls)?,
            ),
            None => None,
        };
        let settings = http::HttpSettings {
            html_dir: html_dir.clone(),
            chat_port: chat_addr.port(),
            server_address: config.server_address.clone(),
            fallback_address: fallback_address(&config),
            chat_protocol: if chat_tls.is_some() { "wss" } else { "ws" },
        };
        let metrics_app = metrics::router(Arc::new(MetricsState {
            upgrader: upgrader.clone(),
            dtls: dtls.as_ref().map(|d| d.stats_source()),
            token: config.metrics.token.as_ref().map(TokenCheck::new),
        }));
        let public_metrics = match metrics_listener {
            Some(listener) => {
                let serve = Serve::App {
                    app: metrics_app,
                    tls: None,
                };
                let run = http_server::run(
                    listener,
                    edge.clone(),
                    serve,
                    shutdown.clone(),
                    tasks.clone(),
                );
                tasks.spawn(run);
                metrics::hidden()
            }
            None => metrics_app,
        };
        let api_state = Arc::new(api::ApiState {
            upgrader,
            max_body: config.edge.max_body,
        });
        let app = api::router(api_state)
            .merge(public_metrics)
            .merge(http::router(settings));
        let plain = match (https_listener, https_addr) {
            (Some(https), Some(addr)) => {
                let secure = Serve::App {
                    app,
                    tls: https_tls.clone(),
                };
                tasks.spawn(http_server::run(
                    https,
                    edge.clone(),
                    secure,
                    shutdown.clone(),
                    tasks.clone(),
                ));
                Serve::Redirect {
                    https_port: addr.port(),
                    fallback_host: config
                        .server_address
                        .clone()
                        .unwrap_or_else(|| fallback_address(&config)),
                }
            }
            _ => Serve::App { app, tls: None },
        };
        tasks.spawn(http_server::run(
            http_listener,
            edge.clone(),
            plain,
            shutdown.clone(),
            tasks.clone(),
        ));
        if let Some(tls) = tls.clone() {
            tasks.spawn(reload_on_sighup(tls, shutdown.clone()));
        }
        tracing::info!(%chat_addr, "chat WebSocket (QMessageServer protocol) listening");
        match https_addr {
            Some(a) => {
                tracing::info!(%http_addr, "HTTP listening (redirects to HTTPS)");
                tracing::info!(https_addr = %a, "HTTPS listening");
            }
            None => tracing::info!(%http_addr, "HTTP listening"),
        }
        if let Some(a) = metrics_addr {
            tracing::info!(metrics_addr = %a, "metrics listening (not on the HTTP port)");
        }
        match &html_dir {
            Some(d) => tracing::info!(dir = %d.display(), "serving web UI folder"),
            None if crate::transport::ui::embedded() => {
                tracing::info!(
                    bundle = crate::transport::ui::BUNDLE_HASH,
                    "serving the embedded web UI"
                )
            }
            None => tracing::info!("no UI folder and none embedded; serving the built-in page"),
        }
        Ok(Server {
            chat_addr,
            dtls,
            http_addr,
            https_addr,
            metrics_addr,
            hub,
            store,
            shutdown,
            tasks,
        })
    }

    pub fn chat_addr(&self) -> SocketAddr {
        self.chat_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The HTTPS port's address, when TLS is on and HTTPS not disabled.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The metrics listener's address, with `--metrics-listen`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The DTLS endpoint, unless disabled.
    pub fn dtls(&self) -> Option<&sotto_dtls::DtlsEndpoint> {
        self.dtls.as_ref()
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Graceful stop: close frames to every connection, background tasks
    /// ended, live sessions recorded as used, database closed.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.hub.flush_sessions().await;
        self.hub.leave_cluster();
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        self.store.close().await;
        tracing::info!("stopped");
    }
}

/// NATS with `--broker`, else the single node's in-process broker.
async fn start_broker(
    config: &crate::config::BrokerConfig,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<Arc<dyn Broker>, StartError> {
    let Some(url) = &config.url else {
        return Ok(Arc::new(LocalBroker::default()));
    };
    let nats = sotto_broker_nats::NatsConfig {
        url: url.clone(),
        prefix: config.prefix.clone(),
    };
    let broker = sotto_broker_nats::NatsBroker::start(nats, shutdown.clone(), tasks).await?;
    tracing::info!(prefix = %config.prefix, "broker: NATS (several nodes)");
    Ok(Arc::new(broker))
}

/// SIGHUP re-reads the certificate and key; new handshakes use them, open
/// connections are untouched, and a bad pair leaves the old one in force.
async fn reload_on_sighup(tls: Tls, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            return tracing::error!(error = %e, "cannot listen for SIGHUP; TLS reload disabled");
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
            Err(e) => tracing::error!("SIGHUP: TLS reload refused, keeping the old pair: {e}"),
        }
    }
}

/// Attempt-limit state of addresses and names that have gone quiet is
/// dropped every minute, so the limiter's memory follows recent attackers
/// only.
async fn forget_idle_attempts(edge: Edge, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => edge.throttle.forget_idle(),
        }
    }
}

async fn bind(
    ip: std::net::IpAddr,
    port: u16,
    what: &'static str,
) -> Result<TcpListener, StartError> {
    let addr = SocketAddr::new(ip, port);
    let fail = |error| StartError::Bind { what, addr, error };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(fail)?;
    // As TcpListener::bind does, so a restart can reuse the port at once.
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    // The default of 128 overflowed when thousands of clients reconnect at
    // once (seen in the idle benchmark); the kernel caps it at somaxconn.
    socket.listen(LISTEN_BACKLOG).map_err(fail)
}

/// The DTLS socket, on `--dtls-port` or else on the chat port's number
/// (UDP, so it never collides with the chat port's TCP listener, and a
/// second server with another chat port needs no DTLS option). Returns
/// the DTLS settings with the port asked for filled in.
fn bind_dtls(config: &Config, chat_port: u16) -> Result<(DtlsConfig, UdpSocket), StartError> {
    let mut dtls = config.dtls.clone();
    dtls.port = match config.dtls_port {
        DtlsPort::Port(port) => port,
        DtlsPort::SameAsChat => chat_port,
    };
    match sotto_dtls::bind(&dtls) {
        Ok(socket) => Ok((dtls, socket)),
        // An ephemeral chat port's number is only a preference for UDP:
        // the user asked for no number in particular.
        Err(e) if config.dtls_port == DtlsPort::SameAsChat && config.chat_port == 0 => {
            tracing::warn!(port = dtls.port, error = %e, "UDP port of the chat port's number is taken; DTLS takes a free port");
            dtls.port = 0;
            let socket = sotto_dtls::bind(&dtls).map_err(dtls_bind_error)?;
            Ok((dtls, socket))
        }
        Err(e) => Err(dtls_bind_error(e)),
    }
}

/// A DTLS bind failure names the options that fix it.
fn dtls_bind_error(e: DtlsError) -> StartError {
    match e {
        DtlsError::Bind { addr, error } => StartError::DtlsBind { addr, error },
        other => StartError::Dtls(other),
    }
}

/// Pending connections the kernel may queue per listening socket.
const LISTEN_BACKLOG: u32 = 1024;

fn local_addr(l: &TcpListener, what: &'static str) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|error| StartError::LocalAddr { what, error })
}

/// An explicit folder must exist; without one, `./html` is used if present.
fn resolve_html_dir(explicit: Option<&std::path::Path>) -> Result<Option<PathBuf>, StartError> {
    match explicit {
        Some(dir) => std::fs::canonicalize(dir)
            .map(Some)
            .map_err(|error| StartError::HtmlDir {
                path: dir.to_owned(),
                error,
            }),
        None => Ok(std::fs::canonicalize("html").ok().filter(|p| p.is_dir())),
    }
}

fn fallback_address(config: &Config) -> String {
    if config.listen.is_unspecified() {
        "localhost".to_owned()
    } else if config.listen.is_ipv6() {
        format!("[{}]", config.listen)
    } else {
        config.listen.to_string()
    }
}
