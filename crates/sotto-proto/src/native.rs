//! sotto's own protocol, spoken on `/ws` of the HTTP port: JSON text
//! frames with a `type`. Unlike the compat protocol every send is
//! acknowledged once durable, messages have ids, presence comes as deltas,
//! and errors name a machine-readable `code`. See docs/PROTOCOL.md.

use serde::{Deserialize, Serialize};

/// The subprotocol a browser asks for; the server selects it.
pub const SUBPROTOCOL: &str = "sotto.v1";

/// Longest accepted `client_id`.
pub(crate) const CLIENT_ID_MAX: usize = 64;
/// Most messages in one history page.
pub const HISTORY_PAGE_MAX: u32 = 100;

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Send {
        to: String,
        body: String,
        client_id: String,
    },
    History {
        with: String,
        #[serde(default)]
        before: Option<i64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    Read {
        with: String,
        up_to: i64,
    },
    SetKey {
        public_key: String,
    },
    /// Everything in the user's inbox up to position `up_to` has been
    /// processed by this client: that is what makes messages delivered.
    Confirm {
        up_to: i64,
    },
}

/// Why a frame was refused; `code` is stable, `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
}

/// Longest `message` of a refused frame, in characters. serde_json's text
/// quotes the offending tag, field or string, escaped (up to ten characters
/// for one); uncut, a 64 KiB frame of control characters would come back
/// as over 400 KiB of error (found by the `native_frame` fuzz target).
const ERROR_MESSAGE_MAX: usize = 200;

/// Parses one text frame. Every input becomes a frame or an error.
pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    let frame: ClientFrame = serde_json::from_str(text).map_err(|e| FrameError {
        code: "bad_request",
        message: one_line(&format!("invalid frame: {e}"), ERROR_MESSAGE_MAX),
    })?;
    if let ClientFrame::Send { client_id, .. } = &frame
        && (client_id.is_empty() || client_id.len() > CLIENT_ID_MAX)
    {
        return Err(FrameError {
            code: "bad_request",
            message: format!("client_id must be 1 to {CLIENT_ID_MAX} bytes"),
        });
    }
    Ok(frame)
}

/// `text` with control characters escaped (serde_json quotes an unknown tag
/// or field as it was sent, so a decoded newline would otherwise reach the
/// debug log as a line of its own), cut after `max` characters with "…".
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(4 * max));
    for c in text.chars() {
        // Four bytes hold at most one character: enough is enough.
        if out.len() > 4 * max {
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if let Some((cut, _)) = out.char_indices().nth(max) {
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// One message as clients see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageView<'a> {
    pub id: i64,
    pub from: &'a str,
    pub to: &'a str,
    pub body: &'a str,
    pub sent_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
    pub delivered: bool,
    pub read: bool,
    /// The position in the receiving user's inbox (live and replayed
    /// messages; not in history pages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos: Option<i64>,
}

/// A user as clients see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub online: bool,
    pub public_key: &'a str,
    /// The user's end-to-end devices, oldest first.
    pub devices: Vec<DeviceView<'a>>,
}

/// An end-to-end device as clients see it (docs/PROTOCOL.md §14).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceView<'a> {
    pub id: &'a str,
    /// Base64url (no padding) of the 65-byte uncompressed P-256 point.
    pub public_key: &'a str,
    pub name: &'a str,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Frames the server sends.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Ack {
        client_id: &'a str,
        id: i64,
        to: &'a str,
        status: AckStatus,
        /// Set when the ack stands for the sender's own copy of the
        /// message at this position of its inbox.
        #[serde(skip_serializing_if = "Option::is_none")]
        pos: Option<i64>,
    },
    Message(MessageView<'a>),
    Delivered {
        with: &'a str,
        id: i64,
        pos: i64,
    },
    Read {
        with: &'a str,
        up_to: i64,
        pos: i64,
    },
    History {
        with: &'a str,
        messages: Vec<MessageView<'a>>,
    },
    Users {
        users: Vec<UserView<'a>>,
    },
    Presence {
        user: &'a str,
        name: &'a str,
        online: bool,
        public_key: &'a str,
        devices: Vec<DeviceView<'a>>,
    },
    /// A user's device set changed (added, removed, logged out
    /// everywhere): the whole set as it is now.
    Devices {
        user: &'a str,
        devices: Vec<DeviceView<'a>>,
    },
    KeyChanged {
        user: &'a str,
        public_key: &'a str,
    },
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        /// Seconds to wait before retrying (`rate_limited`), as a number
        /// so programs need not parse `message`.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// A resend of a message some session of the recipient confirmed.
    Delivered,
    /// Committed durably (fsync'd); a `delivered` receipt follows once a
    /// session of the recipient confirms it.
    Stored,
}

