//! The validated newtypes every name, id, token and PSK identity from the
//! network goes through (`sotto_core::auth`, `sotto_core::psk`). Beyond
//! "no panic": each accepts exactly what its documented rule says (checked
//! against an independent statement of the rule), keeps the text as given,
//! and refuses without echoing the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_core::auth::{NameError, Token, UserId, UserName};
use sotto_core::psk::PskIdentity;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let raw = raw.as_ref();
    user_name(raw);
    user_id(raw);
    token(raw);
    psk_identity(raw);
});

/// 1–32 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit.
fn user_name(raw: &str) {
    let bytes = raw.as_bytes();
    let expected = if raw.is_empty() {
        Err(NameError::Empty)
    } else if bytes.len() > 32 {
        Err(NameError::TooLong)
    } else if bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
    {
        Ok(())
    } else {
        Err(NameError::BadCharacter)
    };
    match UserName::parse(raw) {
        Ok(name) => {
            assert_eq!(expected, Ok(()), "{raw:?} accepted");
            assert_eq!(name.as_str(), raw);
            let key = name.key();
            assert!(key.eq_ignore_ascii_case(raw));
            // The key is itself a valid name with the same key, so lookups
            // by key and by name agree.
            let again = UserName::parse(&key).map(|n| n.key());
            assert_eq!(again.as_deref(), Ok(key.as_str()));
        }
        Err(error) => {
            assert_eq!(Err(error.clone()), expected, "{raw:?}");
            assert!(error.message().len() <= 120);
        }
    }
}

/// Exactly 6 ASCII letters and digits.
fn user_id(raw: &str) {
    let expected = raw.len() == 6 && raw.bytes().all(|b| b.is_ascii_alphanumeric());
    match UserId::parse(raw) {
        Some(id) => {
            assert!(expected, "{raw:?} accepted");
            assert_eq!(id.as_str(), raw);
        }
        None => assert!(!expected, "{raw:?} refused"),
    }
}

/// Exactly 64 lowercase hex digits.
fn token(raw: &str) {
    let expected = raw.len() == 64 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match Token::parse(raw) {
        Some(t) => {
            assert!(expected, "{raw:?} accepted");
            assert_eq!(t.as_str(), raw);
        }
        None => assert!(!expected, "{raw:?} refused"),
    }
}

/// 1–128 bytes of printable ASCII or space.
fn psk_identity(raw: &str) {
    let expected =
        (1..=128).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    match PskIdentity::parse(raw) {
        Ok(identity) => {
            assert!(expected, "{raw:?} accepted");
            assert_eq!(identity.as_str(), raw);
        }
        Err(why) => {
            assert!(!expected, "{raw:?} refused: {why}");
            assert!(why.len() <= 64, "{why}");
        }
    }
}
