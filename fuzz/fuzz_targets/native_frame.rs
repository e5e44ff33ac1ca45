//! sotto's native protocol (`native::parse`), one WebSocket text frame each.
//! Beyond "no panic": every refusal is a `bad_request` with a short,
//! one-line message (serde_json quotes an unknown tag or field),
//! accepted frames keep their documented bounds, and every accepted frame
//! survives encode → parse unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use sotto_proto::native::{ClientFrame, WATCH_MAX, parse};

/// Longest `client_id` (docs/PROTOCOL.md).
const CLIENT_ID_MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse(&text) {
        Ok(frame) => {
            if let ClientFrame::Send { client_id, .. } = &frame {
                assert!((1..=CLIENT_ID_MAX).contains(&client_id.len()));
            }
            if let ClientFrame::Watch { users } = &frame {
                assert!(users.len() <= WATCH_MAX, "{} watched", users.len());
            }
            let again = parse(&encode(&frame));
            assert_eq!(again.as_ref(), Ok(&frame), "round trip of {text:?}");
        }
        Err(error) => {
            assert_eq!(error.code, "bad_request");
            // Sent back to the peer and logged: short, and one line.
            let chars = error.message.chars().count();
            assert!(chars <= 201, "{chars} characters of error");
            assert!(
                !error.message.chars().any(char::is_control),
                "{:?}",
                error.message
            );
        }
    }
});

/// The frame as a client would send it; optional fields are left out when
/// absent, as the browser client does.
fn encode(frame: &ClientFrame) -> String {
    let value = match frame {
        ClientFrame::Send {
            to,
            body,
            client_id,
        } => json!({ "type": "send", "to": to, "body": body, "client_id": client_id }),
        ClientFrame::History {
            with,
            before,
            limit,
        } => {
            let mut m = Map::new();
            m.insert("type".into(), json!("history"));
            m.insert("with".into(), json!(with));
            if let Some(before) = before {
                m.insert("before".into(), json!(before));
            }
            if let Some(limit) = limit {
                m.insert("limit".into(), json!(limit));
            }
            Value::Object(m)
        }
        ClientFrame::Read { with, up_to } => {
            json!({ "type": "read", "with": with, "up_to": up_to })
        }
        ClientFrame::SetKey { public_key } => {
            json!({ "type": "set_key", "public_key": public_key })
        }
        ClientFrame::Confirm { up_to } => json!({ "type": "confirm", "up_to": up_to }),
        ClientFrame::Watch { users } => json!({ "type": "watch", "users": users }),
    };
    value.to_string()
}
