//! The JSON bodies of the HTTP account API (docs/PROTOCOL.md §14):
//! `POST /api/register`, `POST /api/login` and `POST /api/devices`.
//! `POST /api/logout` has no body; it is judged by its token alone. The server reads at most
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

/// `POST /api/devices`: the calling session's end-to-end device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    pub public_key: String,
    pub name: String,
}

/// Longest device name, in characters.
pub const DEVICE_NAME_MAX: usize = 64;

/// Bytes of an uncompressed P-256 point: 0x04, then x and y.
const P256_POINT_LEN: usize = 65;

impl DeviceBody {
    /// Checks the fields: the key must be base64url (no padding, canonical)
    /// of 65 bytes starting with 0x04, the name 1 to [`DEVICE_NAME_MAX`]
    /// characters without control characters. The error is the 400's
    /// message. Whether the point is on the curve is for the clients that
    /// import it: the server only stores and lists keys.
    pub fn check(&self) -> Result<(), &'static str> {
        let key = decode_base64url(&self.public_key);
        if !key.is_some_and(|k| k.len() == P256_POINT_LEN && k[0] == 0x04) {
            return Err(
                "public_key must be base64url (no padding) of a 65-byte uncompressed P-256 point",
            );
        }
        let chars = self.name.chars().count();
        if chars == 0 || chars > DEVICE_NAME_MAX || self.name.chars().any(char::is_control) {
            return Err("name must be 1 to 64 characters, without control characters");
        }
        Ok(())
    }
}

/// Decodes unpadded base64url, refusing anything non-canonical (other
/// characters, padding, a length no encoding has, non-zero spare bits),
/// so that one key has exactly one spelling and "the same key" is a
/// string comparison.
pub fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | value(c)?;
        }
        let bits = 6 * chunk.len();
        let whole = bits / 8;
        let spare = bits - 8 * whole;
        if acc & ((1 << spare) - 1) != 0 {
            return None;
        }
        acc >>= spare;
        for i in (0..whole).rev() {
            out.push((acc >> (8 * i)) as u8);
        }
    }
    Some(out)
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

    /// base64url of `bytes`, for the tests only.
    fn encode(bytes: &[u8]) -> String {
        const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let mut acc = 0u32;
            for (i, b) in chunk.iter().enumerate() {
                acc |= u32::from(*b) << (16 - 8 * i);
            }
            for i in 0..=chunk.len() {
                out.push(ABC[((acc >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn base64url_round_trips_and_refuses_other_spellings() {
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode_base64url(&encode(&bytes)), Some(bytes), "{len}");
        }
        assert_eq!(decode_base64url("_-8"), Some(vec![0xff, 0xef]));
        for bad in ["A", "AB==", "AB+/", "AB/", "AB C", "AAB", "AAAAB"] {
            assert_eq!(decode_base64url(bad), None, "{bad}");
        }
    }

    #[test]
    fn device_bodies_are_checked() {
        let mut point = vec![4u8; 65];
        point[64] = 0xff;
        let good = DeviceBody {
            public_key: encode(&point),
            name: "Firefox on laptop".into(),
        };
        assert_eq!(good.public_key.len(), 87);
        assert_eq!(good.check(), Ok(()));
        let mut compressed = point.clone();
        compressed[0] = 2;
        for key in [
            encode(&compressed),
            encode(&point[..64]),
            format!("{}=", good.public_key),
            String::new(),
        ] {
            let body = DeviceBody {
                public_key: key,
                ..good.clone()
            };
            assert!(body.check().unwrap_err().starts_with("public_key"));
        }
        for name in ["", "a\nb", &"é".repeat(65)] {
            let body = DeviceBody {
                name: name.into(),
                ..good.clone()
            };
            assert!(body.check().unwrap_err().starts_with("name"), "{name:?}");
        }
        let body = DeviceBody {
            name: "é".repeat(64),
            ..good
        };
        assert_eq!(body.check(), Ok(()));
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
