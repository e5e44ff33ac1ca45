//! The in-memory key ring the handshake consults.
//!
//! OpenSSL asks for a key from inside the handshake, synchronously, so the
//! server cannot await the database there. The [`KeyRing`] holds every live
//! key in memory (32 bytes each, so 100,000 devices are ~10 MB) and a
//! background task ([`keys`](crate::keys)) keeps it in step with the
//! [`PskStore`](sotto_core::psk::PskStore).

use sotto_core::psk::{DEMO_KEY, PskEntry, PskIdentity, PskKey};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

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
            key: PskKey::from_bytes(DEMO_KEY.to_vec()).ok()?,
            user_id: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_core::psk::{PskIdentity, PskKey};

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
