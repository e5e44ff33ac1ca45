//! The crate-private readers of untrusted datagrams, for the fuzz targets
//! in `fuzz/` (feature `fuzzing`, off in every real build). Thin wrappers
//! only: the fuzzers must exercise exactly the code the worker runs, and
//! the normal API stays as narrow as it was.

use crate::device::{self, Meaning};
use crate::record::{self, Unsafe};

pub use crate::record::{Shape, shape};

/// [`record::is_client_hello`]: what a stranger's datagram must be.
pub fn is_client_hello(datagram: &[u8]) -> bool {
    record::is_client_hello(datagram)
}

/// [`record::client_random`]: the ClientHello's random, if it has one.
pub fn client_random(datagram: &[u8]) -> Option<[u8; 32]> {
    record::client_random(datagram)
}

/// [`record::is_handshake`]: whether a datagram goes to a pending handshake.
pub fn is_handshake(datagram: &[u8]) -> bool {
    record::is_handshake(datagram)
}

/// [`record::screen`], with the refusal named by a string.
pub fn screen(datagram: &[u8], sealed_minimum: usize) -> Result<(), &'static str> {
    record::screen(datagram, sealed_minimum).map_err(|why| match why {
        Unsafe::Malformed => "malformed",
        Unsafe::UnknownType => "unknown type",
        Unsafe::BadLength => "bad length",
        Unsafe::WrongEpoch => "wrong epoch",
    })
}

/// [`record::sealed_minimum`] for an OpenSSL cipher name.
pub fn sealed_minimum(cipher: &str) -> usize {
    record::sealed_minimum(cipher)
}

/// What a device's plaintext means ([`device::interpret`]).
#[derive(Debug, PartialEq, Eq)]
pub enum DeviceMeaning {
    Plain,
    Message { to: String, body: String },
    Invalid(&'static str),
}

pub fn interpret(plaintext: &[u8]) -> DeviceMeaning {
    match device::interpret(plaintext) {
        Meaning::Plain => DeviceMeaning::Plain,
        Meaning::Message { to, body } => DeviceMeaning::Message { to, body },
        Meaning::Invalid(why) => DeviceMeaning::Invalid(why),
    }
}
