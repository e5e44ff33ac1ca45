//! Hub events as sotto's own `/ws` protocol (see docs/PROTOCOL.md).

use bytes::Bytes;
use sotto_core::hub::event::{Ack, Change, DeviceSet, PresenceChange, UserList};
use sotto_core::hub::{Event, Failure, Protocol};
use sotto_core::ports::{Device, Entry, InboxItem, StoredMessage};
use sotto_proto::native::{AckStatus, DeviceView, MessageView, ServerFrame, UserView};
use std::borrow::Cow;

/// The native frame of `event`, if native connections get one.
pub(crate) fn encode(event: &Event) -> Option<Bytes> {
    let bytes = match event {
        Event::Inbox(item) => item.encoded(Protocol::Native, inbox_item),
        Event::Users(list) => list.encoded(Protocol::Native, users),
        Event::Presence(p) => p.encoded(Protocol::Native, presence),
        Event::Devices(set) => set.encoded(Protocol::Native, devices),
        Event::Ack(ack) => frame(&ack_frame(ack)),
        Event::History(page) => frame(&ServerFrame::History {
            with: page.with.as_str(),
            messages: page
                .messages
                .iter()
                .map(|m| message_view(m, None))
                .collect(),
        }),
        Event::Error(e) => error(&e.failure, e.reference.as_deref()),
        // QMessageServer's protocol only.
        Event::LoggedIn(_) | Event::Authorized => return None,
    };
    Some(bytes)
}

/// An `error` frame for a failure; `reference` names the send it answers.
fn error(failure: &Failure, reference: Option<&str>) -> Bytes {
    let (code, message) = failure_code(failure);
    frame(&ServerFrame::Error {
        code,
        message: &message,
        reference,
        retry_after: retry_after(failure),
    })
}

/// The one mapping from a hub failure to a native error: a stable code
/// for programs, a message for people.
fn failure_code(failure: &Failure) -> (&'static str, Cow<'static, str>) {
    let (code, text): (_, &'static str) = match failure {
        Failure::UnknownUser => ("unknown_user", "no such user"),
        Failure::QueueFull => ("queue_full", "the recipient's offline queue is full"),
        Failure::NotStored => ("internal", "message not stored, retry"),
        Failure::InvalidToken => ("unauthorized", "invalid or expired token"),
        Failure::Unavailable => ("internal", "the server cannot reach its database, retry"),
        Failure::SessionExpired => ("session_expired", "Session expired."),
        Failure::NotAuthenticated => ("unauthorized", "not authenticated"),
        Failure::Account(text) => return ("internal", Cow::Owned(text.clone())),
        Failure::Throttled { retry_after_secs } => {
            let text = format!("too many attempts; try again in {retry_after_secs} s");
            return ("rate_limited", Cow::Owned(text));
        }
        Failure::SendLimited { retry_after_secs } => {
            let text = format!("sending too fast; try again in {retry_after_secs} s");
            return ("rate_limited", Cow::Owned(text));
        }
        Failure::LogoutFailed => ("internal", "logout failed, retry"),
        Failure::HistoryUnavailable => ("internal", "history unavailable, retry"),
        Failure::ReceiptNotRecorded => ("internal", "receipt not recorded, retry"),
        Failure::KeyTooLong => ("too_large", "public key is too long"),
        Failure::BadRequest(text) => return ("bad_request", Cow::Owned(text.clone())),
        Failure::BinaryFrame => (
            "bad_request",
            "binary frames are not supported; send JSON text",
        ),
    };
    (code, Cow::Borrowed(text))
}

/// The `retry_after` of a rate-limited request's error frame.
fn retry_after(failure: &Failure) -> Option<u64> {
    match failure {
        Failure::Throttled { retry_after_secs } | Failure::SendLimited { retry_after_secs } => {
            Some(*retry_after_secs)
        }
        _ => None,
    }
}

fn ack_frame(ack: &Ack) -> ServerFrame<'_> {
    ServerFrame::Ack {
        client_id: &ack.client_id,
        id: ack.id,
        to: ack.to.as_str(),
        status: if ack.delivered {
            AckStatus::Delivered
        } else {
            AckStatus::Stored
        },
        pos: ack.pos,
    }
}

/// An inbox entry with its position: encoded once for all of the user's
/// connections.
fn inbox_item(item: &InboxItem) -> Bytes {
    let pos = item.pos;
    match &item.entry {
        Entry::Message(m) => frame(&ServerFrame::Message(message_view(m, Some(pos)))),
        Entry::Delivered { with, id } => frame(&ServerFrame::Delivered {
            with: with.as_str(),
            id: *id,
            pos,
        }),
        Entry::Read { with, up_to } => frame(&ServerFrame::Read {
            with: with.as_str(),
            up_to: *up_to,
            pos,
        }),
    }
}

