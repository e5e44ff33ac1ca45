//! `sqlx::migrate!` embeds the migrations when the crate compiles, but
//! Cargo does not know the crate reads that directory: without this, a new
//! migration file is left out of every build until some Rust file changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
