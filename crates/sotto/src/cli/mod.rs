//! Command line: idiomatic `--kebab-case` options with `SOTTO_*` variables,
//! plus QMessageServer's spellings so existing start scripts keep working.
//!
//! QMessageServer documents `-chatServerPort`, `-csp`, … with one dash
//! (its parser only took two). clap would read `-csp` as three short flags,
//! so [`normalize`] rewrites those spellings, with one dash or two, to the
//! canonical long options before clap sees them.

use sotto_core::auth::PasswordParams;
use sotto_core::auth::throttle::ThrottleConfig;
use sotto_core::hub::{HubConfig, SendLimits};
use sotto_server::config::Config;
use sotto_server::config::EdgeConfig;
use sotto_server::config::TlsFiles;
use sotto_server::config::{HttpDeadlines, MetricsConfig, Secret};
pub mod dtls;
pub mod file;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "sotto", version, about = "A secure real-time messaging server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when only options are given).
    Serve(Box<ServeArgs>),
    /// Load-test a running server and report throughput, latency and memory.
    Bench(sotto_bench::BenchArgs),
    /// Write a development TLS certificate and key.
    Cert(CertArgs),
    /// Manage DTLS pre-shared keys: add (prints the key once), list, revoke.
    Psk(crate::psk_cli::PskArgs),
    /// DTLS client: associations that ping a server (Qt's DTLS client example).
    DtlsClient(sotto_bench::dtls_client::DtlsClientArgs),
    /// Load-test a DTLS server: handshakes/s, acked datagrams/s, CPU and RSS.
    DtlsBench(sotto_bench::dtls::DtlsBenchArgs),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CertArgs {
    /// Make a self-signed certificate (the only kind this command makes).
    #[arg(long, required = true)]
    pub self_signed: bool,
    /// Host name or IP address the certificate is valid for (repeatable).
    #[arg(long = "host", required = true)]
    pub hosts: Vec<String>,
    /// Folder to write cert.pem and key.pem into (created if missing).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

impl CertArgs {
    /// Writes `cert.pem` and `key.pem` (the key readable by its owner only)
    /// and returns their paths.
    pub fn write(&self) -> Result<(PathBuf, PathBuf), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let (cert, key) =
            sotto_server::transport::tls::self_signed(&self.hosts).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&self.out)
            .map_err(|e| format!("cannot create {}: {e}", self.out.display()))?;
        let cert_path = self.out.join("cert.pem");
        let key_path = self.out.join("key.pem");
        std::fs::write(&cert_path, cert)
            .map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
        f.write_all(key.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
        Ok((cert_path, key_path))
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind; 0.0.0.0 (or ::) serves the LAN.
    #[arg(long, env = "SOTTO_LISTEN", default_value = "127.0.0.1")]
    pub listen: IpAddr,
    /// Chat WebSocket port (QMessageServer protocol). Alias: -chatServerPort, -csp, -cp.
    #[arg(long, env = "SOTTO_CHAT_PORT", default_value_t = 12345)]
    pub chat_port: u16,
    /// HTTP port (web UI, enums, health). Alias: -httpServerPort, -httpPort, -hp.
    #[arg(long, env = "SOTTO_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// HTTPS port (with --tls-cert/--tls-key). Alias: -httpsServerPort, -httpsPort, -hsp.
    #[arg(long, env = "SOTTO_HTTPS_PORT", default_value_t = 8443)]
    pub https_port: u16,
    /// Database: a SQLite path or sqlite: URL, or a postgres:// URL (one database several nodes can share).
    #[arg(long, env = "SOTTO_DATABASE", default_value = "sotto.db")]
    pub database: String,
    /// Broker to the other nodes sharing the database: a nats:// URL (several nodes); none for a single node.
    #[arg(long, env = "SOTTO_BROKER")]
    pub broker: Option<String>,
    /// NATS subject prefix: nodes of one cluster share it, another cluster on the same NATS uses another.
    #[arg(long, env = "SOTTO_BROKER_PREFIX", default_value = "sotto")]
    pub broker_prefix: String,
    /// Seconds without a heartbeat after which another node counts as dead and its users as offline.
    #[arg(long, env = "SOTTO_NODE_TIMEOUT_SECS", default_value_t = 10)]
    pub node_timeout_secs: u64,
    /// MiB of page cache for the database's message writer (more: faster sends on a large database).
    #[arg(long, env = "SOTTO_DB_CACHE_MIB", default_value_t = 32)]
    pub db_cache_mib: u32,
    /// PostgreSQL: connections per node for reads and account, session and key writes (the message writer has one more of its own); N nodes need N × (this + 1) below the server's max_connections.
    #[arg(long, env = "SOTTO_DB_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub db_pool_size: u32,
    /// Folder of the web UI [default: ./html when present, else a built-in page].
    #[arg(long, env = "SOTTO_HTML_DIR")]
    pub html_dir: Option<PathBuf>,
    /// Address written into %SERVER_ADDRESS% [default: the request's Host]. Alias: -serverIp, -ip.
    #[arg(long, env = "SOTTO_SERVER_ADDRESS")]
    pub server_address: Option<String>,
    /// TLS certificate chain (PEM). Alias: -sslCertificate, -sslcert.
    #[arg(long, env = "SOTTO_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC; RSA, ECDSA, Ed25519). Alias: -sslPrivateKey, -sslprvkey.
    #[arg(long, env = "SOTTO_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// With TLS: serve the UI over plain HTTP only, no HTTPS port. Alias: -disableHttps.
    #[arg(long, env = "SOTTO_DISABLE_HTTPS")]
    pub disable_https: bool,
    /// With TLS: keep the chat port plain WebSocket. Alias: -disableWss.
    #[arg(long, env = "SOTTO_DISABLE_WSS")]
    pub disable_wss: bool,
    /// TOML file of options (keys are the long option names); flags and environment win over it.
    #[arg(long, env = "SOTTO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective options (and where each came from) as TOML, then exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log lines as human-readable text (coloured on a terminal) or as JSON objects.
    #[arg(long, env = "SOTTO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, env = "SOTTO_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// Frames queued per connection before it is dropped as too slow.
    #[arg(long, env = "SOTTO_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,
    /// Bytes queued per connection before it is dropped as too slow (at least 64 KiB).
    #[arg(long, env = "SOTTO_OUTBOUND_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub outbound_queue_bytes: usize,
    /// Seconds one write to a WebSocket may take before the peer is dropped as too slow.
    #[arg(long, env = "SOTTO_WRITE_TIMEOUT_SECS", default_value_t = 10)]
    pub write_timeout_secs: u64,
    /// Open TCP connections at most, all ports, WebSockets included (keep below `ulimit -n`).
    #[arg(long, env = "SOTTO_MAX_CONNECTIONS", default_value_t = 19_000)]
    pub max_connections: usize,
    /// Seconds allowed for the WebSocket upgrade.
    #[arg(long, env = "SOTTO_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,
    /// Seconds of silence after which a connection is pinged; twice this and it is dropped.
    #[arg(long, env = "SOTTO_HEARTBEAT_SECS", default_value_t = 30)]
    pub heartbeat_secs: u64,
    /// Seconds a token may go unused before it is de-authorized (an open connection is use).
    #[arg(long, env = "SOTTO_SESSION_IDLE_SECS", default_value_t = 600)]
    pub session_idle_secs: u64,
    /// Seconds a token lives at most, however much it is used.
    #[arg(long, env = "SOTTO_SESSION_LIFETIME_SECS", default_value_t = 30 * 24 * 3600)]
    pub session_lifetime_secs: u64,
    /// Messages kept for one offline user.
    #[arg(long, env = "SOTTO_OFFLINE_QUEUE_MAX", default_value_t = 1000)]
    pub offline_queue_max: u32,
    /// Messages per second one user may send, on average, all protocols together; 0 = unlimited.
    #[arg(long, env = "SOTTO_SEND_RATE_PER_USER", default_value_t = 20)]
    pub send_rate_per_user: u32,
    /// Messages one user may send at once before --send-rate-per-user applies (at least 1).
    #[arg(long, env = "SOTTO_SEND_BURST_PER_USER", default_value_t = 100)]
    pub send_burst_per_user: u32,
    /// Message body bytes one user may send per minute (also allowed at once); 0 = unlimited.
    #[arg(long, env = "SOTTO_SEND_BYTES_PER_MINUTE", default_value_t = 16 * 1024 * 1024)]
    pub send_bytes_per_minute: u32,
    /// Milliseconds over which presence changes are merged into one user-list broadcast.
    #[arg(long, env = "SOTTO_PRESENCE_INTERVAL_MS", default_value_t = 250)]
    pub presence_interval_ms: u64,
    /// Most entries in one compat user list.
    #[arg(long, env = "SOTTO_USER_LIST_MAX", default_value_t = 1000)]
    pub user_list_max: usize,
    /// End-to-end devices (browsers) one user may register; more are refused with 409 too_many_devices.
    #[arg(long, env = "SOTTO_MAX_DEVICES_PER_USER", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_devices_per_user: u32,
    /// Days a stored message is kept in conversation history.
    #[arg(long, env = "SOTTO_HISTORY_RETENTION_DAYS", default_value_t = 90)]
    pub history_retention_days: u64,
    /// Open TCP connections per client address, all ports, WebSockets included (IPv6: per /64); 0 = no limit.
    #[arg(long, env = "SOTTO_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: u32,
    /// Chat-port sockets not yet logged in, per client address.
    #[arg(long, env = "SOTTO_MAX_UNAUTHENTICATED_PER_IP", default_value_t = 32)]
    pub max_unauthenticated_per_ip: u32,
    /// Chat-port sockets not yet logged in, in total.
    #[arg(long, env = "SOTTO_MAX_UNAUTHENTICATED", default_value_t = 2048)]
    pub max_unauthenticated: usize,
    /// Seconds a chat-port socket has to log in or authorize before it is closed.
    #[arg(long, env = "SOTTO_LOGIN_DEADLINE_SECS", default_value_t = 10)]
    pub login_deadline_secs: u64,
    /// Login/register attempts per minute per client address; 0 = unlimited.
    #[arg(long, env = "SOTTO_LOGIN_RATE_PER_IP", default_value_t = 60)]
    pub login_rate_per_ip: u32,
    /// Login/register attempts per minute per account name; 0 = unlimited.
    #[arg(long, env = "SOTTO_LOGIN_RATE_PER_NAME", default_value_t = 10)]
    pub login_rate_per_name: u32,
    /// Make the chat port demand a token on the upgrade request, like /ws.
    #[arg(long, env = "SOTTO_CHAT_REQUIRE_TOKEN")]
    pub chat_require_token: bool,
    /// Origin allowed to open /ws (repeatable; `*` allows any) [default: the server's own].
    #[arg(
        long = "allowed-origin",
        env = "SOTTO_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Largest JSON body accepted by the account API, in bytes.
    #[arg(long, env = "SOTTO_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds for a request's headers to arrive; also the most a kept-alive HTTP connection idles between requests, and the TLS handshake's limit.
    #[arg(long, env = "SOTTO_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds for a whole request body to arrive after its headers; later is 408 and the connection closes.
    #[arg(long, env = "SOTTO_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub body_timeout_secs: u64,
    /// Seconds an HTTP response may wait on a client that takes none of it before the connection is closed.
    #[arg(long, env = "SOTTO_RESPONSE_STALL_SECS", default_value_t = 10)]
    pub response_stall_secs: u64,
    /// Serve /metrics only on this ADDR:PORT (e.g. 127.0.0.1:9100); the HTTP port then answers 404 for it [default: on the HTTP port].
    #[arg(long, env = "SOTTO_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Require `Authorization: Bearer TOKEN` for /metrics (prefer the environment variable or the config file: arguments show in `ps`).
    #[arg(long, env = "SOTTO_METRICS_TOKEN")]
    pub metrics_token: Option<String>,
    /// Argon2id memory per hash, KiB.
    #[arg(long, env = "SOTTO_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,
    /// Argon2id passes.
    #[arg(long, env = "SOTTO_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    #[arg(long, env = "SOTTO_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// Password hashes computed at once [default: cores - 1, at least 1].
    #[arg(long, env = "SOTTO_HASH_WORKERS")]
    pub hash_workers: Option<usize>,
    /// Logins waiting for a hashing slot before new ones are told the server is busy.
    #[arg(long, env = "SOTTO_HASH_QUEUE", default_value_t = 1024)]
    pub hash_queue: usize,
    #[command(flatten)]
    pub dtls: crate::cli::dtls::DtlsServeArgs,
}

impl ServeArgs {
    /// The HTTP deadlines; at least a second each, since 0 would close
    /// every connection at once rather than mean "none".
    fn http_deadlines(&self) -> HttpDeadlines {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        HttpDeadlines {
            header: secs(self.header_timeout_secs),
            body: secs(self.body_timeout_secs),
            write_stall: secs(self.response_stall_secs),
        }
    }

    /// Turns options into a [`Config`], refusing what this build cannot do.
    pub fn into_config(self) -> Result<Config, String> {
        let tls = match (self.tls_cert.clone(), self.tls_key.clone()) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
            (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
        };
        if tls.is_none() && (self.disable_https || self.disable_wss) {
            tracing::warn!(
                "--disable-https/--disable-wss have no effect without --tls-cert/--tls-key"
            );
        }
        if self.max_message_bytes < 1024 {
            return Err("--max-message-bytes must be at least 1024".into());
        }
        if self.session_idle_secs == 0 || self.session_lifetime_secs == 0 {
            return Err("session timeouts must be at least one second".into());
        }
        if self
            .metrics_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err("--metrics-token must not be empty".into());
        }
        let defaults = Config::default();
        let http = self.http_deadlines();
        let metrics = MetricsConfig {
            listen: self.metrics_listen,
            token: self.metrics_token.map(Secret),
        };
        let dtls_port = self.dtls.port();
        let dtls = self.dtls.into_config(self.listen)?;
        Ok(Config {
            listen: self.listen,
            chat_port: self.chat_port,
            http_port: self.http_port,
            https_port: self.https_port,
            tls,
            disable_https: self.disable_https,
            disable_wss: self.disable_wss,
            database: self.database,
            db_cache_mib: self.db_cache_mib,
            db_pool_size: self.db_pool_size,
            html_dir: self.html_dir,
            server_address: self.server_address,
            max_message: self.max_message_bytes,
            outbound_queue: self.outbound_queue.max(16),
            outbound_queue_bytes: self.outbound_queue_bytes.max(64 * 1024),
            write_timeout: Duration::from_secs(self.write_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs.max(1)),
            heartbeat: Duration::from_secs(self.heartbeat_secs.max(1)),
            hub: HubConfig {
                session_idle: Duration::from_secs(self.session_idle_secs),
                session_lifetime: Duration::from_secs(self.session_lifetime_secs),
                offline_queue_max: self.offline_queue_max,
                presence_interval: Duration::from_millis(self.presence_interval_ms),
                user_list_max: self.user_list_max,
                max_devices_per_user: self.max_devices_per_user,
                history_retention: Duration::from_secs(
                    self.history_retention_days.max(1).saturating_mul(24 * 3600),
                ),
                send_limits: SendLimits {
                    per_second: NonZeroU32::new(self.send_rate_per_user),
                    burst: NonZeroU32::new(self.send_burst_per_user).unwrap_or(NonZeroU32::MIN),
                    bytes_per_minute: NonZeroU32::new(self.send_bytes_per_minute),
                },
                node_timeout: Duration::from_secs(self.node_timeout_secs.max(1)),
                node_heartbeat: node_heartbeat(self.node_timeout_secs.max(1)),
                ..HubConfig::default()
            },
            broker: sotto_server::config::BrokerConfig {
                url: self.broker,
                prefix: self.broker_prefix,
            },
            password: PasswordParams {
                memory_kib: self.argon2_memory_kib,
                iterations: self.argon2_iterations,
                parallelism: self.argon2_parallelism,
            },
            hash_workers: self.hash_workers.unwrap_or(defaults.hash_workers).max(1),
            hash_queue: self.hash_queue.max(1),
            edge: EdgeConfig {
                max_connections_per_ip: self.max_connections_per_ip,
                unauthenticated_per_ip: self.max_unauthenticated_per_ip,
                unauthenticated_total: self.max_unauthenticated.max(1),
                login_deadline: Duration::from_secs(self.login_deadline_secs.max(1)),
                throttle: ThrottleConfig {
                    per_ip_per_minute: NonZeroU32::new(self.login_rate_per_ip),
                    per_name_per_minute: NonZeroU32::new(self.login_rate_per_name),
                },
                chat_require_token: self.chat_require_token,
                allowed_origins: self.allowed_origins,
                max_body: self.max_body_bytes.max(1024),
                http,
            },
            dtls,
            dtls_port,
            metrics,
        })
    }
}

