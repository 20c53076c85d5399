//! The seed talk's scenario, as a small Diesel application: rows of `media`
//! become notifications on [`channels::MediaChannel`], and the listener runs
//! [`listeners`]' virus scan for every inserted or updated row, exactly once.
//!
//! The binaries: `media-example` (`listen`, `demo`) and `pgpubsub-gen`, which
//! writes the trigger migration into `migrations/`.

pub mod channels;
pub mod listeners;
pub mod models;
// `diesel print-schema` output: its tables and columns carry no docs.
#[allow(missing_docs)]
pub mod schema;
