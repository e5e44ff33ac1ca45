//! What the native bench says on `/ws` and how it reads the answers.
//!
//! The bench is written against the delivery protocol that is landing now
//! (issue #10) and still runs against a server without it:
//!
//! - an `ack` says `stored` (new: durable, always) or `delivered` (old: a
//!   live connection of the recipient took it);
//! - `message` and receipt frames may carry `pos`, the receiving user's
//!   inbox position; a frame with one must be confirmed (`confirm`), a
//!   frame without one (old server) is not;
//! - `delivered` receipts reach the sender once the recipient confirmed
//!   (new), or when a stored message reached a recipient who was offline
//!   (old).
//!
//! A `client_id` is `run.sender.seq.sent_ns`: the ack alone tells which
//! message it answers and when that was sent, so a reader needs no table
//! of what its writer sent. Bodies are the compat bench's ([`Body`]).
//! Server frames are outside input: parsed without panicking, unknown
//! fields and types ignored.

use crate::messages::Body;
use serde::Deserialize;
use std::borrow::Cow;

/// A `send` frame. The recipient id was checked when it came from the
/// login answer and body and client id are digits, dots, colons and `x`,
/// so nothing needs escaping.
pub(crate) fn send_request(to: &str, body: &str, client_id: &str) -> String {
    format!(r#"{{"type":"send","to":"{to}","body":"{body}","client_id":"{client_id}"}}"#)
}

/// Confirms every positioned frame up to and including `up_to`.
pub(crate) fn confirm_request(up_to: u64) -> String {
    format!(r#"{{"type":"confirm","up_to":{up_to}}}"#)
}

/// Which message a `client_id` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientId {
    pub run: u32,
    pub sender: usize,
    pub seq: u64,
    pub sent_ns: u64,
}

impl ClientId {
    pub fn encode(&self) -> String {
        format!("{}.{}.{}.{}", self.run, self.sender, self.seq, self.sent_ns)
    }

    pub fn decode(text: &str) -> Option<ClientId> {
        let mut parts = text.split('.');
        let id = ClientId {
            run: parts.next()?.parse().ok()?,
            sender: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
            sent_ns: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(id)
    }

    pub fn body(&self) -> Body {
        Body {
            run: self.run,
            sender: self.sender,
            seq: self.seq,
            sent_ns: self.sent_ns,
        }
    }
}

/// One server frame, as far as the bench cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    Ack {
        client_id: Cow<'a, str>,
        id: i64,
        to: Cow<'a, str>,
        /// True for `stored`: a `delivered` receipt is still to come.
        stored: bool,
        /// The sender's own copy's inbox position: the ack stands in for
        /// that copy on the sending connection, so it counts (and is
        /// confirmed) like any positioned frame.
        pos: Option<u64>,
    },
    Message {
        from: Cow<'a, str>,
        to: Cow<'a, str>,
        body: Cow<'a, str>,
        pos: Option<u64>,
    },
    Delivered {
        with: Cow<'a, str>,
        id: i64,
        pos: Option<u64>,
    },
    Error {
        code: Cow<'a, str>,
        reference: Option<Cow<'a, str>>,
        retry_after: Option<u64>,
    },
    /// `users`, `presence`, `read`, `key_changed`: not counted, but
    /// confirmed when positioned.
    Other { pos: Option<u64> },
    /// Not JSON, no `type`, or a known type without its fields.
    Malformed,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    client_id: Option<Cow<'a, str>>,
    id: Option<i64>,
    #[serde(borrow)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow)]
    with: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
    pos: Option<u64>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(rename = "ref", borrow)]
    reference: Option<Cow<'a, str>>,
    retry_after: Option<u64>,
}

