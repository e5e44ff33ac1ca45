//! DTLS 1.2 with pre-shared keys for devices: the UDP endpoint inside
//! `sotto serve`, `sotto dtls-client`, `sotto psk` and the DTLS benchmark.
//!
//! The way of one datagram: socket → [`worker`] (one task, one socket,
//! every session) → [`record`] triage → cookie exchange or session
//! ([`ossl`], the only OpenSSL code) → plaintext → [`device`] meaning →
//! reply, or the [`bridge`] into the hub → and back out through the
//! session. See docs/DTLS.md for operating it.

pub mod args;
pub mod bench;
mod bench_probe;
pub mod bridge;
pub mod client;
pub mod client_cli;
pub mod config;
pub mod cookie;
mod datagram;
pub mod device;
pub mod endpoint;
pub mod hub_bridge;
mod keys;
pub mod ossl;
pub mod psk;
pub mod psk_cli;
pub mod psk_store;
pub mod record;
pub mod stats;
pub mod table;
mod worker;

pub use bridge::{
    BridgeError, DeliverError, DeviceBridge, DeviceMessage, DeviceOutbox, DeviceSessionId,
};
pub use config::{DtlsConfig, Limits};
pub use endpoint::{DtlsEndpoint, DtlsError, bind, start_with_store};
pub use psk::{KeyRing, PskEntry, PskIdentity, PskKey};
pub use psk_store::{PskStore, SqlitePskStore};
pub use stats::StatsSnapshot;
