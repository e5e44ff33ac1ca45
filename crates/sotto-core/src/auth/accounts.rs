//! Registration, login and sessions, shared by every way in: the compat
//! protocol's in-band login, the HTTP account API and the handshake
//! authorization of `/ws`. Protocol code maps [`AccountError`] to its own
//! wire shape; the rules live only here.
//!
//! A store that cannot answer is never mistaken for a bad credential:
//! that would log every user out during a database hiccup. It is
//! [`AccountError::Unavailable`] (HTTP 503, compat `{valid:false,error}`
//! without a logout event), and sessions stay valid for when it is back.

use crate::auth::{NameError, PasswordError, PasswordHasher, Token, TokenHash, UserId, UserName};
use crate::clock::{Clock, millis};
use crate::ports::{SessionKind, SessionRecord, Store, StoreError, UserProfile, UserRecord};
use std::sync::Arc;
use std::time::Duration;

/// How many times registration draws a new random id after a collision.
const ID_ATTEMPTS: usize = 8;

/// Limits on what a client may send as credentials.
#[derive(Debug, Clone)]
pub struct AccountLimits {
    pub password_max: usize,
    pub public_key_max: usize,
    pub session_idle: Duration,
    pub session_lifetime: Duration,
}

impl AccountLimits {
    /// [`Accounts::validate`]'s checks, which need nothing but the limits
    /// (so the `api_body` fuzz target can run them without a store).
    pub fn check(&self, name: &str, password: &str, key: &str) -> Result<UserName, AccountError> {
        if name.is_empty() || password.is_empty() {
            return Err(AccountError::MissingFields);
        }
        if password.len() > self.password_max {
            return Err(AccountError::PasswordTooLong);
        }
        if key.len() > self.public_key_max {
            return Err(AccountError::KeyTooLong);
        }
        UserName::parse(name).map_err(AccountError::BadName)
    }
}

/// Why an account operation failed. The `Display` text is what users read
/// (the compat `error` field and the API `message`); each edge maps the
/// kind to its own status once (`ApiError::from` for HTTP,
/// [`AccountError::native_code`] for `/ws` frames).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("Please fill all fields.")]
    MissingFields,
    #[error("{}", .0.message())]
    BadName(NameError),
    #[error("Password is too long.")]
    PasswordTooLong,
    #[error("Public key is too long.")]
    KeyTooLong,
    #[error("User or password is invalid.")]
    InvalidCredentials,
    #[error("Username already exists.")]
    NameTaken,
    #[error("Server is busy, please try again.")]
    Busy,
    /// The store could not be reached; nothing is known about the
    /// credential, so the client must keep it and retry.
    #[error("Server is temporarily unavailable, please try again.")]
    Unavailable,
    #[error("Internal server error, please try again.")]
    Internal,
}

impl AccountError {
    /// Whether the same request may succeed later (the edges add a
    /// `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, AccountError::Busy | AccountError::Unavailable)
    }
}

impl From<StoreError> for AccountError {
    /// The one place store failures become account failures; the cause is
    /// logged here, since the account error no longer carries it.
    fn from(e: StoreError) -> AccountError {
        match e {
            StoreError::NameTaken => AccountError::NameTaken,
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "store unavailable");
                AccountError::Unavailable
            }
            StoreError::IdTaken | StoreError::Internal(_) => {
                tracing::error!(error = %e, "store failure in accounts");
                AccountError::Internal
            }
        }
    }
}

/// A session that passed every check: known, not idle too long, not too
/// old.
#[derive(Debug, Clone)]
pub struct ValidSession {
    pub token: Token,
    pub user: UserProfile,
    pub created_at: i64,
}

pub struct Accounts {
    store: Arc<dyn Store>,
    hasher: PasswordHasher,
    limits: AccountLimits,
    clock: Clock,
}

impl Accounts {
    pub fn new(
        store: Arc<dyn Store>,
        hasher: PasswordHasher,
        limits: AccountLimits,
        clock: Clock,
    ) -> Accounts {
        Accounts {
            store,
            hasher,
            limits,
            clock,
        }
    }

