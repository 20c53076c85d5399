//! Errors of the pgpubsub runtime.

/// Everything that can fail in pgpubsub's runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two channel types declare the same channel name.
    #[error("two channels are named `{name}`: `{first}` and `{second}`; give one of them another `name = \"...\"`")]
    DuplicateChannel {
        /// The shared name.
        name: String,
        /// One declaring type.
        first: String,
        /// The other declaring type.
        second: String,
    },
    /// A channel name that no registered channel has.
    #[error("unknown channel `{name}`{}", known_list(.known))]
    UnknownChannel {
        /// The name asked for.
        name: String,
        /// The registered channel names.
        known: Vec<String>,
    },
    /// Connecting to PostgreSQL failed.
    #[error("cannot connect to PostgreSQL at {target}")]
    Connect {
        /// Where: host, port, user and database, never the password.
        target: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `LISTEN` or waiting for notifications failed.
    #[error("listening for notifications failed")]
    Listen(#[source] postgres::Error),
    /// Claiming, completing or recording a notification failed.
    #[error("{what} failed")]
    Query {
        /// Which query.
        what: &'static str,
        /// Why.
        #[source]
        source: diesel::result::Error,
    },
    /// Beginning or committing a transaction failed.
    #[error("transaction failed")]
    Transaction(#[from] diesel::result::Error),
    /// A model's table or columns could not be rendered by Diesel.
    #[error("cannot read the table of model `{model}`: {message}")]
    Model {
        /// The model type.
        model: String,
        /// What went wrong.
        message: String,
    },
    /// A message could not be serialized to JSON.
    #[error("cannot serialize the message for channel `{channel}`")]
    Serialize {
        /// The channel.
        channel: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The role lacks privileges a listener needs.
    #[error("the role `{role}` lacks privileges a listener needs: {}; grant them (see pgpubsub's docs/privileges.md)", .missing.join(", "))]
    PrivilegeMissing {
        /// The role.
        role: String,
        /// Each missing privilege, as `SELECT on table pgpubsub_notification`.
        missing: Vec<String>,
    },
    /// The listener did not stop within its shutdown timeout.
    #[error("the listener did not stop within {0:?}: in-flight transactions were abandoned (they roll back; nothing is lost)")]
    ShutdownTimeout(std::time::Duration),
    /// pgpubsub's tables are not in the database.
    #[error("pgpubsub's tables are missing in this database: write the migrations with the generator (`cargo run -- generate`, or `cargo run --bin pgpubsub-gen`) and apply them (`diesel migration run` or `embed_migrations!`)")]
    SchemaMissing,
    /// pgpubsub's schema in the database lacks a step this version needs.
    #[error("pgpubsub's schema in this database is older than this pgpubsub version (it lacks {step}): write the migration with the generator (`cargo run -- generate`, or `cargo run --bin pgpubsub-gen`) and apply it")]
    SchemaOutdated {
        /// The first missing step (`schema/0002`).
        step: String,
    },
    /// A listener configuration value is invalid.
    #[error("invalid listener configuration: {0}")]
    Config(String),
    /// A worker thread failed and restarting is off.
    #[error("worker {worker} failed: {message}")]
    Worker {
        /// The worker's number.
        worker: usize,
        /// What failed.
        message: String,
    },
    /// Installing the signal handlers failed.
    #[error("cannot install the SIGINT/SIGTERM handlers")]
    Signal(#[source] std::io::Error),
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!("; known channels: {}", known.join(", "))
    }
}

/// `Result` with pgpubsub's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn query(what: &'static str) -> impl FnOnce(diesel::result::Error) -> Error {
        move |source| Error::Query { what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_channel_lists_known_ones() {
        let err = Error::UnknownChannel {
            name: "medai".into(),
            known: vec!["media".into(), "posts".into()],
        };
        assert_eq!(
            err.to_string(),
            "unknown channel `medai`; known channels: media, posts"
        );
    }
}
