//! DTLS 1.2 with pre-shared keys for devices: the UDP endpoint inside
//! `sotto serve` and the client behind `sotto dtls-client`.
//!
//! The way of one datagram: socket → [`worker`] (one task, one socket,
//! every session) → [`record`] triage → cookie exchange or session
//! ([`ossl`], the only OpenSSL code) → plaintext → [`device`] meaning →
//! reply, or the [`bridge`] into the hub → and back out through the
//! session. See docs/DTLS.md for operating it.

pub mod bridge;
pub mod client;
pub mod config;
pub mod cookie;
mod datagram;
pub mod device;
pub mod endpoint;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod keyring;
mod keys;
mod logsafe;
pub mod ossl;
mod reconnect;
pub mod record;
pub mod stats;
pub mod table;
mod worker;

pub use bridge::{
    BridgeError, DeliverError, DeviceBridge, DeviceMessage, DeviceOutbox, DeviceSessionId,
};
pub use config::{DtlsConfig, Limits};
pub use endpoint::{DtlsEndpoint, DtlsError, bind};
pub use keyring::KeyRing;
pub use sotto_core::psk::{PskEntry, PskIdentity, PskKey, PskStore};
pub use stats::StatsSnapshot;
