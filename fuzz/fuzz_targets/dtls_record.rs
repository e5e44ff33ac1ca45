//! The DTLS record triage that runs on every UDP datagram before OpenSSL
//! sees it (`sotto_dtls::record` through `sotto_dtls::fuzzing`): anyone can
//! send these bytes from any address. Beyond "no panic", the answers must
//! agree with one another and with the record layout (RFC 6347 §4.1):
//!
//! - what `screen` lets through is a whole number of records, each of which
//!   it would also let through alone, and two such datagrams back to back;
//! - a stricter cipher (larger sealed minimum) never lets more through;
//! - `shape` counts at least every record `screen` accepted, and appending
//!   bytes never makes it count fewer;
//! - a ClientHello is a handshake datagram, and its random is the 32 bytes
//!   where RFC 6347 puts them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_dtls::fuzzing::{
    client_random, is_client_hello, is_handshake, screen, sealed_minimum, shape,
};

const HEADER: usize = 13;

fuzz_target!(|data: &[u8]| {
    let chacha = sealed_minimum("ECDHE-PSK-CHACHA20-POLY1305");
    let gcm = sealed_minimum("PSK-AES128-GCM-SHA256");
    assert!(chacha <= gcm);

    let loose = screen(data, chacha);
    let strict = screen(data, gcm);
    if strict.is_ok() {
        assert_eq!(loose, Ok(()), "a stricter screen let more through");
    }
    if loose.is_ok() {
        let records = split(data);
        assert_eq!(records.iter().map(|r| r.len()).sum::<usize>(), data.len());
        assert_eq!(shape(data).records, records.len());
        for r in &records {
            assert_eq!(
                screen(r, chacha),
                Ok(()),
                "one record of an accepted datagram"
            );
        }
        let twice = [data, data].concat();
        assert_eq!(screen(&twice, chacha), Ok(()));
    }

    let s = shape(data);
    assert!(s.records <= data.len() / HEADER);
    let longer = [data, &[0x17, 0xfe, 0xfd]].concat();
    assert!(shape(&longer).records >= s.records);

    if is_client_hello(data) {
        assert!(is_handshake(data), "a ClientHello is handshake traffic");
    }
    if let Some(random) = client_random(data) {
        assert!(is_client_hello(data));
        // Record header, handshake header (12), client_version (2).
        assert_eq!(&random[..], &data[HEADER + 14..HEADER + 46]);
    }
});

/// Cuts a datagram `screen` accepted into its records, by the length field.
fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut records = Vec::new();
    while data.len() >= HEADER {
        let len = HEADER + usize::from(u16::from_be_bytes([data[11], data[12]]));
        let Some((record, rest)) = data.split_at_checked(len) else {
            break;
        };
        records.push(record);
        data = rest;
    }
    assert!(data.is_empty(), "bytes left after an accepted datagram");
    records
}
