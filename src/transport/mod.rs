//! The edge: one module per wire. Transports turn bytes into protocol
//! values and back, enforce sizes and deadlines, and know nothing of
//! routing, which is the hub's.

pub mod http;
pub mod ws;
