//! A worker: claims stored notifications with `FOR UPDATE SKIP LOCKED`, runs
//! their handlers and removes them in one transaction; runs broadcast ones.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::connection::Connection;
use diesel::sql_types::{Array, BigInt, Double, Int4, Jsonb, Nullable, Text, Timestamptz};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use serde_json::Value;

use crate::context::Context;
use crate::error::{redact_url, Error, Result};
use crate::event::{Event, HandlerError};
use crate::executor::{execute, AttemptError};
use crate::listener::{Broadcast, Shared};
use crate::registry::ChannelEntry;
use crate::sql;

/// Opens a worker connection.
pub(crate) fn connect(url: &str) -> Result<PgConnection> {
    PgConnection::establish(url).map_err(|source| Error::Connect {
        url: redact_url(url),
        source: Box::new(source),
    })
}

#[derive(QueryableByName)]
struct Installed {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    ok: bool,
}

#[derive(QueryableByName)]
struct TriggerName {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Fails when pgpubsub's schema is missing; warns about served trigger
/// channels whose trigger is not installed (they would never notify).
pub(crate) fn check_schema(conn: &mut PgConnection, served: &[ChannelEntry]) -> Result<()> {
    let installed = diesel::sql_query(sql::SCHEMA_INSTALLED)
        .get_result::<Installed>(conn)
        .map_err(Error::query("checking pgpubsub's schema"))?;
    if !installed.ok {
        return Err(Error::SchemaMissing);
    }
    let expected: Vec<String> = served
        .iter()
        .filter(|entry| entry.def.is_trigger())
        .map(|entry| format!("pgpubsub_{}", entry.def.name))
        .collect();
    let present: Vec<String> = diesel::sql_query(sql::TRIGGERS_PRESENT)
        .bind::<Array<Text>, _>(&expected)
        .load::<TriggerName>(conn)
        .map_err(Error::query("checking the channels' triggers"))?
        .into_iter()
        .map(|row| row.name)
        .collect();
    for name in expected.iter().filter(|name| !present.contains(name)) {
        tracing::warn!(
            trigger = %name,
            "trigger missing: this channel's rows will not notify until the migrations written by pgpubsub-gen are applied"
        );
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Snapshot {
    #[diesel(sql_type = Text)]
    snapshot: String,
}

/// The current snapshot: which transactions have committed now.
pub(crate) fn current_snapshot(conn: &mut PgConnection) -> Result<String> {
    diesel::sql_query(sql::SNAPSHOT_CURRENT)
        .get_result::<Snapshot>(conn)
        .map(|row| row.snapshot)
        .map_err(Error::query("reading the current snapshot"))
}

/// One claimed notification row.
#[derive(QueryableByName, Debug)]
pub(crate) struct Claimed {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Text)]
    pub(crate) channel: String,
    #[diesel(sql_type = Jsonb)]
    pub(crate) payload: Value,
    #[diesel(sql_type = Timestamptz)]
    pub(crate) created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) db_version: Option<String>,
    #[diesel(sql_type = Int4)]
    pub(crate) attempts: i32,
}

#[derive(QueryableByName)]
struct StoredPayload {
    #[diesel(sql_type = Jsonb)]
    payload: Value,
}

/// The worker loop: returns `Ok` when the listener stops, an error when the
/// connection fails (the supervisor restarts the worker).
pub(crate) fn run(shared: &Shared, index: usize) -> Result<()> {
    let mut conn = connect(&shared.config.database_url)?;
    tracing::debug!(worker = index, "worker started");
    let mut last_purge: Option<std::time::Instant> = None;
    let mut claims = Claims {
        next_channel: index,
        cursors: vec![0; shared.lockable.len()],
        seen_seq: None,
    };
    while !shared.stopping() {
        if index == 0 && last_purge.map_or(true, |at| at.elapsed() >= BROADCAST_PURGE_EVERY) {
            purge_broadcasts(&mut conn)?;
            last_purge = Some(std::time::Instant::now());
        }
        let seen = shared.wake_state().seq;
        // One broadcast, then one claim: neither kind starves the other.
        let broadcast = shared.wake_state().broadcasts.pop_front();
        let had_broadcast = broadcast.is_some();
        if let Some(broadcast) = broadcast {
            handle_broadcast(shared, &mut conn, broadcast)?;
        }
        if claims.seen_seq != Some(seen) {
            // A wake-up may come from a transaction that committed rows
            // behind the cursors: sweep from the start.
            claims.reset();
            claims.seen_seq = Some(seen);
        }
        if claims.round(shared, &mut conn)? > 0 || had_broadcast {
            continue;
        }
        wait_for_work(shared, seen);
    }
    tracing::debug!(worker = index, "worker stopped");
    Ok(())
}

