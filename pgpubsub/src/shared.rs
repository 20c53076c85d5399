//! What a listener's threads share: the configuration, the wake-up state
//! the `LISTEN` session feeds and workers wait on, the bounded queue of
//! broadcasts, the stop flag and the counters.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::config::ListenerConfig;
use crate::connection::ConnInfo;
use crate::registry::ChannelEntry;

/// A broadcast notification waiting for a worker: the id of its stored
/// payload.
#[derive(Debug)]
pub(crate) struct Broadcast {
    pub(crate) channel: String,
    pub(crate) id: i64,
}

#[derive(Debug, Default)]
pub(crate) struct WakeState {
    /// Bumped on every wake-up for stored notifications.
    pub(crate) seq: u64,
    /// Wake-ups handed on by a worker whose lease came back full: each
    /// brings one more idle worker in, without a sweep from the start.
    pub(crate) spare: usize,
    pub(crate) broadcasts: VecDeque<Broadcast>,
}

/// Counters, for tests, `status` and benchmarks.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Notifications whose handlers all completed.
    pub completed: AtomicU64,
    /// Failed attempts recorded.
    pub failed: AtomicU64,
    /// Notifications that became dead: out of attempts, or a permanent
    /// error (a payload that cannot decode).
    pub dead: AtomicU64,
    /// Broadcast notifications handled.
    pub broadcasts: AtomicU64,
    /// Broadcast notifications dropped because the queue was full.
    pub broadcasts_dropped: AtomicU64,
    /// `NOTIFY` payloads on a broadcast channel that are not a stored
    /// broadcast of that channel (forged, replayed or of another channel):
    /// ignored.
    pub broadcasts_rejected: AtomicU64,
    /// Worker restarts.
    pub restarts: AtomicU64,
    /// Batches whose claim-and-decode query failed and that were claimed
    /// again and decoded under savepoints (a payload that does not decode,
    /// or a channel whose decode query does not work).
    pub careful_claims: AtomicU64,
    /// Batches committed early because their handlers ran past `batch_time`.
    pub batches_cut: AtomicU64,
    /// Leases that found notifications, taken in a transaction of their
    /// own (the first batch of a sweep).
    pub leases_alone: AtomicU64,
    /// Leases that found notifications, taken in the transaction that
    /// settled the batch before (while a backlog lasts).
    pub leases_chained: AtomicU64,
    /// Leases, alone or chained, that found nothing to lease.
    pub leases_empty: AtomicU64,
}

/// How many handled broadcast ids a listener remembers to refuse replays.
const SEEN_BROADCASTS: usize = 100_000;

/// Handled broadcast ids, newest last: a `NOTIFY` naming one again is a
/// replay.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    set: HashSet<i64>,
    order: VecDeque<i64>,
}

impl Seen {
    /// Records `id`; false when it was seen already.
    pub(crate) fn insert(&mut self, id: i64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_BROADCASTS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

pub(crate) struct Shared {
    pub(crate) config: ListenerConfig,
    pub(crate) database: ConnInfo,
    pub(crate) listen: ConnInfo,
    pub(crate) served: Vec<ChannelEntry>,
    pub(crate) lockable: Vec<String>,
    /// Without recovery: the snapshot at start; notifications committed
    /// before it are left alone.
    pub(crate) skip_committed_before: Option<String>,
    /// The transactions committed when the listener started.
    pub(crate) start_snapshot: String,
    /// This listener's row in `pgpubsub_listener`.
    pub(crate) registration: Option<i64>,
    pub(crate) stop: AtomicBool,
    pub(crate) wake: Mutex<WakeState>,
    pub(crate) wake_cond: Condvar,
    pub(crate) listening: Mutex<bool>,
    pub(crate) listening_cond: Condvar,
    pub(crate) seen_broadcasts: Mutex<Seen>,
    pub(crate) stats: Stats,
    /// Connections opened during start-up (the start-up checks' own among
    /// them), for the first workers: they need not connect again.
    warm: Mutex<Vec<diesel::PgConnection>>,
}

impl Shared {
    pub(crate) fn new(
        config: ListenerConfig,
        database: ConnInfo,
        listen: ConnInfo,
        served: Vec<ChannelEntry>,
        start: (String, Option<String>),
        registration: Option<i64>,
        warm: Vec<diesel::PgConnection>,
    ) -> Self {
        let (start_snapshot, skip_committed_before) = start;
        let lockable = served
            .iter()
            .filter(|entry| entry.def.lock_notifications)
            .map(|entry| entry.def.name.to_owned())
            .collect();
        Shared {
            config,
            database,
            listen,
            served,
            lockable,
            skip_committed_before,
            start_snapshot,
            registration,
            stop: AtomicBool::new(false),
            wake: Mutex::new(WakeState::default()),
            wake_cond: Condvar::new(),
            listening: Mutex::new(false),
            listening_cond: Condvar::new(),
            seen_broadcasts: Mutex::new(Seen::default()),
            stats: Stats::default(),
            warm: Mutex::new(warm),
        }
    }

    /// A connection opened during start-up, if one is left.
    pub(crate) fn take_warm(&self) -> Option<diesel::PgConnection> {
        self.warm
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
    }

    pub(crate) fn entry(&self, channel: &str) -> Option<&ChannelEntry> {
        self.served.iter().find(|entry| entry.def.name == channel)
    }

    /// The attempt limit of `channel`: its own, else the listener's.
    pub(crate) fn max_attempts(&self, entry: &ChannelEntry) -> u32 {
        entry.def.max_attempts.unwrap_or(self.config.max_attempts)
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

    /// Wakes one idle worker to claim stored notifications (sweeping from
    /// the start of its channels). More join while there is more work: a
    /// worker whose lease comes back full wakes the next
    /// ([`Shared::wake_another`]). So a wake-up costs one claim, not one
    /// per worker, and a backlog still gets every worker.
    pub(crate) fn wake_workers(&self) {
        self.wake_state().seq += 1;
        self.wake_cond.notify_one();
    }

    /// Wakes every idle worker to sweep for stored notifications: after the
    /// `LISTEN` session was (re-)established, when notifications may have
    /// been stored unannounced. Each also finds out whether its own
    /// session survived whatever broke the `LISTEN` one.
    pub(crate) fn wake_all_workers(&self) {
        self.wake_state().seq += 1;
        self.wake_cond.notify_all();
    }

    /// Wakes one more idle worker: the caller's lease came back full, so
    /// there is likely work for another.
    pub(crate) fn wake_another(&self) {
        let mut state = self.wake_state();
        if state.spare < self.config.workers {
            state.spare += 1;
        }
        drop(state);
        self.wake_cond.notify_one();
    }

    /// Queues a broadcast for a worker; false when the queue is full (the
    /// broadcast is dropped and counted).
    pub(crate) fn push_broadcast(&self, broadcast: Broadcast) -> bool {
        let mut state = self.wake_state();
        if state.broadcasts.len() >= self.config.broadcast_queue {
            drop(state);
            self.stats
                .broadcasts_dropped
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        state.broadcasts.push_back(broadcast);
        drop(state);
        self.wake_cond.notify_one();
        true
    }

    /// Records that broadcast `id` is being handled; false for a replay.
    pub(crate) fn first_sight(&self, id: i64) -> bool {
        self.seen_broadcasts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id)
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
