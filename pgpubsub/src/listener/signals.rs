//! SIGINT and SIGTERM for [`Listener::run`](super::Listener::run): the
//! first stops the listener gracefully (even one still starting), a second
//! exits at once, and a stop that outlives the shutdown timeout (a start-up
//! stuck on a hung server) ends the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use super::Stopper;
use crate::error::{Error, Result};

#[derive(Default)]
struct State {
    stopper: Mutex<Option<Stopper>>,
    signalled: AtomicBool,
    /// `run` returned: nothing may exit the process any more.
    done: AtomicBool,
}

/// The signal watch of one `run`.
pub(crate) struct Watch {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
    state: Arc<State>,
}

/// How much longer than the shutdown timeout the backstop waits before it
/// ends the process: `run` itself returns at the timeout.
const BACKSTOP_GRACE: Duration = Duration::from_secs(2);

impl Watch {
    /// Starts watching SIGINT and SIGTERM.
    pub(crate) fn install(shutdown_timeout: Duration) -> Result<Watch> {
        let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(Error::Signal)?;
        let handle = signals.handle();
        let state = Arc::new(State::default());
        let thread = {
            let state = state.clone();
            std::thread::Builder::new()
                .name("pgpubsub-signals".into())
                .spawn(move || {
                    for signal in signals.forever() {
                        if state.done.load(Ordering::SeqCst) {
                            return;
                        }
                        if state.signalled.swap(true, Ordering::SeqCst) {
                            tracing::warn!(signal, "second signal: exiting now");
                            std::process::exit(128 + signal);
                        }
                        tracing::info!(
                            signal,
                            "stopping: finishing the notifications in hand (a second signal exits at once)"
                        );
                        let stopper = state
                            .stopper
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .clone();
                        if let Some(stopper) = stopper {
                            stopper.stop();
                        }
                        backstop(&state, shutdown_timeout, signal);
                    }
                })
                .map_err(Error::Signal)?
        };
        Ok(Watch {
            handle,
            thread: Some(thread),
            state,
        })
    }

    /// The listener to stop; stopped at once when a signal came during
    /// start-up.
    pub(crate) fn attach(&self, stopper: Stopper) {
        let mut slot = self
            .state
            .stopper
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.state.signalled.load(Ordering::SeqCst) {
            stopper.stop();
        }
        *slot = Some(stopper);
    }

    /// Stops watching.
    pub(crate) fn close(mut self) {
        self.state.done.store(true, Ordering::SeqCst);
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Ends the process when `run` has not returned well after the shutdown
/// timeout: start-up can be stuck connecting to a server that hangs.
fn backstop(state: &Arc<State>, timeout: Duration, signal: i32) {
    let state = state.clone();
    let spawned = std::thread::Builder::new()
        .name("pgpubsub-shutdown-deadline".into())
        .spawn(move || {
            std::thread::sleep(timeout + BACKSTOP_GRACE);
            if !state.done.load(Ordering::SeqCst) {
                tracing::error!(
                    ?timeout,
                    "the listener did not stop within its shutdown timeout; exiting"
                );
                std::process::exit(128 + signal);
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the shutdown deadline");
    }
}