/// Why the command line could not be parsed.
#[derive(Debug)]
pub enum ParseError {
    Clap(clap::Error),
    /// The config file: one line naming it and the problem.
    File(String),
}

/// Parses already-[`normalize`]d arguments, applying the config file.
/// Returns the matches too, for `--print-config`.
pub fn parse(args: Vec<OsString>) -> Result<(Cli, ArgMatches), ParseError> {
    let mut cmd = Cli::command();
    if let Some(path) = file::path(&args) {
        cmd = file::apply(cmd, &path).map_err(ParseError::File)?;
    }
    let matches = cmd.try_get_matches_from(args).map_err(ParseError::Clap)?;
    let cli = Cli::from_arg_matches(&matches).map_err(ParseError::Clap)?;
    Ok((cli, matches))
}

/// The effective `serve` options as TOML, for `--print-config`.
pub fn effective_config(matches: &ArgMatches) -> String {
    let cmd = Cli::command();
    match (
        cmd.find_subcommand("serve"),
        matches.subcommand_matches("serve"),
    ) {
        (Some(serve), Some(m)) => file::describe(serve, m),
        _ => String::new(),
    }
}

/// QMessageServer's option spellings and the canonical option each means.
const QT_ALIASES: &[(&[&str], &str)] = &[
    (&["chatServerPort", "csp", "cp"], "--chat-port"),
    (&["httpServerPort", "httpPort", "hp"], "--http-port"),
    (&["httpsServerPort", "httpsPort", "hsp"], "--https-port"),
    (&["serverIp", "ip"], "--server-address"),
    (&["sslCertificate", "sslcert"], "--tls-cert"),
    (&["sslPrivateKey", "sslprvkey"], "--tls-key"),
    (&["disableHttps"], "--disable-https"),
    (&["disableWss"], "--disable-wss"),
];

