//! Everything OpenSSL-specific, including all of the `unsafe`, behind a
//! small safe interface: build a server or client context, run the cookie
//! exchange for an unknown peer, and drive one association's handshake,
//! reads, writes, timers and close_notify over in-memory datagrams.
//!
//! Nothing here touches a socket or a clock: the caller feeds datagrams in,
//! takes datagrams out, and asks when the retransmission timer is due.

mod conn;
mod context;
mod ffi;
mod pipe;

pub use conn::{Conn, Failure, Listener, Offer, Progress, Received};
pub use context::{DEFAULT_CIPHERS, PskOutcome, client, server};
pub use ffi::TimeoutOutcome;

/// OpenSSL refused a configuration or could not allocate.
#[derive(Debug, Clone, thiserror::Error)]
#[error("OpenSSL: {0}")]
pub struct TlsError(pub String);

impl From<openssl::error::ErrorStack> for TlsError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        TlsError(e.to_string())
    }
}
