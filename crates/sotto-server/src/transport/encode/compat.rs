//! Hub events as QMessageServer's JSON (see docs/PROTOCOL.md).

use bytes::Bytes;
use serde_json::value::RawValue;
use sotto_core::auth::UserId;
use sotto_core::hub::event::{LoggedIn, UserList};
use sotto_core::hub::{Event, Failure, Protocol};
use sotto_core::ports::Entry;
use sotto_proto::compat::{self, Event as Reply, Response, UserEntry};
use std::borrow::Cow;

/// The compat frame of `event`, if compat connections get one.
pub(crate) fn encode(event: &Event) -> Option<Bytes> {
    let bytes = match event {
        // The hub gives compat connections messages to them only.
        Event::Inbox(item) => match &item.entry {
            Entry::Message(m) => item.encoded(Protocol::Compat, |_| message(&m.sender, &m.body)),
            Entry::Delivered { .. } | Entry::Read { .. } => return None,
        },
        Event::Users(list) => list.encoded(Protocol::Compat, user_list_changed),
        Event::LoggedIn(answer) => logged_in(answer),
        Event::Authorized => reply(Response {
            valid: true,
            event: Some(Reply::Authorization),
            ..Default::default()
        }),
        Event::Error(e) => error(&e.failure),
        // sotto's own protocol only: ids, receipts, deltas, history.
        Event::Presence(_) | Event::Devices(_) | Event::Ack(_) | Event::History(_) => return None,
    };
    Some(bytes)
}

/// `{"valid":false,"error":…}` for a failure, with its event if any.
fn error(failure: &Failure) -> Bytes {
    let (event, text) = failure_reply(failure);
    super::bytes(compat::error_response(event, &text))
}

/// The one mapping from a hub failure to a compat reply. Errors about a
/// message carry no `event`, so the example client does not mistake them
/// for a forced logout; token errors carry InvalidUser, login errors Login.
fn failure_reply(failure: &Failure) -> (Option<Reply>, Cow<'static, str>) {
    let (event, text): (_, &'static str) = match failure {
        Failure::UnknownUser => (None, "Unknown target user."),
        Failure::QueueFull => (None, "Recipient's offline queue is full."),
        Failure::NotStored => (None, "Message could not be stored, please retry."),
        Failure::InvalidToken => (Some(Reply::InvalidUser), "Invalid or expired token."),
        Failure::Unavailable => (None, "Server is temporarily unavailable, please try again."),
        Failure::SessionExpired => (Some(Reply::InvalidUser), "Session expired."),
        Failure::NotAuthenticated => (Some(Reply::InvalidUser), "Log in or authorize first."),
        Failure::Account(text) => return (Some(Reply::Login), Cow::Owned(text.clone())),
        Failure::Throttled { retry_after_secs } => {
            let text = format!("Too many attempts; try again in {retry_after_secs} s.");
            return (Some(Reply::Login), Cow::Owned(text));
        }
        // No `event`: the example client must not take it for a failed login.
        Failure::SendLimited { retry_after_secs } => {
            let text = format!("Sending too fast; try again in {retry_after_secs} s.");
            return (None, Cow::Owned(text));
        }
        Failure::LogoutFailed => (None, "Internal server error, please try again."),
        Failure::HistoryUnavailable | Failure::ReceiptNotRecorded => {
            (None, "Internal server error, please try again.")
        }
        Failure::KeyTooLong => (None, "Public key is too long."),
        Failure::BadRequest(text) => return (None, Cow::Owned(text.clone())),
        Failure::BinaryFrame => (None, "Binary frames are not supported; send JSON text."),
    };
    (event, Cow::Borrowed(text))
}

fn message(sender: &UserId, body: &str) -> Bytes {
    reply(Response {
        valid: true,
        event: Some(Reply::Message),
        sender: Some(sender.as_str()),
        message: Some(body),
        ..Default::default()
    })
}

fn user_list_changed(list: &UserList) -> Bytes {
    let users = users_json(list);
    reply(Response {
        valid: true,
        event: Some(Reply::UserlistChange),
        users: Some(&users),
        ..Default::default()
    })
}

fn logged_in(answer: &LoggedIn) -> Bytes {
    let users = users_json(&answer.users);
    reply(Response {
        valid: true,
        event: Some(Reply::Login),
        token: Some(answer.token.as_str()),
        username: Some(&answer.name),
        users: Some(&users),
        ..Default::default()
    })
}

/// The `users` array as QMessageServer sends it.
fn users_json(list: &UserList) -> Box<RawValue> {
    let entries: Vec<UserEntry<'_>> = list
        .0
        .iter()
        .map(|p| UserEntry {
            id: p.id.as_str(),
            name: p.name.as_str(),
            public_key: &p.public_key,
        })
        .collect();
    serde_json::value::to_raw_value(&entries).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

fn reply(response: Response<'_>) -> Bytes {
    super::bytes(response.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_core::auth::UserName;
    use sotto_core::hub::event::Shared;
    use sotto_core::ports::{InboxItem, StoredMessage, UserProfile};
    use std::sync::Arc;

    fn text(event: &Event) -> String {
        String::from_utf8(encode(event).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn frames_are_qmessageservers() {
        let m = StoredMessage {
            row: 1,
            seq: 1,
            sender: UserId::parse("abc123").unwrap(),
            recipient: UserId::parse("def456").unwrap(),
            body: "hi".into(),
            client_id: None,
            sent_at: 0,
            delivered_at: None,
            read_at: None,
        };
        let message = Event::Inbox(Shared::new(InboxItem {
            pos: 3,
            entry: Entry::Message(Arc::new(m)),
        }));
        assert_eq!(
            text(&message),
            r#"{"valid":true,"event":2,"sender":"abc123","message":"hi"}"#
        );
        let profile = Arc::new(UserProfile {
            id: UserId::parse("abc123").unwrap(),
            name: UserName::parse("alice").unwrap(),
            public_key: "k".into(),
        });
        let list = Event::Users(Shared::new(UserList(vec![profile.into()])));
        assert_eq!(
            text(&list),
            r#"{"valid":true,"event":4,"users":[{"id":"abc123","name":"alice","publicKey":"k"}]}"#
        );
        assert_eq!(text(&Event::Authorized), r#"{"valid":true,"event":0}"#);
        let read = Event::Inbox(Shared::new(InboxItem {
            pos: 4,
            entry: Entry::Read {
                with: UserId::parse("abc123").unwrap(),
                up_to: 1,
            },
        }));
        assert_eq!(encode(&read), None, "receipts are not QMessageServer's");
    }

    #[test]
    fn failures_map_to_qmessageserver_errors() {
        let cases = [
            (
                Failure::UnknownUser,
                r#"{"valid":false,"error":"Unknown target user."}"#,
            ),
            (
                Failure::InvalidToken,
                r#"{"valid":false,"event":3,"error":"Invalid or expired token."}"#,
            ),
            (
                Failure::Throttled {
                    retry_after_secs: 7,
                },
                r#"{"valid":false,"event":1,"error":"Too many attempts; try again in 7 s."}"#,
            ),
            (
                Failure::SessionExpired,
                r#"{"valid":false,"event":3,"error":"Session expired."}"#,
            ),
            (
                Failure::SendLimited {
                    retry_after_secs: 3,
                },
                r#"{"valid":false,"error":"Sending too fast; try again in 3 s."}"#,
            ),
        ];
        for (failure, expected) in cases {
            assert_eq!(text(&Event::error(failure)), expected);
        }
    }
}
