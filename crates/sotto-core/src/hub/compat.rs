//! QMessageServer's protocol: in-band login, registration, authorization,
//! logout and messages.

use super::delivery::{After, Outgoing};
use super::event::{Event, Failure, LoggedIn};
use super::online::Arrival;
use super::{Hub, LiveSession, Protocol, Session};
use crate::auth::accounts::{AccountError, ValidSession};
use crate::auth::{Token, UserId};
use crate::hub::conn::{CloseReason, Outbound};
use crate::ports::UserProfile;
use sotto_proto::compat::{Credentials, Request};
use std::sync::Arc;

impl Hub {
    /// Handles one compat request from `out`'s connection.
    pub async fn handle_compat(&self, out: &Outbound, session: &mut Session, request: Request) {
        match request {
            Request::Login(c) => self.compat_login(out, session, c, false).await,
            Request::Register(c) => self.compat_login(out, session, c, true).await,
            Request::Logout { token } => self.compat_logout(out, session, &token).await,
            Request::Message {
                token,
                target,
                message,
            } => {
                self.compat_message(out, session, &token, &target, message)
                    .await
            }
            Request::Authorize { token } => self.compat_authorize(out, session, &token).await,
        }
    }

    /// Login (action 0) and Register (action 1): both answer with a
    /// LoginEvent carrying a fresh token and the active-user list.
    async fn compat_login(
        &self,
        out: &Outbound,
        session: &mut Session,
        c: Credentials,
        register: bool,
    ) {
        let accounts = &self.accounts;
        // The key is checked here too: a login also publishes it.
        if let Err(e) = accounts.validate(&c.name, &c.password, &c.pub_key) {
            return self.login_error(out, &e);
        }
        let result = if register {
            accounts.register(&c.name, &c.password, &c.pub_key).await
        } else {
            accounts.check_password(&c.name, &c.password).await
        };
        let (profile, key_changed) = match result {
            Ok(mut p) => {
                let before = p.public_key != c.pub_key;
                match accounts.set_public_key(&mut p, &c.pub_key).await {
                    Ok(()) => (p, before && !register),
                    Err(e) => return self.login_error(out, &e),
                }
            }
            Err(e) => return self.login_error(out, &e),
        };
        let (token, record, revoked) = match accounts.start_compat_session(&profile.id).await {
            Ok(s) => s,
            Err(e) => return self.login_error(out, &e),
        };
        tracing::info!(user = %profile.id, name = %profile.name, register, "compat login");
        let profile = Arc::new(profile);
        if key_changed {
            // Nodes where this user is already online keep their profile.
            let profile = profile.clone();
            self.announce(crate::broker::Announcement::KeyChanged { profile });
        }
        let (list, version, max) = self.presence.view().for_login();
        let answer = LoggedIn {
            token: token.clone(),
            name: profile.name.as_str().to_owned(),
            first: profile.clone(),
            list,
            max,
        };
        let user = profile.id.clone();
        let bound = Bound {
            token,
            profile,
            created_at: record.created_at,
            listed: Some(version),
        };
        self.bind_compat(out, session, bound, Event::LoggedIn(Box::new(answer)))
            .await;
        // Binding closed the user's previous compat socket as "replaced";
        // any other socket opened with a revoked token (a /ws tab that
        // presented it) goes now, not at the token's lifetime.
        for hash in &revoked {
            self.close_user_session(&user, hash, CloseReason::LoggedOut);
        }
    }

    fn login_error(&self, out: &Outbound, e: &AccountError) {
        crate::metrics::bump(&self.metrics.login_failures);
        self.reply_error(out, Failure::Account(e.to_string()));
    }

    /// Authorize (action 4): binds the token's user to this connection.
    async fn compat_authorize(&self, out: &Outbound, session: &mut Session, raw: &str) {
        let Some(valid) = self.usable_session(out, raw).await else {
            return;
        };
        let bound = Bound {
            token: valid.token,
            profile: Arc::new(valid.user),
            created_at: valid.created_at,
            // No list in the answer: the next broadcast brings it.
            listed: None,
        };
        self.bind_compat(out, session, bound, Event::Authorized)
            .await;
    }

