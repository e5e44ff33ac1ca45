//! sotto: a secure real-time messaging server.
//!
//! The way of one message, top to bottom: `transport` (socket → frames) →
//! `protocol` (frames → typed requests) → `hub` (sessions, routing, offline
//! queue) → `store` (durable state) → back out through the recipient's
//! outbound queue. `auth` holds the account rules; `server` wires it all;
//! `cli` and `bench` serve the binary.

pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod dtls;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod store;
pub mod transport;

pub use config::Config;
pub use server::Server;
