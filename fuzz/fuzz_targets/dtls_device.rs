//! What a device's decrypted datagram means (`sotto_dtls::device` through
//! `sotto_dtls::fuzzing`). Beyond "no panic": plain text is exactly what
//! does not open with `{`, a message's recipient stays within its bound,
//! the reason sent back is one of the fixed ones, and an accepted message
//! re-encoded by a device means the same message again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sotto_dtls::fuzzing::{DeviceMeaning, interpret};

/// Longest recipient a device may name (the hub validates further).
const MAX_RECIPIENT_LEN: usize = 64;

fuzz_target!(|data: &[u8]| {
    let opens_object = data
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    match interpret(data) {
        DeviceMeaning::Plain => assert!(!opens_object),
        DeviceMeaning::Message { to, body } => {
            assert!(opens_object);
            assert!((1..=MAX_RECIPIENT_LEN).contains(&to.len()));
            let again = json!({ "to": to, "body": body }).to_string();
            assert_eq!(
                interpret(again.as_bytes()),
                DeviceMeaning::Message { to, body }
            );
        }
        DeviceMeaning::Invalid(why) => {
            assert!(opens_object);
            assert!(why.len() <= 64, "{why}");
        }
    }
});
