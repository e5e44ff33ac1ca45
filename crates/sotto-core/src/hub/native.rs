//! sotto's own protocol: connections authorized at the handshake, durable
//! sends with acks, history, receipts, presence deltas and keys.

use super::compat::live;
use super::delivery::{Outcome, Sent, message_view};
use super::{Hub, Protocol, Session};
use crate::auth::UserId;
use crate::auth::accounts::ValidSession;
use crate::hub::conn::{Outbound, TextFrame};
use crate::ports::StoredMessage;
use sotto_proto::native::{AckStatus, ClientFrame, HISTORY_PAGE_MAX, ServerFrame, UserView};
use std::sync::Arc;

impl Hub {
    /// A `/ws` connection whose credential was checked at the handshake:
    /// sends the `users` snapshot, replays what arrived while the user was
    /// away, then goes online.
    pub async fn connect_native(&self, out: &Outbound, session: &mut Session, valid: ValidSession) {
        let user = valid.user.id.clone();
        let _turn = self.stripes.lock(&user).await;
        if out
            .push(TextFrame::from(self.users_snapshot(Some(&user))))
            .is_err()
        {
            return;
        }
        if !self.replay_undelivered(out, Protocol::Native, &user).await {
            return;
        }
        let l = live(out, Protocol::Native, &valid.token, valid.created_at);
        self.attach(Arc::new(valid.user), l);
        *session = Session::Authenticated {
            user,
            token: valid.token,
        };
    }

    /// Handles one native frame from an authenticated connection.
    pub async fn handle_native(&self, out: &Outbound, session: &Session, frame: ClientFrame) {
        let Some(me) = session.user().cloned() else {
            return reply_error(out, "unauthorized", "not authenticated", None);
        };
        match frame {
            ClientFrame::Send {
                to,
                body,
                client_id,
            } => self.native_send(out, &me, &to, &body, &client_id).await,
            ClientFrame::History {
                with,
                before,
                limit,
            } => self.native_history(out, &me, &with, before, limit).await,
            ClientFrame::Read { with, up_to } => self.native_read(out, &me, &with, up_to).await,
            ClientFrame::SetKey { public_key } => self.native_set_key(out, &me, &public_key).await,
        }
    }

    async fn native_send(
        &self,
        out: &Outbound,
        me: &UserId,
        to: &str,
        body: &str,
        client_id: &str,
    ) {
        let Some(target) = UserId::parse(to) else {
            return reply_error(out, "unknown_user", "no such user", Some(client_id));
        };
        let (message, status) = match self
            .deliver_native(out.id(), me, &target, body, client_id)
            .await
        {
            Sent::New { message, delivered } => (message, status(delivered)),
            Sent::Duplicate(m) => {
                let s = status(m.delivered_at.is_some());
                (m, s)
            }
            Sent::Refused(outcome) => {
                let (code, text) = refusal(&outcome);
                return reply_error(out, code, text, Some(client_id));
            }
        };
        let ack = ServerFrame::Ack {
            client_id,
            id: message.seq,
            to: target.as_str(),
            status,
        };
        self.reply(out, ack.encode());
    }

    async fn native_history(
        &self,
        out: &Outbound,
        me: &UserId,
        with: &str,
        before: Option<i64>,
        limit: Option<u32>,
    ) {
        let Some(other) = UserId::parse(with) else {
            return reply_error(out, "unknown_user", "no such user", None);
        };
        let limit = limit.unwrap_or(50).clamp(1, HISTORY_PAGE_MAX);
        let page: Vec<StoredMessage> = match self.store.history(me, &other, before, limit).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read history");
                return reply_error(out, "internal", "history unavailable, retry", None);
            }
        };
        let frame = ServerFrame::History {
            with: other.as_str(),
            messages: page.iter().map(message_view).collect(),
        };
        self.reply(out, frame.encode());
    }

    async fn native_read(&self, out: &Outbound, me: &UserId, with: &str, up_to: i64) {
        let Some(other) = UserId::parse(with) else {
            return reply_error(out, "unknown_user", "no such user", None);
        };
        match self.store.mark_read(me, &other, up_to, self.now_ms()).await {
            Ok(0) => {}
            Ok(_) => {
                let frame = ServerFrame::Read {
                    with: me.as_str(),
                    up_to,
                };
                let frame = TextFrame::from(frame.encode());
                for l in self.conns_of(&other) {
                    if l.protocol == Protocol::Native {
                        let _ = l.out.push(frame.clone());
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record read receipt");
                reply_error(out, "internal", "receipt not recorded, retry", None);
            }
        }
    }

    async fn native_set_key(&self, out: &Outbound, me: &UserId, key: &str) {
        if key.len() > self.config.public_key_max {
            return reply_error(out, "too_large", "public key is too long", None);
        }
        let Some(mut profile) = self.online_map().get(me).map(|o| (*o.profile).clone()) else {
            return;
        };
        if profile.public_key == key {
            return;
        }
        if let Err(e) = self.accounts.set_public_key(&mut profile, key).await {
            return reply_error(out, e.native_code(), &e.to_string(), None);
        }
        let profile = Arc::new(profile);
        if let Some(o) = self.online_map().get_mut(me) {
            o.profile = profile.clone();
        }
        tracing::info!(user = %me, "public key changed");
        self.presence.changed(&profile, None);
        self.presence_changed.notify_one();
    }

    /// The online users (at most `user_list_max`) other than `me` as a
    /// `users` frame.
    pub(super) fn users_snapshot(&self, me: Option<&UserId>) -> String {
        let profiles: Vec<_> = {
            let map = self.online_map();
            map.values()
                .filter(|o| Some(&o.profile.id) != me)
                .take(self.config.user_list_max)
                .map(|o| o.profile.clone())
                .collect()
        };
        let users = profiles
            .iter()
            .map(|p| UserView {
                id: p.id.as_str(),
                name: p.name.as_str(),
                online: true,
                public_key: &p.public_key,
            })
            .collect();
        ServerFrame::Users { users }.encode()
    }
}

fn status(delivered: bool) -> AckStatus {
    if delivered {
        AckStatus::Delivered
    } else {
        AckStatus::Stored
    }
}

fn refusal(outcome: &Outcome) -> (&'static str, &'static str) {
    match outcome {
        Outcome::UnknownUser => ("unknown_user", "no such user"),
        Outcome::QueueFull => ("queue_full", "the recipient's offline queue is full"),
        _ => ("internal", "message not stored, retry"),
    }
}

/// Sends an `error` frame; the connection stays up.
pub fn reply_error(out: &Outbound, code: &str, message: &str, reference: Option<&str>) {
    let frame = ServerFrame::Error {
        code,
        message,
        reference,
    };
    let _ = out.push(TextFrame::from(frame.encode()));
}
