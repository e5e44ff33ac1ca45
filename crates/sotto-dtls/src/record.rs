//! Just enough of the DTLS record layer to triage a datagram before (or
//! beside) OpenSSL: is it a ClientHello worth a cookie check, does it carry
//! a ChangeCipherSpec and encrypted records, is it safe to hand to an
//! established session ([`screen`]), and a fatal alert to send when the
//! server itself gives up on a handshake.
//!
//! RFC 6347 §4.1: every record starts with a 13-byte header — content type,
//! version, epoch (2 bytes), sequence number (6 bytes), length (2 bytes).

const HEADER: usize = 13;
const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
const CLIENT_HELLO: u8 = 1;
/// RFC 6347 §4.1: a sealed record's body is at most 2^14 + 2048 bytes;
/// OpenSSL answers a longer one with a fatal `record_overflow`.
const MAX_SEALED: usize = (1 << 14) + 2048;
/// DTLS versions are one's complement: 1.0 is 0xfeff, 1.2 is 0xfefd.
const DTLS_MAJOR: u8 = 0xfe;

/// What the records of one datagram look like from outside.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Well-formed records found (0 means the datagram is not DTLS).
    pub records: usize,
    /// A ChangeCipherSpec record was present.
    pub change_cipher_spec: bool,
    /// A record under a non-zero epoch (i.e. encrypted) was present.
    pub encrypted: bool,
}

/// Walks the record headers. Stops at the first malformed one, so trailing
/// garbage after good records does not count them out.
pub fn shape(datagram: &[u8]) -> Shape {
    let mut s = Shape::default();
    let mut rest = datagram;
    while rest.len() >= HEADER {
        if rest[1] != DTLS_MAJOR {
            break;
        }
        let epoch = u16::from_be_bytes([rest[3], rest[4]]);
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        if rest.len() < HEADER + len || !(CHANGE_CIPHER_SPEC..=24).contains(&rest[0]) {
            break;
        }
        s.records += 1;
        s.change_cipher_spec |= rest[0] == CHANGE_CIPHER_SPEC;
        s.encrypted |= epoch != 0;
        rest = &rest[HEADER + len..];
    }
    s
}

/// True if the datagram starts with an epoch-0 handshake record holding a
/// ClientHello: the only thing an unknown peer may send us.
pub(crate) fn is_client_hello(datagram: &[u8]) -> bool {
    datagram.len() > HEADER
        && datagram[0] == HANDSHAKE
        && datagram[1] == DTLS_MAJOR
        && datagram[3] == 0
        && datagram[4] == 0
        && datagram[HEADER] == CLIENT_HELLO
}

/// The 32-byte random of a ClientHello (the first fragment of one).
///
/// A client keeps its random when it repeats its hello with the cookie
/// (RFC 6347 §4.2.1) and picks a new one for a new association, so the
/// random tells a late copy of a session's own hello from a restart.
pub(crate) fn client_random(datagram: &[u8]) -> Option<[u8; 32]> {
    // Handshake header: type, length (3), message_seq (2),
    // fragment_offset (3), fragment_length (3); then client_version (2).
    // `is_client_hello` vouches for one byte of handshake header only: a
    // spoofed 14-byte "hello" on a live session's address must not reach
    // past the datagram's end (found by the `dtls_record` fuzz target).
    const RANDOM: usize = HEADER + 12 + 2;
    if !is_client_hello(datagram) || datagram.get(HEADER + 6..HEADER + 9)? != [0, 0, 0] {
        return None;
    }
    datagram.get(RANDOM..RANDOM + 32)?.try_into().ok()
}

/// True if the datagram opens with a handshake-layer record: an epoch-0
/// record or a handshake or ChangeCipherSpec record under any epoch. Beside
/// an established session, such datagrams belong to the pending handshake;
/// application data and alerts under epoch 1 to the session.
pub(crate) fn is_handshake(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER
        && (datagram[0] == HANDSHAKE
            || datagram[0] == CHANGE_CIPHER_SPEC
            || (datagram[3], datagram[4]) == (0, 0))
}

/// Why [`screen`] refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsafe {
    /// Not a sequence of whole DTLS records (bad header, truncated, or
    /// bytes left over).
    Malformed,
    /// A content type DTLS 1.2 does not define (or heartbeat, which is off).
    UnknownType,
    /// A sealed record shorter than the cipher's nonce and tag, or longer
    /// than any record may be.
    BadLength,
    /// An epoch this session never uses (it does not renegotiate).
    WrongEpoch,
}

