//! The few OpenSSL entry points `openssl-sys` does not declare, each behind
//! a safe wrapper. Everything here takes a live `SSL`/`SSL_CTX` from the
//! `openssl` crate, so the pointers are valid for the duration of the call.

use foreign_types::ForeignTypeRef;
use openssl::ssl::{SslContextBuilder, SslRef};
use openssl_sys as ffi;
use std::ffi::CString;
use std::os::raw::{c_int, c_long, c_void};
use std::time::Duration;

// `DTLSv1_get_timeout` and `DTLSv1_handle_timeout` are macros over
// `SSL_ctrl` in the C headers, so there is no symbol to link: these are the
// control codes from `ssl.h`.
const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;
const SSL_CTRL_SET_MAX_SEND_FRAGMENT: c_int = 52;

/// OpenSSL's opaque `BIO_ADDR` (`openssl-sys` declares it only for 3.2+).
#[repr(C)]
struct BioAddr {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    fn DTLSv1_listen(s: *mut ffi::SSL, client: *mut BioAddr) -> c_int;
    fn SSL_CTX_use_psk_identity_hint(
        ctx: *mut ffi::SSL_CTX,
        hint: *const std::os::raw::c_char,
    ) -> c_int;
    fn SSL_get_cipher_list(s: *const ffi::SSL, n: c_int) -> *const std::os::raw::c_char;
    fn BIO_ADDR_new() -> *mut BioAddr;
    fn BIO_ADDR_free(a: *mut BioAddr);
}

/// What [`listen`] made of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listen {
    /// A ClientHello with a valid cookie: the SSL now holds it and the
    /// handshake continues with `SSL_accept`.
    Verified,
    /// Nothing to keep: a HelloVerifyRequest may have been written, or the
    /// datagram was dropped.
    NotYet,
    /// OpenSSL refused the datagram outright.
    Error,
}

/// Runs `DTLSv1_listen` over the datagram waiting in the SSL's read BIO.
///
/// OpenSSL requires somewhere to write the client address; our BIO has no
/// address to give (the caller knows the peer), so a scratch `BIO_ADDR` is
/// allocated and freed here.
pub fn listen(ssl: &SslRef) -> Listen {
    // SAFETY: BIO_ADDR_new returns an owned, zeroed address or null.
    let addr = unsafe { BIO_ADDR_new() };
    if addr.is_null() {
        return Listen::Error;
    }
    // SAFETY: `ssl` is a live SSL with both BIOs set (SslStream sets them);
    // `addr` is a valid BIO_ADDR that we free right after.
    let rc = unsafe { DTLSv1_listen(ssl.as_ptr(), addr) };
    unsafe { BIO_ADDR_free(addr) };
    match rc {
        1 => Listen::Verified,
        0 => Listen::NotYet,
        _ => Listen::Error,
    }
}

/// The names of the suites `ssl` accepts, in order of preference, as
/// OpenSSL resolved the configured cipher list (aliases expanded).
pub(crate) fn cipher_names(ssl: &SslRef) -> Vec<String> {
    let mut names = Vec::new();
    for n in 0.. {
        // SAFETY: the SSL is live; OpenSSL returns a static name or NULL
        // past the end of the list.
        let name = unsafe { SSL_get_cipher_list(ssl.as_ptr(), n) };
        if name.is_null() {
            break;
        }
        // SAFETY: non-NULL names are NUL-terminated static strings.
        let name = unsafe { std::ffi::CStr::from_ptr(name) };
        names.push(name.to_string_lossy().into_owned());
    }
    names
}

/// Sets the PSK identity hint the server sends in ServerKeyExchange.
pub(crate) fn set_identity_hint(ctx: &mut SslContextBuilder, hint: &str) -> Result<(), String> {
    let hint = CString::new(hint).map_err(|_| "identity hint contains a NUL byte".to_owned())?;
    // SAFETY: the context is live; OpenSSL copies the string.
    let ok = unsafe { SSL_CTX_use_psk_identity_hint(ctx.as_ptr(), hint.as_ptr()) };
    if ok == 1 {
        Ok(())
    } else {
        Err("OpenSSL refused the PSK identity hint (longer than 128 bytes?)".to_owned())
    }
}

/// Caps the plaintext of records we send (512 to 16384 bytes), which also
/// sizes each session's write buffer. `SSL_CTX_set_max_send_fragment` is a
/// macro over `SSL_CTX_ctrl`.
pub(crate) fn set_max_send_fragment(ctx: &mut SslContextBuilder, len: u32) {
    let len = c_long::from(len.clamp(512, 16_384));
    // SAFETY: the context is live; this control takes only the length.
    unsafe {
        ffi::SSL_CTX_ctrl(
            ctx.as_ptr(),
            SSL_CTRL_SET_MAX_SEND_FRAGMENT,
            len,
            std::ptr::null_mut(),
        )
    };
}

/// Time left on the SSL's retransmission timer, if it is running.
pub(crate) fn get_timeout(ssl: &SslRef) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: DTLS_CTRL_GET_TIMEOUT writes one `struct timeval` to parg.
    let running = unsafe {
        ffi::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            &mut tv as *mut libc::timeval as *mut c_void,
        )
    };
    if running != 1 {
        return None;
    }
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    Some(Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// What `DTLSv1_handle_timeout` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutOutcome {
    /// The timer had expired and the last flight was written again.
    Retransmitted,
    /// The timer had not expired (or was not running).
    NotDue,
    /// Too many retransmissions, or another fatal error.
    Failed,
}

pub(crate) fn handle_timeout(ssl: &SslRef) -> TimeoutOutcome {
    // SAFETY: DTLS_CTRL_HANDLE_TIMEOUT takes no argument.
    let rc: c_long = unsafe {
        ffi::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_HANDLE_TIMEOUT,
            0,
            std::ptr::null_mut(),
        )
    };
    match rc {
        r if r > 0 => TimeoutOutcome::Retransmitted,
        0 => TimeoutOutcome::NotDue,
        _ => TimeoutOutcome::Failed,
    }
}
