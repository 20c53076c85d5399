//! The listener: a builder, its configuration, and the supervisor that runs
//! one notifier thread and N worker threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::registry::{ChannelEntry, Registry};
use crate::retry::RetryPolicy;
use crate::{notifier, worker};

/// Everything a [`Listener`] is configured with. Build it through
/// [`Listener`]'s methods, or fill it in and call [`Listener::from_config`].
#[derive(Debug, Clone)]
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
        if matches!(&self.channels, Some(channels) if channels.is_empty()) {
            return Err(Error::Config("the channel list is empty".into()));
        }
        Ok(())
    }
}

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

    /// A separate URL for the `LISTEN` session.
    pub fn listen_url(mut self, url: impl Into<String>) -> Self {
        self.config.listen_url = Some(url.into());
        self
    }

    /// Runs until SIGINT or SIGTERM, then finishes the notification in hand,
    /// commits and returns `Ok(())`.
    pub fn run(self) -> Result<()> {
        let handle = self.spawn()?;
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .map_err(Error::Signal)?;
        let signal_handle = signals.handle();
        let stopper = handle.stopper();
        let watcher = std::thread::Builder::new()
            .name("pgpubsub-signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    tracing::info!(signal, "stopping: finishing the notification in hand");
                    stopper.stop();
                }
            })
            .map_err(Error::Signal)?;
        let result = handle.join();
        signal_handle.close();
        let _ = watcher.join();
        result
    }

    /// Starts the listener in background threads. Fails at once when the
    /// configuration, the channel selection or the database is wrong.
    pub fn spawn(self) -> Result<ListenerHandle> {
        self.config.validate()?;
        let registry = Registry::load()?;
        let served = select_channels(&registry, self.config.channels.as_deref())?;
        // Fail fast on an unreachable database: one connection now.
        let mut first = worker::connect(&self.config.database_url)?;
        worker::check_schema(&mut first, &served)?;
        let skip_committed_before = if self.config.recover {
            None
        } else {
            Some(worker::current_snapshot(&mut first)?)
        };
        drop(first);
        let shared = Arc::new(Shared::new(self.config, served, skip_committed_before));
        let listen_client = notifier::connect(&shared)?;
        let (exits, exit_rx) = mpsc::channel();
        let notifier_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("pgpubsub-notifier".into())
                .spawn(move || notifier::run(&shared, listen_client))
                .map_err(|err| Error::Config(format!("cannot start the notifier thread: {err}")))?
        };
        let supervisor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("pgpubsub-supervisor".into())
                .spawn(move || supervise(&shared, exits, exit_rx))
                .map_err(|err| {
                    Error::Config(format!("cannot start the supervisor thread: {err}"))
                })?
        };
        Ok(ListenerHandle {
            shared,
            notifier: Some(notifier_thread),
            supervisor: Some(supervisor),
        })
    }
}

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
        return Err(Error::Config(
            "no channel has handlers in this binary: declare one with a listener attribute".into(),
        ));
    }
    Ok(entries.into_iter().cloned().collect())
}

/// A broadcast notification waiting for a worker.
#[derive(Debug)]
pub(crate) struct Broadcast {
    pub(crate) channel: String,
    pub(crate) payload: String,
}

#[derive(Debug, Default)]
pub(crate) struct WakeState {
    /// Bumped on every wake-up for stored notifications.
    pub(crate) seq: u64,
    pub(crate) broadcasts: VecDeque<Broadcast>,
}

/// Counters, for tests, `status` and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Notifications whose handlers all completed.
    pub completed: AtomicU64,
    /// Failed attempts recorded.
    pub failed: AtomicU64,
    /// Broadcast notifications handled.
    pub broadcasts: AtomicU64,
    /// Worker restarts.
    pub restarts: AtomicU64,
    /// Batches whose claim-and-decode query failed and that were claimed
    /// again and decoded under savepoints (a payload that does not decode,
    /// or a channel whose decode query does not work).
    pub careful_claims: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) config: ListenerConfig,
    pub(crate) served: Vec<ChannelEntry>,
    pub(crate) lockable: Vec<String>,
    /// Without recovery: the snapshot at start; notifications committed
    /// before it are left alone.
    pub(crate) skip_committed_before: Option<String>,
    pub(crate) stop: AtomicBool,
    pub(crate) wake: Mutex<WakeState>,
    pub(crate) wake_cond: Condvar,
    pub(crate) listening: Mutex<bool>,
    pub(crate) listening_cond: Condvar,
    pub(crate) stats: Stats,
}

impl Shared {
    fn new(
        config: ListenerConfig,
        served: Vec<ChannelEntry>,
        skip_committed_before: Option<String>,
    ) -> Self {
        let lockable = served
            .iter()
            .filter(|entry| entry.def.lock_notifications)
            .map(|entry| entry.def.name.to_owned())
            .collect();
        Shared {
            config,
            served,
            lockable,
            skip_committed_before,
            stop: AtomicBool::new(false),
            wake: Mutex::new(WakeState::default()),
            wake_cond: Condvar::new(),
            listening: Mutex::new(false),
            listening_cond: Condvar::new(),
            stats: Stats::default(),
        }
    }