/// Decides, before OpenSSL sees it, whether a datagram for an
/// **established** session may go in. OpenSSL 3 takes some records that
/// nobody authenticated as fatal errors (a sealed record shorter than its
/// AEAD tag makes the cipher refuse the additional data, which OpenSSL
/// reports as an internal error), and anyone can send a datagram from a
/// device's address. So every record must be one OpenSSL either
/// authenticates or drops quietly:
///
/// - epoch 0, handshake or ChangeCipherSpec: a retransmission of the
///   client's last flight (our Finished was lost). OpenSSL ignores the
///   epoch-0 records and answers the Finished beside them;
/// - epoch 1, types 20–23, with a body of at least `sealed_minimum`
///   (see [`sealed_minimum`]) and at most 2^14 + 2048 bytes.
///
/// Anything else, anywhere in the datagram, drops the whole datagram.
pub(crate) fn screen(datagram: &[u8], sealed_minimum: usize) -> Result<(), Unsafe> {
    let mut rest = datagram;
    if rest.is_empty() {
        return Err(Unsafe::Malformed);
    }
    while !rest.is_empty() {
        if rest.len() < HEADER || rest[1] != DTLS_MAJOR {
            return Err(Unsafe::Malformed);
        }
        let kind = rest[0];
        let epoch = u16::from_be_bytes([rest[3], rest[4]]);
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        if rest.len() < HEADER + len {
            return Err(Unsafe::Malformed);
        }
        screen_record(kind, epoch, len, sealed_minimum)?;
        rest = &rest[HEADER + len..];
    }
    Ok(())
}

fn screen_record(kind: u8, epoch: u16, len: usize, sealed_minimum: usize) -> Result<(), Unsafe> {
    if !(CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&kind) {
        return Err(Unsafe::UnknownType);
    }
    match epoch {
        0 if kind == HANDSHAKE || kind == CHANGE_CIPHER_SPEC => Ok(()),
        1 if (sealed_minimum..=MAX_SEALED).contains(&len) => Ok(()),
        1 => Err(Unsafe::BadLength),
        _ => Err(Unsafe::WrongEpoch),
    }
}

/// Whether the suite `cipher` (OpenSSL's name) is an AEAD one, the only
/// kind under which a forged record is dropped rather than fatal (the
/// server refuses cipher lists with others).
pub(crate) fn is_aead(cipher: &str) -> bool {
    ["GCM", "CCM", "CHACHA20"]
        .iter()
        .any(|a| cipher.contains(a))
}

/// The shortest body a sealed record of the AEAD suite `cipher` (OpenSSL's
/// name) can have, explicit nonce plus tag: shorter ones OpenSSL 3 takes
/// as fatal. CCM8 has an 8-byte tag and ChaCha20 no explicit nonce (16);
/// GCM and CCM carry 8 + 16 — which is also the answer for any other name.
pub(crate) fn sealed_minimum(cipher: &str) -> usize {
    if cipher.contains("CCM8") || cipher.contains("CHACHA20") {
        16
    } else {
        24
    }
}

/// A plaintext (epoch 0) fatal alert record.
///
/// OpenSSL drops records that fail to decrypt in DTLS, so a peer whose
/// Finished was sealed under the wrong PSK would otherwise wait and
/// retransmit until it gives up. The sequence number is the largest there
/// is, so the peer's replay window accepts it whatever we sent before.
pub(crate) fn fatal_alert(description: u8) -> Vec<u8> {
    let mut r = vec![ALERT, DTLS_MAJOR, 0xfd, 0, 0];
    r.extend_from_slice(&[0xff; 6]);
    r.extend_from_slice(&2u16.to_be_bytes());
    r.extend_from_slice(&[2, description]);
    r
}

