//! The HelloVerifyRequest cookies (`sotto_dtls::cookie::CookieJar`), which
//! decide whether a ClientHello may create state. Input: a peer address,
//! another address, a mutation and a candidate cookie. Beyond "no panic":
//! a cookie verifies for the address it was made for, under the current
//! and the previous secret only; never for another address (not even the
//! same IPv4 address written as IPv6), nor cut, extended or with a bit
//! flipped; arbitrary bytes of any length never verify.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_dtls::cookie::CookieJar;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fuzz_target!(|data: &[u8]| {
    let (peer, rest) = address(data);
    let (other, rest) = address(rest);
    let (&mutation, candidate) = rest.split_first().unwrap_or((&0, &[]));
    let jar = CookieJar::new();
    let cookie = jar.generate(peer);
    assert!(jar.verify(peer, &cookie));
    assert_eq!(
        jar.generate(peer),
        cookie,
        "a cookie is a function of the peer"
    );
    assert_eq!(jar.verify(other, &cookie), other == peer, "{peer} {other}");
    if let IpAddr::V4(v4) = peer.ip() {
        let mapped = SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), peer.port());
        assert!(!jar.verify(mapped, &cookie));
    }
    // One bit flipped, cut short, or one byte longer: all refused.
    let mut flipped = cookie;
    flipped[usize::from(mutation) % cookie.len()] ^= 1 << (mutation % 8);
    assert!(!jar.verify(peer, &flipped));
    assert!(!jar.verify(peer, &cookie[..usize::from(mutation) % cookie.len()]));
    assert!(!jar.verify(peer, &[&cookie[..], &[mutation]].concat()));
    // The secret is random: guessing it from the input cannot succeed.
    assert_eq!(jar.verify(peer, candidate), candidate == cookie);
    jar.rotate();
    assert!(
        jar.verify(peer, &cookie),
        "the previous secret still counts"
    );
    assert_eq!(jar.verify(other, &cookie), other == peer);
    assert_ne!(jar.generate(peer), cookie);
    jar.rotate();
    assert!(!jar.verify(peer, &cookie), "two rotations end a cookie");
});

/// An address from the input's first bytes: a kind byte, then 4 or 16
/// bytes of address and 2 of port, zeros where the input runs out.
fn address(data: &[u8]) -> (SocketAddr, &[u8]) {
    let (&kind, rest) = data.split_first().unwrap_or((&0, &[]));
    let take = |n: usize| {
        let mut out = [0u8; 18];
        let n = n.min(rest.len());
        out[..n].copy_from_slice(&rest[..n]);
        (out, &rest[n..])
    };
    if kind % 2 == 0 {
        let (b, rest) = take(6);
        let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        (
            SocketAddr::new(ip.into(), u16::from_be_bytes([b[4], b[5]])),
            rest,
        )
    } else {
        let (b, rest) = take(18);
        let octets: [u8; 16] = b[..16].try_into().expect("16 bytes");
        let ip = Ipv6Addr::from(octets);
        (
            SocketAddr::new(ip.into(), u16::from_be_bytes([b[16], b[17]])),
            rest,
        )
    }
}
