//! The DTLS options of `sotto serve`, flattened into its arguments so the
//! CLI module only gains one line.

use clap::Args;
use sotto_dtls::config::{DtlsConfig, Limits};
use sotto_server::config::DtlsPort;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct DtlsServeArgs {
    /// UDP port for DTLS device sessions (both IP versions when --listen is ::) [default: the chat port's number].
    #[arg(long, env = "SOTTO_DTLS_PORT")]
    pub dtls_port: Option<u16>,
    /// Do not serve DTLS.
    #[arg(long)]
    pub disable_dtls: bool,
    /// PSK identity hint sent to DTLS clients.
    #[arg(long, env = "SOTTO_DTLS_IDENTITY_HINT", default_value = "sotto")]
    pub dtls_identity_hint: String,
    /// OpenSSL cipher list for DTLS (PSK suites only).
    #[arg(long, env = "SOTTO_DTLS_CIPHERS", default_value = sotto_dtls::ossl::DEFAULT_CIPHERS)]
    pub dtls_ciphers: String,
    /// INSECURE: accept Qt's demo key 1a2b3c4d5e6f for any identity (to try the examples).
    #[arg(long)]
    pub dtls_demo_psk: bool,
    /// Largest plaintext in one DTLS datagram, in bytes.
    #[arg(long, env = "SOTTO_DTLS_MAX_PAYLOAD", default_value_t = 1200)]
    pub dtls_max_payload: usize,
    /// DTLS sessions at once (handshaking or established).
    #[arg(long, env = "SOTTO_DTLS_MAX_SESSIONS", default_value_t = 20_000)]
    pub dtls_max_sessions: usize,
    /// DTLS handshakes in progress at once.
    #[arg(long, env = "SOTTO_DTLS_MAX_HANDSHAKES", default_value_t = 4_096)]
    pub dtls_max_handshakes: usize,
    /// DTLS sessions from one IP address.
    #[arg(long, env = "SOTTO_DTLS_MAX_PER_IP", default_value_t = 1_024)]
    pub dtls_max_per_ip: usize,
    /// Seconds allowed for a DTLS handshake.
    #[arg(long, env = "SOTTO_DTLS_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub dtls_handshake_timeout_secs: u64,
    /// Seconds of silence before a DTLS session is closed.
    #[arg(long, env = "SOTTO_DTLS_IDLE_SECS", default_value_t = 300)]
    pub dtls_idle_secs: u64,
}

impl DtlsServeArgs {
    /// Without `--dtls-port`, DTLS follows the chat port's number, so two
    /// servers with different chat ports do not both claim UDP 12345.
    pub fn port(&self) -> DtlsPort {
        self.dtls_port.map_or(DtlsPort::SameAsChat, DtlsPort::Port)
    }

    pub fn into_config(self, listen: IpAddr) -> Result<DtlsConfig, String> {
        if !(256..=16_000).contains(&self.dtls_max_payload) {
            return Err("--dtls-max-payload must be between 256 and 16000".into());
        }
        if self.dtls_handshake_timeout_secs == 0 || self.dtls_idle_secs == 0 {
            return Err("DTLS timeouts must be at least one second".into());
        }
        // Deadlines are instants; a century-long timeout would overflow one.
        const YEAR: u64 = 365 * 24 * 3600;
        if self.dtls_handshake_timeout_secs > YEAR || self.dtls_idle_secs > YEAR {
            return Err("DTLS timeouts must be at most a year".into());
        }
        Ok(DtlsConfig {
            enabled: !self.disable_dtls,
            listen,
            identity_hint: self.dtls_identity_hint,
            ciphers: self.dtls_ciphers,
            demo_psk: self.dtls_demo_psk,
            max_payload: self.dtls_max_payload,
            limits: Limits {
                max_sessions: self.dtls_max_sessions.max(1),
                max_handshakes: self.dtls_max_handshakes.max(1),
                max_per_ip: self.dtls_max_per_ip.max(1),
                handshake_timeout: Duration::from_secs(self.dtls_handshake_timeout_secs),
                idle_timeout: Duration::from_secs(self.dtls_idle_secs),
            },
            ..DtlsConfig::default()
        })
    }
}
