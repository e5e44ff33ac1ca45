//! How device messages reach the hub and come back: the [`DeviceBridge`]
//! trait the DTLS endpoint calls, implemented outside this module (against
//! the hub in production, by hand in tests).
//!
//! Direction device → hub: a device whose PSK identity is bound to a user
//! sends `{"to": USER_ID, "body": TEXT}`; the endpoint calls
//! [`DeviceBridge::send`] and answers the device `{"ack": ID}` with the id
//! the bridge returns, or `{"error": …}`.
//!
//! Direction hub → device: when a bound device's handshake completes, the
//! endpoint calls [`DeviceBridge::attach`] with a [`DeviceOutbox`]. The hub
//! pushes that user's messages into it; each becomes one encrypted JSON
//! datagram `{"id": ID, "from": USER_ID, "body": TEXT}`. When the session
//! ends (close_notify, idle, revoke, shutdown) the endpoint calls
//! [`DeviceBridge::detach`]; from then on the hub treats the user as away
//! for this device and stores messages as for any offline user.
//!
//! Why an outbox the hub pushes into rather than a receiver per device: the
//! endpoint is one task owning one socket and thousands of sessions; a
//! single shared channel lets it wait on all devices at once.

use async_trait::async_trait;
use sotto_core::auth::UserId;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What travels from an outbox to the endpoint's task.
pub(crate) type Outbound = (DeviceSessionId, Arc<str>, DeviceMessage);

/// Identifies one DTLS session for the lifetime of the endpoint (never
/// reused), so a late `detach` cannot be confused with a newer session of
/// the same user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceSessionId(pub u64);

/// A message for a device's user, as the hub hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMessage {
    /// The hub's message id, echoed to the device.
    pub id: u64,
    /// Sender's user id, typed so that a bounced message goes back to the
    /// hub without its id being parsed again.
    pub from: UserId,
    pub body: String,
}

/// Why [`DeviceBridge::send`] did not accept a message. The text of each
/// variant is sent to the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    #[error("unknown recipient")]
    UnknownRecipient,
    #[error("recipient's queue is full")]
    RecipientFull,
    #[error("message refused: {0}")]
    Refused(String),
    #[error("server busy, try again")]
    Unavailable,
}

/// Why [`DeviceOutbox::try_deliver`] did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// The endpoint is behind; the hub should keep the message (store it
    /// as for an offline user) rather than wait.
    #[error("device outbox full")]
    Full(DeviceMessage),
    /// The endpoint has stopped; keep the message for later. (A session
    /// that ended while its outbox was still attached is not reported
    /// here: the message is accepted and then handed back through
    /// [`DeviceBridge::bounce`].)
    #[error("device endpoint stopped")]
    Closed(DeviceMessage),
}

/// Where the hub puts messages for one attached device session.
#[derive(Debug, Clone)]
pub struct DeviceOutbox {
    pub(crate) session: DeviceSessionId,
    pub(crate) user: Arc<str>,
    pub(crate) tx: mpsc::Sender<Outbound>,
}

impl DeviceOutbox {
    pub fn session(&self) -> DeviceSessionId {
        self.session
    }

    /// The user this session speaks for.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Hands a message to the endpoint without waiting. Success means it
    /// was queued for the session, not that the device received it: UDP
    /// may lose the datagram, and the device does not acknowledge it.
    pub fn try_deliver(&self, msg: DeviceMessage) -> Result<(), DeliverError> {
        self.tx
            .try_send((self.session, self.user.clone(), msg))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full((_, _, m)) => DeliverError::Full(m),
                mpsc::error::TrySendError::Closed((_, _, m)) => DeliverError::Closed(m),
            })
    }

    /// True once the endpoint has stopped; the hub may drop the outbox.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The hub as the DTLS endpoint sees it. Implementations must be cheap to
/// call from the endpoint's task: `attach` and `detach` must not block
/// (no I/O; queue work elsewhere if needed), and `send` is awaited on a
/// separate task, bounded by the endpoint, so it may do I/O.
#[async_trait]
pub trait DeviceBridge: Send + Sync + 'static {
    /// A message from the device's user `from_user_id` to `to_user_id`.
    /// Returns the message id once the hub has accepted it (delivered or
    /// stored for later); the device is then told `{"ack": id}`.
    async fn send(
        &self,
        from_user_id: &str,
        to_user_id: &str,
        body: String,
    ) -> Result<u64, BridgeError>;

    /// A session for `user_id` is established; messages for that user go
    /// to `outbox` until [`detach`](Self::detach) with the same session.
    /// Called once per session, before any message from it is sent. A
    /// user may have several device sessions at once (several devices, or
    /// one identity on several devices): keep outboxes per session id.
    fn attach(&self, user_id: &str, outbox: DeviceOutbox);

    /// The session has ended: stop using its outbox. Anything still put
    /// into it comes back through [`bounce`](Self::bounce).
    fn detach(&self, user_id: &str, session: DeviceSessionId);

    /// A message the endpoint took from an outbox but could not send,
    /// because the session ended first. The hub should keep it as for an
    /// offline user. (A message too large for one datagram is not bounced:
    /// the device is told about it with an error datagram instead, since
    /// keeping it would only fail again.)
    fn bounce(&self, user_id: &str, msg: DeviceMessage);
}
