//! The `sotto` command line: options, the configuration file, and the
//! commands that are not the server itself (`psk`, `cert`). The server is
//! `sotto-server`; this crate only turns arguments into its `Config`.

pub mod cli;
pub mod psk_cli;
