//! Errors of the migration generator.

use std::path::PathBuf;

/// What can go wrong while generating migrations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry is inconsistent (duplicate or unknown channel).
    #[error(transparent)]
    Registry(#[from] pgpubsub::Error),
    /// A trigger channel's model could not be rendered.
    #[error("channel `{channel}`: {message}")]
    Model {
        /// The channel.
        channel: String,
        /// What failed.
        message: String,
    },
    /// A custom listener's `when` condition cannot be embedded.
    #[error("the `when` condition of `{handler}` is invalid: {message}")]
    Condition {
        /// The handler.
        handler: String,
        /// Why.
        message: String,
    },
    /// Reading or writing the migrations directory failed.
    #[error("{action} `{}`", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A generated migration on disk cannot be read back.
    #[error("cannot read the pgpubsub state in `{}`: {message}", path.display())]
    State {
        /// The `up.sql` file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// `Result` with the generator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
