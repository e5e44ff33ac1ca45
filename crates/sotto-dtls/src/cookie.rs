//! Stateless cookies for the HelloVerifyRequest exchange.
//!
//! A cookie is HMAC-SHA256 of the peer's address and port under a server
//! secret. A ClientHello that echoes a valid cookie proves the sender can
//! receive at that address, so spoofed ClientHellos never create state. The
//! secret rotates (see [`CookieJar::rotate`]); the previous one is still
//! accepted so a handshake that straddles a rotation does not fail.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

type HmacSha256 = Hmac<Sha256>;

/// Length of every cookie we issue (DTLS 1.2 allows up to 255).
pub(crate) const COOKIE_LEN: usize = 32;

pub struct CookieJar {
    secrets: RwLock<Secrets>,
}

struct Secrets {
    current: [u8; 32],
    previous: [u8; 32],
}

impl Default for CookieJar {
    fn default() -> Self {
        Self::new()
    }
}

impl CookieJar {
    pub fn new() -> CookieJar {
        let first = random_secret();
        CookieJar {
            secrets: RwLock::new(Secrets {
                current: first,
                previous: first,
            }),
        }
    }

    /// The cookie for `peer` under the current secret.
    pub fn generate(&self, peer: SocketAddr) -> [u8; COOKIE_LEN] {
        let secret = self.read().current;
        mac(&secret, peer).finalize().into_bytes().into()
    }

    /// True if `cookie` was issued to `peer` under the current or the
    /// previous secret. Comparison is constant-time.
    pub fn verify(&self, peer: SocketAddr, cookie: &[u8]) -> bool {
        let (current, previous) = {
            let s = self.read();
            (s.current, s.previous)
        };
        mac(&current, peer).verify_slice(cookie).is_ok()
            || mac(&previous, peer).verify_slice(cookie).is_ok()
    }

    /// Starts a new secret; cookies under the one before it stop working.
    pub fn rotate(&self) {
        let fresh = random_secret();
        let mut s = match self.secrets.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        s.previous = s.current;
        s.current = fresh;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Secrets> {
        // The lock guards two plain arrays; a panic elsewhere cannot leave
        // them half-written, so a poisoned lock is still safe to read.
        match self.secrets.read() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

fn mac(secret: &[u8; 32], peer: SocketAddr) -> HmacSha256 {
    // A 32-byte key is always accepted by HMAC.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    match peer.ip() {
        IpAddr::V4(ip) => {
            m.update(&[4]);
            m.update(&ip.octets());
        }
        IpAddr::V6(ip) => {
            m.update(&[6]);
            m.update(&ip.octets());
        }
    }
    m.update(&peer.port().to_be_bytes());
    m
}

fn random_secret() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand::fill(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_cookie_verifies_only_for_its_peer() {
        let jar = CookieJar::new();
        let c = jar.generate(addr("127.0.0.1:4000"));
        assert!(jar.verify(addr("127.0.0.1:4000"), &c));
        assert!(!jar.verify(addr("127.0.0.1:4001"), &c));
        assert!(!jar.verify(addr("127.0.0.2:4000"), &c));
        assert!(!jar.verify(addr("[::1]:4000"), &c));
        assert!(!jar.verify(addr("127.0.0.1:4000"), &c[..31]));
        assert!(!jar.verify(addr("127.0.0.1:4000"), b""));
    }

    #[test]
    fn the_previous_secret_is_accepted_once() {
        let jar = CookieJar::new();
        let peer = addr("[::1]:9");
        let c = jar.generate(peer);
        jar.rotate();
        assert!(jar.verify(peer, &c), "previous secret still valid");
        assert_ne!(jar.generate(peer), c);
        jar.rotate();
        assert!(!jar.verify(peer, &c), "two rotations later it is not");
    }
}
