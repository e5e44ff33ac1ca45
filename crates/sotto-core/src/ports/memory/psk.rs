//! The [`PskStore`] port in memory.

use super::MemoryStore;
use crate::ports::psk::{PskChange, PskEntry, PskIdentity, PskKey, PskListing};
use crate::ports::{PskStore, PskStoreError};
use async_trait::async_trait;

pub(super) struct PskRow {
    identity: PskIdentity,
    key: Option<PskKey>,
    user_id: Option<String>,
    created_at: i64,
    revoked_at: Option<i64>,
    rev: i64,
}

impl super::State {
    fn next_rev(&self) -> i64 {
        self.psks.values().map(|r| r.rev).max().unwrap_or(0) + 1
    }
}

#[async_trait]
impl PskStore for MemoryStore {
    async fn add_psk(
        &self,
        identity: &PskIdentity,
        key: &PskKey,
        user_id: Option<&str>,
        now: i64,
    ) -> Result<(), PskStoreError> {
        let mut s = self.open()?;
        if s.psks
            .get(identity.as_str())
            .is_some_and(|r| r.revoked_at.is_none())
        {
            return Err(PskStoreError::IdentityTaken(identity.to_string()));
        }
        let row = PskRow {
            identity: identity.clone(),
            key: Some(key.clone()),
            user_id: user_id.map(str::to_owned),
            created_at: now,
            revoked_at: None,
            rev: s.next_rev(),
        };
        s.psks.insert(identity.as_str().to_owned(), row);
        Ok(())
    }

    async fn list_psks(&self) -> Result<Vec<PskListing>, PskStoreError> {
        let s = self.open()?;
        let mut all: Vec<_> = s
            .psks
            .values()
            .map(|r| PskListing {
                identity: r.identity.to_string(),
                user_id: r.user_id.clone(),
                created_at: r.created_at,
                revoked_at: r.revoked_at,
            })
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.identity).cmp(&(b.created_at, &b.identity)));
        Ok(all)
    }

    async fn revoke_psk(&self, identity: &PskIdentity, now: i64) -> Result<bool, PskStoreError> {
        let mut s = self.open()?;
        let rev = s.next_rev();
        match s.psks.get_mut(identity.as_str()) {
            Some(r) if r.revoked_at.is_none() => {
                r.key = None;
                r.revoked_at = Some(now);
                r.rev = rev;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn psk_changes(&self, after: i64, limit: u32) -> Result<Vec<PskChange>, PskStoreError> {
        let s = self.open()?;
        let mut rows: Vec<_> = s.psks.values().filter(|r| r.rev > after).collect();
        rows.sort_by_key(|r| r.rev);
        Ok(rows
            .into_iter()
            .take(limit as usize)
            .map(|r| PskChange {
                rev: r.rev,
                identity: r.identity.clone(),
                entry: r.key.clone().map(|key| PskEntry {
                    identity: r.identity.clone(),
                    key,
                    user_id: r.user_id.clone(),
                }),
            })
            .collect())
    }
}
