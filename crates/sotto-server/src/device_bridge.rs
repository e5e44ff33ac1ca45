//! The hub side of [`DeviceBridge`]: a device session becomes a hub
//! connection of its user (protocol `Device`), and a device's JSON message
//! a durable message from that user.
//!
//! Each attached session gets a hub outbound queue and one small task
//! that replays what was stored for the user, then forwards the hub's
//! frames into the device's outbox. A frame the outbox cannot take (the
//! endpoint is behind, or the session ended) is requeued in the store,
//! so it reaches the user's next connection instead of being lost.

use async_trait::async_trait;
use serde::Deserialize;
use sotto_core::auth::UserId;
use sotto_core::hub::{CloseReason, DeviceSendError, Hub, Outbound, OutboundReceiver};
use sotto_dtls::bridge::{
    BridgeError, DeliverError, DeviceBridge, DeviceMessage, DeviceOutbox, DeviceSessionId,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Frames queued for one device session inside the hub; the endpoint has
/// its own bounded queue behind this one.
const DEVICE_QUEUE: usize = 256;

pub struct HubBridge {
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

/// A device frame as the hub encodes it.
#[derive(Deserialize)]
struct Frame {
    id: i64,
    from: String,
    body: String,
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
        match self.hub.device_send(&from, &to, &body).await {
            Ok(id) => u64::try_from(id).map_err(|_| BridgeError::Unavailable),
            Err(DeviceSendError::UnknownUser) => Err(BridgeError::UnknownRecipient),
            Err(DeviceSendError::QueueFull) => Err(BridgeError::RecipientFull),
            Err(DeviceSendError::Failed) => Err(BridgeError::Unavailable),
        }
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
            tokio::join!(connect, forward(&hub, &user, rx, &outbox));
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
        let (Some(user), Some(from), Ok(seq)) = (
            UserId::parse(user_id),
            UserId::parse(&msg.from),
            i64::try_from(msg.id),
        ) else {
            return;
        };
        let hub = self.hub.clone();
        tokio::spawn(async move { hub.requeue(&from, &user, seq).await });
    }
}

/// Moves the hub's frames for `user` into the device's outbox until the
/// session closes.
async fn forward(hub: &Hub, user: &UserId, mut rx: OutboundReceiver, outbox: &DeviceOutbox) {
    let closed = rx.close_signal();
    loop {
        let frame = tokio::select! {
            _ = closed.cancelled() => None,
            f = rx.frames.recv() => f,
        };
        let Some(frame) = frame else { break };
        let Ok(f) = serde_json::from_slice::<Frame>(frame.bytes()) else {
            continue;
        };
        let Ok(id) = u64::try_from(f.id) else {
            continue;
        };
        let msg = DeviceMessage {
            id,
            from: f.from,
            body: f.body,
        };
        if let Err(DeliverError::Full(m) | DeliverError::Closed(m)) = outbox.try_deliver(msg) {
            requeue(hub, user, &m).await;
        }
    }
    // Whatever the hub queued after the close goes back to the store.
    while let Ok(frame) = rx.frames.try_recv() {
        if let Ok(f) = serde_json::from_slice::<Frame>(frame.bytes())
            && let Some(from) = UserId::parse(&f.from)
        {
            hub.requeue(&from, user, f.id).await;
        }
    }
}

async fn requeue(hub: &Hub, user: &UserId, m: &DeviceMessage) {
    if let (Some(from), Ok(seq)) = (UserId::parse(&m.from), i64::try_from(m.id)) {
        hub.requeue(&from, user, seq).await;
    }
}
