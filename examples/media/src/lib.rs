//! Media example.
