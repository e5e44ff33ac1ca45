//! Hub events as QMessageServer's JSON (see docs/PROTOCOL.md).

use bytes::Bytes;
use serde_json::value::RawValue;
use sotto_core::auth::UserId;
use sotto_core::hub::event::{LoggedIn, Pieces, Shared, UserList};
use sotto_core::hub::{Event, Failure, Protocol};
use sotto_core::ports::{Entry, UserProfile};
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
        Event::Users(list) => list.encoded(Protocol::Compat, |_| user_list_changed(list)),
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

fn user_list_changed(list: &Shared<UserList>) -> Bytes {
    let head = Response {
        valid: true,
        event: Some(Reply::UserlistChange),
        ..Default::default()
    };
    let entries = list.pieces(entries);
    with_users(head, &[entries.run(0..entries.len())])
}

/// The answer lists its own user first, then the shared list without
/// them, `max` users in all: spliced from the list's entries, which are
/// encoded once per list version, not once per login.
fn logged_in(answer: &LoggedIn) -> Bytes {
    let head = Response {
        valid: true,
        event: Some(Reply::Login),
        token: Some(answer.token.as_str()),
        username: Some(&answer.name),
        ..Default::default()
    };
    if answer.max == 0 {
        return with_users(head, &[]);
    }
    let own = entry(&answer.first);
    let entries = answer.list.pieces(entries);
    let others = answer.max - 1;
    match answer.first_in_list() {
        Some(i) if i < others => with_users(
            head,
            &[&own, entries.run(0..i), entries.run(i + 1..others + 1)],
        ),
        _ => with_users(head, &[&own, entries.run(0..others)]),
    }
}

/// A user list's entries as QMessageServer sends them.
fn entries(list: &UserList) -> Pieces {
    Pieces::join(list.0.iter().map(|p| entry(p)))
}

fn entry(p: &UserProfile) -> Vec<u8> {
    let entry = UserEntry {
        id: p.id.as_str(),
        name: p.name.as_str(),
        public_key: &p.public_key,
    };
    // Plain strings cannot fail to serialize; `null` keeps the array valid.
    serde_json::to_vec(&entry).unwrap_or_else(|_| b"null".to_vec())
}

/// `head` with `users`: the non-empty `runs` (each entries joined by
/// commas), joined into one JSON array. `users` is the last field of a
/// response without `sender`, `message` or `error`, so the array is
/// spliced in where the encoding of an empty one ends, without copying
/// it through a serializer.
fn with_users(head: Response<'_>, runs: &[&[u8]]) -> Bytes {
    let mut array = Vec::with_capacity(runs.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    array.push(b'[');
    for run in runs.iter().filter(|r| !r.is_empty()) {
        if array.len() > 1 {
            array.push(b',');
        }
        array.extend_from_slice(run);
    }
    array.push(b']');
    let empty =
        RawValue::from_string("[]".to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned());
    let framed = Response {
        users: Some(&empty),
        ..head
    }
    .encode();
    if head_has_no_tail(&head)
        && let Some(prefix) = framed.strip_suffix("[]}")
    {
        let mut out = Vec::with_capacity(prefix.len() + array.len() + 1);
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&array);
        out.push(b'}');
        return Bytes::from(out);
    }
    // Not reached with the responses above; correct, only slower.
    let array = String::from_utf8(array).unwrap_or_default();
    match RawValue::from_string(array) {
        Ok(users) => reply(Response {
            users: Some(&users),
            ..head
        }),
        Err(_) => reply(head),
    }
}

/// Whether no field follows `users` in `head`'s encoding.
fn head_has_no_tail(head: &Response<'_>) -> bool {
    head.sender.is_none() && head.message.is_none() && head.error.is_none()
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

    fn profile(n: u32) -> Arc<UserProfile> {
        Arc::new(UserProfile {
            id: UserId::parse(&format!("u{n:05}")).unwrap(),
            name: UserName::parse(&format!("user{n}")).unwrap(),
            public_key: format!("-----BEGIN KEY-----\n{n}\"quoted\"\n"),
        })
    }

    /// The answer as a serializer writes it, entry by entry: what the
    /// spliced encoding must equal.
    fn serialized(answer: &LoggedIn) -> String {
        let entries: Vec<UserEntry<'_>> = answer
            .users()
            .map(|p| UserEntry {
                id: p.id.as_str(),
                name: p.name.as_str(),
                public_key: &p.public_key,
            })
            .collect();
        let users = serde_json::value::to_raw_value(&entries).unwrap();
        Response {
            valid: true,
            event: Some(Reply::Login),
            token: Some(answer.token.as_str()),
            username: Some(&answer.name),
            users: Some(&users),
            ..Default::default()
        }
        .encode()
    }

    #[test]
    fn login_answers_splice_the_shared_list_as_a_serializer_would_write_it() {
        let list: Vec<_> = (1..=4).map(profile).collect();
        let shared = Shared::new(UserList(list.iter().cloned().map(Into::into).collect()));
        let empty = Shared::new(UserList::default());
        // (own user, list, cap): outside the list or in it (first, middle,
        // last), capped below, at or above its length, and an empty list.
        let cases = [
            (profile(9), &shared, 5),
            (profile(9), &shared, 4),
            (profile(9), &shared, 2),
            (profile(9), &shared, 1),
            (profile(9), &shared, 0),
            (list[0].clone(), &shared, 4),
            (list[2].clone(), &shared, 4),
            (list[2].clone(), &shared, 3),
            (list[2].clone(), &shared, 2),
            (list[3].clone(), &shared, 4),
            (list[3].clone(), &shared, 1),
            (profile(9), &empty, 1000),
        ];
        for (first, list, max) in cases {
            let answer = LoggedIn {
                token: sotto_core::auth::Token::generate(),
                name: first.name.as_str().to_owned(),
                first: first.clone(),
                list: list.clone(),
                max,
            };
            let spliced = text(&Event::LoggedIn(Box::new(answer.clone())));
            assert_eq!(spliced, serialized(&answer), "{} of {max}", first.id);
            let parsed: serde_json::Value = serde_json::from_str(&spliced).unwrap();
            let listed = parsed["users"].as_array().map_or(0, Vec::len);
            assert_eq!(listed, answer.users().count());
        }
        // The list's entries were encoded once for all of those answers.
        assert!(std::ptr::eq(
            shared.pieces(|_| panic!("encoded again")),
            shared.pieces(|_| panic!("encoded again"))
        ));
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
