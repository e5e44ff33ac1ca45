//! Wire protocols as plain types. The edge decodes frames into these values
//! and encodes hub output from them; nothing here does I/O.

pub mod compat;
pub mod native;
