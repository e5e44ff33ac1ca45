//! A body of `POST /api/register`, `/api/login` or `/api/devices`
//! (`sotto_proto::api`), then the checks it meets before Argon2 or the
//! store (`AccountLimits::check`, `DeviceBody::check`). Beyond "no panic": a refusal is one line of
//! bounded length (the 400's `message`); an accepted body survives
//! encode → parse unchanged; the checks refuse with one of their fixed
//! messages, never the input, and accept only what the limits allow.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_core::auth::NameError;
use sotto_core::auth::accounts::{AccountError, AccountLimits};
use sotto_proto::api::{DeviceBody, LoginBody, RegisterBody, decode_base64url, parse_body};
use std::time::Duration;

/// The server's defaults (`HubConfig`), small enough to be reached.
const LIMITS: AccountLimits = AccountLimits {
    password_max: 1024,
    public_key_max: 16 * 1024,
    session_idle: Duration::from_secs(60),
    session_lifetime: Duration::from_secs(3600),
};

/// Longest refusal: "invalid JSON body: " and serde_json's text, cut.
const REFUSAL_MAX: usize = 240;

fuzz_target!(|data: &[u8]| {
    match parse_body::<RegisterBody>(data) {
        Ok(body) => {
            let again = serde_json::to_vec(&body).expect("encodes");
            assert_eq!(parse_body::<RegisterBody>(&again), Ok(body.clone()));
            check(&body.name, &body.password, &body.public_key);
        }
        Err(message) => refusal(&message),
    }
    match parse_body::<LoginBody>(data) {
        Ok(body) => {
            let again = serde_json::to_vec(&body).expect("encodes");
            assert_eq!(parse_body::<LoginBody>(&again), Ok(body.clone()));
            check(&body.name, &body.password, "");
        }
        Err(message) => refusal(&message),
    }
    match parse_body::<DeviceBody>(data) {
        Ok(body) => {
            let again = serde_json::to_vec(&body).expect("encodes");
            assert_eq!(parse_body::<DeviceBody>(&again), Ok(body.clone()));
            device(&body);
        }
        Err(message) => refusal(&message),
    }
});

/// An accepted device is exactly what the server promises to store: a
/// canonical 87-character key of a 65-byte point starting with 0x04, a
/// name of 1–64 characters without control characters.
fn device(body: &DeviceBody) {
    match body.check() {
        Ok(()) => {
            let key = decode_base64url(&body.public_key).expect("an accepted key decodes");
            assert_eq!((key.len(), key[0], body.public_key.len()), (65, 4, 87));
            let n = body.name.chars().count();
            assert!((1..=64).contains(&n) && !body.name.chars().any(char::is_control));
        }
        Err(text) => assert!(text.len() <= 120 && !text.contains('\n'), "{text:?}"),
    }
}

fn refusal(message: &str) {
    assert!(message.starts_with("invalid JSON body: "), "{message:?}");
    assert!(message.chars().count() <= REFUSAL_MAX, "{message:?}");
    assert!(!message.chars().any(char::is_control), "{message:?}");
}

fn check(name: &str, password: &str, key: &str) {
    match LIMITS.check(name, password, key) {
        Ok(valid) => {
            assert_eq!(valid.as_str(), name);
            assert!(!password.is_empty() && password.len() <= LIMITS.password_max);
            assert!(key.len() <= LIMITS.public_key_max);
        }
        Err(error) => {
            let fixed = [
                AccountError::MissingFields,
                AccountError::PasswordTooLong,
                AccountError::KeyTooLong,
                AccountError::BadName(NameError::Empty),
                AccountError::BadName(NameError::TooLong),
                AccountError::BadName(NameError::BadCharacter),
            ];
            assert!(fixed.contains(&error), "{error:?}");
            // The text users read is the variant's, whatever was sent.
            let text = error.to_string();
            assert!(text.len() <= 120 && !text.contains('\n'), "{text:?}");
        }
    }
}
