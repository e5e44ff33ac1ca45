//! Wiring: open the store, start the hub, bind the listeners, and shut all
//! of it down in order. Tests start a [`Server`] on ephemeral ports and
//! drive it as clients would.

use crate::auth::PasswordHasher;
use crate::config::Config;
use crate::hub::Hub;
use crate::store::{SqliteStore, Store};
use crate::transport::{http, ws};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the server could not start; each message is one line naming the
/// thing to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {error}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    Config(String),
}

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct Server {
    chat_addr: SocketAddr,
    dtls: Option<crate::dtls::DtlsEndpoint>,
    http_addr: SocketAddr,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let store = open_store(&config.database).await?;
        let hasher = PasswordHasher::new(config.password, config.hash_workers, config.hash_queue)
            .await
            .map_err(|e| StartError::Config(e.to_string()))?;
        let chat_listener = bind(config.listen, config.chat_port, "chat").await?;
        let http_listener = bind(config.listen, config.http_port, "http").await?;
        let chat_addr = local_addr(&chat_listener, "chat")?;
        let http_addr = local_addr(&http_listener, "http")?;
        let dtls_socket = match config.dtls.enabled {
            true => Some(
                crate::dtls::bind(&config.dtls).map_err(|e| StartError::Config(e.to_string()))?,
            ),
            false => None,
        };
        let html_dir = resolve_html_dir(config.html_dir.as_deref())?;

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let hub = Hub::start(
            store.clone(),
            hasher,
            config.hub.clone(),
            shutdown.clone(),
            &tasks,
        );
        let limits = ws::WsLimits {
            max_message: config.max_message,
            outbound_queue: config.outbound_queue,
            handshake_timeout: config.handshake_timeout,
            max_connections: config.max_connections,
            heartbeat: config.heartbeat,
        };
        tasks.spawn(ws::serve(chat_listener, hub.clone(), limits, tasks.clone()));
        // Device messages reach the hub once it implements DeviceBridge;
        // until then the endpoint answers JSON datagrams with an error.
        let dtls = match dtls_socket {
            Some(socket) => Some(
                crate::dtls::start_with_store(
                    &config.dtls,
                    &config.database,
                    socket,
                    None,
                    shutdown.clone(),
                    &tasks,
                )
                .await
                .map_err(|e| StartError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let settings = http::HttpSettings {
            html_dir: html_dir.clone(),
            chat_port: chat_addr.port(),
            server_address: config.server_address.clone(),
            fallback_address: fallback_address(&config),
            chat_protocol: "ws",
        };
        let app = http::router(settings);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let served = axum::serve(http_listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(%chat_addr, "chat WebSocket (QMessageServer protocol) listening");
        tracing::info!(%http_addr, "HTTP listening");
        match &html_dir {
            Some(d) => tracing::info!(dir = %d.display(), "serving web UI folder"),
            None => tracing::info!("no UI folder; serving the built-in page"),
        }
        Ok(Server {
            chat_addr,
            dtls,
            http_addr,
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

    /// The DTLS endpoint, unless disabled.
    pub fn dtls(&self) -> Option<&crate::dtls::DtlsEndpoint> {
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

async fn open_store(url: &str) -> Result<Arc<dyn Store>, StartError> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        return Err(StartError::Config(
            "PostgreSQL storage is not supported yet; use a SQLite path or sqlite: URL".into(),
        ));
    }
    let store = SqliteStore::open(url)
        .await
        .map_err(|e| StartError::Store(e.to_string()))?;
    Ok(Arc::new(store))
}

async fn bind(
    ip: std::net::IpAddr,
    port: u16,
    what: &'static str,
) -> Result<TcpListener, StartError> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::Bind { what, addr, error })
}

fn local_addr(l: &TcpListener, what: &'static str) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|e| StartError::Config(format!("cannot read {what} address: {e}")))
}

/// An explicit folder must exist; without one, `./html` is used if present.
fn resolve_html_dir(explicit: Option<&std::path::Path>) -> Result<Option<PathBuf>, StartError> {
    match explicit {
        Some(dir) => std::fs::canonicalize(dir).map(Some).map_err(|e| {
            StartError::Config(format!("cannot use UI folder {}: {e}", dir.display()))
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
