//! A connection's feed: its place in the user's inbox.
//!
//! Each live connection has sent its peer every inbox entry up to `sent`.
//! Entries reach it two ways, and neither holds a lock across a socket
//! write or a store read:
//!
//! - **Live**: after a write commits, the hub offers the new entry to each
//!   connection of the user. If it is the very next position and the
//!   outbound queue has room, it is queued at once (the fast path).
//! - **Catch-up**: otherwise (a gap, a full queue, a connection that has
//!   just come online) the connection switches to catching up: a task of
//!   its own reads the inbox from the store after `sent`, queues what it
//!   finds (waiting for room, which only ever delays this connection), and
//!   goes back to live once it has read past every position offered
//!   meanwhile.
//!
//! Positions are assigned in commit order inside the store, so an entry
//! offered live is always in the store already: a catch-up that starts
//! after it was offered finds it. Offers that arrive while catching up
//! only raise `seen`, and catching up ends only when `sent` has reached
//! `seen`, so nothing offered is lost at the seam, and nothing is queued
//! twice since every position at or below `sent` is dropped.
//!
//! A reader that stops reading therefore costs only itself: the senders
//! never wait for it, it is never disconnected for others' sending, and
//! the store (with its bounded per-user pending count) holds what it has
//! not read.

use super::event::{Event, Shared};
use super::{Hub, Live, Protocol};
use crate::auth::UserId;
use crate::hub::conn::PushError;
use crate::ports::{Entry, InboxItem};
use crate::untrusted::LogBudget;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Entries read from the store per catch-up step.
const CATCH_UP_BATCH: u32 = 256;
/// How long a catch-up waits for room in the connection's queue before
/// giving the connection up as a slow consumer.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(super) struct Feed {
    state: Mutex<FeedState>,
}

#[derive(Debug, Clone, Copy)]
struct FeedState {
    /// Every position up to this one was queued (or skipped as not for
    /// this protocol).
    sent: i64,
    /// A catch-up task is running: live offers only raise `seen`.
    catching_up: bool,
    /// The highest position offered while catching up.
    seen: i64,
    /// The highest position this connection's client confirmed.
    confirmed: i64,
}

/// What an offer did with the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offered {
    /// Queued (or skipped) in order.
    InOrder,
    /// Already sent, or left to the catch-up.
    NotNow,
    /// A catch-up must be started (the caller spawns it).
    StartCatchUp,
}

impl Feed {
    /// A feed that has sent everything up to `after` and starts catching
    /// up from there.
    pub(super) fn catching_up_from(after: i64) -> Arc<Feed> {
        Arc::new(Feed {
            state: Mutex::new(FeedState {
                sent: after,
                catching_up: true,
                seen: 0,
                confirmed: 0,
            }),
        })
    }

