//! What the bench says and how it reads the answers.
//!
//! A message body is `run:sender:seq:sent_ns:padding`, so the receiver
//! alone can tell who sent it, whether it is new (the ledger), and how long
//! it took (the send time is on the bench's own monotonic clock, which
//! sender and receiver share because they are one process). The random run
//! id tells this run's messages from ones an earlier run left stored for an
//! offline user, which the server replays at login. Server replies are
//! outside input: they are parsed without panicking and values that end up
//! in later requests (tokens, ids) are checked for shape first.

use serde::Deserialize;
use sotto_core::auth::{Token, UserId};
use std::borrow::Cow;

/// A decoded message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body {
    pub run: u32,
    pub sender: usize,
    pub seq: u64,
    pub sent_ns: u64,
}

impl Body {
    /// Encodes the body, padded with `x` to at least `size` bytes so a run
    /// can model larger (say, end-to-end encrypted) messages.
    pub fn encode(&self, size: usize) -> String {
        let mut s = format!(
            "{}:{}:{}:{}:",
            self.run, self.sender, self.seq, self.sent_ns
        );
        if s.len() < size {
            s.extend(std::iter::repeat_n('x', size - s.len()));
        }
        s
    }

    pub fn decode(text: &str) -> Option<Body> {
        let mut parts = text.splitn(5, ':');
        let run = parts.next()?.parse().ok()?;
        let sender = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let sent_ns = parts.next()?.parse().ok()?;
        parts.next()?;
        Some(Body {
            run,
            sender,
            seq,
            sent_ns,
        })
    }
}

/// A direct message request (action 3). Token, target and body are built
/// from checked tokens, checked ids and digits, so no escaping is needed;
/// formatting by hand keeps the sender's per-message cost low.
pub(crate) fn message_request(token: &str, target: &str, body: &str) -> String {
    format!(r#"{{"action":3,"token":"{token}","target":"{target}","message":"{body}"}}"#)
}

/// Login (0) or Register (1).
pub(crate) fn credentials_request(action: u8, name: &str, password: &str) -> String {
    serde_json::json!({
        "action": action,
        "name": name,
        "password": password,
        "pubKey": format!("bench-key-{name}"),
    })
    .to_string()
}

/// Authorize (4) with a token from an earlier login.
pub(crate) fn authorize_request(token: &str) -> String {
    serde_json::json!({"action": 4, "token": token}).to_string()
}

/// One server frame, as far as the bench cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A direct message (event 2) with its body.
    Message(Cow<'a, str>),
    /// A user-list broadcast (event 4).
    Presence,
    /// A successful login or registration (event 1), with the new token
    /// and, when the user list names `name`, the user's id.
    LoggedIn { token: String, id: Option<String> },
    /// A successful Authorize (event 0).
    Authorized,
    /// `valid: false`, with the server's error text.
    Refused(String),
    /// Anything else (not JSON, an unexpected event, a malformed token).
    Unexpected,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default)]
    valid: bool,
    event: Option<u8>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    error: Option<String>,
    users: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    id: String,
    name: String,
}

/// The prefix sotto's user-list broadcasts start with. Checking it first
/// lets receivers skip lists of up to a thousand users without parsing
/// them; a server that orders fields differently only costs a full parse.
const PRESENCE_PREFIX: &str = r#"{"valid":true,"event":4,"#;

/// Classifies a text frame; `name` is the receiving user's name, used to
/// find its id in a login's user list.
pub fn classify<'a>(text: &'a str, name: &str) -> Reply<'a> {
    if text.starts_with(PRESENCE_PREFIX) {
        return Reply::Presence;
    }
    let Ok(wire) = serde_json::from_str::<Wire<'a>>(text) else {
        return Reply::Unexpected;
    };
    if !wire.valid {
        return Reply::Refused(wire.error.unwrap_or_default());
    }
    match (wire.event, wire.message, wire.token) {
        (Some(2), Some(m), _) => Reply::Message(m),
        (Some(4), _, _) => Reply::Presence,
        (Some(0), _, _) => Reply::Authorized,
        (Some(1), _, Some(token)) if Token::parse(&token).is_some() => Reply::LoggedIn {
            token: token.into_owned(),
            id: wire
                .users
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.name == name && UserId::parse(&e.id).is_some())
                .map(|e| e.id),
        },
        _ => Reply::Unexpected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_with_padding() {
        let b = Body {
            run: 9,
            sender: 7,
            seq: 42,
            sent_ns: 123_456,
        };
        let text = b.encode(40);
        assert_eq!(text.len(), 40);
        assert_eq!(Body::decode(&text), Some(b));
        assert_eq!(Body::decode(&b.encode(0)), Some(b));
        assert_eq!(Body::decode("9:7:x:1:"), None);
        assert_eq!(Body::decode("9:7:1:1"), None);
    }

    #[test]
    fn replies_are_classified() {
        let token = "a".repeat(64);
        let login = format!(
            r#"{{"valid":true,"event":1,"token":"{token}","users":[{{"id":"abc123","name":"me","publicKey":""}}]}}"#
        );
        assert_eq!(
            classify(&login, "me"),
            Reply::LoggedIn {
                token: token.clone(),
                id: Some("abc123".into())
            }
        );
        let m = r#"{"valid":true,"event":2,"sender":"abc123","message":"1:2:3:"}"#;
        assert_eq!(classify(m, "me"), Reply::Message("1:2:3:".into()));
        assert_eq!(
            classify(r#"{"valid":true,"event":4,"users":[]}"#, "me"),
            Reply::Presence
        );
        assert_eq!(
            classify(r#"{"event":4,"valid":true,"users":[]}"#, "me"),
            Reply::Presence
        );
        assert_eq!(
            classify(r#"{"valid":true,"event":0}"#, "me"),
            Reply::Authorized
        );
        assert_eq!(
            classify(r#"{"valid":false,"event":1,"error":"no"}"#, "me"),
            Reply::Refused("no".into())
        );
        let bad_token = r#"{"valid":true,"event":1,"token":"\" injected","users":[]}"#;
        assert_eq!(classify(bad_token, "me"), Reply::Unexpected);
        assert_eq!(classify("not json", "me"), Reply::Unexpected);
    }

    #[test]
    fn message_request_is_valid_json() {
        let r = message_request(&"f".repeat(64), "abc123", "1:2:3:xx");
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v["action"], 3);
        assert_eq!(v["message"], "1:2:3:xx");
    }
}
