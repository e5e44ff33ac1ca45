//! The JSON bodies of the HTTP account API (docs/PROTOCOL.md §14):
//! `POST /api/register` and `POST /api/login`. `POST /api/logout` has no
//! body; it is judged by its token alone. The server reads at most
//! `--max-body` bytes and hands them here; what the fields must hold
//! (name rules, size limits) is `sotto_core::auth::accounts`'.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `POST /api/register`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub name: String,
    pub password: String,
    #[serde(default)]
    pub public_key: String,
}

/// `POST /api/login`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub name: String,
    pub password: String,
}

/// Longest `message` of a refused body, in characters. serde_json's text
/// quotes an unknown field as sent, decoded: uncut, a 16 KiB field name of
/// `\n` escapes came back as a 16 KiB, many-line error (found by the
/// `api_body` fuzz target), as `native_frame` found for `/ws` frames.
const ERROR_MESSAGE_MAX: usize = 200;

/// Reads one body. The error is the `message` of the 400 the client gets:
/// one line, at most [`ERROR_MESSAGE_MAX`] characters and "…".
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes)
        .map_err(|e| crate::native::one_line(&format!("invalid JSON body: {e}"), ERROR_MESSAGE_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_bodies_parse() {
        let r: RegisterBody =
            parse_body(br#"{"name": "alice", "password": "correct horse", "public_key": "k"}"#)
                .unwrap();
        assert_eq!((r.name.as_str(), r.public_key.as_str()), ("alice", "k"));
        let r: RegisterBody = parse_body(br#"{"name": "a", "password": "p"}"#).unwrap();
        assert_eq!(r.public_key, "");
        let l: LoginBody = parse_body(br#"{"name": "alice", "password": "x"}"#).unwrap();
        assert_eq!(l.password, "x");
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused() {
        assert!(parse_body::<LoginBody>(br#"{"name":"a","password":"p","x":1}"#).is_err());
        assert!(parse_body::<LoginBody>(br#"{"name":1,"password":"p"}"#).is_err());
        assert!(parse_body::<RegisterBody>(b"").is_err());
    }

    #[test]
    fn refusals_are_short_and_one_line() {
        // The input the fuzz target found, and a long one of the same kind.
        let found = br#"{"name":"a","password":"p","public_key./x\n":0}"#;
        let long = format!(r#"{{"{}":0}}"#, "\\n".repeat(5000));
        for body in [&found[..], long.as_bytes()] {
            let message = parse_body::<RegisterBody>(body).unwrap_err();
            assert!(message.starts_with("invalid JSON body: unknown field"));
            assert!(!message.chars().any(char::is_control), "{message:?}");
            assert!(message.chars().count() <= ERROR_MESSAGE_MAX + 1);
        }
    }
}
