//! Writes the pgpubsub trigger migration for this crate's channels into `migrations/`.
use media_example as _;
pgpubsub_diesel::generator_main!();
