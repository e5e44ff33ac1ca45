//! The resolved configuration the server runs with. The CLI (flags and
//! `SOTTO_*` variables) produces it; tests build it directly with
//! [`Config::for_tests`]. Each field says its default.

use sotto_core::auth::PasswordParams;
use sotto_core::hub::HubConfig;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// Address every listener binds (default 127.0.0.1; 0.0.0.0 for a LAN).
    pub listen: IpAddr,
    /// Chat WebSocket port (default 12345); 0 picks a free port.
    pub chat_port: u16,
    /// HTTP port (default 8080); 0 picks a free port.
    pub http_port: u16,
    /// HTTPS port (default 8443), used when `tls` is set; 0 picks a free port.
    pub https_port: u16,
    /// Certificate and key; with them the chat port speaks WSS and HTTPS
    /// is served, plain HTTP redirecting to it (QMessageServer's behaviour).
    pub tls: Option<TlsFiles>,
    /// With TLS: no HTTPS port; the UI stays on plain HTTP.
    pub disable_https: bool,
    /// With TLS: the chat port stays plain WebSocket.
    pub disable_wss: bool,
    /// Database URL or path (default `sotto.db` in the working directory).
    pub database: String,
    /// The SQLite message writer's page cache, in MiB.
    pub db_cache_mib: u32,
    /// PostgreSQL: pooled connections for everything but the message
    /// writer (which has its own); ignored for SQLite.
    pub db_pool_size: u32,
    /// UI folder (default `./html` when present, else a built-in page).
    pub html_dir: Option<PathBuf>,
    /// Fixed `%SERVER_ADDRESS%` (QMessageServer's `-serverIp`); default:
    /// the request's validated Host name.
    pub server_address: Option<String>,
    /// Largest WebSocket message accepted, in bytes (default 64 KiB).
    pub max_message: usize,
    /// Frames queued per connection before it is dropped as too slow
    /// (default 1024).
    pub outbound_queue: usize,
    /// Bytes queued per connection before it is dropped as too slow
    /// (default 1 MiB): bounds what a client that stops reading pins,
    /// whatever the size of its frames.
    pub outbound_queue_bytes: usize,
    /// Longest one write to a WebSocket may take before the connection
    /// is dropped as too slow (default 10 s): a peer whose socket takes
    /// nothing is not reading.
    pub write_timeout: Duration,
    /// Open TCP connections at most, all ports, upgraded WebSockets
    /// included for their whole life (default 19,000; mind `ulimit -n`).
    pub max_connections: usize,
    /// Time allowed for the WebSocket upgrade (default 10 s).
    pub handshake_timeout: Duration,
    /// Silence after which a connection is pinged; twice this and it is
    /// dropped (default 30 s).
    pub heartbeat: Duration,
    /// Sessions, offline queue, presence and per-user send limits (default
    /// 20 messages/s after a burst of 100, 16 MiB of bodies a minute).
    pub hub: HubConfig,
    /// Argon2id costs.
    pub password: PasswordParams,
    /// Password hashes computed at once (default: cores − 1, at least 1, so
    /// routing keeps a core during a login storm).
    pub hash_workers: usize,
    /// Logins waiting for a hashing slot before new ones get "busy"
    /// (default 1024).
    pub hash_queue: usize,
    /// Connection counts, login deadlines and attempt limits at the edge.
    pub edge: EdgeConfig,
    /// The DTLS device endpoint (default: on). Its `port` is not read:
    /// [`Config::dtls_port`] decides it when the server starts.
    pub dtls: sotto_dtls::DtlsConfig,
    /// The DTLS endpoint's UDP port (default: the chat port's number).
    pub dtls_port: DtlsPort,
    /// Who may read `/metrics` (default: anyone who reaches the HTTP port).
    pub metrics: MetricsConfig,
    /// How this node reaches the others sharing its database (default:
    /// none, a single node).
    pub broker: BrokerConfig,
}

/// `--broker` and `--broker-prefix`.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `nats://host:port`, or None for a single node.
    pub url: Option<String>,
    /// The NATS subject prefix (default `sotto`): one per cluster.
    pub prefix: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            url: None,
            prefix: "sotto".to_owned(),
        }
    }
}

/// Where `/metrics` is served and what it asks for. The default keeps it
/// open on the HTTP port, as before, so existing scrapers keep working;
/// docs/SECURITY.md says how to close it.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// Serve `/metrics` only on this address (e.g. 127.0.0.1:9100), on a
    /// listener of its own; the HTTP port then answers 404 for it.
    pub listen: Option<SocketAddr>,
    /// Require `Authorization: Bearer <token>` for `/metrics`, wherever it
    /// is served.
    pub token: Option<Secret>,
}

/// A string that must not reach logs: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The deadlines of one HTTP exchange; each ends a client that holds a
/// connection slot without moving (issue 13, finding 2).
#[derive(Debug, Clone, Copy)]
pub struct HttpDeadlines {
    /// Request headers must arrive within this from the moment the server
    /// waits for them: a new connection's first request, the idle time
    /// between keep-alive requests, and the TLS handshake (default 10 s).
    pub header: Duration,
    /// A request body must be complete within this of its headers, or the
    /// answer is 408 and the connection closes (default 10 s).
    pub body: Duration,
    /// A response write that makes no progress for this long (the client
    /// does not read) closes the connection (default 10 s). A client that
    /// reads, however slowly, is not cut.
    pub write_stall: Duration,
}