    /// The clock every session time is read from (the hub shares it).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn limits(&self) -> &AccountLimits {
        &self.limits
    }

    /// Checks sizes and the name before anything reaches Argon2 or the store.
    pub fn validate(
        &self,
        name: &str,
        password: &str,
        key: &str,
    ) -> Result<UserName, AccountError> {
        self.limits.check(name, password, key)
    }

    pub async fn register(
        &self,
        name: &str,
        password: &str,
        key: &str,
    ) -> Result<UserProfile, AccountError> {
        let name = self.validate(name, password, key)?;
        // A cheap check first so a taken name costs no Argon2 run; the unique
        // index still decides races.
        if self
            .store
            .user_by_name(&name)
            .await
            .map_err(AccountError::from)?
            .is_some()
        {
            return Err(AccountError::NameTaken);
        }
        let password_hash = self
            .hasher
            .hash(password.to_owned())
            .await
            .map_err(hashing)?;
        for _ in 0..ID_ATTEMPTS {
            let record = UserRecord {
                profile: UserProfile {
                    id: UserId::random(),
                    name: name.clone(),
                    public_key: key.to_owned(),
                },
                password_hash: password_hash.clone(),
            };
            match self.store.create_user(&record, self.clock.now_ms()).await {
                Ok(()) => {
                    tracing::info!(user = %record.profile.id, name = %name, "registered");
                    return Ok(record.profile);
                }
                Err(StoreError::IdTaken) => continue,
                Err(e) => return Err(AccountError::from(e)),
            }
        }
        Err(AccountError::Internal)
    }

    /// Checks a password. Unknown names are verified against a dummy hash:
    /// same cost, so response time does not reveal which names exist.
    pub async fn check_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<UserProfile, AccountError> {
        let name = self.validate(name, password, "")?;
        let record = self
            .store
            .user_by_name(&name)
            .await
            .map_err(AccountError::from)?;
        let (stored, profile) = match record {
            Some(r) => (Some(r.password_hash), Some(r.profile)),
            None => (None, None),
        };
        let verified = self
            .hasher
            .verify(password.to_owned(), stored)
            .await
            .map_err(hashing)?;
        match profile {
            Some(p) if verified.ok => {
                if let Some(hash) = verified.rehashed {
                    self.upgrade_hash(&p, &hash).await;
                }
                Ok(p)
            }
            _ => {
                tracing::warn!(name = %name, "failed login");
                Err(AccountError::InvalidCredentials)
            }
        }
    }

    /// Stores a hash re-made at today's Argon2 costs. Best effort: the login
    /// succeeds either way, and the next one tries again.
    async fn upgrade_hash(&self, user: &UserProfile, hash: &str) {
        match self.store.set_password_hash(&user.id, hash).await {
            Ok(()) => tracing::info!(user = %user.id, "password re-hashed at today's costs"),
            Err(e) => {
                tracing::warn!(user = %user.id, error = %e, "cannot store the re-hashed password")
            }
        }
    }

    pub async fn set_public_key(
        &self,
        user: &mut UserProfile,
        key: &str,
    ) -> Result<(), AccountError> {
        if user.public_key == key {
            return Ok(());
        }
        self.store
            .set_public_key(&user.id, key)
            .await
            .map_err(AccountError::from)?;
        user.public_key = key.to_owned();
        Ok(())
    }

    /// A fresh session for `user`. A compat session replaces the user's
    /// other compat sessions (see [`SessionKind`]).
    pub async fn start_session(
        &self,
        user: &UserId,
        kind: SessionKind,
    ) -> Result<(Token, SessionRecord), AccountError> {
        let token = Token::generate();
        let now = self.clock.now_ms();
        let record = SessionRecord {
            token_hash: token.hash(),
            created_at: now,
            last_used_at: now,
        };
        self.store
            .create_session(user, &record, kind)
            .await
            .map_err(AccountError::from)?;
        Ok((token, record))
    }

    /// A fresh compat session for `user`, which replaces the user's other
    /// compat sessions: QMessageServer keeps one token per user, so
    /// logging in again is how a user shuts out a client left logged in
    /// elsewhere. Returns the revoked ones too, so that every socket
    /// opened with one (on any port) can be closed at once.
    ///
    /// If the old sessions cannot be revoked (the store is down or
    /// overloaded), the login fails and the new session is withdrawn: a
    /// login that succeeded while the old token stayed valid would break
    /// that promise without anyone noticing.
    pub async fn start_compat_session(
        &self,
        user: &UserId,
    ) -> Result<(Token, SessionRecord, Vec<TokenHash>), AccountError> {
        let (token, record) = self.start_session(user, SessionKind::Compat).await?;
        let revoked = self
            .store
            .delete_other_sessions(user, &record.token_hash, SessionKind::Compat)
            .await;
        match revoked {
            Ok(revoked) => Ok((token, record, revoked)),
            Err(e) => {
                tracing::warn!(error = %e, user = %user, "compat login refused: cannot revoke the previous compat sessions");
                // Never handed out; if this fails too, it expires unused.
                if let Err(e) = self.store.delete_session(&record.token_hash).await {
                    tracing::warn!(error = %e, "cannot withdraw the refused login's session");
                }
                Err(AccountError::from(e))
            }
        }
    }

    /// The session behind `raw`, if the token is well-formed, known, and
    /// neither idle too long (unless `live` says a connection is using it
    /// right now) nor too old: `Ok(None)` when it is not. Expired sessions
    /// are deleted on sight. A valid session is marked as used.
    ///
    /// `Err` means the store could not answer: the token may well be
    /// valid, so callers must not treat it as a logout.
    pub async fn session(
        &self,
        raw: &str,
        live: impl Fn(&UserId, &TokenHash) -> bool,
    ) -> Result<Option<ValidSession>, AccountError> {
        let Some(token) = Token::parse(raw) else {
            return Ok(None);
        };
        let hash = token.hash();
        let Some((record, user)) = self.store.session(&hash).await? else {
            return Ok(None);
        };
        let now = self.clock.now_ms();
        let idle = now.saturating_sub(record.last_used_at) > millis(self.limits.session_idle);
        let old = now.saturating_sub(record.created_at) > millis(self.limits.session_lifetime);
        if (idle && !live(&user.id, &hash)) || old {
            if let Err(e) = self.store.delete_session(&hash).await {
                tracing::warn!(error = %e, "cannot delete an expired session");
            }
            return Ok(None);
        }
        // Recording use is a write; one that would move the idle clock by
        // less than a tenth of the timeout is not worth a disk round trip
        // on every request (live connections are touched by the sweeper).
        let stale = now.saturating_sub(record.last_used_at) > millis(self.limits.session_idle) / 10;
        if stale && let Err(e) = self.store.touch_sessions(&[hash], now).await {
            tracing::warn!(error = %e, "cannot record session use");
        }
        Ok(Some(ValidSession {
            token,
            user,
            created_at: record.created_at,
        }))
    }

    pub async fn revoke(&self, hash: &TokenHash) -> Result<bool, AccountError> {
        self.store
            .delete_session(hash)
            .await
            .map_err(AccountError::from)
    }
}

