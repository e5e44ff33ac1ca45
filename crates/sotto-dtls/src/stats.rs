//! Counters for every datagram outcome and rejection reason, shared
//! between the endpoint's task (which writes) and whoever reads them —
//! tests, the periodic log line, a status endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! stats {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters; cheap relaxed atomics.
        #[derive(Debug, Default)]
        pub struct Stats { $( $(#[$doc])* pub $name: AtomicU64, )* }

        /// A copy of [`Stats`] at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct StatsSnapshot { $( $(#[$doc])* pub $name: u64, )* }

        impl Stats {
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }

        impl StatsSnapshot {
            /// Every counter with its name, for `/metrics`.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }
        }
    };
}

stats! {
    /// Datagrams read from the socket.
    datagrams_in,
    /// Datagrams sent.
    datagrams_out,
    /// Datagrams that were not DTLS (or not a ClientHello from an unknown peer).
    garbage,
    /// Datagrams from established peers that yielded nothing (did not decrypt).
    undecryptable,
    /// Datagrams for established sessions dropped before OpenSSL saw them:
    /// a record too short for the cipher's tag, too long, of an unknown
    /// type or epoch — which OpenSSL would take as a fatal error though
    /// no key authenticated them (anyone can send them from a peer's address).
    dropped_unsafe,
    /// HelloVerifyRequests sent (cookieless or stale-cookie ClientHellos).
    hello_verify_sent,
    /// ClientHellos OpenSSL refused outright.
    hello_rejected,
    /// Late copies of an established session's own ClientHello; ignored.
    hello_duplicates,
    /// Cookie-verified ClientHellos turned away by a limit.
    refused_sessions_limit,
    refused_handshakes_limit,
    refused_per_ip_limit,
    /// Handshakes completed.
    handshakes_ok,
    /// Handshakes failed: unknown identity.
    psk_unknown_identity,
    /// Handshakes failed: the client's key differed from ours.
    psk_wrong_key,
    /// Handshakes failed otherwise (alerts, protocol errors, retransmits exhausted).
    handshakes_failed,
    /// Handshakes that ran out of time.
    handshake_timeouts,
    /// Flights retransmitted by the server.
    retransmits,
    /// Sessions ended by idleness.
    idle_timeouts,
    /// Sessions ended by the peer's close_notify.
    closed_by_peer,
    /// Sessions ended because their identity was revoked.
    revoked,
    /// Plaintext datagrams received from established sessions.
    app_in,
    /// Encrypted replies and messages sent.
    app_out,
    /// Device datagrams larger than the payload limit.
    too_large,
    /// Device messages the bridge accepted.
    bridged_in,
    /// Hub messages written to devices.
    bridged_out,
    /// Sessions now established.
    sessions,
    /// Handshakes now in progress.
    handshaking,
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, value: usize) {
        gauge.store(value as u64, Ordering::Relaxed);
    }
}
