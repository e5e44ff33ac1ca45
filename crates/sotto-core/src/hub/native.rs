//! sotto's own protocol: connections authorized at the handshake, durable
//! sends with acks, history, receipts, presence deltas and keys.

use super::delivery::Outgoing;
use super::event::{Ack, ErrorReply, Event, Failure, History, ReadReceipt, Shared};
use super::online::Arrival;
use super::{Hub, LiveSession, Protocol, Session};
use crate::auth::UserId;
use crate::auth::accounts::ValidSession;
use crate::hub::conn::Outbound;
use sotto_proto::native::{ClientFrame, HISTORY_PAGE_MAX};
use std::sync::Arc;

impl Hub {
    /// A `/ws` connection whose credential was checked at the handshake:
    /// sends the `users` snapshot, replays what arrived while the user was
    /// away, then goes online.
    pub async fn connect_native(&self, out: &Outbound, session: &mut Session, valid: ValidSession) {
        let user = valid.user.id.clone();
        let arrival = Arrival {
            out,
            protocol: Protocol::Native,
            profile: Arc::new(valid.user),
            session: Some(LiveSession::of(&valid.token, valid.created_at)),
        };
        let snapshot = |hub: &Hub| {
            let users = hub.user_list(None, Some(&user));
            Some(Event::Users(Shared::new(users)))
        };
        if self.come_online(arrival, snapshot).await {
            *session = Session::Authenticated {
                user,
                token: valid.token,
            };
        }
    }

    /// Handles one native frame from an authenticated connection.
    pub async fn handle_native(&self, out: &Outbound, session: &Session, frame: ClientFrame) {
        let Some(me) = session.user().cloned() else {
            return self.reply_error(out, Failure::NotAuthenticated);
        };
        match frame {
            ClientFrame::Send {
                to,
                body,
                client_id,
            } => self.native_send(out, &me, &to, &body, client_id).await,
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
        client_id: String,
    ) {
        let Some(target) = UserId::parse(to) else {
            return refuse(out, Failure::UnknownUser, client_id);
        };
        let outgoing = Outgoing {
            sender: me,
            target: &target,
            body,
            client_id: Some(&client_id),
            origin: Some(out.id()),
        };
        match self.deliver_stored(outgoing).await {
            Ok(accepted) => {
                let ack = Ack {
                    client_id,
                    id: accepted.seq,
                    to: target,
                    delivered: accepted.delivered,
                };
                self.reply(out, Event::Ack(Box::new(ack)));
            }
            Err(failure) => refuse(out, failure, client_id),
        }
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
            return self.reply_error(out, Failure::UnknownUser);
        };
        let limit = limit.unwrap_or(50).clamp(1, HISTORY_PAGE_MAX);
        match self.store.history(me, &other, before, limit).await {
            Ok(messages) => {
                let page = History {
                    with: other,
                    messages,
                };
                self.reply(out, Event::History(Box::new(page)));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read history");
                self.reply_error(out, Failure::HistoryUnavailable);
            }
        }
    }

    async fn native_read(&self, out: &Outbound, me: &UserId, with: &str, up_to: i64) {
        let Some(other) = UserId::parse(with) else {
            return self.reply_error(out, Failure::UnknownUser);
        };
        match self.store.mark_read(me, &other, up_to, self.now_ms()).await {
            Ok(0) => {}
            Ok(_) => {
                let receipt = Arc::new(ReadReceipt {
                    with: me.clone(),
                    up_to,
                });
                for l in self.conns_of(&other) {
                    if l.protocol == Protocol::Native {
                        let _ = l.out.push(Event::Read(receipt.clone()));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record read receipt");
                self.reply_error(out, Failure::ReceiptNotRecorded);
            }
        }
    }

    async fn native_set_key(&self, out: &Outbound, me: &UserId, key: &str) {
        if key.len() > self.config.public_key_max {
            return self.reply_error(out, Failure::KeyTooLong);
        }
        let Some(mut profile) = self.online_map().get(me).map(|o| (*o.profile).clone()) else {
            return;
        };
        if profile.public_key == key {
            return;
        }
        if let Err(e) = self.accounts.set_public_key(&mut profile, key).await {
            let failure = match e.is_retryable() {
                true => Failure::Unavailable,
                false => Failure::Account(e.to_string()),
            };
            return self.reply_error(out, failure);
        }
        let profile = Arc::new(profile);
        if let Some(o) = self.online_map().get_mut(me) {
            o.profile = profile.clone();
        }
        tracing::info!(user = %me, "public key changed");
        self.presence.changed(&profile, None);
        self.presence_changed.notify_one();
    }
}

/// Answers a send with why it failed, naming its `client_id`.
fn refuse(out: &Outbound, failure: Failure, client_id: String) {
    let reply = ErrorReply {
        failure,
        reference: Some(client_id),
    };
    let _ = out.push(Event::Error(Box::new(reply)));
}
