//! User names and user ids: validated newtypes.
//!
//! Names are what people type; ids are what clients address messages to.
//! QMessageServer compares names case-insensitively, so uniqueness is
//! decided on [`UserName::key`], the ASCII-lowercased form. Restricting names
//! to ASCII keeps that comparison well-defined (no Unicode case folding or
//! look-alike characters to worry about).

use std::fmt;

/// Longest accepted user name, in characters (all ASCII, so also bytes).
pub(crate) const MAX_NAME_LEN: usize = 32;

/// Length of a user id; QMessageServer uses 6 alphanumeric characters.
pub(crate) const USER_ID_LEN: usize = 6;

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Why a name is refused; [`NameError::message`] is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    BadCharacter,
}

impl NameError {
    pub fn message(&self) -> &'static str {
        match self {
            NameError::Empty => "Please fill all fields.",
            NameError::TooLong => "User name is longer than 32 characters.",
            NameError::BadCharacter => {
                "User name may contain only letters A-Z, digits, '_', '-' and '.', and must start with a letter or digit."
            }
        }
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for NameError {}

/// A validated user name: 1–32 characters from `[A-Za-z0-9_.-]`, starting
/// with a letter or digit. Display keeps the case the user registered with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<UserName, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        let starts_well = raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if !starts_well || !raw.chars().all(allowed) {
            return Err(NameError::BadCharacter);
        }
        Ok(UserName(raw.to_owned()))
    }

    /// The case-folded form on which uniqueness and login look-ups are decided.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For values read back from our own store, which only ever holds names
    /// that passed [`UserName::parse`].
    pub fn from_trusted(s: String) -> UserName {
        UserName(s)
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user id: [`USER_ID_LEN`] random alphanumeric characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// A fresh random id. 62^6 ≈ 5.7·10^10 values, so collisions are rare but
    /// possible: the store refuses a duplicate and the caller draws again.
    pub fn random() -> UserId {
        let id = (0..USER_ID_LEN)
            .map(|_| ID_ALPHABET[rand::random_range(0..ID_ALPHABET.len())] as char)
            .collect();
        UserId(id)
    }

    /// Accepts exactly the shape [`UserId::random`] produces; anything else
    /// cannot name a user, so it is refused before touching the store.
    pub fn parse(raw: &str) -> Option<UserId> {
        (raw.len() == USER_ID_LEN && raw.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| UserId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For values read back from our own store.
    pub fn from_trusted(s: String) -> UserId {
        UserId(s)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_rules() {
        assert!(UserName::parse("john_doe").is_ok());
        assert!(UserName::parse("J.Doe-2").is_ok());
        assert_eq!(UserName::parse(""), Err(NameError::Empty));
        assert_eq!(UserName::parse(&"a".repeat(33)), Err(NameError::TooLong));
        assert!(UserName::parse(&"a".repeat(32)).is_ok());
        for bad in ["_x", ".x", "a b", "ä", "a/b", "a\u{0}"] {
            assert_eq!(
                UserName::parse(bad),
                Err(NameError::BadCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn name_key_is_case_insensitive() {
        let a = UserName::parse("Alice").unwrap();
        let b = UserName::parse("aLiCe").unwrap();
        assert_eq!(a.key(), b.key());
        assert_eq!(a.as_str(), "Alice");
    }

    #[test]
    fn ids_are_six_alphanumerics() {
        for _ in 0..100 {
            let id = UserId::random();
            assert_eq!(UserId::parse(id.as_str()), Some(id));
        }
        assert_eq!(UserId::parse("abc12"), None);
        assert_eq!(UserId::parse("abc12!"), None);
        assert_eq!(UserId::parse(""), None);
    }
}
