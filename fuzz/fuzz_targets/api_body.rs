//! A body of `POST /api/register` or `/api/login` (`sotto_proto::api`),
//! then the account checks it meets before Argon2 or the store
//! (`AccountLimits::check`). Beyond "no panic": a refusal is one line of
//! bounded length (the 400's `message`); an accepted body survives
//! encode → parse unchanged; the checks refuse with one of their fixed
//! messages, never the input, and accept only what the limits allow.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_core::auth::NameError;
use sotto_core::auth::accounts::{AccountError, AccountLimits};
use sotto_proto::api::{LoginBody, RegisterBody, parse_body};
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
});

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
