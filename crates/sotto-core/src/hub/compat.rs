//! QMessageServer's protocol: in-band login, registration, authorization,
//! logout and messages.

use super::{Hub, Live, Protocol, Session};
use crate::auth::accounts::{AccountError, ValidSession};
use crate::auth::{Token, UserId};
use crate::hub::conn::{CloseReason, Outbound, TextFrame};
use crate::hub::delivery::Outcome;
use crate::ports::SessionKind;
use sotto_proto::compat::{Credentials, Event, Request, Response};
use std::sync::Arc;

const INVALID_TOKEN: &str = "Invalid or expired token.";

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
                self.compat_message(out, session, &token, &target, &message)
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
        let profile = match result {
            Ok(mut p) => match accounts.set_public_key(&mut p, &c.pub_key).await {
                Ok(()) => p,
                Err(e) => return self.login_error(out, &e),
            },
            Err(e) => return self.login_error(out, &e),
        };
        let (token, record) = match accounts
            .start_session(&profile.id, SessionKind::Compat)
            .await
        {
            Ok(s) => s,
            Err(e) => return self.login_error(out, &e),
        };
        tracing::info!(user = %profile.id, name = %profile.name, register, "compat login");
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
        let valid = ValidSession {
            token,
            user: (*profile).clone(),
            created_at: record.created_at,
        };
        self.bind_compat(out, session, valid, response).await;
    }

    fn login_error(&self, out: &Outbound, e: &AccountError) {
        crate::metrics::bump(&self.metrics.login_failures);
        self.reply_compat_error(out, Some(Event::Login), &e.to_string());
    }

    /// Authorize (action 4): binds the token's user to this connection.
    async fn compat_authorize(&self, out: &Outbound, session: &mut Session, raw: &str) {
        let Some(valid) = self.usable_session(out, raw).await else {
            return;
        };
        let response = Response {
            valid: true,
            event: Some(Event::Authorization),
            ..Default::default()
        }
        .encode();
        self.bind_compat(out, session, valid, response).await;
    }

    /// Logout (action 2): revokes the token and closes every connection
    /// using it. Success has no reply, as in QMessageServer.
    async fn compat_logout(&self, out: &Outbound, session: &mut Session, raw: &str) {
        let Some(valid) = self.usable_session(out, raw).await else {
            return;
        };
        let hash = valid.token.hash();
        if self.accounts.revoke(&hash).await.is_err() {
            return self.reply_compat_error(out, None, "Internal server error, please try again.");
        }
        self.close_session(&hash, CloseReason::LoggedOut);
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
        body: &str,
    ) {
        let Some(sender) = self.sender_of(out, session, raw).await else {
            return;
        };
        let Some(target) = UserId::parse(target) else {
            return self.reply_compat_error(out, None, "Unknown target user.");
        };
        let error = match self.deliver_compat(&sender, &target, body).await {
            Outcome::Delivered | Outcome::Stored => return,
            Outcome::UnknownUser => "Unknown target user.",
            Outcome::QueueFull => "Recipient's offline queue is full.",
            Outcome::Failed => "Message could not be stored, please retry.",
        };
        self.reply_compat_error(out, None, error);
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
                self.reply_compat_error(out, Some(Event::InvalidUser), INVALID_TOKEN);
                None
            }
            Err(e) => {
                self.reply_compat_error(out, None, &e.to_string());
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

    /// Makes `out` the user's compat connection: queues `response`, replays
    /// stored messages after it, then goes online. The user's other compat
    /// connection is closed; the same connection logging in again is not.
    async fn bind_compat(
        &self,
        out: &Outbound,
        session: &mut Session,
        valid: ValidSession,
        response: String,
    ) {
        // This connection may have spoken for someone (or with another
        // token) until now.
        if let Some(previous) = session.user() {
            self.detach(&previous.clone(), out.id());
        }
        let user = valid.user.id.clone();
        let _turn = self.stripes.lock(&user).await;
        let replaced = self
            .conns_of(&user)
            .into_iter()
            .find(|l| l.protocol == Protocol::Compat && l.out.id() != out.id());
        if let Some(old) = replaced {
            tracing::info!(user = %user, "closing previous compat connection");
            self.detach(&user, old.out.id());
            old.out.close(CloseReason::Replaced);
        }
        if out.push(TextFrame::from(response)).is_err() {
            return;
        }
        if !self.replay_undelivered(out, Protocol::Compat, &user).await {
            return;
        }
        self.attach(
            Arc::new(valid.user),
            live(out, Protocol::Compat, &valid.token, valid.created_at),
        );
        *session = Session::Authenticated {
            user,
            token: valid.token,
        };
    }
}

pub(super) fn live(out: &Outbound, protocol: Protocol, token: &Token, created_at: i64) -> Live {
    Live {
        out: out.clone(),
        protocol,
        session: Some(super::LiveSession {
            token_hash: token.hash(),
            created_at,
        }),
    }
}
