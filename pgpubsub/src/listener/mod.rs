//! The listener: its builder, the handle of a running one, and the rooms
//! it runs: start-up checks and registration (`startup`), the supervisor
//! of the worker threads (`supervisor`) and the signal watch (`signals`).
//! The `LISTEN` session is `crate::notifier`, the workers `crate::worker`;
//! all of them meet in `crate::shared`.

mod signals;
mod startup;
mod supervisor;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ListenerConfig;
use crate::connection::{self, ConnInfo};
use crate::error::{Error, Result};
use crate::notifier;
use crate::registry::{ChannelEntry, Registry};
use crate::retry::RetryPolicy;
use crate::shared::{Shared, Stats};

pub(crate) use supervisor::error_chain;

/// Runs the handlers of the channels it serves.
///
/// ```no_run
/// pgpubsub::Listener::new("postgres://localhost/app")
///     .workers(4)
///     .channels(["media_channel"])
///     .run()?;
/// # Ok::<(), pgpubsub::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Listener {
    config: ListenerConfig,
}

impl Listener {
    /// A listener on `database_url` serving every channel with handlers.
    pub fn new(database_url: impl Into<String>) -> Self {
        Listener {
            config: ListenerConfig::new(database_url),
        }
    }

    /// A listener with a prepared configuration.
    pub fn from_config(config: ListenerConfig) -> Self {
        Listener { config }
    }

    /// The configuration so far.
    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// Serve only these channels.
    pub fn channels<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.channels = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The number of worker threads (default 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = workers;
        self
    }

    /// Process notifications stored before start (default on).
    pub fn recover(mut self, recover: bool) -> Self {
        self.config.recover = recover;
        self
    }

    /// Restart failed workers (default on).
    pub fn restart_on_failure(mut self, restart: bool) -> Self {
        self.config.restart_on_failure = restart;
        self
    }

    /// Notifications per claim (default 100).
    pub fn batch_size(mut self, batch_size: i64) -> Self {
        self.config.batch_size = batch_size;
        self
    }