fn wait_for_work(shared: &Shared, seen: u64) {
    let mut state = shared.wake_state();
    let deadline = std::time::Instant::now() + shared.config.poll_interval;
    while state.seq == seen && state.broadcasts.is_empty() && !shared.stopping() {
        let now = std::time::Instant::now();
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
    seen_seq: Option<u64>,
}

impl Claims {
    fn reset(&mut self) {
        self.cursors.iter_mut().for_each(|cursor| *cursor = 0);
    }

    /// Claims one batch from the first lockable channel, in round-robin
    /// order, that has work; returns how many notifications were claimed.
    fn round(&mut self, shared: &Shared, conn: &mut PgConnection) -> Result<usize> {
        let channels = shared.lockable.len();
        for _ in 0..channels {
            let index = self.next_channel % channels;
            self.next_channel = self.next_channel.wrapping_add(1);
            let channel = &shared.lockable[index];
            let mut batch = claim_batch(shared, conn, channel, self.cursors[index])?;
            if batch.claimed == 0 && self.cursors[index] > 0 {
                self.cursors[index] = 0;
                batch = claim_batch(shared, conn, channel, 0)?;
            }
            // Counted once committed.
            let stats = &shared.stats;
            stats
                .completed
                .fetch_add(batch.completed, Ordering::Relaxed);
            stats.failed.fetch_add(batch.failed, Ordering::Relaxed);
            if batch.claimed > 0 {
                self.cursors[index] = batch.last_id;
                return Ok(batch.claimed);
            }
        }
        Ok(0)
    }
}

/// What one committed batch did.
struct Batch {
    claimed: usize,
    /// The highest id claimed.
    last_id: i64,
    completed: u64,
    failed: u64,
}

/// Claims one batch of `channel` after id `cursor`, runs it, and commits.
fn claim_batch(
    shared: &Shared,
    conn: &mut PgConnection,
    channel: &str,
    cursor: i64,
) -> Result<Batch> {
    conn.transaction(|conn| {
        let claimed: Vec<Claimed> = diesel::sql_query(sql::NOTIFICATION_CLAIM)
            .bind::<Text, _>(channel)
            .bind::<Nullable<Text>, _>(shared.skip_committed_before.as_deref())
            .bind::<BigInt, _>(shared.config.batch_size)
            .bind::<BigInt, _>(cursor)
            .load(conn)
            .map_err(Error::query("claiming notifications"))?;
        let mut completed = Vec::with_capacity(claimed.len());
        let mut failed = 0;
        for row in &claimed {
            // On stop, finish the notification in hand only: the rest of the
            // batch stays stored and its locks go with the commit.
            if shared.stopping() && !(completed.is_empty() && failed == 0) {
                break;
            }
            match process(shared, conn, row) {
                Ok(()) => completed.push(row.id),
                Err(AttemptError::Handler(err)) => {
                    record_failure(shared, conn, row, &err)?;
                    failed += 1;
                }
                Err(AttemptError::Database(source)) => {
                    return Err(Error::Query {
                        what: "running handlers",
                        source,
                    })
                }
            }
        }
        if !completed.is_empty() {
            diesel::sql_query(sql::NOTIFICATION_COMPLETE)
                .bind::<Array<BigInt>, _>(&completed)
                .execute(conn)
                .map_err(Error::query("completing notifications"))?;
        }
        Ok(Batch {
            claimed: claimed.len(),
            last_id: claimed.last().map_or(cursor, |row| row.id),
            completed: completed.len() as u64,
            failed,
        })
    })
}

fn process(shared: &Shared, conn: &mut PgConnection, row: &Claimed) -> Result<(), AttemptError> {
    let span = tracing::info_span!("notification", channel = %row.channel, id = row.id, attempt = row.attempts + 1);
    let _entered = span.enter();
    let Some(entry) = shared.entry(&row.channel) else {
        return Err(AttemptError::Handler(HandlerError::failed(format!(
            "channel `{}` is not served by this listener",
            row.channel
        ))));
    };
    let event = Event::from_payload(&row.payload).map_err(AttemptError::Handler)?;
    let context = Context {
        channel: row.channel.clone(),
        data: event.context.clone(),
        notification_id: Some(row.id),
        created_at: Some(row.created_at),
        db_version: row.db_version.clone(),
        attempt: row.attempts + 1,
    };
    let ran = execute(conn, entry, &event, &context)?;
    tracing::debug!(handlers = ran, "notification handled");
    Ok(())
}

fn record_failure(
    shared: &Shared,
    conn: &mut PgConnection,
    row: &Claimed,
    err: &HandlerError,
) -> Result<()> {
    let attempt = row.attempts + 1;
    let wait = shared.config.retry.backoff(attempt);
    tracing::warn!(
        channel = %row.channel,
        id = row.id,
        attempt,
        retry_in = ?wait,
        error = %err,
        "notification failed"
    );
    diesel::sql_query(sql::NOTIFICATION_FAIL)
        .bind::<BigInt, _>(row.id)
        .bind::<Text, _>(err.to_string())
        .bind::<Double, _>(wait.as_secs_f64())
        .execute(conn)
        .map_err(Error::query("recording a failed notification"))?;
    Ok(())
}

fn handle_broadcast(shared: &Shared, conn: &mut PgConnection, broadcast: Broadcast) -> Result<()> {
    let span = tracing::info_span!("notification", channel = %broadcast.channel);
    let _entered = span.enter();
    let Some(entry) = shared.entry(&broadcast.channel) else {
        return Ok(());
    };
    let payload: Value = match serde_json::from_str(&broadcast.payload) {
        Ok(payload) => payload,
        Err(err) => {
            tracing::error!(error = %err, "broadcast payload is not JSON; dropped");
            return Ok(());
        }
    };
    // Payloads too large for NOTIFY are stored and referenced by id.
    let payload = match payload.get("pgpubsub_stored").and_then(Value::as_i64) {
        Some(id) => {
            let stored: Option<StoredPayload> = diesel::sql_query(sql::NOTIFICATION_PAYLOAD)
                .bind::<BigInt, _>(id)
                .get_results(conn)
                .map_err(Error::query("reading a stored broadcast payload"))?
                .pop();
            match stored {
                Some(stored) => stored.payload,
                None => {
                    tracing::error!(id, "stored broadcast payload is gone; dropped");
                    return Ok(());
                }
            }
        }
        None => payload,
    };
    let outcome = Event::from_payload(&payload)
        .map_err(AttemptError::Handler)
        .and_then(|event| {
            let context = Context {
                channel: broadcast.channel.clone(),
                data: event.context.clone(),
                notification_id: None,
                created_at: None,
                db_version: None,
                attempt: 1,
            };
            conn.transaction(|conn| execute(conn, entry, &event, &context))
        });
    match outcome {
        Ok(_) => {
            shared.stats.broadcasts.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        // Broadcasts are at-most-once: a failure is logged, not retried.
        Err(AttemptError::Handler(err)) => {
            tracing::error!(error = %err, "broadcast notification failed");
            shared.stats.failed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(AttemptError::Database(source)) => Err(Error::Query {
            what: "running broadcast handlers",
            source,
        }),
    }
}

/// How long stored broadcast payloads are kept for listeners to read.
const BROADCAST_RETENTION: Duration = Duration::from_secs(3600);

/// Worker 0 removes expired broadcast payloads this often.
const BROADCAST_PURGE_EVERY: Duration = Duration::from_secs(60);

fn purge_broadcasts(conn: &mut PgConnection) -> Result<()> {
    let purged = diesel::sql_query(sql::BROADCAST_PURGE)
        .bind::<Double, _>(BROADCAST_RETENTION.as_secs_f64())
        .execute(conn)
        .map_err(Error::query("purging stored broadcast payloads"))?;
    if purged > 0 {
        tracing::debug!(purged, "expired broadcast payloads removed");
    }
    Ok(())
}
