//! Login, registration, authorization and logout for the compat protocol.

use super::{Hub, Online, Session, millis, now_ms};
use crate::auth::{PasswordError, Token, UserId, UserName};
use crate::hub::conn::{CloseReason, Outbound, TextFrame};
use crate::protocol::compat::{Credentials, Event, Response};
use crate::store::{SessionRecord, StoreError, UserProfile, UserRecord};
use std::sync::Arc;

const INVALID_LOGIN: &str = "User or password is invalid.";
const BUSY: &str = "Server is busy, please try again.";
const INTERNAL: &str = "Internal server error, please try again.";
const INVALID_TOKEN: &str = "Invalid or expired token.";

/// How many times registration draws a new random id after a collision.
const ID_ATTEMPTS: usize = 8;

impl Hub {
    /// Login (action 0) and Register (action 1): both answer with a
    /// LoginEvent carrying a fresh token and the active-user list.
    pub(super) async fn login(
        &self,
        out: &Outbound,
        session: &mut Session,
        creds: Credentials,
        register: bool,
    ) {
        let result = if register {
            self.register_account(&creds).await
        } else {
            self.check_password(&creds).await
        };
        let mut profile = match result {
            Ok(p) => p,
            Err(message) => return self.reply_error(out, Some(Event::Login), message),
        };
        if profile.public_key != creds.pub_key {
            if let Err(e) = self.store.set_public_key(&profile.id, &creds.pub_key).await {
                tracing::error!(error = %e, "cannot store public key");
                return self.reply_error(out, Some(Event::Login), INTERNAL);
            }
            profile.public_key = creds.pub_key;
        }
        let token = Token::generate();
        let now = now_ms();
        let record = SessionRecord {
            token_hash: token.hash(),
            created_at: now,
            last_used_at: now,
        };
        if let Err(e) = self.store.create_session(&profile.id, &record).await {
            tracing::error!(error = %e, "cannot create session");
            return self.reply_error(out, Some(Event::Login), INTERNAL);
        }
        // One token per user, as in QMessageServer. Its web client reloads
        // when its socket closes and re-authorizes with its stored token; if
        // the replaced tab's token stayed valid, two tabs would take the
        // user from each other forever.
        if let Err(e) = self
            .store
            .delete_other_sessions(&profile.id, &record.token_hash)
            .await
        {
            tracing::error!(error = %e, "cannot revoke previous sessions");
        }
        tracing::info!(user = %profile.id, name = %profile.name, register, "logged in");
        let profile = Arc::new(profile);
        let users = self.user_list_json(Some(&profile));
        let response = Response {
            valid: true,
            event: Some(Event::Login),
            token: Some(token.as_str()),
            username: Some(profile.name.as_str()),
            users: Some(&users),
            ..Default::default()
        }
        .encode();
        self.bind(out, session, profile, token, record.created_at, response)
            .await;
    }

