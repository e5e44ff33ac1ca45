//! One DTLS association over a [`Pipe`], and the listener that runs the
//! cookie exchange for peers we do not know yet.

use super::TlsError;
use super::context::{ClientPsk, PskOutcome, indices};
use super::ffi::{self, Listen, TimeoutOutcome};
use super::pipe::Pipe;
use crate::record;
use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslRef, SslStream};
use sotto_core::psk::PskKey;
use std::net::SocketAddr;
use std::time::Duration;

/// Where a handshake stands after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Done,
    Pending,
    Failed(Failure),
}

/// Why a handshake failed, in the terms the log needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The client named an identity with no key.
    UnknownIdentity(String),
    /// The client's Finished did not decrypt under the identity's key.
    WrongKey(String),
    /// Anything else OpenSSL reported (an alert, a protocol error).
    Tls(String),
}

/// What one read from an established association produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// `n` bytes of plaintext are in the buffer.
    Data(usize),
    /// Nothing more in the datagram (records that did not decrypt are
    /// dropped silently by OpenSSL, as DTLS requires).
    Nothing,
    /// The peer sent close_notify.
    Closed,
    /// A fatal error (a fatal alert, a protocol violation).
    Failed(String),
}

pub struct Conn {
    stream: SslStream<Pipe>,
    /// A ChangeCipherSpec from the peer has been seen during the handshake.
    ccs_seen: bool,
}

impl Conn {
    fn new(ctx: &SslContext, mtu: u32, server: bool) -> Result<Conn, TlsError> {
        let mut ssl = Ssl::new(ctx)?;
        ssl.set_mtu(mtu)?;
        if server {
            ssl.set_accept_state();
        } else {
            ssl.set_connect_state();
        }
        Ok(Conn {
            stream: SslStream::new(ssl, Pipe::default())?,
            ccs_seen: false,
        })
    }

    /// A client association presenting `identity` and `key`.
    pub fn client(
        ctx: &SslContext,
        mtu: u32,
        identity: &[u8],
        key: PskKey,
    ) -> Result<Conn, TlsError> {
        let mut conn = Conn::new(ctx, mtu, false)?;
        let creds = ClientPsk {
            identity: identity.to_vec(),
            key,
        };
        conn.ssl_mut().set_ex_data(indices()?.client, creds);
        Ok(conn)
    }

    fn ssl_mut(&mut self) -> &mut SslRef {
        // SAFETY: the stream owns the SSL and we hold `&mut self`, so no
        // other reference to it exists for the returned lifetime.
        unsafe { SslRef::from_ptr_mut(self.stream.ssl().as_ptr()) }
    }

    /// Queues a datagram from the peer; false if the queue is full.
    pub fn push(&mut self, datagram: &[u8]) -> bool {
        self.stream.get_mut().push(datagram)
    }

    /// Takes what OpenSSL wrote, one datagram per element.
    pub fn drain_output(&mut self, out: &mut Vec<Vec<u8>>) {
        self.stream.get_mut().drain_into(out);
    }

    /// Drives the handshake with what is queued.
    pub fn handshake(&mut self) -> Progress {
        match self.stream.do_handshake() {
            Ok(()) => Progress::Done,
            Err(e) if is_retry(e.code()) => Progress::Pending,
            Err(e) => Progress::Failed(self.failure(e.to_string())),
        }
    }

    /// Server side: feeds one datagram and drives the handshake, turning a
    /// Finished that does not decrypt into [`Failure::WrongKey`] instead of
    /// OpenSSL's silent drop (which would leave both sides retransmitting
    /// until they give up).
    pub(crate) fn handshake_with(&mut self, datagram: &[u8]) -> Progress {
        let shape = record::shape(datagram);
        self.ccs_seen |= shape.change_cipher_spec;
        if !self.push(datagram) {
            return Progress::Pending;
        }
        let progress = self.handshake();
        if progress == Progress::Pending
            && self.ccs_seen
            && shape.encrypted
            && let Some(PskOutcome::Granted(entry)) = self.psk_outcome()
        {
            return Progress::Failed(Failure::WrongKey(entry.identity.to_string()));
        }
        progress
    }

    fn failure(&self, detail: String) -> Failure {
        match self.psk_outcome() {
            Some(PskOutcome::Unknown(id)) => Failure::UnknownIdentity(id.clone()),
            _ => Failure::Tls(detail),
        }
    }

