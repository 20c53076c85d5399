//! pgpubsub's own tables and functions. The steps are owned by pgpubsub's
//! database contract (`pgpubsub::__private::contract::schema`), kept there
//! as `.sql` files; this crate only writes them into migrations.

pub use pgpubsub::__private::contract::schema::{SchemaStep, STEPS};
