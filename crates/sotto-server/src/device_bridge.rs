//! The hub side of [`DeviceBridge`]: a device session becomes a hub
//! connection of its user (protocol `Device`), and a device's JSON message
//! a durable message from that user.
//!
//! Each attached session gets a hub outbound queue and one small task
//! that forwards the hub's typed messages (the user's inbox, caught up
//! from what was last confirmed) into the device's outbox (no JSON in
//! between: the DTLS endpoint encodes each datagram). A device cannot
//! confirm, so a message the outbox took counts as delivered; one it
//! cannot take (the endpoint is behind, or the session ended) ends the
//! hub connection unconfirmed, so it reaches the user's next connection
//! instead of being lost.

use async_trait::async_trait;
use sotto_core::auth::UserId;
use sotto_core::hub::{CloseReason, Event, Failure, Hub, Outbound, OutboundReceiver};
use sotto_core::ports::{Entry, StoredMessage};
use sotto_dtls::bridge::{
    BridgeError, DeliverError, DeviceBridge, DeviceMessage, DeviceOutbox, DeviceSessionId,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Frames queued for one device session inside the hub; the endpoint has
/// its own bounded queue behind this one. No byte limit: [`forward`] hands
/// each message on without waiting for the device (what the endpoint
/// cannot take goes back to the store), so this queue does not fill up
/// behind a peer that stops reading, which is what a byte limit is for.
const DEVICE_QUEUE: usize = 256;

pub(crate) struct HubBridge {
    hub: Arc<Hub>,
    sessions: Mutex<HashMap<DeviceSessionId, Outbound>>,
}

impl HubBridge {
    pub fn new(hub: Arc<Hub>) -> Arc<HubBridge> {
        Arc::new(HubBridge {
            hub,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<DeviceSessionId, Outbound>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The one mapping from a hub failure to what the device is told. Only
/// sends fail towards a device; anything else means the hub could not
/// take the message now.
fn bridge_error(failure: Failure) -> BridgeError {
    match failure {
        Failure::UnknownUser => BridgeError::UnknownRecipient,
        Failure::QueueFull => BridgeError::RecipientFull,
        Failure::SendLimited { retry_after_secs } => {
            BridgeError::Refused(format!("sending too fast; retry in {retry_after_secs} s"))
        }
        _ => BridgeError::Unavailable,
    }
}

#[async_trait]
impl DeviceBridge for HubBridge {
    async fn send(
        &self,
        from_user_id: &str,
        to_user_id: &str,
        body: String,
    ) -> Result<u64, BridgeError> {
        let from = UserId::parse(from_user_id).ok_or(BridgeError::Unavailable)?;
        let to = UserId::parse(to_user_id).ok_or(BridgeError::UnknownRecipient)?;
        let id = self.hub.device_send(&from, &to, &body).await;
        let id = id.map_err(bridge_error)?;
        u64::try_from(id).map_err(|_| BridgeError::Unavailable)
    }

    fn attach(&self, user_id: &str, outbox: DeviceOutbox) {
        let Some(user) = UserId::parse(user_id) else {
            return tracing::warn!(user = user_id, "DTLS identity bound to a malformed user id");
        };
        let (out, rx) = sotto_core::hub::conn::outbound(DEVICE_QUEUE, self.hub.shutdown_token());
        self.sessions().insert(outbox.session(), out.clone());
        let hub = self.hub.clone();
        tokio::spawn(async move {
            let connect = async {
                if !hub.connect_device(&out, &user).await {
                    out.close(CloseReason::PeerGone);
                }
            };
            tokio::join!(connect, forward(rx, &outbox));
            hub.disconnect_device(&user, &out);
        });
    }

    fn detach(&self, user_id: &str, session: DeviceSessionId) {
        let Some(out) = self.sessions().remove(&session) else {
            return;
        };
        out.close(CloseReason::PeerGone);
        if let Some(user) = UserId::parse(user_id) {
            self.hub.disconnect_device(&user, &out);
        }
    }

    fn bounce(&self, user_id: &str, msg: DeviceMessage) {
        // Handed to the session, so already confirmed: it stays in the
        // conversation's history. See docs/DTLS.md.
        tracing::warn!(
            user = %sotto_core::untrusted::Untrusted::new(user_id),
            id = msg.id,
            "a device session ended before a message handed to it was sent"
        );
    }
}

/// Moves the hub's messages for `user` into the device's outbox until the
/// session closes. Devices get stored messages only; other events (an
/// expiry notice) have no device form and are skipped.
async fn forward(rx: OutboundReceiver, outbox: &DeviceOutbox) {
    let mut rx = rx;
    let closed = rx.close_signal();
    loop {
        let event = tokio::select! {
            _ = closed.cancelled() => None,
            e = rx.recv() => e,
        };
        let Some(event) = event else { break };
        let Event::Inbox(item) = event else { continue };
        let Entry::Message(m) = &item.entry else {
            continue;
        };
        let Some(msg) = device_message(m) else {
            continue;
        };
        match outbox.try_deliver(msg) {
            Ok(()) => rx.written(item.pos),
            Err(DeliverError::Full(_) | DeliverError::Closed(_)) => {
                // Unconfirmed: the user's next connection gets it.
                rx.close(CloseReason::SlowConsumer);
                break;
            }
        }
    }
}

/// A stored message as the DTLS endpoint takes it. Ids are positive; one
/// that is not cannot be echoed to a device and is skipped.
fn device_message(m: &StoredMessage) -> Option<DeviceMessage> {
    Some(DeviceMessage {
        id: u64::try_from(m.seq).ok()?,
        from: m.sender.clone(),
        body: m.body.clone(),
    })
}