    /// Reads the next plaintext record of the datagrams pushed so far.
    pub fn read(&mut self, buf: &mut [u8]) -> Received {
        match self.stream.ssl_read(buf) {
            Ok(n) => Received::Data(n),
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => Received::Closed,
            Err(e) if is_retry(e.code()) => Received::Nothing,
            Err(e) => Received::Failed(e.to_string()),
        }
    }

    /// Encrypts `plaintext` as one record (one datagram).
    pub fn write(&mut self, plaintext: &[u8]) -> Result<(), String> {
        match self.stream.ssl_write(plaintext) {
            Ok(n) if n == plaintext.len() => Ok(()),
            Ok(n) => Err(format!("wrote {n} of {} bytes", plaintext.len())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends close_notify (once; later calls do nothing).
    pub fn close(&mut self) {
        // The peer's close_notify is not awaited: UDP has no FIN to wait
        // for, and DTLS does not require it.
        let _ = self.stream.shutdown();
        let _ = ErrorStack::get();
    }

    /// Time until OpenSSL wants to retransmit, if its timer runs.
    pub(crate) fn retransmit_in(&self) -> Option<Duration> {
        ffi::get_timeout(self.stream.ssl())
    }

    pub(crate) fn on_timeout(&mut self) -> TimeoutOutcome {
        let outcome = ffi::handle_timeout(self.stream.ssl());
        if outcome == TimeoutOutcome::Failed {
            let _ = ErrorStack::get();
        }
        outcome
    }

    /// The negotiated suite, e.g. `ECDHE-PSK-CHACHA20-POLY1305`.
    pub fn cipher(&self) -> &'static str {
        self.stream
            .ssl()
            .current_cipher()
            .map_or("(none)", |c| c.name())
    }

    /// What the server's PSK callback decided, once it has run.
    pub(crate) fn psk_outcome(&self) -> Option<&PskOutcome> {
        let idx = indices().ok()?;
        self.stream.ssl().ex_data(idx.outcome)
    }
}

fn is_retry(code: ErrorCode) -> bool {
    code == ErrorCode::WANT_READ || code == ErrorCode::WANT_WRITE
}

/// A reusable `SSL` for `DTLSv1_listen`. It holds no per-peer state between
/// datagrams (OpenSSL clears it on every call); when a cookie checks, it
/// becomes that peer's [`Conn`] and a fresh one takes its place — the same
/// arrangement Qt's `QDtlsClientVerifier` and `QDtls` use.
pub struct Listener {
    ctx: SslContext,
    mtu: u32,
    spare: Conn,
}

/// What the listener made of a datagram from an unknown peer.
pub enum Offer {
    /// Cookie valid: the handshake may start with this connection.
    Verified(Conn),
    /// A HelloVerifyRequest was written (or nothing): no state kept.
    Challenged,
    /// OpenSSL rejected the datagram.
    Rejected,
}

impl Listener {
    pub fn new(ctx: SslContext, mtu: u32) -> Result<Listener, TlsError> {
        let spare = Conn::new(&ctx, mtu, true)?;
        Ok(Listener { ctx, mtu, spare })
    }

    /// Runs the cookie exchange on one datagram from `peer`; anything to
    /// send back is appended to `out`.
    pub fn offer(
        &mut self,
        peer: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<Offer, TlsError> {
        let idx = indices()?;
        self.spare.stream.get_mut().clear();
        self.spare.ssl_mut().set_ex_data(idx.peer, peer);
        self.spare.push(datagram);
        let result = ffi::listen(self.spare.stream.ssl());
        match result {
            Listen::Verified => {
                let fresh = Conn::new(&self.ctx, self.mtu, true)?;
                let mut conn = std::mem::replace(&mut self.spare, fresh);
                conn.stream.get_mut().clear();
                Ok(Offer::Verified(conn))
            }
            Listen::NotYet => {
                self.spare.drain_output(out);
                Ok(Offer::Challenged)
            }
            Listen::Error => {
                // Leave nothing in this thread's error queue: OpenSSL reads
                // it to classify the next call's result.
                let _ = ErrorStack::get();
                self.spare.stream.get_mut().clear();
                Ok(Offer::Rejected)
            }
        }
    }
}
