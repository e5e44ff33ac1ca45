//! Just enough of the DTLS record layer to triage a datagram before (or
//! beside) OpenSSL: is it a ClientHello worth a cookie check, does it carry
//! a ChangeCipherSpec and encrypted records, and a fatal alert to send when
//! the server itself gives up on a handshake.
//!
//! RFC 6347 §4.1: every record starts with a 13-byte header — content type,
//! version, epoch (2 bytes), sequence number (6 bytes), length (2 bytes).

const HEADER: usize = 13;
const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
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
pub fn is_client_hello(datagram: &[u8]) -> bool {
    datagram.len() > HEADER
        && datagram[0] == HANDSHAKE
        && datagram[1] == DTLS_MAJOR
        && datagram[3] == 0
        && datagram[4] == 0
        && datagram[HEADER] == CLIENT_HELLO
}

/// A plaintext (epoch 0) fatal alert record.
///
/// OpenSSL drops records that fail to decrypt in DTLS, so a peer whose
/// Finished was sealed under the wrong PSK would otherwise wait and
/// retransmit until it gives up. The sequence number is the largest there
/// is, so the peer's replay window accepts it whatever we sent before.
pub fn fatal_alert(description: u8) -> Vec<u8> {
    let mut r = vec![ALERT, DTLS_MAJOR, 0xfd, 0, 0];
    r.extend_from_slice(&[0xff; 6]);
    r.extend_from_slice(&2u16.to_be_bytes());
    r.extend_from_slice(&[2, description]);
    r
}

/// TLS alert `decrypt_error`: what a Finished under the wrong key means.
pub const DECRYPT_ERROR: u8 = 51;

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
    fn the_alert_is_one_well_formed_record() {
        let a = fatal_alert(DECRYPT_ERROR);
        assert_eq!(a.len(), 15);
        assert_eq!(shape(&a).records, 1);
        assert_eq!(&a[13..], &[2, DECRYPT_ERROR]);
    }
}