impl Default for HttpDeadlines {
    fn default() -> Self {
        HttpDeadlines {
            header: Duration::from_secs(10),
            body: Duration::from_secs(10),
            write_stall: Duration::from_secs(10),
        }
    }
}

/// Where the DTLS endpoint listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsPort {
    /// UDP on the chat port's number (12345 by default, as the Qt secure
    /// UDP examples expect), so servers with different chat ports never
    /// fight over one DTLS port. With an ephemeral chat port (0), the
    /// number the chat listener got, or any free port if that is taken.
    SameAsChat,
    /// This UDP port (`--dtls-port`); 0 picks a free one.
    Port(u16),
}

/// The certificate chain and key files given on the command line. Plain
/// paths: `transport::tls` loads them (and reloads them on SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Limits that keep unauthenticated clients cheap; see README "Limits".
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Open TCP connections (all ports together, upgraded WebSockets
    /// included) per client address, IPv6 per /64 (default 256; 0 = no
    /// per-address limit).
    pub max_connections_per_ip: u32,
    /// Chat-port sockets that have not logged in yet, per address
    /// (default 32) and in total (default 2048).
    pub unauthenticated_per_ip: u32,
    pub unauthenticated_total: usize,
    /// A chat-port socket must log in or authorize within this (default
    /// 10 s) or it is closed.
    pub login_deadline: Duration,
    /// Login and register attempts per minute, per address (default 60)
    /// and per account name (default 10); `None` = unlimited.
    pub throttle: sotto_core::auth::throttle::ThrottleConfig,
    /// The chat port requires a handshake credential, as `/ws` does.
    pub chat_require_token: bool,
    /// Origins allowed to open `/ws` (and use the session cookie); empty
    /// means the server's own origin (scheme and Host of the request).
    pub allowed_origins: Vec<String>,
    /// Largest JSON body accepted by the account API (default 16 KiB).
    pub max_body: usize,
    /// Header, body and response deadlines on the HTTP ports.
    pub http: HttpDeadlines,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        use std::num::NonZeroU32;
        EdgeConfig {
            max_connections_per_ip: 256,
            unauthenticated_per_ip: 32,
            unauthenticated_total: 2048,
            login_deadline: Duration::from_secs(10),
            throttle: sotto_core::auth::throttle::ThrottleConfig {
                per_ip_per_minute: NonZeroU32::new(60),
                per_name_per_minute: NonZeroU32::new(10),
            },
            chat_require_token: false,
            allowed_origins: Vec::new(),
            max_body: 16 * 1024,
            http: HttpDeadlines::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            chat_port: 12345,
            http_port: 8080,
            https_port: 8443,
            tls: None,
            disable_https: false,
            disable_wss: false,
            database: "sotto.db".to_owned(),
            db_cache_mib: 32,
            db_pool_size: 8,
            html_dir: None,
            server_address: None,
            max_message: 64 * 1024,
            outbound_queue: 1024,
            outbound_queue_bytes: 1 << 20,
            write_timeout: Duration::from_secs(10),
            max_connections: 19_000,
            handshake_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(30),
            hub: HubConfig::default(),
            password: PasswordParams::default(),
            hash_workers: cores.saturating_sub(1).max(1),
            hash_queue: 1024,
            edge: EdgeConfig::default(),
            dtls: sotto_dtls::DtlsConfig::default(),
            dtls_port: DtlsPort::SameAsChat,
            metrics: MetricsConfig::default(),
            broker: BrokerConfig::default(),
        }
    }
}

impl Config {
    /// Ephemeral ports, the given database, and cheap Argon2 so tests that
    /// log in many users stay fast. Never use these costs in production.
    pub fn for_tests(database: impl Into<String>) -> Config {
        Config {
            chat_port: 0,
            http_port: 0,
            https_port: 0,
            database: database.into(),
            // Tests measure memory; their databases are small.
            db_cache_mib: 2,
            db_pool_size: 8,
            password: PasswordParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            hash_workers: 2,
            // Tests log in many users from one address at once; the tests
            // of the limits themselves set them back.
            edge: EdgeConfig {
                max_connections_per_ip: 0,
                unauthenticated_per_ip: 100_000,
                throttle: sotto_core::auth::throttle::ThrottleConfig {
                    per_ip_per_minute: None,
                    per_name_per_minute: None,
                },
                ..EdgeConfig::default()
            },
            // Tests send floods from one user; the tests of the send limits
            // set them back.
            hub: HubConfig {
                send_limits: sotto_core::hub::SendLimits::OFF,
                ..HubConfig::default()
            },
            // Not the chat port's number: parallel tests would race for it.
            dtls_port: DtlsPort::Port(0),
            ..Config::default()
        }
    }
}
