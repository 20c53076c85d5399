//! A listener's configuration.

use std::time::Duration;

use crate::connection::ConnInfo;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// Everything a [`Listener`](crate::Listener) is configured with. Build it
/// through `Listener`'s methods, or fill it in and call
/// [`Listener::from_config`](crate::Listener::from_config).
#[derive(Clone)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// The database the workers claim from and run handlers against.
    pub database_url: String,
    /// A separate URL for the `LISTEN` session (for example the server itself
    /// when `database_url` goes through a transaction-pooling PgBouncer).
    pub listen_url: Option<String>,
    /// The channels to serve, by name; `None` serves every channel that has
    /// handlers in this binary.
    pub channels: Option<Vec<String>>,
    /// Worker threads, each with its own connection.
    pub workers: usize,
    /// Process notifications stored before the listener started.
    pub recover: bool,
    /// Restart a worker whose connection failed (or that panicked outside a handler).
    pub restart_on_failure: bool,
    /// How many stored notifications one claim takes.
    pub batch_size: i64,
    /// How often idle workers look for work without a wake-up (retries
    /// coming due, notifications missed while reconnecting).
    pub poll_interval: Duration,
    /// Backoff for failed notifications.
    pub retry: RetryPolicy,
    /// Attempts a notification gets before it is dead, for channels that do
    /// not set `max_attempts` themselves (default 25).
    pub max_attempts: u32,
    /// How long a claimed notification stays reserved for its worker. A
    /// notification whose listener died mid-attempt is claimable again once
    /// its lease runs out, its attempt already counted (default 30 s). A
    /// slow handler never loses its notification to another worker: the
    /// notification is locked while its handlers run.
    pub lease: std::time::Duration,
    /// Handler time after which a batch commits and the rest of it runs in
    /// a new transaction, so no transaction holds its locks for long
    /// (default 1 s; a single slower handler still runs in one).
    pub batch_time: std::time::Duration,
    /// How long a stop waits for the notifications in hand; after it, the
    /// listener returns [`Error::ShutdownTimeout`] and abandons its
    /// transactions, which roll back (default 30 s).
    pub shutdown_timeout: std::time::Duration,
    /// Broadcast notifications waiting for a worker, at most; more are
    /// dropped, counted and logged (default 10,000).
    pub broadcast_queue: usize,
}

impl ListenerConfig {
    /// A configuration with the defaults for `database_url`.
    pub fn new(database_url: impl Into<String>) -> Self {
        ListenerConfig {
            database_url: database_url.into(),
            listen_url: None,
            channels: None,
            workers: 1,
            recover: true,
            restart_on_failure: true,
            batch_size: 100,
            poll_interval: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            max_attempts: 25,
            lease: Duration::from_secs(30),
            batch_time: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            broadcast_queue: 10_000,
        }
    }

    /// Checks the values, naming the first wrong one.
    pub fn validate(&self) -> Result<()> {
        if self.database_url.trim().is_empty() {
            return Err(Error::Config("the database URL is empty".into()));
        }
        if self.workers == 0 {
            return Err(Error::Config("`workers` must be at least 1".into()));
        }
        if self.batch_size < 1 {
            return Err(Error::Config(format!(
                "`batch_size` must be at least 1, not {}",
                self.batch_size
            )));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::Config("`poll_interval` must be positive".into()));
        }
        if self.max_attempts == 0 {
            return Err(Error::Config("`max_attempts` must be at least 1".into()));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(Error::Config(format!(
                "`lease` must be at least 1 s, not {:?}",
                self.lease
            )));
        }
        if self.batch_time.is_zero() {
            return Err(Error::Config("`batch_time` must be positive".into()));
        }
        if self.broadcast_queue == 0 {
            return Err(Error::Config("`broadcast_queue` must be at least 1".into()));
        }
        ConnInfo::parse(&self.database_url)?;
        if let Some(url) = &self.listen_url {
            ConnInfo::parse(url)?;
        }
        if matches!(&self.channels, Some(channels) if channels.is_empty()) {
            return Err(Error::Config("the channel list is empty".into()));
        }
        Ok(())
    }
}

/// Shows the URLs without their passwords.
impl std::fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |url: &str| {
            ConnInfo::parse(url).map_or_else(|_| "<unreadable>".to_owned(), |info| info.redacted())
        };
        f.debug_struct("ListenerConfig")
            .field("database_url", &shown(&self.database_url))
            .field("listen_url", &self.listen_url.as_deref().map(shown))
            .field("channels", &self.channels)
            .field("workers", &self.workers)
            .field("recover", &self.recover)
            .field("restart_on_failure", &self.restart_on_failure)
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .field("retry", &self.retry)
            .field("max_attempts", &self.max_attempts)
            .field("lease", &self.lease)
            .field("batch_time", &self.batch_time)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("broadcast_queue", &self.broadcast_queue)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_password() {
        for url in ["postgres://u:hunter2@h/d", "host=h user=u password=hunter2"] {
            let mut config = ListenerConfig::new(url);
            config.listen_url = Some(url.to_owned());
            let shown = format!("{config:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("host=h"), "{shown}");
        }
    }
}
