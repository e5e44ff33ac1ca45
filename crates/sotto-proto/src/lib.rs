//! Wire protocols as plain types. The edges decode frames into these values
//! and encode the hub's output from them; nothing here does I/O, so this is
//! where the fuzzers aim.

pub mod compat;
pub mod native;
