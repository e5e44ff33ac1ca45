//! Accounts: who a user is (names and ids), how they prove it (passwords,
//! session tokens). Validation happens once here so the rest of the server
//! handles only well-formed values.

pub mod accounts;
pub mod names;
pub mod password;
mod thread_name;
pub mod throttle;
pub mod token;

pub use names::{NameError, UserId, UserName};
pub use password::{PasswordError, PasswordHasher, PasswordParams};
pub use token::{Token, TokenHash};
