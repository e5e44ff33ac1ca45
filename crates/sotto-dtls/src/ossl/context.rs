//! The two `SSL_CTX`s sotto uses — a PSK-only DTLS 1.2 server and client —
//! and the callbacks that connect them to the key ring and the cookie jar.
//!
//! Per-connection facts travel through `SSL` ex-data: the peer address the
//! cookie callbacks hash, the PSK entry the server granted (or the identity
//! it refused, for the log), and a client association's identity and key.

use super::TlsError;
use super::ffi;
use crate::cookie::{COOKIE_LEN, CookieJar};
use crate::keyring::PskLookup;
use crate::record;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode,
    SslVersion,
};
use sotto_core::psk::{PskEntry, PskKey};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// AEAD PSK suites, forward-secret ones first. OpenSSL 3.0 has no
/// ECDHE-PSK with GCM or CCM, so ECDHE-PSK-CHACHA20-POLY1305 (what Qt's
/// client and server negotiate) is the forward-secret choice; the plain
/// PSK suites remain for small devices without X25519.
pub const DEFAULT_CIPHERS: &str = "ECDHE-PSK-CHACHA20-POLY1305:\
    PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384:PSK-CHACHA20-POLY1305:\
    PSK-AES128-CCM:PSK-AES256-CCM:PSK-AES128-CCM8:PSK-AES256-CCM8";

/// What the server's PSK callback decided for a handshake.
#[derive(Debug, Clone)]
pub enum PskOutcome {
    Granted(Arc<PskEntry>),
    /// The identity the client sent (lossily decoded), which has no key.
    Unknown(String),
}

/// A client association's credentials.
pub(crate) struct ClientPsk {
    pub identity: Vec<u8>,
    pub key: PskKey,
}

pub(super) struct Indices {
    pub peer: Index<Ssl, SocketAddr>,
    pub outcome: Index<Ssl, PskOutcome>,
    pub client: Index<Ssl, ClientPsk>,
}

static INDICES: OnceLock<Indices> = OnceLock::new();

/// Ex-data slots, allocated once per process.
pub(super) fn indices() -> Result<&'static Indices, TlsError> {
    if let Some(i) = INDICES.get() {
        return Ok(i);
    }
    let fresh = Indices {
        peer: Ssl::new_ex_index()?,
        outcome: Ssl::new_ex_index()?,
        client: Ssl::new_ex_index()?,
    };
    // Losing a race only leaks three slot numbers.
    let _ = INDICES.set(fresh);
    INDICES
        .get()
        .ok_or_else(|| TlsError("ex-data index missing".into()))
}

/// What both sides share: DTLS 1.2 only, PSK suites only, no certificates,
/// no tickets, no renegotiation, and the MTU we set rather than one OpenSSL
/// guesses (without `NO_QUERY_MTU` it asks the BIO and falls back to 548).
fn base(ciphers: &str, max_record: u32) -> Result<SslContextBuilder, TlsError> {
    let mut b = SslContextBuilder::new(SslMethod::dtls())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_cipher_list(ciphers)
        .map_err(|e| TlsError(format!("no usable cipher in {ciphers:?}: {e}")))?;
    b.set_options(
        SslOptions::NO_QUERY_MTU
            | SslOptions::NO_TICKET
            | SslOptions::NO_RENEGOTIATION
            | SslOptions::CIPHER_SERVER_PREFERENCE,
    );
    // Records never carry more than one datagram's payload, so each
    // session's write buffer can be that size instead of 16 KiB.
    ffi::set_max_send_fragment(&mut b, max_record);
    b.set_verify(SslVerifyMode::NONE);
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    Ok(b)
}

/// A server context: keys from `keys`, cookies from `cookies`.
pub fn server(
    ciphers: &str,
    max_record: u32,
    identity_hint: &str,
    keys: Arc<dyn PskLookup>,
    cookies: Arc<CookieJar>,
) -> Result<SslContext, TlsError> {
    let idx = indices()?;
    let mut b = base(ciphers, max_record)?;
    ffi::set_identity_hint(&mut b, identity_hint).map_err(TlsError)?;
    b.set_psk_server_callback(move |ssl, identity, psk| {
        let name = String::from_utf8_lossy(identity.unwrap_or_default());
        match keys.lookup(&name) {
            Some(entry) if entry.key.as_bytes().len() <= psk.len() => {
                let key = entry.key.as_bytes();
                psk[..key.len()].copy_from_slice(key);
                ssl.set_ex_data(idx.outcome, PskOutcome::Granted(entry.clone()));
                Ok(key.len())
            }
            _ => {
                let shown: String = name.chars().take(128).collect();
                ssl.set_ex_data(idx.outcome, PskOutcome::Unknown(shown));
                // Zero length makes OpenSSL answer unknown_psk_identity.
                Ok(0)
            }
        }
    });
    let jar = cookies.clone();
    b.set_cookie_generate_cb(move |ssl, buf| {
        let peer = ssl.ex_data(idx.peer).copied().ok_or_else(ErrorStack::get)?;
        let cookie = jar.generate(peer);
        let out = buf.get_mut(..COOKIE_LEN).ok_or_else(ErrorStack::get)?;
        out.copy_from_slice(&cookie);
        Ok(COOKIE_LEN)
    });
    b.set_cookie_verify_cb(move |ssl, cookie| {
        ssl.ex_data(idx.peer)
            .is_some_and(|peer| cookies.verify(*peer, cookie))
    });
    let ctx = b.build();
    require_aead(&ctx, ciphers)?;
    Ok(ctx)
}

/// Refuses a server cipher list that admits a non-AEAD (CBC) suite. Under
/// one, OpenSSL 3 ends a DTLS session on any forged record long enough to
/// carry a MAC (with encrypt-then-MAC a bad MAC is fatal), so nothing in
/// front of OpenSSL could keep spoofed datagrams from ending sessions.
fn require_aead(ctx: &SslContext, ciphers: &str) -> Result<(), TlsError> {
    let ssl = Ssl::new(ctx)?;
    let names = ffi::cipher_names(&ssl);
    match names.iter().find(|n| !record::is_aead(n)) {
        None => Ok(()),
        Some(name) => Err(TlsError(format!(
            "cipher list {ciphers:?} admits {name}, which is not an AEAD suite; \
             under it any forged datagram could end a session, so only GCM, CCM, \
             CCM8 and ChaCha20-Poly1305 suites are accepted"
        ))),
    }
}

/// A client context; each association puts its own [`ClientPsk`] in
/// ex-data, so one context serves any number of identities.
pub fn client(ciphers: &str) -> Result<SslContext, TlsError> {
    let idx = indices()?;
    let mut b = base(ciphers, 16_384)?;
    b.set_psk_client_callback(move |ssl, _hint, identity_out, psk_out| {
        let creds = ssl.ex_data(idx.client).ok_or_else(ErrorStack::get)?;
        let id = &creds.identity;
        let key = creds.key.as_bytes();
        // The identity goes out as a C string: room for the NUL is needed.
        if id.len() >= identity_out.len() || key.len() > psk_out.len() {
            return Ok(0);
        }
        identity_out[..id.len()].copy_from_slice(id);
        identity_out[id.len()] = 0;
        psk_out[..key.len()].copy_from_slice(key);
        Ok(key.len())
    });
    Ok(b.build())
}