/// Rewrites QMessageServer-style options to canonical ones and, when the
/// first argument is an option rather than a subcommand, inserts `serve`
/// so `sotto -csp 12345` works as QMessageServer's command line did.
pub fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().map(rewrite_alias).collect();
    let starts_with_option = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with('-') && !matches!(a, "-h" | "--help" | "-V" | "--version"));
    if starts_with_option {
        args.insert(1, OsString::from("serve"));
    }
    args
}

fn rewrite_alias(arg: OsString) -> OsString {
    let Some(s) = arg.to_str() else { return arg };
    let Some(bare) = s.strip_prefix("--").or_else(|| s.strip_prefix('-')) else {
        return arg;
    };
    let (name, value) = match bare.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (bare, None),
    };
    let canonical = QT_ALIASES
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, c)| *c);
    match (canonical, value) {
        (Some(c), Some(v)) => OsString::from(format!("{c}={v}")),
        (Some(c), None) => OsString::from(c),
        (None, _) => arg,
    }
}

/// A fifth of the node timeout, at most 2 s: a node is declared dead only
/// after several heartbeats were missed.
fn node_heartbeat(timeout_secs: u64) -> Duration {
    (Duration::from_secs(timeout_secs) / 5)
        .clamp(Duration::from_millis(100), Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_server::config::DtlsPort;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn qt_spellings_map_to_canonical_options() {
        assert_eq!(
            norm(&[
                "sotto",
                "serve",
                "-csp",
                "1",
                "--httpPort",
                "2",
                "-ip=example.org"
            ]),
            [
                "sotto",
                "serve",
                "--chat-port",
                "1",
                "--http-port",
                "2",
                "--server-address=example.org"
            ]
        );
        assert_eq!(
            norm(&["sotto", "-chatServerPort", "5"]),
            ["sotto", "serve", "--chat-port", "5"]
        );
        assert_eq!(norm(&["sotto", "--help"]), ["sotto", "--help"]);
        assert_eq!(
            norm(&["sotto", "bench", "--users", "3"]),
            ["sotto", "bench", "--users", "3"]
        );
    }

    #[test]
    fn parsed_options_become_config() {
        let cli = Cli::try_parse_from(norm(&[
            "sotto",
            "-cp",
            "7",
            "-hp",
            "8",
            "--session-idle-secs",
            "3",
            "--body-timeout-secs",
            "4",
            "--metrics-listen",
            "127.0.0.1:9100",
        ]))
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let config = args.into_config().unwrap();
        assert_eq!((config.chat_port, config.http_port), (7, 8));
        assert_eq!(config.dtls_port, DtlsPort::SameAsChat);
        assert_eq!(config.hub.session_idle, Duration::from_secs(3));
        assert_eq!(config.edge.http.body, Duration::from_secs(4));
        assert_eq!(config.edge.http.header, Duration::from_secs(10));
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(config.metrics.token, None);
        assert_eq!(config.hub.send_limits, SendLimits::default());
    }

    #[test]
    fn send_limits_turn_off_with_zero() {
        let cli = Cli::try_parse_from(norm(&[
            "sotto",
            "--send-rate-per-user=0",
            "--send-bytes-per-minute",
            "0",
        ]))
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let config = args.into_config().unwrap();
        assert_eq!(config.hub.send_limits.per_second, None);
        assert_eq!(config.hub.send_limits.bytes_per_minute, None);
    }

    #[test]
    fn tls_options_come_in_pairs() {
        let cli = Cli::try_parse_from(norm(&["sotto", "-sslcert", "c.pem"])).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            args.into_config().unwrap_err(),
            "--tls-cert needs --tls-key"
        );
        let cli = Cli::try_parse_from(norm(&[
            "sotto",
            "-sslcert",
            "c.pem",
            "-sslprvkey",
            "k.pem",
            "-hsp",
            "9443",
            "-disableWss",
        ]))
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let config = args.into_config().unwrap();
        assert_eq!(config.tls.unwrap().key, std::path::PathBuf::from("k.pem"));
        assert_eq!(config.https_port, 9443);
        assert!(config.disable_wss && !config.disable_https);
    }
}