/// TLS alert `decrypt_error`: what a Finished under the wrong key means.
pub(crate) const DECRYPT_ERROR: u8 = 51;

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
        let mut r = vec![kind, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn recognises_a_client_hello() {
        let hello = record(HANDSHAKE, 0, &[CLIENT_HELLO, 0, 0, 10]);
        assert!(is_client_hello(&hello));
        assert!(!is_client_hello(&record(HANDSHAKE, 1, &[CLIENT_HELLO])));
        assert!(!is_client_hello(&record(ALERT, 0, &[CLIENT_HELLO])));
        assert!(!is_client_hello(b"hello"));
        assert!(!is_client_hello(&[]));
    }

    #[test]
    fn finds_the_client_random_and_handshake_datagrams() {
        let mut body = vec![CLIENT_HELLO, 0, 0, 60, 0, 1, 0, 0, 0, 0, 0, 60, 0xfe, 0xfd];
        body.extend(1..=32u8);
        body.extend([0; 26]);
        let hello = record(HANDSHAKE, 0, &body);
        let random: Vec<u8> = (1..=32u8).collect();
        assert_eq!(client_random(&hello).map(|r| r.to_vec()), Some(random));
        body[8] = 1; // a later fragment carries no random
        assert_eq!(client_random(&record(HANDSHAKE, 0, &body)), None);
        assert_eq!(client_random(&record(HANDSHAKE, 0, &body[..20])), None);
        // Too short to hold a fragment offset: refused, not a panic.
        for len in 1..=9 {
            let stub = record(HANDSHAKE, 0, &body[..len]);
            assert!(is_client_hello(&stub));
            assert_eq!(client_random(&stub), None, "{len}-byte body");
        }
        assert!(is_handshake(&hello));
        assert!(is_handshake(&record(HANDSHAKE, 1, &[0; 40])));
        assert!(is_handshake(&record(ALERT, 0, &[2, 40])));
        assert!(!is_handshake(&record(23, 1, &[0; 40])));
        assert!(!is_handshake(&record(ALERT, 1, &[0; 40])));
    }

    #[test]
    fn shape_finds_ccs_and_encrypted_records() {
        let mut d = record(HANDSHAKE, 0, &[16, 0, 0, 1]);
        d.extend(record(CHANGE_CIPHER_SPEC, 0, &[1]));
        d.extend(record(HANDSHAKE, 1, &[9; 40]));
        let s = shape(&d);
        assert_eq!(s.records, 3);
        assert!(s.change_cipher_spec && s.encrypted);
        assert_eq!(shape(b"plain text, not DTLS").records, 0);
        let mut truncated = record(23, 1, &[1; 30]);
        truncated.truncate(20);
        assert_eq!(shape(&truncated).records, 0);
    }

    #[test]
    fn screen_lets_through_only_what_openssl_authenticates_or_ignores() {
        let min = sealed_minimum("ECDHE-PSK-CHACHA20-POLY1305");
        assert_eq!(min, 16);
        assert_eq!(screen(&record(23, 1, &[0; 16]), min), Ok(()));
        assert_eq!(screen(&record(21, 1, &[0; 18]), min), Ok(()));
        // The 15-byte datagram.
        assert_eq!(screen(&record(23, 1, &[1, 2]), min), Err(Unsafe::BadLength));
        assert_eq!(screen(&record(23, 1, &[]), min), Err(Unsafe::BadLength));
        assert_eq!(
            screen(&record(24, 1, &[0; 40]), min),
            Err(Unsafe::UnknownType)
        );
        assert_eq!(
            screen(&record(23, 2, &[0; 40]), min),
            Err(Unsafe::WrongEpoch)
        );
        assert_eq!(
            screen(&record(23, 0, &[0; 40]), min),
            Err(Unsafe::WrongEpoch)
        );
        assert_eq!(screen(b"", min), Err(Unsafe::Malformed));
        assert_eq!(screen(b"not DTLS at all", min), Err(Unsafe::Malformed));
        // A retransmitted last flight: epoch-0 handshake and CCS, then Finished.
        let mut flight = record(HANDSHAKE, 0, &[16, 0, 0, 1]);
        flight.extend(record(CHANGE_CIPHER_SPEC, 0, &[1]));
        flight.extend(record(HANDSHAKE, 1, &[9; 40]));
        assert_eq!(screen(&flight, min), Ok(()));
        // One bad record spoils the datagram, and so do leftover bytes.
        let mut mixed = record(23, 1, &[0; 30]);
        mixed.extend(record(23, 1, &[0; 3]));
        assert_eq!(screen(&mixed, min), Err(Unsafe::BadLength));
        let mut tail = record(23, 1, &[0; 30]);
        tail.push(0);
        assert_eq!(screen(&tail, min), Err(Unsafe::Malformed));
    }

    #[test]
    fn sealed_minimum_knows_every_default_suite() {
        let expect = [
            ("ECDHE-PSK-CHACHA20-POLY1305", 16),
            ("PSK-CHACHA20-POLY1305", 16),
            ("PSK-AES128-GCM-SHA256", 24),
            ("PSK-AES256-GCM-SHA384", 24),
            ("PSK-AES128-CCM", 24),
            ("PSK-AES256-CCM8", 16),
        ];
        for (name, min) in expect {
            assert_eq!(sealed_minimum(name), min, "{name}");
            assert!(is_aead(name), "{name}");
        }
        assert!(!is_aead("PSK-AES128-CBC-SHA256"));
        assert!(!is_aead("ECDHE-PSK-AES256-CBC-SHA384"));
    }

    #[test]
    fn the_alert_is_one_well_formed_record() {
        let a = fatal_alert(DECRYPT_ERROR);
        assert_eq!(a.len(), 15);
        assert_eq!(shape(&a).records, 1);
        assert_eq!(&a[13..], &[2, DECRYPT_ERROR]);
    }
}
