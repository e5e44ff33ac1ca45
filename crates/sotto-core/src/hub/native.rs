//! sotto's own protocol: connections authorized at the handshake, durable
//! sends with acks, history, receipts, presence deltas and keys.

use super::delivery::{After, Outgoing};
use super::event::{ErrorReply, Event, Failure, History};
use super::interest::CONTACTS_MAX;
use super::online::Arrival;
use super::{Hub, LiveSession, Protocol, Session};
use crate::auth::UserId;
use crate::auth::accounts::ValidSession;
use crate::hub::conn::Outbound;
use crate::ports::Write;
use crate::untrusted::LogBudget;
use sotto_proto::native::{ClientFrame, HISTORY_PAGE_MAX};
use std::collections::HashSet;
use std::sync::Arc;

impl Hub {
    /// A `/ws` connection whose credential was checked at the handshake:
    /// sends the `users` snapshot, replays what arrived while the user was
    /// away, then goes online.
    /// `after` is the last inbox position the client processed, if it
    /// gave one; without it the client gets everything its user has not
    /// confirmed.
    pub async fn connect_native(
        &self,
        out: &Outbound,
        session: &mut Session,
        valid: ValidSession,
        after: Option<i64>,
    ) {
        let user = valid.user.id.clone();
        let arrival = Arrival {
            out,
            protocol: Protocol::Native,
            profile: Arc::new(valid.user),
            session: Some(LiveSession::of(&valid.token, valid.created_at)),
            after,
            listed: None,
        };
        let contacts = self.contacts_to_load(&user).await;
        // Registered before the snapshot is taken: a change after it
        // reaches this connection as a delta.
        let snapshot = |hub: &Hub| {
            hub.interest.join(&user, out, contacts);
            Some(hub.native_snapshot(&user, out.id()))
        };
        if self.come_online(arrival, snapshot).await {
            *session = Session::Authenticated {
                user,
                token: valid.token,
            };
        } else {
            self.interest.leave(&user, out.id());
        }
    }

    /// The contacts of a user coming online, from the store, unless they
    /// are kept already (another native connection of theirs is here).
    /// A store failure costs presence only: it is logged, and the user
    /// sees their watched users until they reconnect.
    async fn contacts_to_load(&self, user: &UserId) -> Vec<UserId> {
        if !self.interest.conns_of(user).is_empty() {
            return Vec::new();
        }
        match self.store.peers(user, CONTACTS_MAX).await {
            Ok(peers) => peers,
            Err(e) => {
                static BUDGET: LogBudget = LogBudget::new(10);
                if let Some(suppressed) = BUDGET.allow() {
                    tracing::error!(error = %e, suppressed, "cannot read contacts; presence limited to watched users");
                }
                Vec::new()
            }
        }
    }

    /// `watch`: replaces the users this connection watches, then sends it
    /// its whole view again (one `users` snapshot), so newly watched
    /// users' state is known. Ids that are not valid ids, and one's own,
    /// are ignored.
    /// Counts against the send limits: a client could repeat it at will.
    async fn native_watch(&self, out: &Outbound, me: &UserId, users: Vec<String>) {
        if let Err(failure) = self.admit_send(me, "") {
            return self.reply_error(out, failure);
        }
        let ids: HashSet<UserId> = users
            .iter()
            .filter_map(|u| UserId::parse(u))
            .filter(|u| u != me)
            .collect();
        if self.interest.watch(me, out.id(), ids) {
            self.reply(out, self.native_snapshot(me, out.id()));
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
            ClientFrame::Confirm { up_to } => self.native_confirm(out, me, up_to).await,
            ClientFrame::Watch { users } => self.native_watch(out, &me, users).await,
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
            sender: me.clone(),
            target: target.clone(),
            body: body.to_owned(),
            client_id: Some(client_id.clone()),
        };
        let after = After::NativeSend {
            out: out.clone(),
            client_id,
            to: target,
        };
        self.send(outgoing, after).await;
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
        let limit = limit.unwrap_or(50).min(HISTORY_PAGE_MAX);
        let found = match limit {
            0 => Ok(Vec::new()),
            _ => self.store.history(me, &other, before, limit).await,
        };
        match found {
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

    /// A confirmation reaches the store only if it confirms something new
    /// that this connection was actually sent: a client repeating or
    /// inflating confirmations costs a map look-up, not a write.
    async fn native_confirm(&self, out: &Outbound, me: UserId, up_to: i64) {
        let feed = self
            .conns_of(&me)
            .into_iter()
            .find(|l| l.out.id() == out.id())
            .map(|l| l.feed);
        let Some(up_to) = feed.and_then(|f| f.confirming(up_to)) else {
            return;
        };
        self.confirm(me, up_to).await;
    }

    /// A read receipt, clamped by the store to the newest message from
    /// `with` to the reader; the sender gets it as an inbox entry. Each
    /// one is a write, so it counts against the reader's send limits.
    async fn native_read(&self, out: &Outbound, me: &UserId, with: &str, up_to: i64) {
        let Some(other) = UserId::parse(with) else {
            return self.reply_error(out, Failure::UnknownUser);
        };
        if let Err(failure) = self.admit_send(me, "") {
            return self.reply_error(out, failure);
        }
        let write = Write::Read {
            reader: me.clone(),
            from: other,
            up_to,
            now: self.now_ms(),
        };
        self.submit(write, After::Read { out: out.clone() }).await;
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
        let Some(listed) = self.online_map().get_mut(me).map(|o| {
            o.profile = profile.clone();
            o.listed()
        }) else {
            return;
        };
        tracing::info!(user = %me, "public key changed");
        self.announce(crate::broker::Announcement::KeyChanged {
            profile: profile.clone(),
        });
        self.presence.changed(&listed, None);
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
