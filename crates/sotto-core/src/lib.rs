//! The core of sotto: accounts, the hub (sessions, routing, presence,
//! expiry) and the ports through which it reaches durable state.
//!
//! Nothing here touches a socket, SQL, a command line or OpenSSL: the
//! edges (`sotto-server`) turn bytes into the protocol values of
//! `sotto-proto` and hand them to the [`hub::Hub`], and encode the typed
//! [`hub::Event`]s it queues for each connection; the stores
//! (`sotto-store-sqlite`) implement the traits of [`ports`]. Time comes from
//! a [`clock::Clock`] the caller provides, so tests control it.

pub mod auth;
pub mod broker;
pub mod clock;
pub mod hub;
pub mod metrics;
pub mod ports;
/// Device keys: the PSK port and its types, at their historical path.
pub use ports::psk;
pub mod untrusted;
