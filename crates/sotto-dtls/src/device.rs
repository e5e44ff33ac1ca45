//! What a device's datagram means, and the datagrams sent back.
//!
//! Plain text gets the Qt example's reply, `to <peer>: ACK`. A JSON object
//! `{"to": USER_ID, "body": TEXT}` is a message into the hub (for an
//! identity bound to a user), acknowledged with `{"ack": ID}`. Anything
//! the device gets wrong is answered with `{"error": TEXT}`: a device on
//! the far side of a radio link cannot read our log.

use super::bridge::DeviceMessage;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;

/// Longest recipient id accepted from a device; the hub validates further.
const MAX_RECIPIENT_LEN: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Meaning {
    /// Not JSON: answer with the example's ACK.
    Plain,
    /// A message for the hub.
    Message { to: String, body: String },
    /// JSON we cannot use; the text says why.
    Invalid(&'static str),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Outgoing {
    to: String,
    body: String,
}

pub(crate) fn interpret(plaintext: &[u8]) -> Meaning {
    let looks_like_json = plaintext
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if !looks_like_json {
        return Meaning::Plain;
    }
    match serde_json::from_slice::<Outgoing>(plaintext) {
        Ok(m) if m.to.is_empty() || m.to.len() > MAX_RECIPIENT_LEN => {
            Meaning::Invalid("\"to\" must be a user id")
        }
        Ok(m) => Meaning::Message {
            to: m.to,
            body: m.body,
        },
        Err(_) => Meaning::Invalid("expected {\"to\": USER_ID, \"body\": TEXT}"),
    }
}

/// The Qt example's reply to any plain datagram.
pub(crate) fn ack_text(peer: SocketAddr) -> Vec<u8> {
    format!("to {peer}: ACK").into_bytes()
}

pub(crate) fn ack_json(id: u64) -> Vec<u8> {
    json!({ "ack": id }).to_string().into_bytes()
}

pub(crate) fn error_json(error: &str) -> Vec<u8> {
    json!({ "error": error }).to_string().into_bytes()
}

/// The error sent instead of a datagram that would exceed the payload limit.
pub(crate) fn too_large_json(max: usize, id: Option<u64>) -> Vec<u8> {
    let mut v = json!({ "error": "message too large for one datagram", "max": max });
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v.to_string().into_bytes()
}

/// A hub message as the device receives it.
pub(crate) fn delivery_json(msg: &DeviceMessage) -> Vec<u8> {
    json!({ "id": msg.id, "from": msg.from.as_str(), "body": msg.body })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_json_and_mistakes() {
        assert_eq!(
            interpret(b"I am x, please, accept our ping 1"),
            Meaning::Plain
        );
        assert_eq!(interpret(b""), Meaning::Plain);
        assert_eq!(interpret(&[0xff, 0xfe]), Meaning::Plain);
        assert_eq!(
            interpret(br#" {"to": "abc123", "body": "hi"}"#),
            Meaning::Message {
                to: "abc123".into(),
                body: "hi".into()
            }
        );
        assert!(matches!(interpret(br#"{"to": 5}"#), Meaning::Invalid(_)));
        assert!(matches!(
            interpret(br#"{"to": "", "body": ""}"#),
            Meaning::Invalid(_)
        ));
        assert!(matches!(interpret(b"{broken"), Meaning::Invalid(_)));
    }

    #[test]
    fn replies_are_what_devices_expect() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(ack_text(peer), b"to 127.0.0.1:9: ACK");
        assert_eq!(ack_json(7), br#"{"ack":7}"#);
        let d = DeviceMessage {
            id: 3,
            from: sotto_core::auth::UserId::parse("abc123").unwrap(),
            body: "b".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&delivery_json(&d)).unwrap();
        assert_eq!(v, json!({"id": 3, "from": "abc123", "body": "b"}));
        let e: serde_json::Value = serde_json::from_slice(&too_large_json(10, Some(4))).unwrap();
        assert_eq!(e["max"], 10);
        assert_eq!(e["id"], 4);
    }
}
