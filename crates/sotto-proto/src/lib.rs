//! Wire protocols as plain types. The edges decode frames into these values
//! and encode the hub's output from them; nothing here does I/O, so this is
//! where the fuzzers aim. `api` and `web` hold what the HTTP port reads
//! from a request (account bodies, file paths, the Host header), kept here
//! rather than in the server so the fuzz build needs no axum or sqlx.

pub mod api;
pub mod compat;
pub mod native;
pub mod web;
