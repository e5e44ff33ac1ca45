//! QMessageServer compat requests (`compat::parse_request`), one WebSocket
//! text frame each. Beyond "no panic": the error kind agrees with what
//! serde_json itself makes of the text, the error text (sent to the peer)
//! is one of the fixed, short messages, and every accepted request
//! survives encode → parse unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use sotto_proto::compat::{Credentials, ProtocolError, Request, parse_request};

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the time they reach the parser.
    let text = String::from_utf8_lossy(data);
    match parse_request(&text) {
        Ok(request) => {
            let again = parse_request(&encode(&request));
            assert_eq!(again.as_ref(), Ok(&request), "round trip of {text:?}");
        }
        Err(error) => check_error(&text, &error),
    }
});

fn check_error(text: &str, error: &ProtocolError) {
    let parsed = serde_json::from_str::<Value>(text);
    match error {
        ProtocolError::NotJson => assert!(parsed.is_err(), "{text:?} is JSON"),
        ProtocolError::NotObject => assert!(matches!(parsed, Ok(ref v) if !v.is_object())),
        _ => assert!(matches!(parsed, Ok(Value::Object(_)))),
    }
    // Fixed messages naming a field: nothing of the input is echoed.
    assert!(error.to_string().len() <= 48, "{error}");
}

/// The request as a client would send it; action numbers are the wire
/// format of docs/PROTOCOL.md.
fn encode(request: &Request) -> String {
    let credentials = |action: u8, c: &Credentials| json!({ "action": action, "name": c.name, "password": c.password, "pubKey": c.pub_key });
    let value = match request {
        Request::Login(c) => credentials(0, c),
        Request::Register(c) => credentials(1, c),
        Request::Logout { token } => json!({ "action": 2, "token": token }),
        Request::Message {
            token,
            target,
            message,
        } => json!({ "action": 3, "token": token, "target": target, "message": message }),
        Request::Authorize { token } => json!({ "action": 4, "token": token }),
    };
    value.to_string()
}
