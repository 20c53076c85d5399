//! Diesel integration for [pgpubsub](https://docs.rs/pgpubsub): pgpubsub's
//! own tables and the triggers of your channels, written as Diesel migrations.
//!
//! Add `src/bin/pgpubsub-gen.rs` to the crate that declares the channels:
//!
//! ```no_run
//! # mod my_app {}
//! use my_app as _; // link the crate whose channels and listeners to read
//! pgpubsub_diesel::generator_main!();
//! ```
//!
//! The binary reads the channels and listeners linked into it (the same
//! registry the listener serves), so it must link the crate declaring them;
//! `use my_app as _;` does, where `my_app` is the library crate's name.
//!
//! `cargo run --bin pgpubsub-gen` then writes `migrations/<version>_pgpubsub/`
//! (`up.sql`, `down.sql`) whenever the channels or listeners changed since the
//! last generated migration; `--check` only reports, exiting with status 1
//! when the code is ahead. Apply the migrations with `diesel migration run`
//! or `embed_migrations!`.
#![warn(missing_docs)]

mod error;
pub mod generator;
pub mod migration;
pub mod schema;
pub mod trigger;

pub use error::{Error, Result};
pub use generator::{generate, generate_with, GenArgs, Outcome};
pub use migration::{Diff, State};

/// Defines `main` for a `pgpubsub-gen` binary; the default migrations
/// directory is `migrations/` of the crate that expands it.
#[macro_export]
macro_rules! generator_main {
    () => {
        fn main() -> ::std::process::ExitCode {
            $crate::generator::main_in(::core::env!("CARGO_MANIFEST_DIR"))
        }
    };
}
