//! Session tokens.
//!
//! A token is 256 random bits, sent to the client as 64 lowercase hex digits.
//! The store keeps only its SHA-256, so a leaked database cannot be replayed
//! as live sessions. A token that is empty or not exactly that shape is
//! refused by [`Token::parse`] and so can never match anything (in
//! QMessageServer an empty token matched every logged-out account).

use sha2::{Digest, Sha256};
use std::fmt;

const TOKEN_BYTES: usize = 32;

/// A bearer token as the client holds it. `Debug` is redacted so tokens do
/// not end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A fresh token from the thread-local CSPRNG.
    pub fn generate() -> Token {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::fill(&mut bytes);
        Token(hex::encode(bytes))
    }

    /// Accepts exactly 64 lowercase hex digits.
    pub fn parse(raw: &str) -> Option<Token> {
        let well_formed = raw.len() == TOKEN_BYTES * 2
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| Token(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// What the store keys sessions by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(bytes: &[u8]) -> Option<TokenHash> {
        bytes.try_into().ok().map(TokenHash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        assert_eq!(Token::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.as_str().len(), 64);
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn malformed_tokens_never_parse() {
        assert_eq!(Token::parse(""), None);
        assert_eq!(Token::parse(&"A".repeat(64)), None);
        assert_eq!(Token::parse(&"a".repeat(63)), None);
        assert_eq!(Token::parse(&"a".repeat(65)), None);
        assert_eq!(Token::parse(&format!("{}g", "a".repeat(63))), None);
    }

    #[test]
    fn debug_does_not_leak() {
        assert_eq!(format!("{:?}", Token::generate()), "Token(…)");
    }
}
