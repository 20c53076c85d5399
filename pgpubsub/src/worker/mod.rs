//! A worker thread: leases stored notifications of its lockable channels
//! and runs them (`batch`), and runs broadcast ones (`broadcast`).

mod batch;
mod broadcast;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use diesel::PgConnection;

use crate::connection;
use crate::decode::Plans;
use crate::error::Result;
use crate::shared::Shared;

/// The worker loop: returns `Ok` when the listener stops, an error when the
/// connection fails (the supervisor restarts the worker). Sets `healthy`
/// after its first successful claim.
pub(crate) fn run(shared: &Shared, index: usize, healthy: &AtomicBool) -> Result<()> {
    let mut conn = match shared.take_warm() {
        Some(conn) => conn,
        None => connection::worker(&shared.database)?,
    };
    tracing::debug!(worker = index, "worker started");
    let mut last_purge: Option<Instant> = None;
    let mut plans = Plans::default();
    let mut claims = Claims {
        next_channel: index,
        cursors: vec![0; shared.lockable.len()],
        drained: vec![false; shared.lockable.len()],
        limits: vec![shared.config.batch_size; shared.lockable.len()],
        seen_seq: None,
    };
    while !shared.stopping() {
        if index == 0 && last_purge.map_or(true, |at| at.elapsed() >= broadcast::PURGE_EVERY) {
            broadcast::purge(&mut conn)?;
            last_purge = Some(Instant::now());
        }
        let seen = shared.wake_state().seq;
        // One broadcast, then one claim: neither kind starves the other.
        let next = shared.wake_state().broadcasts.pop_front();
        let had_broadcast = next.is_some();
        if let Some(next) = next {
            broadcast::handle(shared, &mut conn, &mut plans, next)?;
        }
        if claims.seen_seq != Some(seen) {
            // A wake-up may come from a transaction that committed rows
            // behind the cursors: sweep from the start.
            claims.reset();
            claims.seen_seq = Some(seen);
        }
        let claimed = claims.round(shared, &mut conn, &mut plans)?;
        healthy.store(true, Ordering::SeqCst);
        if claimed > 0 || had_broadcast {
            continue;
        }
        wait_for_work(shared, seen);
        // Retries come due and leases run out without a wake-up.
        claims.undrain();
    }
    tracing::debug!(worker = index, "worker stopped");
    Ok(())
}

/// Waits for a wake-up (a notification, a wake-up handed on by a busy
/// worker, a broadcast, a stop) or the poll interval.
fn wait_for_work(shared: &Shared, seen: u64) {
    let mut state = shared.wake_state();
    let deadline = Instant::now() + shared.config.poll_interval;
    while state.seq == seen && state.broadcasts.is_empty() && !shared.stopping() {
        if state.spare > 0 {
            state.spare -= 1;
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        state = match shared.wake_cond.wait_timeout(state, deadline - now) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

/// Where a worker is in each lockable channel.
///
/// Claims scan the `(channel, id)` index from the cursor, not from the
/// start: after a long drain the start of the index is a run of deleted
/// entries that every claim would walk again. Rows behind a cursor (a
/// transaction that committed late, a failure waiting for its retry, rows
/// another worker let go) are found by the full sweep that follows every
/// wake-up and every empty claim, so a worker never idles while work exists.
struct Claims {
    next_channel: usize,
    cursors: Vec<i64>,
    /// Channels found empty since the last wake-up or wait: a sweep from
    /// the start whose chain of leases ended with one that found nothing.
    /// Claiming them again before something new is announced would find
    /// nothing either (a row committed since sent a wake-up).
    drained: Vec<bool>,
    /// How many notifications the next lease of each channel takes: the
    /// batch size, or fewer after a batch ran past `batch_time`, so leased
    /// notifications do not wait long behind slow handlers.
    limits: Vec<i64>,
    seen_seq: Option<u64>,
}

impl Claims {
    fn reset(&mut self) {
        self.cursors.iter_mut().for_each(|cursor| *cursor = 0);
        self.undrain();
    }

    fn undrain(&mut self) {
        self.drained.iter_mut().for_each(|drained| *drained = false);
    }

    /// Leases and runs one batch from the first lockable channel, in
    /// round-robin order, that has work; returns how many notifications it
    /// leased.
    fn round(
        &mut self,
        shared: &Shared,
        conn: &mut PgConnection,
        plans: &mut Plans,
    ) -> Result<usize> {
        let channels = shared.lockable.len();
        for _ in 0..channels {
            let index = self.next_channel % channels;
            self.next_channel = self.next_channel.wrapping_add(1);
            if self.drained[index] {
                continue;
            }
            let channel = &shared.lockable[index];
            let limit = self.limits[index];
            let mut from = self.cursors[index];
            let mut done = batch::claim(shared, conn, plans, channel, from, limit)?;
            if done.leased == 0 && from > 0 {
                from = 0;
                self.cursors[index] = 0;
                done = batch::claim(shared, conn, plans, channel, 0, limit)?;
            }
            self.drained[index] = from == 0 && done.drained;
            // Counted once committed.
            let stats = &shared.stats;
            stats.completed.fetch_add(done.completed, Ordering::Relaxed);
            stats.failed.fetch_add(done.failed, Ordering::Relaxed);
            stats.dead.fetch_add(done.dead, Ordering::Relaxed);
            self.limits[index] = match done.fitted {
                Some(fitted) => fitted.clamp(1, shared.config.batch_size),
                None => (limit * 2).min(shared.config.batch_size),
            };
            if done.leased > 0 {
                self.cursors[index] = done.last_id;
                return Ok(done.leased);
            }
        }
        Ok(0)
    }
}