/// Frames that are never counted and carry no position: skipped without
/// parsing (a `users` frame lists up to a thousand users).
const UNPOSITIONED: [&str; 2] = [r#"{"type":"users","#, r#"{"type":"presence","#];

pub(crate) fn classify(text: &str) -> Frame<'_> {
    if UNPOSITIONED.iter().any(|p| text.starts_with(p)) {
        return Frame::Other { pos: None };
    }
    let Ok(w) = serde_json::from_str::<Wire<'_>>(text) else {
        return Frame::Malformed;
    };
    match w.kind.as_ref() {
        "ack" => match (w.client_id, w.id, w.to, w.status) {
            (Some(client_id), Some(id), Some(to), Some(status)) => Frame::Ack {
                client_id,
                id,
                to,
                stored: status == "stored",
                pos: w.pos,
            },
            _ => Frame::Malformed,
        },
        "message" => match (w.from, w.to, w.body) {
            (Some(from), Some(to), Some(body)) => Frame::Message {
                from,
                to,
                body,
                pos: w.pos,
            },
            _ => Frame::Malformed,
        },
        "delivered" => match (w.with, w.id) {
            (Some(with), Some(id)) => Frame::Delivered {
                with,
                id,
                pos: w.pos,
            },
            _ => Frame::Malformed,
        },
        "error" => Frame::Error {
            code: w.code.unwrap_or(Cow::Borrowed("")),
            reference: w.reference,
            retry_after: w.retry_after,
        },
        _ => Frame::Other { pos: w.pos },
    }
}

/// A user id packed into a number, so per-message tables need no string
/// allocation. Ids are 6 characters today; longer ones get None.
pub(crate) fn pack_id(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    if b.is_empty() || b.len() > 8 {
        return None;
    }
    Some(b.iter().fold(0u64, |acc, &c| (acc << 8) | u64::from(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_round_trip() {
        let c = ClientId {
            run: 7,
            sender: 3,
            seq: 99,
            sent_ns: 123_456_789,
        };
        let text = c.encode();
        assert!(text.len() <= 64);
        assert_eq!(ClientId::decode(&text), Some(c));
        assert_eq!(ClientId::decode("7.3.99"), None);
        assert_eq!(ClientId::decode("7.3.99.1.2"), None);
        assert_eq!(ClientId::decode("c-1"), None);
    }

    #[test]
    fn requests_are_valid_json() {
        let v: serde_json::Value =
            serde_json::from_str(&send_request("abcdef", "1:2:3:4:xx", "1.2.3.4")).unwrap();
        assert_eq!(v["type"], "send");
        assert_eq!(v["client_id"], "1.2.3.4");
        let v: serde_json::Value = serde_json::from_str(&confirm_request(42)).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["up_to"].as_u64()),
            (Some("confirm"), Some(42))
        );
    }

    #[test]
    fn old_and_new_frames_are_classified() {
        let old_ack = r#"{"type":"ack","client_id":"c","id":7,"to":"b0B123","status":"delivered"}"#;
        assert!(matches!(
            classify(old_ack),
            Frame::Ack {
                stored: false,
                id: 7,
                ..
            }
        ));
        let new_ack =
            r#"{"type":"ack","client_id":"c","id":7,"to":"b0B123","status":"stored","pos":3}"#;
        assert!(matches!(
            classify(new_ack),
            Frame::Ack {
                stored: true,
                pos: Some(3),
                ..
            }
        ));
        let m = r#"{"type":"message","id":7,"from":"a","to":"b","body":"1:2:3:4:","sent_at":1,"client_id":"c","delivered":false,"read":false,"pos":12}"#;
        assert!(matches!(classify(m), Frame::Message { pos: Some(12), .. }));
        let d = r#"{"type":"delivered","with":"b0B123","id":7}"#;
        assert_eq!(
            classify(d),
            Frame::Delivered {
                with: "b0B123".into(),
                id: 7,
                pos: None
            }
        );
        let e =
            r#"{"type":"error","code":"rate_limited","message":"m","ref":"c-9","retry_after":2}"#;
        assert_eq!(
            classify(e),
            Frame::Error {
                code: "rate_limited".into(),
                reference: Some("c-9".into()),
                retry_after: Some(2)
            }
        );
        let r = r#"{"type":"read","with":"b0B123","up_to":7,"pos":5}"#;
        assert_eq!(classify(r), Frame::Other { pos: Some(5) });
        assert_eq!(
            classify(r#"{"type":"users","users":[]}"#),
            Frame::Other { pos: None }
        );
        assert_eq!(classify(r#"{"type":"ack"}"#), Frame::Malformed);
        assert_eq!(classify("nope"), Frame::Malformed);
    }

    #[test]
    fn ids_pack_distinctly() {
        assert_ne!(pack_id("abcdef"), pack_id("abcdeg"));
        assert_eq!(pack_id(""), None);
        assert_eq!(pack_id("123456789"), None);
    }
}
