//! The resolved configuration the server runs with. The CLI (flags and
//! `SOTTO_*` variables) produces it; tests build it directly with
//! [`Config::for_tests`]. Each field says its default.

use crate::auth::PasswordParams;
use crate::hub::HubConfig;
use std::net::{IpAddr, Ipv4Addr};
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
    /// Database URL or path (default `sotto.db` in the working directory).
    pub database: String,
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
    /// Open chat connections at most (default 19,000; mind `ulimit -n`).
    pub max_connections: usize,
    /// Time allowed for the WebSocket upgrade (default 10 s).
    pub handshake_timeout: Duration,
    /// Silence after which a connection is pinged; twice this and it is
    /// dropped (default 30 s).
    pub heartbeat: Duration,
    /// Sessions, offline queue and presence settings.
    pub hub: HubConfig,
    /// Argon2id costs.
    pub password: PasswordParams,
    /// Password hashes computed at once (default: cores − 1, at least 1, so
    /// routing keeps a core during a login storm).
    pub hash_workers: usize,
    /// Logins waiting for a hashing slot before new ones get "busy"
    /// (default 1024).
    pub hash_queue: usize,
    /// The DTLS device endpoint (default: on, UDP 12345).
    pub dtls: crate::dtls::DtlsConfig,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            chat_port: 12345,
            http_port: 8080,
            database: "sotto.db".to_owned(),
            html_dir: None,
            server_address: None,
            max_message: 64 * 1024,
            outbound_queue: 1024,
            max_connections: 19_000,
            handshake_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(30),
            hub: HubConfig::default(),
            password: PasswordParams::default(),
            hash_workers: cores.saturating_sub(1).max(1),
            hash_queue: 1024,
            dtls: crate::dtls::DtlsConfig::default(),
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
            database: database.into(),
            password: PasswordParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            hash_workers: 2,
            dtls: crate::dtls::DtlsConfig {
                port: 0,
                ..crate::dtls::DtlsConfig::default()
            },
            ..Config::default()
        }
    }
}
