//! One sotto node: the edges and their wiring.
//!
//! The way of one message, top to bottom: [`transport`] (socket → frames)
//! → `sotto_proto` (frames → typed requests) → `sotto_core`'s hub
//! (sessions, routing, offline queue) → the store ports → back out through
//! the recipient's outbound queue and its edge's encoder. [`server`] wires
//! it all; [`device_bridge`] joins DTLS devices to the hub.

pub mod config;
pub mod device_bridge;
pub mod server;
pub mod store;
pub mod transport;

pub use config::Config;
pub use server::Server;
pub use store::open_store;
