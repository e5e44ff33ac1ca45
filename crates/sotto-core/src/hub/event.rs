//! What the hub tells a connection, as typed values. Each edge encodes
//! them in its own protocol (compat JSON, native JSON, a device datagram),
//! so the hub never builds a wire format and a device receives messages
//! without a round trip through JSON.
//!
//! An event that goes to many connections (a user list, a presence change,
//! a message fanned out to several sessions) holds its value in an
//! `Arc<Shared<_>>`: every queue gets the same allocation, and the first
//! encoder of each protocol fills that protocol's cache, so the frame is
//! encoded once per protocol however many sockets receive it.

use super::Protocol;
use crate::auth::{Token, UserId};
use crate::ports::{Device, Entry, InboxItem, StoredMessage, UserProfile};
use bytes::Bytes;
use std::sync::{Arc, OnceLock};

/// One item of a connection's outbound queue. Kept to two words: every
/// connection's queue preallocates a block of 32 of these, so its size is
/// part of what an idle connection costs. Rare or large payloads are boxed.
#[derive(Debug, Clone)]
pub enum Event {
    /// An entry of the user's inbox (a message, a copy of one they sent,
    /// a receipt) at its position. Shared by all of that user's
    /// connections; compat connections and devices render messages to the
    /// user only.
    Inbox(Arc<Shared<InboxItem>>),
    /// The online users. Compat connections get it as the user list of
    /// every presence broadcast; native ones at connect and after a storm
    /// of changes.
    Users(Arc<Shared<UserList>>),
    /// A user came, went or changed their key (native deltas).
    Presence(Arc<Shared<PresenceChange>>),
    /// A user's end-to-end devices changed (native only): sent to every
    /// native connection, the user's own included.
    Devices(Arc<Shared<DeviceSet>>),
    /// Native: a send is durable (committed, fsync'd).
    Ack(Box<Ack>),
    /// Native: a page of a conversation.
    History(Box<History>),
    /// Compat: a login or registration succeeded.
    LoggedIn(Box<LoggedIn>),
    /// Compat: an Authorize request succeeded.
    Authorized,
    /// A request failed, or the session ends.
    Error(Box<ErrorReply>),
}

impl Event {
    /// About how many bytes this event holds (and will take on the wire),
    /// which its connection's queue is charged while it waits: see
    /// [`QueueLimit::bytes`](super::conn::QueueLimit). A shared value
    /// counts in full for every connection holding it, since the slowest
    /// of them keeps it alive. Pure and cheap: it is computed once when
    /// the event is queued and once when the writer takes it, and the two
    /// must agree.
    pub fn weight(&self) -> usize {
        FRAME_OVERHEAD
            + match self {
                Event::Inbox(item) => item.weight(),
                Event::Users(list) => list.weight(),
                Event::Presence(change) => change.weight(),
                Event::Devices(set) => set.weight(),
                Event::Authorized => 0,
                Event::Ack(ack) => ack.client_id.len() + ack.to.as_str().len(),
                Event::History(page) => page.messages.iter().map(Weigh::weight).sum(),
                Event::LoggedIn(answer) => {
                    answer.name.len() + answer.first.weight() + answer.list.weight()
                }
                Event::Error(reply) => {
                    reply.reference.as_ref().map_or(0, String::len) + reply.failure.weight()
                }
            }
    }

    /// An error event that answers no particular send.
    pub fn error(failure: Failure) -> Event {
        Event::Error(Box::new(ErrorReply {
            failure,
            reference: None,
        }))
    }
}

/// What a frame costs beyond its variable parts (keys, ids, timestamps,
/// and the queue slot itself): a generous round figure, so that many
/// small events also add up against the byte limit.
const FRAME_OVERHEAD: usize = 64;

/// Roughly the encoded size of a value, in bytes: what the byte limit of
/// an outbound queue counts. An estimate, not an encoding: it must stay
/// far cheaper than encoding.
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for StoredMessage {
    fn weight(&self) -> usize {
        FRAME_OVERHEAD
            + self.body.len()
            + self.client_id.as_ref().map_or(0, String::len)
            + self.sender.as_str().len()
            + self.recipient.as_str().len()
    }
}

impl Weigh for InboxItem {
    fn weight(&self) -> usize {
        match &self.entry {
            Entry::Message(m) => m.weight(),
            Entry::Delivered { with, .. } | Entry::Read { with, .. } => with.as_str().len(),
        }
    }
}

impl Weigh for UserProfile {
    fn weight(&self) -> usize {
        // `{"id":…,"name":…,"pubKey":…}` and separators.
        32 + self.id.as_str().len() + self.name.as_str().len() + self.public_key.len()
    }
}

