//! Pre-shared keys: identities, keys, and the in-memory key ring the
//! handshake consults.
//!
//! OpenSSL asks for a key from inside the handshake, synchronously, so the
//! server cannot await the database there. The [`KeyRing`] holds every live
//! key in memory (32 bytes each, so 100,000 devices are ~10 MB) and a
//! background task keeps it in step with the [`PskStore`](super::psk_store).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

/// Longest identity accepted, in bytes. OpenSSL allows 128 in DTLS 1.2
/// (`PSK_MAX_IDENTITY_LEN`); staying at that keeps every peer happy.
pub const MAX_IDENTITY_LEN: usize = 128;

/// The key Qt's DTLS examples hard-code, for `--dtls-demo-psk`.
pub const DEMO_KEY: [u8; 6] = [0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f];

/// A PSK identity: 1–128 printable ASCII characters. Spaces are allowed
/// because Qt's example client names itself "Alice (clone number 1)";
/// control characters are not, so identities log safely.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PskIdentity(String);

impl PskIdentity {
    pub fn parse(raw: &str) -> Result<PskIdentity, String> {
        if raw.is_empty() || raw.len() > MAX_IDENTITY_LEN {
            return Err(format!(
                "a PSK identity has 1 to {MAX_IDENTITY_LEN} characters"
            ));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err("a PSK identity has printable ASCII characters only".into());
        }
        Ok(PskIdentity(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PskIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Key bytes. Never printed by `Debug`, overwritten when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct PskKey(Vec<u8>);

impl PskKey {
    /// Length of the keys `sotto psk add` generates: 256 bits.
    pub const GENERATED_LEN: usize = 32;

    pub fn generate() -> PskKey {
        let mut k = vec![0u8; Self::GENERATED_LEN];
        rand::fill(&mut k[..]);
        PskKey(k)
    }

    /// 1 to 64 bytes: what OpenSSL's callbacks can carry
    /// (`PSK_MAX_PSK_LEN` is 512 bytes, but no real device uses more).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<PskKey, String> {
        if bytes.is_empty() || bytes.len() > 64 {
            return Err("a PSK has 1 to 64 bytes".into());
        }
        Ok(PskKey(bytes))
    }

    /// Parses hex (spaces and a `0x` prefix allowed).
    pub fn from_hex(text: &str) -> Result<PskKey, String> {
        let clean: String = text
            .trim()
            .trim_start_matches("0x")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = hex::decode(&clean).map_err(|e| format!("the PSK is not hex: {e}"))?;
        Self::from_bytes(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Debug for PskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PskKey({} bytes)", self.0.len())
    }
}

impl Drop for PskKey {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // Volatile so the compiler cannot drop the wipe as a dead store.
            // SAFETY: `b` is a valid, exclusive reference into our buffer.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// One identity the server accepts.
#[derive(Debug, Clone)]
pub struct PskEntry {
    pub identity: PskIdentity,
    pub key: PskKey,
    /// The user this device speaks for, if bound (`psk add --user`).
    pub user_id: Option<String>,
}

/// Where the handshake gets keys. Called from inside OpenSSL: must not
/// block for long (no I/O).
pub trait PskLookup: Send + Sync + 'static {
    fn lookup(&self, identity: &str) -> Option<Arc<PskEntry>>;
}

/// The server's live keys, plus the demo key when enabled.
#[derive(Default)]
pub struct KeyRing {
    keys: RwLock<HashMap<String, Arc<PskEntry>>>,
    demo: bool,
}

impl KeyRing {
    /// A ring that accepts the Qt examples' key for any identity not in the
    /// ring. For trying the examples only.
    pub fn with_demo_key(demo: bool) -> KeyRing {
        KeyRing {
            keys: RwLock::default(),
            demo,
        }
    }

    pub fn insert(&self, entry: PskEntry) {
        let id = entry.identity.as_str().to_owned();
        self.write().insert(id, Arc::new(entry));
    }

    /// Forgets an identity; true if it was there.
    pub fn remove(&self, identity: &str) -> bool {
        self.write().remove(identity).is_some()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<PskEntry>>> {
        // Only whole entries are inserted or removed; a poisoned map is
        // still consistent.
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<PskEntry>>> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl PskLookup for KeyRing {
    fn lookup(&self, identity: &str) -> Option<Arc<PskEntry>> {
        if let Some(e) = self.read().get(identity) {
            return Some(e.clone());
        }
        if !self.demo {
            return None;
        }
        let identity = PskIdentity::parse(identity).ok()?;
        Some(Arc::new(PskEntry {
            identity,
            key: PskKey(DEMO_KEY.to_vec()),
            user_id: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_validated() {
        assert!(PskIdentity::parse("device-1").is_ok());
        assert!(PskIdentity::parse("").is_err());
        assert!(PskIdentity::parse("Alice (clone number 1)").is_ok());
        assert!(PskIdentity::parse("tab\there").is_err());
        assert!(PskIdentity::parse(&"x".repeat(129)).is_err());
        assert!(PskIdentity::parse("ünï").is_err());
    }

    #[test]
    fn keys_parse_from_hex_and_hide_in_debug() {
        let k = PskKey::from_hex("1a2b3c4d5e6f").unwrap();
        assert_eq!(k.as_bytes(), DEMO_KEY);
        assert_eq!(format!("{k:?}"), "PskKey(6 bytes)");
        assert!(PskKey::from_hex("zz").is_err());
        assert!(PskKey::from_hex("").is_err());
        assert_eq!(PskKey::generate().as_bytes().len(), 32);
    }

    #[test]
    fn the_ring_falls_back_to_the_demo_key_only_when_asked() {
        let ring = KeyRing::with_demo_key(false);
        assert!(ring.lookup("a").is_none());
        ring.insert(PskEntry {
            identity: PskIdentity::parse("a").unwrap(),
            key: PskKey::generate(),
            user_id: Some("u".into()),
        });
        assert_eq!(ring.lookup("a").unwrap().user_id.as_deref(), Some("u"));
        let demo = KeyRing::with_demo_key(true);
        assert_eq!(demo.lookup("anyone").unwrap().key.as_bytes(), DEMO_KEY);
        assert!(demo.lookup("bad\nidentity").is_none());
    }
}