    pub(crate) fn entry(&self, channel: &str) -> Option<&ChannelEntry> {
        self.served.iter().find(|entry| entry.def.name == channel)
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn wake_state(&self) -> MutexGuard<'_, WakeState> {
        // A worker that panicked while holding the lock left consistent data:
        // the state is a counter and a queue.
        self.wake
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes every idle worker to claim stored notifications.
    pub(crate) fn wake_workers(&self) {
        self.wake_state().seq += 1;
        self.wake_cond.notify_all();
    }

    pub(crate) fn push_broadcast(&self, broadcast: Broadcast) {
        self.wake_state().broadcasts.push_back(broadcast);
        self.wake_cond.notify_one();
    }

    pub(crate) fn set_listening(&self, value: bool) {
        let mut listening = self
            .listening
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *listening = value;
        self.listening_cond.notify_all();
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _guard = self.wake_state();
        self.wake_cond.notify_all();
    }
}

/// A running listener: stop it, wait for it, read its counters.
pub struct ListenerHandle {
    shared: Arc<Shared>,
    notifier: Option<JoinHandle<()>>,
    supervisor: Option<JoinHandle<Result<()>>>,
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
    /// worker failed with restarting off.
    pub fn join(mut self) -> Result<()> {
        self.join_inner()
    }

    /// Stops and waits.
    pub fn shutdown(self) -> Result<()> {
        self.stop();
        self.join()
    }

    fn join_inner(&mut self) -> Result<()> {
        let result = match self.supervisor.take() {
            Some(supervisor) => supervisor.join().unwrap_or_else(|_| {
                Err(Error::Worker {
                    worker: 0,
                    message: "the supervisor panicked".into(),
                })
            }),
            None => Ok(()),
        };
        self.shared.request_stop();
        if let Some(notifier) = self.notifier.take() {
            let _ = notifier.join();
        }
        result
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        if self.supervisor.is_some() {
            self.shared.request_stop();
            let _ = self.join_inner();
        }
    }
}

struct Exit {
    worker: usize,
    ran_for: Duration,
    result: std::result::Result<(), String>,
}

/// A worker that ran this long before failing restarts without the backoff
/// earlier failures built up.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

fn spawn_worker(
    shared: &Arc<Shared>,
    index: usize,
    exits: &mpsc::Sender<Exit>,
) -> Result<JoinHandle<()>> {
    let shared = shared.clone();
    let exits = exits.clone();
    std::thread::Builder::new()
        .name(format!("pgpubsub-worker-{index}"))
        .spawn(move || {
            let started = Instant::now();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                worker::run(&shared, index)
            }));
            let result = match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(error_chain(&err)),
                Err(_) => Err("the worker panicked outside a handler".to_owned()),
            };
            let _ = exits.send(Exit {
                worker: index,
                ran_for: started.elapsed(),
                result,
            });
        })
        .map_err(|err| Error::Config(format!("cannot start worker thread {index}: {err}")))
}

pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn supervise(
    shared: &Arc<Shared>,
    exits: mpsc::Sender<Exit>,
    exit_rx: mpsc::Receiver<Exit>,
) -> Result<()> {
    let mut threads = std::collections::HashMap::new();
    let mut outcome = Ok(());
    for index in 0..shared.config.workers {
        match spawn_worker(shared, index, &exits) {
            Ok(thread) => {
                threads.insert(index, thread);
            }
            Err(err) => {
                outcome = Err(err);
                shared.request_stop();
                break;
            }
        }
    }
    let mut running = threads.len();
    let mut backoff = Duration::from_millis(100);
    while running > 0 {
        let Ok(exit) = exit_rx.recv() else { break };
        running -= 1;
        if let Some(thread) = threads.remove(&exit.worker) {
            let _ = thread.join();
        }
        let Err(message) = exit.result else { continue };
        tracing::error!(worker = exit.worker, error = %message, "worker failed");
        if shared.stopping() {
            continue;
        }
        if !shared.config.restart_on_failure {
            outcome = Err(Error::Worker {
                worker: exit.worker,
                message,
            });
            shared.request_stop();
            continue;
        }
        if exit.ran_for >= HEALTHY_RUN {
            backoff = Duration::from_millis(100);
        }
        // Back off before restarting, unless asked to stop meanwhile.
        let deadline = Instant::now() + backoff;
        while Instant::now() < deadline && !shared.stopping() {
            std::thread::sleep(Duration::from_millis(20).min(deadline - Instant::now()));
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
        if shared.stopping() {
            continue;
        }
        shared.stats.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::info!(worker = exit.worker, "restarting worker");
        match spawn_worker(shared, exit.worker, &exits) {
            Ok(thread) => {
                threads.insert(exit.worker, thread);
                running += 1;
            }
            Err(err) => {
                outcome = Err(err);
                shared.request_stop();
            }
        }
    }
    for (_, thread) in threads {
        let _ = thread.join();
    }
    shared.request_stop();
    outcome
}
