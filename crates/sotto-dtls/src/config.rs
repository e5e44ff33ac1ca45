//! The DTLS endpoint's settings; each field says its default and why.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Limits on per-peer state. Every one is a named option because each
/// protects a different resource: memory (sessions), CPU (handshakes), one
/// NAT or attacker hogging the table (per IP), and half-open or silent
/// peers (the two timeouts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Sessions at once, handshaking or established (default 20,000).
    pub max_sessions: usize,
    /// Handshakes in progress at once (default 4,096).
    pub max_handshakes: usize,
    /// Sessions from one IP address (default 1,024; devices behind one NAT
    /// share an address).
    pub max_per_ip: usize,
    /// Time from a verified ClientHello to a finished handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// Silence after which an established session is dropped (default 300 s).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 20_000,
            max_handshakes: 4_096,
            max_per_ip: 1_024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DtlsConfig {
    /// Serve DTLS at all (default true; `--disable-dtls`).
    pub enabled: bool,
    /// Address to bind (default 127.0.0.1; `::` takes IPv4 and IPv6).
    pub listen: IpAddr,
    /// UDP port (default 12345, the chat port's number); 0 picks one.
    pub port: u16,
    /// PSK identity hint sent to clients (default `sotto`).
    pub identity_hint: String,
    /// OpenSSL cipher list (default: [`DEFAULT_CIPHERS`](super::ossl::DEFAULT_CIPHERS)).
    pub ciphers: String,
    /// Accept the Qt examples' key `1a2b3c4d5e6f` for any identity not in
    /// the store (default false; for trying the examples only).
    pub demo_psk: bool,
    /// Largest plaintext in one datagram either way (default 1200 bytes, so
    /// a record fits a 1280-byte IPv6 path). Larger device datagrams and
    /// hub messages are refused with an error datagram.
    pub max_payload: usize,
    pub limits: Limits,
    /// How often the cookie secret changes (default 60 s; the previous
    /// secret stays valid for one more period).
    pub cookie_rotation: Duration,
    /// How often the key ring is refreshed from the store, picking up
    /// `sotto psk add`/`revoke` run elsewhere (default 2 s).
    pub psk_refresh: Duration,
    /// Device messages waiting for the bridge at once, over all sessions
    /// (default 1,024); beyond it devices are told the server is busy.
    pub bridge_in_flight: usize,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        DtlsConfig {
            enabled: true,
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 12345,
            identity_hint: "sotto".to_owned(),
            ciphers: super::ossl::DEFAULT_CIPHERS.to_owned(),
            demo_psk: false,
            max_payload: 1200,
            limits: Limits::default(),
            cookie_rotation: Duration::from_secs(60),
            psk_refresh: Duration::from_secs(2),
            bridge_in_flight: 1024,
        }
    }
}

impl DtlsConfig {
    /// The DTLS MTU handed to OpenSSL: the payload plus room for the record
    /// header, explicit nonce and tag of any suite we offer (at most 37
    /// bytes), rounded up.
    pub fn mtu(&self) -> u32 {
        u32::try_from(self.max_payload + 48).unwrap_or(u32::MAX)
    }
}
