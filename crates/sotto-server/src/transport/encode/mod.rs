//! The WebSocket edges' encoders: the hub's typed events as the bytes of
//! each protocol, with each protocol's one mapping from a hub failure to
//! its error. Events shared by many connections carry a per-protocol
//! cache ([`sotto_core::hub::event::Shared`]), so the first connection's
//! writer encodes and the others reuse its bytes.

pub(crate) mod compat;
pub(crate) mod native;

use bytes::Bytes;
use sotto_core::hub::Event;

/// Turns one event into one text frame; `None` for an event the protocol
/// has no frame for (the hub only sends those to other protocols).
pub(crate) type Encoder = fn(&Event) -> Option<Bytes>;

/// A JSON string as frame bytes. Shrunk to fit first: `Bytes` takes an
/// exactly-sized buffer over as it is, but wraps one with spare capacity
/// in an extra allocation, and most frames go to one connection.
fn bytes(json: String) -> Bytes {
    Bytes::from(json.into_bytes().into_boxed_slice())
}