    /// A feed that is live after `after` (tests attach connections
    /// directly).
    #[cfg(test)]
    pub(super) fn live_after(after: i64) -> Arc<Feed> {
        Arc::new(Feed {
            state: Mutex::new(FeedState {
                sent: after,
                catching_up: false,
                seen: 0,
                confirmed: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers position `pos`: `queue` is called (under the feed's lock, so
    /// offers queue in position order) only when `pos` is the next one
    /// and no catch-up runs; it tries the queue without waiting and hands
    /// the event back if there is no room.
    pub(super) fn offer(&self, pos: i64, queue: impl FnOnce() -> Result<(), PushError>) -> Offered {
        let mut st = self.lock();
        if pos <= st.sent {
            return Offered::NotNow;
        }
        if st.catching_up {
            st.seen = st.seen.max(pos);
            return Offered::NotNow;
        }
        if pos == st.sent + 1 {
            match queue() {
                Ok(()) => {
                    st.sent = pos;
                    return Offered::InOrder;
                }
                Err(PushError::Closed) => return Offered::NotNow,
                Err(PushError::Full) => {}
            }
        }
        st.catching_up = true;
        st.seen = pos;
        Offered::StartCatchUp
    }

    /// Another node announced entries up to `pos` (or the store's head
    /// says so): true if a catch-up must be started to fetch them.
    pub(super) fn behind(&self, pos: i64) -> bool {
        let mut st = self.lock();
        if pos <= st.sent {
            return false;
        }
        if st.catching_up {
            st.seen = st.seen.max(pos);
            return false;
        }
        st.catching_up = true;
        st.seen = pos;
        true
    }

    /// What a client's `confirm` up to `up_to` should confirm: at most
    /// what this connection was sent, and None unless that is beyond what
    /// it confirmed before.
    pub(super) fn confirming(&self, up_to: i64) -> Option<i64> {
        let mut st = self.lock();
        let up_to = up_to.min(st.sent);
        if up_to <= st.confirmed {
            return None;
        }
        st.confirmed = up_to;
        Some(up_to)
    }

    fn sent(&self) -> i64 {
        self.lock().sent
    }

    fn advance(&self, pos: i64) {
        let mut st = self.lock();
        st.sent = st.sent.max(pos);
    }

    /// Ends a catch-up unless something was offered beyond what it sent.
    fn try_go_live(&self) -> bool {
        let mut st = self.lock();
        if st.seen > st.sent {
            return false;
        }
        st.catching_up = false;
        true
    }
}

/// Whether a connection of `protocol` belonging to `user` gets a frame for
/// `item`. QMessageServer's protocol and devices know only messages to
/// them; sotto's own protocol gets the whole inbox.
pub(super) fn renders(protocol: Protocol, user: &UserId, item: &InboxItem) -> bool {
    match protocol {
        Protocol::Native => true,
        Protocol::Compat | Protocol::Device => item.is_message_to(user),
    }
}

impl Hub {
    /// Offers an inbox entry to every connection of `user`. `origin`, the
    /// connection that sent the message, gets `stand_in` in place of its
    /// own copy. Returns whether `origin` took the stand-in in order.
    pub(super) fn fan_out(
        &self,
        user: &UserId,
        item: InboxItem,
        origin: Option<(&crate::hub::conn::Outbound, Event)>,
    ) -> bool {
        // The user may be connected to other nodes too.
        self.announce(crate::broker::Announcement::Inbox {
            user: user.clone(),
            up_to: item.pos,
        });
        let conns = self.conns_of(user);
        if conns.is_empty() {
            // Offline: the entry waits in the store; nothing to allocate.
            return false;
        }
        self.note_conversation(user, &item);
        let pos = item.pos;
        let shared = Shared::new(item);
        let mut stood_in = false;
        let (origin_id, mut stand_in) = match origin {
            Some((out, event)) => (Some(out.id()), Some(event)),
            None => (None, None),
        };
        for live in conns {
            let is_origin = Some(live.out.id()) == origin_id;
            let offered = live.feed.offer(pos, || {
                if is_origin && let Some(event) = stand_in.take() {
                    return live.out.try_push(event);
                }
                if !renders(live.protocol, user, &shared) {
                    return Ok(());
                }
                live.out.try_push(Event::Inbox(shared.clone()))
            });
            stood_in |= is_origin && offered == Offered::InOrder;
            if offered == Offered::StartCatchUp {
                self.start_catch_up(user.clone(), live);
            }
        }
        stood_in
    }

    /// A message makes its two users contacts (see `interest`): noted for
    /// `user` when it reaches their connections, live or from the store
    /// (so also when it was written on another node); `user` is told at
    /// once if the other one is online and was not a contact yet. Every
    /// message, not only a conversation's first: a set look-up, and it
    /// keeps an active conversation among the contacts kept.
    fn note_conversation(&self, user: &UserId, item: &InboxItem) {
        let Entry::Message(m) = &item.entry else {
            return;
        };
        let other = if m.sender == *user {
            &m.recipient
        } else {
            &m.sender
        };
        if self.interest.befriend(user, other) {
            self.introduce_contact(user, other);
        }
    }

    /// Spawns the catch-up of one connection (see the module docs).
    pub(super) fn start_catch_up(&self, user: UserId, live: Live) {
        let Some(hub) = self.me.upgrade() else {
            return;
        };
        self.tasks
            .spawn(async move { hub.catch_up(&user, &live).await });
    }

    /// Queues what `live` has not had yet, from the store, then goes live.
    /// Run inline when a connection comes online (so its first requests
    /// are handled after its backlog is queued, and its own sends cannot
    /// race with it), and on a task of its own when it fell behind later.
    pub(super) async fn catch_up(&self, user: &UserId, live: &Live) {
        loop {
            let after = live.feed.sent();
            let page = match self.store.inbox(user, after, CATCH_UP_BATCH).await {
                Ok(page) => page,
                Err(e) => {
                    // Every connection hits this during an outage: bounded lines.
                    static BUDGET: LogBudget = LogBudget::new(10);
                    if let Some(suppressed) = BUDGET.allow() {
                        tracing::error!(error = %e, suppressed, "cannot read the inbox; closing the connection");
                    }
                    live.out.close(crate::hub::CloseReason::Unavailable);
                    return;
                }
            };
            let whole_batch = page.len() >= CATCH_UP_BATCH as usize;
            for item in page {
                let pos = item.pos;
                self.note_conversation(user, &item);
                if renders(live.protocol, user, &item) {
                    let event = Event::Inbox(Shared::new(item));
                    if live.out.push_wait(event, CATCH_UP_PATIENCE).await.is_err() {
                        return;
                    }
                }
                live.feed.advance(pos);
            }
            if !whole_batch && live.feed.try_go_live() {
                return;
            }
            if live.out.is_closed() {
                return;
            }
        }
    }
}