pub(crate) fn message_view(m: &StoredMessage, pos: Option<i64>) -> MessageView<'_> {
    MessageView {
        id: m.seq,
        from: m.sender.as_str(),
        to: m.recipient.as_str(),
        body: &m.body,
        sent_at: m.sent_at,
        client_id: m.client_id.as_deref(),
        delivered: m.delivered_at.is_some(),
        read: m.read_at.is_some(),
        pos,
    }
}

fn users(list: &UserList) -> Bytes {
    let users = list
        .0
        .iter()
        .map(|p| UserView {
            id: p.id.as_str(),
            name: p.name.as_str(),
            online: true,
            public_key: &p.public_key,
            devices: device_views(&p.devices),
        })
        .collect();
    frame(&ServerFrame::Users { users })
}

/// Devices as clients see them, in the HTTP API too.
pub(crate) fn device_views(devices: &[Device]) -> Vec<DeviceView<'_>> {
    devices.iter().map(device_view).collect()
}

pub(crate) fn device_view(d: &Device) -> DeviceView<'_> {
    DeviceView {
        id: d.id.as_str(),
        public_key: &d.public_key,
        name: &d.name,
        created_at: d.created_at,
    }
}

fn devices(set: &DeviceSet) -> Bytes {
    frame(&ServerFrame::Devices {
        user: set.user.as_str(),
        devices: device_views(&set.devices),
    })
}

fn presence(p: &PresenceChange) -> Bytes {
    let profile = &p.profile;
    let online = match p.change {
        Change::Online => true,
        Change::Offline => false,
        Change::KeyChanged => {
            return frame(&ServerFrame::KeyChanged {
                user: profile.id.as_str(),
                public_key: &profile.public_key,
            });
        }
    };
    frame(&ServerFrame::Presence {
        user: profile.id.as_str(),
        name: profile.name.as_str(),
        online,
        public_key: &profile.public_key,
        devices: device_views(&p.devices),
    })
}

fn frame(f: &ServerFrame<'_>) -> Bytes {
    super::bytes(f.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_core::auth::UserId;
    use sotto_core::hub::event::{ErrorReply, Shared};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn text(event: &Event) -> String {
        String::from_utf8(encode(event).unwrap().to_vec()).unwrap()
    }

    fn id(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn frames_are_tagged_as_documented() {
        let message = StoredMessage {
            row: 1,
            seq: 4,
            sender: id("abc123"),
            recipient: id("def456"),
            body: "hi".into(),
            client_id: None,
            sent_at: 9,
            delivered_at: Some(9),
            read_at: None,
        };
        let item = InboxItem {
            pos: 12,
            entry: Entry::Message(std::sync::Arc::new(message)),
        };
        assert_eq!(
            text(&Event::Inbox(Shared::new(item))),
            r#"{"type":"message","id":4,"from":"abc123","to":"def456","body":"hi","sent_at":9,"delivered":true,"read":false,"pos":12}"#
        );
        let receipt = InboxItem {
            pos: 13,
            entry: Entry::Delivered {
                with: id("def456"),
                id: 4,
            },
        };
        assert_eq!(
            text(&Event::Inbox(Shared::new(receipt))),
            r#"{"type":"delivered","with":"def456","id":4,"pos":13}"#
        );
        let ack = Ack {
            client_id: "c1".into(),
            id: 4,
            to: id("def456"),
            delivered: false,
            pos: Some(7),
        };
        assert_eq!(
            text(&Event::Ack(Box::new(ack))),
            r#"{"type":"ack","client_id":"c1","id":4,"to":"def456","status":"stored","pos":7}"#
        );
        let refused = Event::Error(Box::new(ErrorReply {
            failure: Failure::QueueFull,
            reference: Some("c1".into()),
        }));
        assert_eq!(
            text(&refused),
            r#"{"type":"error","code":"queue_full","message":"the recipient's offline queue is full","ref":"c1"}"#
        );
        let limited = Event::Error(Box::new(ErrorReply {
            failure: Failure::SendLimited {
                retry_after_secs: 2,
            },
            reference: Some("c2".into()),
        }));
        assert_eq!(
            text(&limited),
            r#"{"type":"error","code":"rate_limited","message":"sending too fast; try again in 2 s","ref":"c2","retry_after":2}"#
        );
        assert_eq!(encode(&Event::Authorized), None);
    }

    #[test]
    fn a_shared_event_is_encoded_once() {
        let shared = Shared::new(UserList::default());
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            let bytes = shared.encoded(Protocol::Native, |l| {
                calls.fetch_add(1, Ordering::Relaxed);
                users(l)
            });
            assert_eq!(&bytes[..], br#"{"type":"users","users":[]}"#);
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