    /// Validates credentials that the store will see, so that nothing
    /// unbounded reaches Argon2 or the database.
    fn validate(&self, creds: &Credentials) -> Result<UserName, &'static str> {
        if creds.name.is_empty() || creds.password.is_empty() {
            return Err("Please fill all fields.");
        }
        if creds.password.len() > self.config.password_max {
            return Err("Password is too long.");
        }
        if creds.pub_key.len() > self.config.public_key_max {
            return Err("Public key is too long.");
        }
        UserName::parse(&creds.name).map_err(|e| e.message())
    }

    async fn check_password(&self, creds: &Credentials) -> Result<UserProfile, &'static str> {
        let name = self.validate(creds)?;
        let record = self.store.user_by_name(&name).await.map_err(internal)?;
        let (stored, profile) = match record {
            Some(r) => (Some(r.password_hash), Some(r.profile)),
            None => (None, None),
        };
        // Unknown names are verified against a dummy hash: same cost, so
        // response time does not reveal which names exist.
        let ok = self
            .hasher
            .verify(creds.password.clone(), stored)
            .await
            .map_err(password_error)?;
        match profile {
            Some(p) if ok => Ok(p),
            _ => {
                tracing::warn!(name = %name, "failed login");
                Err(INVALID_LOGIN)
            }
        }
    }

    async fn register_account(&self, creds: &Credentials) -> Result<UserProfile, &'static str> {
        let name = self.validate(creds)?;
        // A cheap check first so a taken name costs no Argon2 run; the unique
        // index still decides races.
        if self
            .store
            .user_by_name(&name)
            .await
            .map_err(internal)?
            .is_some()
        {
            return Err("Username already exists.");
        }
        let password_hash = self
            .hasher
            .hash(creds.password.clone())
            .await
            .map_err(password_error)?;
        for _ in 0..ID_ATTEMPTS {
            let record = UserRecord {
                profile: UserProfile {
                    id: UserId::random(),
                    name: name.clone(),
                    public_key: creds.pub_key.clone(),
                },
                password_hash: password_hash.clone(),
            };
            match self.store.create_user(&record, now_ms()).await {
                Ok(()) => return Ok(record.profile),
                Err(StoreError::IdTaken) => continue,
                Err(StoreError::NameTaken) => return Err("Username already exists."),
                Err(e) => return Err(internal(e)),
            }
        }
        Err(INTERNAL)
    }

    /// Authorize (action 4): binds the token's user to this connection.
    pub(super) async fn authorize(&self, out: &Outbound, session: &mut Session, raw: &str) {
        let Some((token, profile, created_at)) = self.valid_session(raw).await else {
            return self.reply_error(out, Some(Event::InvalidUser), INVALID_TOKEN);
        };
        let response = Response {
            valid: true,
            event: Some(Event::Authorization),
            ..Default::default()
        }
        .encode();
        self.bind(out, session, Arc::new(profile), token, created_at, response)
            .await;
    }

    /// Logout (action 2): revokes the token and closes the connection bound
    /// with it. Success has no reply, as in QMessageServer.
    pub(super) async fn logout(&self, out: &Outbound, session: &mut Session, raw: &str) {
        let Some((token, profile, _)) = self.valid_session(raw).await else {
            return self.reply_error(out, Some(Event::InvalidUser), INVALID_TOKEN);
        };
        let hash = token.hash();
        if let Err(e) = self.store.delete_session(&hash).await {
            tracing::error!(error = %e, "cannot delete session");
            return self.reply_error(out, None, INTERNAL);
        }
        let bound = {
            let mut map = self.online_map();
            match map.get(&profile.id) {
                Some(o) if o.token_hash == hash => map.remove(&profile.id),
                _ => None,
            }
        };
        if let Some(o) = bound {
            self.presence_changed.notify_one();
            o.out.close(CloseReason::LoggedOut);
        }
        if matches!(session, Session::Authenticated { token: t, .. } if *t == token) {
            *session = Session::Anonymous;
        }
        tracing::info!(user = %profile.id, "logged out");
    }

    /// The token's session and user, if the token is well-formed, known and
    /// neither idle too long nor too old. Expired sessions are deleted on
    /// sight. Marks the session as used.
    pub(super) async fn valid_session(&self, raw: &str) -> Option<(Token, UserProfile, i64)> {
        let token = Token::parse(raw)?;
        let hash = token.hash();
        let (record, profile) = match self.store.session(&hash).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::error!(error = %e, "cannot look up session");
                return None;
            }
        };
        let now = now_ms();
        let idle = now.saturating_sub(record.last_used_at) > millis(self.config.session_idle);
        let old = now.saturating_sub(record.created_at) > millis(self.config.session_lifetime);
        let live = self.is_bound_with(&profile.id, &hash);
        if (idle && !live) || old {
            let _ = self.store.delete_session(&hash).await;
            return None;
        }
        if let Err(e) = self.store.touch_sessions(&[hash], now).await {
            tracing::warn!(error = %e, "cannot record session use");
        }
        Some((token, profile, record.created_at))
    }

    fn is_bound_with(&self, user: &UserId, hash: &crate::auth::TokenHash) -> bool {
        self.online_map()
            .get(user)
            .is_some_and(|o| o.token_hash == *hash)
    }

    /// Makes `out` the user's connection: queues `response`, replays stored
    /// messages after it, then goes online. Any other connection of the
    /// user is closed; the same connection logging in again is not.
    async fn bind(
        &self,
        out: &Outbound,
        session: &mut Session,
        profile: Arc<UserProfile>,
        token: Token,
        session_created_at: i64,
        response: String,
    ) {
        // This connection may have spoken for someone else until now.
        if let Some(previous) = session.user().filter(|u| **u != profile.id) {
            self.unbind_if(previous, out.id());
        }
        let user = profile.id.clone();
        let _turn = self.stripes.lock(&user).await;
        let replaced = self.online_map().remove(&user);
        if let Some(old) = replaced.filter(|o| o.out.id() != out.id()) {
            tracing::info!(user = %user, "closing previous connection");
            old.out.close(CloseReason::Replaced);
        }
        if out.push(TextFrame::from(response)).is_err() {
            return;
        }
        if !self.replay_pending(out, &user).await {
            return;
        }
        let online = Online {
            out: out.clone(),
            profile,
            token_hash: token.hash(),
            session_created_at,
        };
        self.online_map().insert(user.clone(), online);
        *session = Session::Authenticated { user, token };
        self.presence_changed.notify_one();
    }
}

fn internal(e: StoreError) -> &'static str {
    tracing::error!(error = %e, "store failure during login");
    INTERNAL
}

fn password_error(e: PasswordError) -> &'static str {
    match e {
        PasswordError::Busy => {
            tracing::warn!("login refused: password hashing queue full");
            BUSY
        }
        other => {
            tracing::error!(error = %other, "password hashing failed");
            INTERNAL
        }
    }
}
