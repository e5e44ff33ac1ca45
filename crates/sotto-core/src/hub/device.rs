//! DTLS devices as hub connections. A device whose PSK identity is bound
//! to a user is one more live connection of that user: messages to the
//! user reach it (and are stored while no connection of theirs is live),
//! and what it sends is a message from that user, stored before it is
//! acknowledged, like a `/ws` send. The DTLS edge adapts these calls to
//! its `DeviceBridge` (see `dtls::hub_bridge`).

use super::delivery::Sent;
use super::{Hub, Live, Protocol};
use crate::auth::UserId;
use crate::hub::conn::Outbound;
use std::sync::Arc;

/// Why a device's message was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSendError {
    UnknownUser,
    QueueFull,
    Failed,
}

impl Hub {
    /// Binds a device connection to `user`: replays what is stored for
    /// them into `out`, then goes online. False if the user does not exist
    /// or the connection went away during the replay.
    pub async fn connect_device(&self, out: &Outbound, user: &UserId) -> bool {
        let profile = match self.store.user_by_id(user).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::warn!(%user, "DTLS identity bound to a user that does not exist");
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load the device's user");
                return false;
            }
        };
        let _turn = self.stripes.lock(user).await;
        if !self.replay_undelivered(out, Protocol::Device, user).await {
            return false;
        }
        let live = Live {
            out: out.clone(),
            protocol: Protocol::Device,
            session: None,
        };
        self.attach(Arc::new(profile), live);
        true
    }

    /// The device connection `out` of `user` has ended.
    pub fn disconnect_device(&self, user: &UserId, out: &Outbound) {
        self.detach(user, out.id());
    }

    /// A message from a device's user; returns its id once durable.
    pub async fn device_send(
        &self,
        sender: &UserId,
        target: &UserId,
        body: &str,
    ) -> Result<i64, DeviceSendError> {
        let started = std::time::Instant::now();
        let _turn = self.stripes.lock(target).await;
        match self
            .store_and_fan_out(sender, target, body, None, None)
            .await
        {
            Sent::New { message, delivered } => {
                self.count(started, delivered);
                Ok(message.seq)
            }
            Sent::Duplicate(message) => Ok(message.seq),
            Sent::Refused(super::delivery::Outcome::UnknownUser) => {
                Err(DeviceSendError::UnknownUser)
            }
            Sent::Refused(super::delivery::Outcome::QueueFull) => Err(DeviceSendError::QueueFull),
            Sent::Refused(_) => Err(DeviceSendError::Failed),
        }
    }

    /// A message handed to a device that it never got (its session ended
    /// first): stored again as undelivered, for the user's next connection.
    pub async fn requeue(&self, sender: &UserId, recipient: &UserId, seq: i64) {
        if let Err(e) = self.store.requeue(sender, recipient, seq).await {
            tracing::error!(error = %e, "cannot requeue a device message");
        }
    }
}