    /// Logout (action 2): revokes the token and closes every connection
    /// using it. Success has no reply, as in QMessageServer.
    async fn compat_logout(&self, out: &Outbound, session: &mut Session, raw: &str) {
        let Some(valid) = self.usable_session(out, raw).await else {
            return;
        };
        let hash = valid.token.hash();
        if self.accounts.revoke(&hash).await.is_err() {
            return self.reply_error(out, Failure::LogoutFailed);
        }
        self.close_user_session(&valid.user.id, &hash, CloseReason::LoggedOut);
        if matches!(session, Session::Authenticated { token, .. } if *token == valid.token) {
            *session = Session::Anonymous;
        }
        tracing::info!(user = %valid.user.id, "logged out");
    }

    /// Message (action 3). As in QMessageServer the sender gets no reply on
    /// success; failures get `{valid:false, error}` (no `event`, so the
    /// example client does not mistake it for a forced logout).
    async fn compat_message(
        &self,
        out: &Outbound,
        session: &Session,
        raw: &str,
        target: &str,
        body: String,
    ) {
        let Some(sender) = self.sender_of(out, session, raw).await else {
            return;
        };
        let Some(target) = UserId::parse(target) else {
            return self.reply_error(out, Failure::UnknownUser);
        };
        let outgoing = Outgoing {
            sender,
            target,
            body,
            client_id: None,
        };
        self.send(outgoing, After::CompatSend { out: out.clone() })
            .await;
    }

    /// Who a Message request speaks for. The connection's own token is
    /// checked without touching the store; any other valid token also works
    /// (as in QMessageServer) but costs a look-up.
    async fn sender_of(&self, out: &Outbound, session: &Session, raw: &str) -> Option<UserId> {
        if let Session::Authenticated { user, token } = session
            && token.as_str() == raw
        {
            return Some(user.clone());
        }
        self.usable_session(out, raw).await.map(|v| v.user.id)
    }

    /// The session behind `raw`, or `None` after replying why not. Only a
    /// token the store says is invalid gets event 3 (the client logs out);
    /// when the store cannot answer, the reply is a plain error and the
    /// client keeps its token to retry.
    async fn usable_session(&self, out: &Outbound, raw: &str) -> Option<ValidSession> {
        match self.valid_session(raw).await {
            Ok(Some(valid)) => Some(valid),
            Ok(None) => {
                self.reply_error(out, Failure::InvalidToken);
                None
            }
            // Whether the database is away or broken, the token may well
            // be good: never answer event 3 (the client would log out).
            Err(_) => {
                self.reply_error(out, Failure::Unavailable);
                None
            }
        }
    }

    /// A session check that treats a session in use by a live connection as
    /// not idle (its recorded last use may lag by a sweep period). `Err`
    /// when the store cannot answer (see [`Accounts::session`]).
    ///
    /// [`Accounts::session`]: crate::auth::accounts::Accounts::session
    pub async fn valid_session(&self, raw: &str) -> Result<Option<ValidSession>, AccountError> {
        self.accounts.session(raw, |u, h| self.is_live(u, h)).await
    }

    /// Makes `out` the user's compat connection: queues `answer`, replays
    /// stored messages after it, then goes online (closing the user's
    /// other compat connection).
    async fn bind_compat(
        &self,
        out: &Outbound,
        session: &mut Session,
        bound: Bound,
        answer: Event,
    ) {
        // This connection may have spoken for someone (or with another
        // token) until now.
        if let Some(previous) = session.user() {
            self.detach(&previous.clone(), out.id());
        }
        let user = bound.profile.id.clone();
        let arrival = Arrival {
            out,
            protocol: Protocol::Compat,
            profile: bound.profile,
            session: Some(LiveSession::of(&bound.token, bound.created_at)),
            after: None,
            listed: bound.listed,
        };
        if self.come_online(arrival, |_| Some(answer)).await {
            *session = Session::Authenticated {
                user,
                token: bound.token,
            };
        }
    }
}

/// A session about to be bound to a compat connection.
struct Bound {
    token: Token,
    profile: Arc<UserProfile>,
    created_at: i64,
    /// The version of the user list in the answer, if it carries one.
    listed: Option<u64>,
}
