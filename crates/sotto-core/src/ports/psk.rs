//! Pre-shared keys for DTLS devices: identities, keys, and the port that
//! stores them. The DTLS engine keeps the live keys in memory (its key
//! ring); this is what it loads them from.

use async_trait::async_trait;
use std::fmt;

/// Longest identity accepted, in bytes. OpenSSL allows 128 in DTLS 1.2
/// (`PSK_MAX_IDENTITY_LEN`); staying at that keeps every peer happy.
pub(crate) const MAX_IDENTITY_LEN: usize = 128;

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
    pub(crate) const GENERATED_LEN: usize = 32;

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

/// A key store failure, by kind (as [`StoreError`](super::StoreError)):
/// the DTLS key refresh keeps its key ring and retries on `Unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum PskStoreError {
    #[error("identity {0} already has a key; revoke it first")]
    IdentityTaken(String),
    /// Cannot reach, open, lock or write the store; retrying may work.
    #[error("key store unavailable: {0}")]
    Unavailable(#[source] super::BoxError),
    /// Corrupt data, a schema mismatch or a bug; retrying will not help.
    #[error("key store failed: {0}")]
    Internal(#[source] super::BoxError),
}

impl PskStoreError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PskStoreError::Unavailable(_))
    }
}

impl From<super::StoreError> for PskStoreError {
    /// Backends classify once, as [`StoreError`](super::StoreError);
    /// the kinds carry over.
    fn from(e: super::StoreError) -> PskStoreError {
        use super::StoreError as S;
        match e {
            S::Unavailable(s) => PskStoreError::Unavailable(s),
            S::Internal(s) => PskStoreError::Internal(s),
            other @ (S::NameTaken | S::IdTaken) => PskStoreError::Internal(Box::new(other)),
        }
    }
}

/// What `sotto psk list` shows: never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PskListing {
    pub identity: String,
    pub user_id: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// One added or revoked identity, in change order.
#[derive(Debug, Clone)]
pub struct PskChange {
    pub rev: i64,
    pub identity: PskIdentity,
    /// The live entry, or `None` when the identity was revoked.
    pub entry: Option<PskEntry>,
}

/// The port the DTLS key ring loads from and `sotto psk` writes to.
#[async_trait]
pub trait PskStore: Send + Sync + 'static {
    /// Stores a key for a new (or previously revoked) identity.
    async fn add_psk(
        &self,
        identity: &PskIdentity,
        key: &PskKey,
        user_id: Option<&str>,
        now: i64,
    ) -> Result<(), PskStoreError>;
    /// Every identity, oldest first, without keys.
    async fn list_psks(&self) -> Result<Vec<PskListing>, PskStoreError>;
    /// Erases the key; false if there was no live key for the identity.
    async fn revoke_psk(&self, identity: &PskIdentity, now: i64) -> Result<bool, PskStoreError>;
    /// Up to `limit` changes with `rev` above `after`, in `rev` order.
    async fn psk_changes(&self, after: i64, limit: u32) -> Result<Vec<PskChange>, PskStoreError>;
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
}
