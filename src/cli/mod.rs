//! Command line: idiomatic `--kebab-case` options with `SOTTO_*` variables,
//! plus QMessageServer's spellings so existing start scripts keep working.
//!
//! QMessageServer documents `-chatServerPort`, `-csp`, … with one dash
//! (its parser only took two). clap would read `-csp` as three short flags,
//! so [`normalize`] rewrites those spellings, with one dash or two, to the
//! canonical long options before clap sees them.

use crate::auth::PasswordParams;
use crate::config::Config;
use crate::hub::HubConfig;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::net::IpAddr;
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
    Bench(crate::bench::BenchArgs),
    /// Manage DTLS pre-shared keys: add (prints the key once), list, revoke.
    Psk(crate::dtls::psk_cli::PskArgs),
    /// DTLS client: associations that ping a server (Qt's DTLS client example).
    DtlsClient(crate::dtls::client_cli::DtlsClientArgs),
    /// Load-test a DTLS server: handshakes/s, acked datagrams/s, CPU and RSS.
    DtlsBench(crate::dtls::bench::DtlsBenchArgs),
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
    /// HTTPS port; has no effect until TLS is supported. Alias: -httpsServerPort, -httpsPort, -hsp.
    #[arg(long, env = "SOTTO_HTTPS_PORT")]
    pub https_port: Option<u16>,
    /// SQLite database: a path or a sqlite: URL.
    #[arg(long, env = "SOTTO_DATABASE", default_value = "sotto.db")]
    pub database: String,
    /// Folder of the web UI [default: ./html when present, else a built-in page].
    #[arg(long, env = "SOTTO_HTML_DIR")]
    pub html_dir: Option<PathBuf>,
    /// Address written into %SERVER_ADDRESS% [default: the request's Host]. Alias: -serverIp, -ip.
    #[arg(long, env = "SOTTO_SERVER_ADDRESS")]
    pub server_address: Option<String>,
    /// TLS certificate (PEM): not supported yet. Alias: -sslCertificate, -sslcert.
    #[arg(long, env = "SOTTO_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM): not supported yet. Alias: -sslPrivateKey, -sslprvkey.
    #[arg(long, env = "SOTTO_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Do not serve HTTPS (no effect until TLS is supported). Alias: -disableHttps.
    #[arg(long)]
    pub disable_https: bool,
    /// Do not use WSS on the chat port (no effect until TLS is supported). Alias: -disableWss.
    #[arg(long)]
    pub disable_wss: bool,
    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, env = "SOTTO_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// Frames queued per connection before it is dropped as too slow.
    #[arg(long, env = "SOTTO_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,
    /// Open chat connections at most (keep below `ulimit -n`).
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
    /// Milliseconds over which presence changes are merged into one user-list broadcast.
    #[arg(long, env = "SOTTO_PRESENCE_INTERVAL_MS", default_value_t = 250)]
    pub presence_interval_ms: u64,
    /// Most entries in one compat user list.
    #[arg(long, env = "SOTTO_USER_LIST_MAX", default_value_t = 1000)]
    pub user_list_max: usize,
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
    pub dtls: crate::dtls::args::DtlsServeArgs,
}

impl ServeArgs {
    /// Turns options into a [`Config`], refusing what this build cannot do.
    pub fn into_config(self) -> Result<Config, String> {
        if let Some(p) = self.tls_cert.as_ref().or(self.tls_key.as_ref()) {
            return Err(format!(
                "TLS is not supported yet (given {}); run without --tls-cert/--tls-key",
                p.display()
            ));
        }
        if self.https_port.is_some() || self.disable_https || self.disable_wss {
            tracing::warn!("HTTPS/WSS options have no effect until TLS is supported");
        }
        if self.max_message_bytes < 1024 {
            return Err("--max-message-bytes must be at least 1024".into());
        }
        if self.session_idle_secs == 0 || self.session_lifetime_secs == 0 {
            return Err("session timeouts must be at least one second".into());
        }
        let defaults = Config::default();
        let dtls = self.dtls.into_config(self.listen)?;
        Ok(Config {
            listen: self.listen,
            chat_port: self.chat_port,
            http_port: self.http_port,
            database: self.database,
            html_dir: self.html_dir,
            server_address: self.server_address,
            max_message: self.max_message_bytes,
            outbound_queue: self.outbound_queue.max(16),
            max_connections: self.max_connections.max(1),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs.max(1)),
            heartbeat: Duration::from_secs(self.heartbeat_secs.max(1)),
            hub: HubConfig {
                session_idle: Duration::from_secs(self.session_idle_secs),
                session_lifetime: Duration::from_secs(self.session_lifetime_secs),
                offline_queue_max: self.offline_queue_max,
                presence_interval: Duration::from_millis(self.presence_interval_ms),
                user_list_max: self.user_list_max,
                ..HubConfig::default()
            },
            password: PasswordParams {
                memory_kib: self.argon2_memory_kib,
                iterations: self.argon2_iterations,
                parallelism: self.argon2_parallelism,
            },
            hash_workers: self.hash_workers.unwrap_or(defaults.hash_workers).max(1),
            hash_queue: self.hash_queue.max(1),
            dtls,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

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
        ]))
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let config = args.into_config().unwrap();
        assert_eq!((config.chat_port, config.http_port), (7, 8));
        assert_eq!(config.hub.session_idle, Duration::from_secs(3));
    }

    #[test]
    fn tls_options_are_refused_for_now() {
        let cli = Cli::try_parse_from(norm(&["sotto", "-sslcert", "c.pem"])).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert!(args.into_config().unwrap_err().contains("not supported"));
    }
}