    /// Idle poll interval (default 2 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// Backoff for failed notifications.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.config.retry = retry;
        self
    }

    /// Attempts before a notification is dead, for channels that do not set
    /// `max_attempts` themselves (default 25).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts;
        self
    }

    /// How long a claimed notification stays reserved for its worker; one
    /// whose listener died is claimable again after it (default 30 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// Handler time after which a batch commits early (default 1 s).
    pub fn batch_time(mut self, time: Duration) -> Self {
        self.config.batch_time = time;
        self
    }

    /// How long a stop waits for the notifications in hand (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Broadcasts waiting for a worker, at most (default 10,000).
    pub fn broadcast_queue(mut self, capacity: usize) -> Self {
        self.config.broadcast_queue = capacity;
        self
    }

    /// A separate URL for the `LISTEN` session.
    pub fn listen_url(mut self, url: impl Into<String>) -> Self {
        self.config.listen_url = Some(url.into());
        self
    }

    /// Runs until SIGINT or SIGTERM, then finishes the notification in
    /// hand, commits and returns `Ok(())`.
    ///
    /// The signals are watched from the start, so a signal during start-up
    /// stops the listener as soon as it runs. A stop waits at most
    /// `shutdown_timeout` and then returns [`Error::ShutdownTimeout`] (the
    /// abandoned transactions roll back when the process exits). A second
    /// SIGINT or SIGTERM exits the process at once with status 128 + the
    /// signal's number.
    pub fn run(self) -> Result<()> {
        let watch = signals::Watch::install(self.config.shutdown_timeout)?;
        let outcome = self.spawn().and_then(|handle| {
            watch.attach(handle.stopper());
            handle.join()
        });
        watch.close();
        outcome
    }

    /// Starts the listener in background threads. Fails at once when the
    /// configuration, the channel selection, the database or the role's
    /// privileges are wrong.
    ///
    /// The workers start claiming as soon as those checks pass, while the
    /// `LISTEN` session is still connecting. If that session cannot be
    /// established, the workers are stopped and the error is returned; the
    /// notifications they settled meanwhile stay settled (nothing is lost
    /// or run twice).
    pub fn spawn(self) -> Result<ListenerHandle> {
        self.config.validate()?;
        let database = ConnInfo::parse(&self.config.database_url)?;
        let listen = match &self.config.listen_url {
            Some(url) => ConnInfo::parse(url)?,
            None => database.clone(),
        };
        let registry = Registry::load()?;
        let served = select_channels(&registry, self.config.channels.as_deref())?;
        // The `LISTEN` session connects (TLS set-up included, tens of
        // milliseconds at a process's first connection) while the start-up
        // checks run, and the workers do not wait for it.
        let listen_info = listen.clone();
        let connecting = std::thread::Builder::new()
            .name("pgpubsub-connect".into())
            .spawn({
                let listen = listen.clone();
                move || connection::listen(&listen)
            });
        let listen_session = move || match connecting {
            Ok(connecting) => connecting.join().unwrap_or_else(|_| {
                Err(Error::Config(
                    "the thread opening the listen session panicked".into(),
                ))
            }),
            // No thread to spare: connect here.
            Err(_) => connection::listen(&listen),
        };
        // So do the connections of the first workers but one (the checks'
        // own connection is the last one's).
        let preconnect = self
            .config
            .workers
            .saturating_sub(1)
            .min(PRECONNECT_AT_MOST);
        let preconnecting: Vec<_> = (0..preconnect)
            .filter_map(|_| {
                let database = database.clone();
                std::thread::Builder::new()
                    .name("pgpubsub-connect".into())
                    .spawn(move || connection::worker(&database))
                    .ok()
            })
            .collect();
        let checked = startup::check(&self.config, &database, &served);
        // A connection that failed here is opened again by its worker,
        // which reports the error.
        let mut warm: Vec<diesel::PgConnection> = preconnecting
            .into_iter()
            .filter_map(|connecting| connecting.join().ok().and_then(Result::ok))
            .collect();
        let started = match checked {
            Ok(started) => started,
            Err(err) => {
                drop(listen_session());
                return Err(err);
            }
        };
        warm.push(started.conn);
        let shared = Arc::new(Shared::new(
            self.config,
            database,
            listen_info,
            served,
            (started.start_snapshot, started.skip_committed_before),
            started.registration,
            warm,
        ));
        let threads = Arc::new(supervisor::Threads::default());
        // Stops what started and removes the registration.
        let abandon = |shared: &Arc<Shared>, threads: &Arc<supervisor::Threads>| {
            shared.request_stop();
            let _ = threads.wait(shared, shared.config.shutdown_timeout);
            if let Some(registration) = shared.registration {
                startup::unregister(&shared.database, registration);
            }
        };
        let supervisor_thread = threads.spawn("pgpubsub-supervisor", {
            let shared = shared.clone();
            let threads = threads.clone();
            move || {
                let outcome = supervisor::supervise(&shared);
                shared.request_stop();
                threads.set_outcome(outcome);
            }
        });
        if let Err(err) = supervisor_thread {
            drop(listen_session());
            abandon(&shared, &threads);
            return Err(err);
        }
        let listen_client =
            match listen_session().and_then(|session| notifier::subscribe(&shared, session)) {
                Ok(client) => client,
                Err(err) => {
                    abandon(&shared, &threads);
                    return Err(err);
                }
            };
        // The workers' first sweep may have run before `LISTEN` took effect:
        // sweep again, so that no row committed in between waits for a poll.
        shared.wake_all_workers();
        let notifier_thread = threads.spawn("pgpubsub-notifier", {
            let shared = shared.clone();
            move || notifier::run(&shared, listen_client)
        });
        if let Err(err) = notifier_thread {
            abandon(&shared, &threads);
            return Err(err);
        }
        Ok(ListenerHandle { shared, threads })
    }
}

/// Worker connections opened while the start-up checks run, at most (the
/// rest connect when their workers start).
const PRECONNECT_AT_MOST: usize = 8;