fn hashing(e: PasswordError) -> AccountError {
    match e {
        PasswordError::Busy => {
            tracing::warn!("login refused: password hashing queue full");
            AccountError::Busy
        }
        other => {
            tracing::error!(error = %other, "password hashing failed");
            AccountError::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PasswordParams;
    use crate::ports::fault::{FaultSwitch, FaultyStore};
    use crate::ports::memory::MemoryStore;

    const IDLE: Duration = Duration::from_secs(600);

    /// Accounts on the in-memory store behind an outage switch, with a
    /// clock that follows tokio's paused time.
    async fn accounts() -> (Accounts, FaultSwitch) {
        let (store, switch) = FaultyStore::wrap(Arc::new(MemoryStore::new()));
        let cheap = PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let hasher = PasswordHasher::new(cheap, 1, 8).await.unwrap();
        let limits = AccountLimits {
            password_max: 64,
            public_key_max: 64,
            session_idle: IDLE,
            session_lifetime: Duration::from_secs(3600),
        };
        let clock = Clock::starting_at(1_000_000);
        (Accounts::new(store, hasher, limits, clock), switch)
    }

    fn not_live(_: &UserId, _: &TokenHash) -> bool {
        false
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_not_an_invalid_token() {
        let (accounts, switch) = accounts().await;
        let alice = accounts.register("alice", "pw", "").await.unwrap();
        let (token, _) = accounts
            .start_session(&alice.id, SessionKind::Api)
            .await
            .unwrap();

        switch.fail();
        let during = accounts.session(token.as_str(), not_live).await;
        assert!(
            matches!(during, Err(AccountError::Unavailable)),
            "{during:?}"
        );
        let login = accounts.check_password("alice", "pw").await;
        assert_eq!(login.err(), Some(AccountError::Unavailable));
        let register = accounts.register("bob", "pw", "").await;
        assert_eq!(register.err(), Some(AccountError::Unavailable));

        switch.restore();
        let after = accounts.session(token.as_str(), not_live).await.unwrap();
        assert_eq!(after.map(|v| v.user.id), Some(alice.id));
    }

    /// A compat login whose old session cannot be revoked is refused, and
    /// leaves nothing behind: the old token is still the user's only one.
    #[tokio::test(start_paused = true)]
    async fn a_compat_login_that_cannot_revoke_the_old_one_fails() {
        let (accounts, switch) = accounts().await;
        let alice = accounts.register("alice", "pw", "").await.unwrap();
        let (old, old_record, _) = accounts.start_compat_session(&alice.id).await.unwrap();

        switch.fail_only("delete_other_sessions");
        let refused = accounts.start_compat_session(&alice.id).await;
        assert_eq!(refused.err(), Some(AccountError::Unavailable));

        switch.restore();
        let still = accounts.session(old.as_str(), not_live).await.unwrap();
        assert_eq!(still.map(|v| v.user.id), Some(alice.id.clone()));
        // The refused login's session was withdrawn: the next login finds
        // only the old one to revoke.
        let (_, _, revoked) = accounts.start_compat_session(&alice.id).await.unwrap();
        assert_eq!(revoked, [old_record.token_hash]);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_malformed_and_idle_tokens_are_invalid() {
        let (accounts, _switch) = accounts().await;
        let alice = accounts.register("alice", "pw", "").await.unwrap();
        let (token, _) = accounts
            .start_session(&alice.id, SessionKind::Api)
            .await
            .unwrap();
        let unknown = Token::generate();
        assert!(
            accounts
                .session(unknown.as_str(), not_live)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            accounts
                .session("not a token", not_live)
                .await
                .unwrap()
                .is_none()
        );
        tokio::time::advance(IDLE + Duration::from_secs(1)).await;
        let live = accounts.session(token.as_str(), |_, _| true).await.unwrap();
        assert!(live.is_some(), "a live connection keeps its session");
        // That use was recorded; idling from there on ends the session.
        tokio::time::advance(IDLE + Duration::from_secs(1)).await;
        let idle = accounts.session(token.as_str(), not_live).await.unwrap();
        assert!(idle.is_none());
    }

    #[test]
    fn store_failures_map_by_kind() {
        let kind = |e| AccountError::from(e);
        assert_eq!(
            kind(StoreError::unavailable("down")),
            AccountError::Unavailable
        );
        assert_eq!(
            kind(StoreError::internal("corrupt")),
            AccountError::Internal
        );
        assert_eq!(kind(StoreError::NameTaken), AccountError::NameTaken);
        assert!(AccountError::Unavailable.is_retryable());
    }
}