impl Weigh for Device {
    fn weight(&self) -> usize {
        // `{"id":…,"public_key":…,"name":…,"created_at":…}`.
        64 + self.id.as_str().len() + self.public_key.len() + self.name.len()
    }
}

impl Weigh for [Device] {
    fn weight(&self) -> usize {
        self.iter().map(Weigh::weight).sum()
    }
}

impl Weigh for Listed {
    fn weight(&self) -> usize {
        self.profile.weight() + self.devices.weight()
    }
}

impl Weigh for UserList {
    fn weight(&self) -> usize {
        self.0.iter().map(Weigh::weight).sum()
    }
}

impl Weigh for PresenceChange {
    fn weight(&self) -> usize {
        self.profile.weight() + self.devices.weight()
    }
}

impl Weigh for DeviceSet {
    fn weight(&self) -> usize {
        self.user.as_str().len() + self.devices.weight()
    }
}

impl Weigh for Failure {
    /// Only the variants that carry text vary; the fixed texts are small.
    fn weight(&self) -> usize {
        match self {
            Failure::Account(text) | Failure::BadRequest(text) => text.len(),
            _ => 0,
        }
    }
}

/// A failure and, for a native send, the `client_id` it answers.
#[derive(Debug, Clone)]
pub struct ErrorReply {
    pub failure: Failure,
    pub reference: Option<String>,
}

/// A page of the conversation with `with`, newest first.
#[derive(Debug, Clone)]
pub struct History {
    pub with: UserId,
    pub messages: Vec<StoredMessage>,
}

/// A value shared by many queues, with each protocol's encoding cached.
#[derive(Debug)]
pub struct Shared<T> {
    value: T,
    /// `value`'s [`Weigh::weight`], computed once here: a user list goes
    /// to every connection, and weighing it per push would cost
    /// connections × users.
    weight: usize,
    compat: OnceLock<Bytes>,
    native: OnceLock<Bytes>,
    /// Compat: the value's elements encoded one by one (see [`Pieces`]).
    pieces: OnceLock<Box<Pieces>>,
}

/// The elements of a shared list, each encoded once, joined by commas,
/// for frames that splice a run of them: a compat login answer is its own
/// user's entry followed by the shared list without them, so thousands of
/// logins against one list version encode its entries once, not once
/// each.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pieces {
    /// `e0,e1,…`: every element's encoding, comma-separated.
    pub bytes: Bytes,
    /// Where element i starts and ends in `bytes`.
    pub spans: Vec<(usize, usize)>,
}

