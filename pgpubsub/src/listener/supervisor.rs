//! The supervisor: runs the worker threads and restarts each failed one on
//! its own schedule; and the bookkeeping of a listener's threads, so a stop
//! can wait for them with a deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::shared::Shared;
use crate::worker;

/// A listener's background threads (notifier, supervisor): how many still
/// run, and the supervisor's outcome.
#[derive(Default)]
pub(crate) struct Threads {
    state: Mutex<ThreadsState>,
    cond: Condvar,
}

#[derive(Default)]
struct ThreadsState {
    live: usize,
    outcome: Option<Result<()>>,
    /// A wait timed out: later waits return at once.
    abandoned: bool,
}

impl Threads {
    fn state(&self) -> std::sync::MutexGuard<'_, ThreadsState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a counted thread.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        name: &str,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<JoinHandle<()>> {
        self.state().live += 1;
        let threads = self.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Counted down however the body ends, a panic included.
                struct Done(Arc<Threads>);
                impl Drop for Done {
                    fn drop(&mut self) {
                        self.0.state().live -= 1;
                        self.0.cond.notify_all();
                    }
                }
                let _done = Done(threads);
                body();
            })
            .map_err(|err| {
                self.state().live -= 1;
                Error::Config(format!("cannot start the {name} thread: {err}"))
            })
    }

    pub(crate) fn set_outcome(&self, outcome: Result<()>) {
        self.state().outcome = Some(outcome);
    }

    /// Waits until every thread ended: without limit until a stop is asked
    /// for, then at most `timeout` more.
    pub(crate) fn wait(&self, shared: &Shared, timeout: Duration) -> Result<()> {
        let mut state = self.state();
        let mut deadline: Option<Instant> = None;
        loop {
            if state.live == 0 {
                return state.outcome.take().unwrap_or(Ok(()));
            }
            if state.abandoned {
                return Err(Error::ShutdownTimeout(timeout));
            }
            if deadline.is_none() && shared.stopping() {
                deadline = Some(Instant::now() + timeout);
            }
            let slice = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        state.abandoned = true;
                        tracing::error!(
                            ?timeout,
                            "the listener did not stop in time; abandoning its transactions"
                        );
                        return Err(Error::ShutdownTimeout(timeout));
                    }
                    (deadline - now).min(Duration::from_millis(100))
                }
                None => Duration::from_millis(100),
            };
            state = match self.cond.wait_timeout(state, slice) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

struct Exit {
    worker: usize,
    result: std::result::Result<(), String>,
}

/// The first restart of a failed worker waits this long; each failure
/// before the worker's next successful claim doubles it, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One worker's restart state.
struct Slot {
    thread: Option<JoinHandle<()>>,
    /// Set by the worker after its first successful claim: the next failure
    /// restarts after [`FIRST_BACKOFF`] again.
    healthy: Arc<AtomicBool>,
    backoff: Duration,
    restart_at: Option<Instant>,
}

fn spawn_worker(
    shared: &Arc<Shared>,
    index: usize,
    healthy: &Arc<AtomicBool>,
    exits: &mpsc::Sender<Exit>,
) -> Result<JoinHandle<()>> {
    let shared = shared.clone();
    let exits = exits.clone();
    let healthy = healthy.clone();
    std::thread::Builder::new()
        .name(format!("pgpubsub-worker-{index}"))
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                worker::run(&shared, index, &healthy)
            }));
            let result = match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(error_chain(&err)),
                Err(_) => Err("the worker panicked outside a handler".to_owned()),
            };
            let _ = exits.send(Exit {
                worker: index,
                result,
            });
        })
        .map_err(|err| Error::Config(format!("cannot start worker thread {index}: {err}")))
}

/// An error and its causes, `: `-separated.
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

/// Runs the workers until the listener stops; restarts each failed worker
/// on its own schedule (a failing worker never delays another's restart).
pub(crate) fn supervise(shared: &Arc<Shared>) -> Result<()> {
    let (exits, exit_rx) = mpsc::channel();
    let mut slots: HashMap<usize, Slot> = HashMap::new();
    for index in 0..shared.config.workers {
        let healthy = Arc::new(AtomicBool::new(false));
        match spawn_worker(shared, index, &healthy, &exits) {
            Ok(thread) => {
                slots.insert(
                    index,
                    Slot {
                        thread: Some(thread),
                        healthy,
                        backoff: FIRST_BACKOFF,
                        restart_at: None,
                    },
                );
            }
            Err(err) => {
                shared.request_stop();
                join_all(&mut slots);
                return Err(err);
            }
        }
    }
    let mut outcome = Ok(());
    loop {
        let running = slots.values().filter(|slot| slot.thread.is_some()).count();
        let pending = slots.values().filter_map(|slot| slot.restart_at).min();
        if running == 0 && (pending.is_none() || shared.stopping()) {
            break;
        }
        let wait = match pending {
            Some(at) => at.saturating_duration_since(Instant::now()),
            None => Duration::from_millis(100),
        }
        .min(Duration::from_millis(100));
        match exit_rx.recv_timeout(wait) {
            Ok(exit) => {
                let Some(slot) = slots.get_mut(&exit.worker) else {
                    continue;
                };
                if let Some(thread) = slot.thread.take() {
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
                if slot.healthy.swap(false, Ordering::SeqCst) {
                    slot.backoff = FIRST_BACKOFF;
                }
                slot.restart_at = Some(Instant::now() + slot.backoff);
                tracing::info!(worker = exit.worker, retry_in = ?slot.backoff, "restarting worker");
                slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if shared.stopping() {
            for slot in slots.values_mut() {
                slot.restart_at = None;
            }
            continue;
        }
        let now = Instant::now();
        let due: Vec<usize> = slots
            .iter()
            .filter(|(_, slot)| slot.restart_at.is_some_and(|at| at <= now))
            .map(|(index, _)| *index)
            .collect();
        for index in due {
            let Some(slot) = slots.get_mut(&index) else {
                continue;
            };
            slot.restart_at = None;
            shared
                .stats
                .restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match spawn_worker(shared, index, &slot.healthy, &exits) {
                Ok(thread) => slot.thread = Some(thread),
                Err(err) => {
                    outcome = Err(err);
                    shared.request_stop();
                }
            }
        }
    }
    join_all(&mut slots);
    shared.request_stop();
    outcome
}

fn join_all(slots: &mut HashMap<usize, Slot>) {
    for slot in slots.values_mut() {
        if let Some(thread) = slot.thread.take() {
            let _ = thread.join();
        }
    }
}
