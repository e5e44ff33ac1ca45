//! DTLS devices as hub connections. A device whose PSK identity is bound
//! to a user is one more live connection of that user: messages to the
//! user reach it from their inbox (a device cannot confirm: a message
//! handed to its DTLS session counts as delivered), and what it sends is a
//! message from that user, stored before it is acknowledged, like a `/ws`
//! send. The DTLS edge adapts these calls to
//! its `DeviceBridge` (see `sotto-server`'s `device_bridge`).

use super::delivery::{After, Outgoing};
use super::event::Failure;
use super::online::Arrival;
use super::{Hub, Protocol};
use crate::auth::UserId;
use crate::hub::conn::Outbound;
use std::sync::Arc;
use tokio::sync::oneshot;

impl Hub {
    /// Binds a device connection to `user`: replays what is stored for
    /// them into `out` (as typed [`Event::Message`](super::Event::Message)s),
    /// then goes online. False if the user does not exist or the connection
    /// went away during the replay.
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
        let arrival = Arrival {
            out,
            protocol: Protocol::Device,
            profile: Arc::new(profile),
            session: None,
            after: None,
            listed: None,
        };
        // A device is greeted with nothing: it is not told who is online.
        self.come_online(arrival, |_| None).await
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
    ) -> Result<i64, Failure> {
        let outgoing = Outgoing {
            sender: sender.clone(),
            target: target.clone(),
            body: body.to_owned(),
            client_id: None,
        };
        let (reply, answer) = oneshot::channel();
        self.send(outgoing, After::DeviceSend { reply }).await;
        answer.await.unwrap_or(Err(Failure::Unavailable))
    }
}