impl Pieces {
    /// Joins `encoded` elements.
    pub fn join<I: IntoIterator<Item = Vec<u8>>>(encoded: I) -> Pieces {
        let mut bytes = Vec::new();
        let mut spans = Vec::new();
        for e in encoded {
            if !spans.is_empty() {
                bytes.push(b',');
            }
            let start = bytes.len();
            bytes.extend_from_slice(&e);
            spans.push((start, bytes.len()));
        }
        Pieces {
            bytes: Bytes::from(bytes),
            spans,
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Elements `range`, comma-separated, as one slice (empty if the range
    /// is); clamped to the elements there are.
    pub fn run(&self, range: std::ops::Range<usize>) -> &[u8] {
        let end = range.end.min(self.spans.len());
        if range.start >= end {
            return &[];
        }
        let (from, _) = self.spans[range.start];
        let (_, to) = self.spans[end - 1];
        &self.bytes[from..to]
    }
}

impl<T: Weigh> Shared<T> {
    pub fn new(value: T) -> Arc<Shared<T>> {
        Arc::new(Shared {
            weight: value.weight(),
            value,
            compat: OnceLock::new(),
            native: OnceLock::new(),
            pieces: OnceLock::new(),
        })
    }
}

impl<T> Shared<T> {
    /// The value's weight, as computed when it was made shared.
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// The frame for `protocol`: `encode` runs for the first connection of
    /// that protocol only; the others share its bytes. Devices are not
    /// cached: they take the typed value, not bytes.
    pub fn encoded(&self, protocol: Protocol, encode: impl FnOnce(&T) -> Bytes) -> Bytes {
        let slot = match protocol {
            Protocol::Compat => &self.compat,
            Protocol::Native => &self.native,
            Protocol::Device => return encode(&self.value),
        };
        slot.get_or_init(|| encode(&self.value)).clone()
    }

    /// The value's elements as compat encodes them: `encode` runs for the
    /// first caller only.
    pub fn pieces(&self, encode: impl FnOnce(&T) -> Pieces) -> &Pieces {
        self.pieces.get_or_init(|| Box::new(encode(&self.value)))
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A user's end-to-end devices, oldest first, shared by every list and
/// event that shows them.
pub type Devices = Arc<[Device]>;

/// An online user as lists show them: the profile and, for native
/// clients, the user's devices. Derefs to the profile.
#[derive(Debug, Clone)]
pub struct Listed {
    pub profile: Arc<UserProfile>,
    pub devices: Devices,
}

impl From<Arc<UserProfile>> for Listed {
    /// A user without devices (compat users, tests).
    fn from(profile: Arc<UserProfile>) -> Listed {
        Listed {
            profile,
            devices: Arc::from(Vec::new()),
        }
    }
}

impl std::ops::Deref for Listed {
    type Target = UserProfile;
    fn deref(&self) -> &UserProfile {
        &self.profile
    }
}

/// Online users, at most `user_list_max` of them.
#[derive(Debug, Clone, Default)]
pub struct UserList(pub Vec<Listed>);

/// What changed about a user.
#[derive(Debug)]
pub struct PresenceChange {
    pub profile: Arc<UserProfile>,
    /// The user's devices as they are now.
    pub devices: Devices,
    pub change: Change,
}

/// A user's device set after it changed.
#[derive(Debug)]
pub struct DeviceSet {
    pub user: UserId,
    pub devices: Devices,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Online,
    Offline,
    KeyChanged,
}

/// A native send made durable.
#[derive(Debug, Clone)]
pub struct Ack {
    pub client_id: String,
    pub id: i64,
    pub to: UserId,
    /// A resend of a message a session of the recipient already
    /// confirmed.
    pub delivered: bool,
    /// The sender's copy of the message in their inbox, when this ack
    /// stands in for it on the connection that sent it (see `feed`).
    pub pos: Option<i64>,
}

/// A compat login's answer: a fresh token and the user list, this user
/// first: `first`, then the shared compat list without them, at most
/// `max` users in all (see [`LoggedIn::users`]). The list is the one
/// presence broadcasts, so its entries are encoded once per version
/// however many logins answer with it.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub token: Token,
    pub name: String,
    pub first: Arc<UserProfile>,
    pub list: Arc<Shared<UserList>>,
    pub max: usize,
}

impl LoggedIn {
    /// The users the answer lists, in order.
    pub fn users(&self) -> impl Iterator<Item = &UserProfile> {
        let others = self.list.0.iter().map(|l| &*l.profile);
        std::iter::once(&*self.first)
            .chain(others.filter(|p| p.id != self.first.id))
            .take(self.max)
    }

    /// Where `first` is in the shared list, if there.
    pub fn first_in_list(&self) -> Option<usize> {
        self.list.0.iter().position(|l| l.id == self.first.id)
    }
}

/// Why a request failed, whatever the protocol. Each edge has one mapping
/// from these to its wire (compat error text, native error code, device
/// error), next to its encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The recipient does not exist.
    UnknownUser,
    /// The recipient's offline queue is full.
    QueueFull,
    /// The message could not be stored; the sender may retry.
    NotStored,
    /// The token is unknown, revoked or expired.
    InvalidToken,
    /// The store could not answer; nothing is known to be wrong with the
    /// request or the session, so the client keeps its token and retries.
    Unavailable,
    /// The session reached its lifetime; the connection closes.
    SessionExpired,
    /// The request needs an authenticated connection.
    NotAuthenticated,
    /// An account operation failed; the text says why, for people.
    Account(String),
    /// Too many login attempts; retry after this many seconds.
    Throttled { retry_after_secs: u64 },
    /// The sender is over a per-user send limit: nothing was stored or
    /// delivered; the same message passes after this many seconds.
    SendLimited { retry_after_secs: u64 },
    /// Logging out failed inside the server.
    LogoutFailed,
    /// History could not be read.
    HistoryUnavailable,
    /// A read receipt could not be recorded.
    ReceiptNotRecorded,
    /// The public key is over the limit.
    KeyTooLong,
    /// The frame is not a valid request; the text says why.
    BadRequest(String),
    /// A binary frame, where only JSON text is spoken.
    BinaryFrame,
}

#[cfg(test)]
mod tests {
    use super::Pieces;

    fn pieces(items: &[&str]) -> Pieces {
        Pieces::join(items.iter().map(|s| s.as_bytes().to_vec()))
    }

    #[test]
    fn runs_of_pieces_are_their_elements_comma_separated() {
        let p = pieces(&["{a}", "{bb}", "{c}"]);
        assert_eq!(&p.bytes[..], b"{a},{bb},{c}");
        assert_eq!(p.len(), 3);
        assert_eq!(p.run(0..3), b"{a},{bb},{c}");
        assert_eq!(p.run(1..2), b"{bb}");
        assert_eq!(p.run(1..9), b"{bb},{c}", "clamped to the elements");
        assert_eq!(p.run(3..3), b"");
        let empty = pieces(&[]);
        assert!(empty.is_empty());
        assert_eq!(empty.run(0..5), b"");
    }
}