/// The error of a binary in which no listener attribute is linked. The
/// registry is filled at link time, so handlers declared in a library crate
/// the binary never names are not in it.
const NO_HANDLERS_LINKED: &str = "no channel has handlers in this binary. Declare one with \
     `#[post_save_listener(MyChannel)]` (or another listener attribute) in this crate, or, when \
     the handlers live in a library crate, link it from the binary with `use my_handlers as _;` \
     in main.rs: the registry only holds what the binary links";

fn select_channels(registry: &Registry, names: Option<&[String]>) -> Result<Vec<ChannelEntry>> {
    let entries: Vec<&ChannelEntry> = match names {
        Some(names) => {
            let selected = registry.select(names)?;
            if let Some(empty) = selected.iter().find(|entry| entry.handlers.is_empty()) {
                return Err(Error::Config(format!(
                    "channel `{}` has no handlers in this binary",
                    empty.def.name
                )));
            }
            selected
        }
        None => registry
            .channels()
            .filter(|entry| !entry.handlers.is_empty())
            .collect(),
    };
    if entries.is_empty() {
        return Err(Error::Config(NO_HANDLERS_LINKED.into()));
    }
    Ok(entries.into_iter().cloned().collect())
}

/// A running listener: stop it, wait for it, read its counters.
pub struct ListenerHandle {
    shared: Arc<Shared>,
    threads: Arc<supervisor::Threads>,
}

/// Stops a listener from another thread.
#[derive(Clone)]
pub struct Stopper(Arc<Shared>);

impl Stopper {
    /// Asks the listener to finish the notification in hand and stop.
    pub fn stop(&self) {
        self.0.request_stop();
    }
}

impl ListenerHandle {
    /// Waits until the `LISTEN` session is established (test signal).
    /// Returns false on timeout.
    pub fn wait_listening(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut listening = self
            .shared
            .listening
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while !*listening {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            listening = match self
                .shared
                .listening_cond
                .wait_timeout(listening, deadline - now)
            {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// The listener's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// A handle that can stop the listener from elsewhere.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.shared.clone())
    }

    /// Asks the listener to stop (see [`Stopper::stop`]).
    pub fn stop(&self) {
        self.shared.request_stop();
    }

    /// Waits for the listener to end: `Ok` after a stop, the error when a
    /// worker failed with restarting off. Once a stop was asked for, waits
    /// at most `shutdown_timeout` and then returns
    /// [`Error::ShutdownTimeout`], leaving the threads behind (their
    /// transactions roll back when their connections end).
    pub fn join(self) -> Result<()> {
        self.threads
            .wait(&self.shared, self.shared.config.shutdown_timeout)
    }

    /// Stops and waits (see [`ListenerHandle::join`]).
    pub fn shutdown(self) -> Result<()> {
        self.stop();
        self.join()
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.shared.request_stop();
        let _ = self
            .threads
            .wait(&self.shared, self.shared.config.shutdown_timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_without_handlers_says_how_to_link_them() {
        let registry = Registry::from_parts(&[], &[]).map_err(|err| err.to_string());
        let Ok(registry) = registry else {
            panic!("empty registry: {registry:?}");
        };
        let message = match select_channels(&registry, None) {
            Ok(entries) => panic!("selected {} channels of an empty registry", entries.len()),
            Err(err) => err.to_string(),
        };
        assert!(message.contains("no channel has handlers"), "{message}");
        assert!(message.contains("use my_handlers as _;"), "{message}");
        assert!(message.contains("post_save_listener"), "{message}");
    }

    #[test]
    fn naming_an_unknown_channel_is_an_error() {
        let registry = Registry::from_parts(&[], &[]).map_err(|err| err.to_string());
        let Ok(registry) = registry else {
            panic!("empty registry: {registry:?}");
        };
        let names = ["NoSuchChannel".to_string()];
        let Err(err) = select_channels(&registry, Some(&names)) else {
            panic!("an unknown channel was selected");
        };
        assert!(err.to_string().contains("NoSuchChannel"), "{err}");
    }
}