impl ServerFrame<'_> {
    /// Serializing these plain types cannot fail; the fallback keeps that
    /// promise without a panic path.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"encoding failed"}"#.to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_frames() {
        assert_eq!(
            parse(r#"{"type":"send","to":"abcdef","body":"hi","client_id":"c1"}"#),
            Ok(ClientFrame::Send {
                to: "abcdef".into(),
                body: "hi".into(),
                client_id: "c1".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"history","with":"abcdef"}"#),
            Ok(ClientFrame::History {
                with: "abcdef".into(),
                before: None,
                limit: None
            })
        );
        assert!(parse(r#"{"type":"read","with":"abcdef","up_to":3}"#).is_ok());
        assert!(parse(r#"{"type":"set_key","public_key":"k"}"#).is_ok());
        assert_eq!(
            parse(r#"{"type":"confirm","up_to":12}"#),
            Ok(ClientFrame::Confirm { up_to: 12 })
        );
    }

    #[test]
    fn refuses_bad_frames() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"type":"nope"}"#,
            r#"{"type":"send","to":"a","body":"b"}"#,
            r#"{"type":"send","to":"a","body":"b","client_id":""}"#,
            r#"{"type":"send","to":1,"body":"b","client_id":"c"}"#,
            r#"{"type":"read","with":"a","up_to":"x"}"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, "bad_request", "{bad}");
        }
        let long = "x".repeat(CLIENT_ID_MAX + 1);
        let frame = format!(r#"{{"type":"send","to":"a","body":"b","client_id":"{long}"}}"#);
        assert!(parse(&frame).is_err());
    }

    #[test]
    fn refusals_are_short_and_one_line() {
        // serde_json quotes these back: escaped 7-fold, and a raw newline.
        let dels = "\u{7f}".repeat(8000);
        let frame = format!("\"{dels}\"");
        let e = parse(&frame).unwrap_err();
        assert_eq!(e.message.chars().count(), ERROR_MESSAGE_MAX + 1);
        assert!(e.message.ends_with('…'));
        let e = parse(r#"{"type":"a\nb"}"#).unwrap_err();
        assert!(e.message.contains("a\\nb"), "{}", e.message);
        assert!(!e.message.contains('\n'));
    }

    #[test]
    fn long_client_ids_are_refused() {
        let long = "x".repeat(CLIENT_ID_MAX + 1);
        let frame = format!(r#"{{"type":"send","to":"a","body":"b","client_id":"{long}"}}"#);
        assert!(parse(&frame).is_err());
    }

    #[test]
    fn server_frames_are_tagged() {
        let f = ServerFrame::Ack {
            client_id: "c",
            id: 7,
            to: "abcdef",
            status: AckStatus::Stored,
            pos: None,
        };
        assert_eq!(
            f.encode(),
            r#"{"type":"ack","client_id":"c","id":7,"to":"abcdef","status":"stored"}"#
        );
        let e = ServerFrame::Error {
            code: "x",
            message: "y",
            reference: Some("c"),
            retry_after: None,
        };
        assert_eq!(
            e.encode(),
            r#"{"type":"error","code":"x","message":"y","ref":"c"}"#
        );
    }
}
