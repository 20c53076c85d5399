//! A worker: claims stored notifications with `FOR UPDATE SKIP LOCKED`, runs
//! their handlers and removes them in one transaction; runs broadcast ones.

use std::sync::atomic::Ordering;
use std::time::Duration;

use std::collections::HashMap;

use diesel::connection::Connection;
use diesel::sql_types::{Array, BigInt, Bool, Double, Nullable, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use serde_json::Value;

use crate::context::Context;
use crate::contract::payload::Payload;
use crate::contract::{names, queries as sql, schema};
use crate::decode::{error_chain, ClaimArgs, Claimed, ClaimedRow, Plans, Side, Source};
use crate::error::{redact_url, Error, Result};
use crate::event::{Event, HandlerError, RawEvent};
use crate::executor::{execute, AttemptError};
use crate::listener::{Broadcast, Shared};
use crate::registry::ChannelEntry;

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

/// Fails when pgpubsub's schema is missing or older than this version;
/// warns about served trigger channels whose trigger is not installed (they
/// would never notify).
pub(crate) fn check_schema(conn: &mut PgConnection, served: &[ChannelEntry]) -> Result<()> {
    let table = diesel::sql_query(sql::SCHEMA_TABLE_PRESENT)
        .get_result::<Installed>(conn)
        .map_err(Error::query("checking pgpubsub's schema"))?;
    let markers: Vec<&str> = schema::STEPS.iter().map(|step| step.marker).collect();
    let steps: Vec<bool> = diesel::sql_query(sql::SCHEMA_STEPS_PRESENT)
        .bind::<Array<Text>, _>(&markers)
        .load::<Installed>(conn)
        .map_err(Error::query("checking pgpubsub's schema"))?
        .into_iter()
        .map(|row| row.ok)
        .collect();
    if !table.ok || !steps.first().copied().unwrap_or(false) {
        return Err(Error::SchemaMissing);
    }
    if let Some(missing) = steps.iter().position(|present| !present) {
        return Err(Error::SchemaOutdated {
            step: schema::STEPS
                .get(missing)
                .map_or("?", |step| step.key)
                .to_owned(),
        });
    }
    let expected: Vec<String> = served
        .iter()
        .filter(|entry| entry.def.is_trigger())
        .map(|entry| names::channel_object(entry.def.name))
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

#[derive(QueryableByName)]
struct StoredPayload {
    #[diesel(sql_type = Text)]
    payload: String,
}

/// Reads a payload's context JSON; `{}` when it has none.
fn parse_context(text: Option<&str>) -> Result<Value, HandlerError> {
    match text {
        None => Ok(Value::Object(serde_json::Map::new())),
        Some(text) => serde_json::from_str(text).map_err(|err| {
            HandlerError::decode(format!(
                "malformed payload: its `context` cannot be read: {err}"
            ))
        }),
    }
}

/// The worker loop: returns `Ok` when the listener stops, an error when the
/// connection fails (the supervisor restarts the worker).
pub(crate) fn run(shared: &Shared, index: usize) -> Result<()> {
    let mut conn = connect(&shared.config.database_url)?;
    tracing::debug!(worker = index, "worker started");
    let mut last_purge: Option<std::time::Instant> = None;
    let mut plans = Plans::default();
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
            handle_broadcast(shared, &mut conn, &mut plans, broadcast)?;
        }
        if claims.seen_seq != Some(seen) {
            // A wake-up may come from a transaction that committed rows
            // behind the cursors: sweep from the start.
            claims.reset();
            claims.seen_seq = Some(seen);
        }
        if claims.round(shared, &mut conn, &mut plans)? > 0 || had_broadcast {
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
            let channel = &shared.lockable[index];
            let mut batch = claim(shared, conn, plans, channel, self.cursors[index])?;
            if batch.claimed == 0 && self.cursors[index] > 0 {
                self.cursors[index] = 0;
                batch = claim(shared, conn, plans, channel, 0)?;
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

impl Batch {
    /// Nothing claimed (or the claim rolled back).
    fn empty(cursor: i64) -> Batch {
        Batch {
            claimed: 0,
            last_id: cursor,
            completed: 0,
            failed: 0,
        }
    }
}

/// Why a batch's transaction ended early (and rolled back).
enum BatchError {
    /// The claim that decodes failed (in PostgreSQL, which aborted the
    /// transaction, or in Diesel's `FromSql`): claim again and decode under
    /// savepoints.
    Careful,
    /// The channel's decode query fails whatever the notification: leave
    /// the batch stored and retry the channel later.
    Channel(String),
    Fatal(Error),
}

impl From<diesel::result::Error> for BatchError {
    fn from(err: diesel::result::Error) -> Self {
        BatchError::Fatal(Error::Transaction(err))
    }
}

impl From<Error> for BatchError {
    fn from(err: Error) -> Self {
        BatchError::Fatal(err)
    }
}

/// Claims one batch of `channel` after id `cursor`, runs it, and commits.
fn claim(
    shared: &Shared,
    conn: &mut PgConnection,
    plans: &mut Plans,
    channel: &str,
    cursor: i64,
) -> Result<Batch> {
    let mut outcome = claim_batch(shared, conn, plans, channel, cursor, false);
    if matches!(outcome, Err(BatchError::Careful)) {
        shared.stats.careful_claims.fetch_add(1, Ordering::Relaxed);
        outcome = claim_batch(shared, conn, plans, channel, cursor, true);
    }
    match outcome {
        Ok(batch) => Ok(batch),
        Err(BatchError::Fatal(err)) => Err(err),
        // The careful path never asks for itself again.
        Err(BatchError::Careful) => Ok(Batch::empty(cursor)),
        Err(BatchError::Channel(reason)) => {
            if let Some(entry) = shared.entry(channel) {
                plans.broken(entry.def.name, reason);
            }
            Ok(Batch::empty(cursor))
        }
    }
}

/// One claimed notification, ready for its handlers or failed already.
type Prepared = Result<(Event, Context), HandlerError>;

fn claim_batch(
    shared: &Shared,
    conn: &mut PgConnection,
    plans: &mut Plans,
    channel: &str,
    cursor: i64,
    careful: bool,
) -> Result<Batch, BatchError> {
    let Some(entry) = shared.entry(channel) else {
        return Err(BatchError::Fatal(Error::UnknownChannel {
            name: channel.to_owned(),
            known: Vec::new(),
        }));
    };
    let plan = plans.get(conn, entry);
    if let Some(Err(_)) = plan {
        // Logged when the plan was built; the notifications stay stored.
        return Ok(Batch::empty(cursor));
    }
    // Trigger channels whose handlers take rows claim and decode in one
    // query; when that fails, the batch is claimed again and decoded under
    // savepoints, one notification at a time if need be.
    let fast = match plan {
        Some(Ok(plan)) if plan.needs_rows() && !careful => Some(plan),
        _ => None,
    };
    let args = ClaimArgs {
        channel,
        snapshot: shared.skip_committed_before.as_deref(),
        limit: shared.config.batch_size,
        cursor,
    };
    conn.transaction(|conn| {
        let (mut claimed, decoded) = match fast {
            Some(plan) => match plan.claim(conn, args) {
                Ok(rows) => {
                    let (claimed, decoded) = group_claimed(rows);
                    (claimed, Some(decoded))
                }
                Err(err) => {
                    tracing::debug!(channel, error = %error_chain(&err), "claim with decode failed; claiming again under savepoints");
                    return Err(BatchError::Careful);
                }
            },
            None => {
                let claimed: Vec<Claimed> = diesel::sql_query(sql::NOTIFICATION_CLAIM.as_str())
                    .bind::<Text, _>(args.channel)
                    .bind::<Nullable<Text>, _>(args.snapshot)
                    .bind::<BigInt, _>(args.limit)
                    .bind::<BigInt, _>(args.cursor)
                    .load(conn)
                    .map_err(Error::query("claiming notifications"))?;
                (claimed, None)
            }
        };
        let mut prepared: Vec<Prepared> = claimed
            .iter_mut()
            .map(|row| prepare(entry, row))
            .collect();
        match (decoded, fast) {
            (Some(decoded), Some(plan)) => {
                let index = positions(&claimed, &prepared);
                let mut redo = Vec::new();
                for (id, side, row) in decoded {
                    match row {
                        Some(row) => distribute_one(&index, &mut prepared, id, side, row),
                        // Every selected column NULL: Diesel cannot tell the
                        // row from none; decode this notification alone.
                        None => redo.push(id),
                    }
                }
                if !redo.is_empty() {
                    redo.dedup();
                    for id in &redo {
                        if let Some(Ok((event, _))) = index.get(id).map(|&at| &mut prepared[at]) {
                            event.clear_rows();
                        }
                    }
                    let subset: Vec<&Claimed> =
                        claimed.iter().filter(|row| redo.contains(&row.id)).collect();
                    decode_each(conn, plan, &subset, &index, &mut prepared)?;
                }
            }
            _ => decode_stored(conn, plan, &claimed, &mut prepared)?,
        }
        let mut completed = Vec::with_capacity(claimed.len());
        let mut failed = 0;
        for (row, prepared) in claimed.iter().zip(prepared) {
            // On stop, finish the notification in hand only: the rest of the
            // batch stays stored and its locks go with the commit.
            if shared.stopping() && !(completed.is_empty() && failed == 0) {
                break;
            }
            let outcome = match prepared {
                Ok((mut event, context)) => process(conn, entry, row, &mut event, &context),
                Err(err) => Err(AttemptError::Handler(err)),
            };
            match outcome {
                Ok(()) => completed.push(row.id),
                Err(AttemptError::Handler(err)) => {
                    record_failure(shared, conn, row, &err)?;
                    failed += 1;
                }
                Err(AttemptError::Database(source)) => {
                    return Err(BatchError::Fatal(Error::Query {
                        what: "running handlers",
                        source,
                    }))
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
            last_id: claimed.iter().map(|row| row.id).max().unwrap_or(cursor),
            completed: completed.len() as u64,
            failed,
        })
    })
}

/// Validates one claimed notification's payload fields and builds its
/// context.
fn prepare(entry: &ChannelEntry, row: &mut Claimed) -> Prepared {
    let (id, channel) = (row.id, row.channel.clone());
    let name = |err: HandlerError| HandlerError {
        message: format!("notification {id} of channel `{channel}`: {}", err.message),
        ..err
    };
    let event = Event::validate(row.raw_event(), entry.def.is_trigger()).map_err(&name)?;
    let context = Context {
        channel: row.channel.clone(),
        data: parse_context(row.context.as_deref()).map_err(&name)?,
        notification_id: Some(row.id),
        created_at: Some(row.created_at),
        db_version: row.db_version.clone(),
        attempt: row.attempts + 1,
    };
    Ok((event, context))
}

/// Decodes the rows of a batch's notifications in one query, handing each
/// event its rows. When that query fails, each notification is decoded on
/// its own, and one that fails carries the error naming its column.
fn decode_stored(
    conn: &mut PgConnection,
    plan: Option<&std::result::Result<crate::decode::Plan, String>>,
    claimed: &[Claimed],
    prepared: &mut [Prepared],
) -> Result<(), BatchError> {
    let Some(Ok(plan)) = plan else {
        return Ok(());
    };
    if !plan.needs_rows() {
        return Ok(());
    }
    let index = positions(claimed, prepared);
    if index.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = claimed
        .iter()
        .map(|row| row.id)
        .filter(|id| index.contains_key(id))
        .collect();
    match conn.transaction(|conn| plan.decode(conn, Source::Stored(&ids))) {
        Ok(rows) => {
            distribute(rows, &index, prepared);
            Ok(())
        }
        Err(err) => {
            tracing::debug!(channel = plan.channel(), error = %error_chain(&err), "batch decode failed; decoding each notification");
            let subset: Vec<&Claimed> = claimed
                .iter()
                .filter(|row| index.contains_key(&row.id))
                .collect();
            decode_each(conn, plan, &subset, &index, prepared)
        }
    }
}

/// Decodes each of `claimed` on its own, under a savepoint; one that fails
/// carries a permanent error naming its column. When the channel's decode
/// query fails even on no notification at all, the fault is the channel's
/// (a missing table, an invalid `upgrade`, a timeout): nothing is recorded
/// and the batch stays stored.
fn decode_each(
    conn: &mut PgConnection,
    plan: &crate::decode::Plan,
    claimed: &[&Claimed],
    index: &HashMap<i64, usize>,
    prepared: &mut [Prepared],
) -> Result<(), BatchError> {
    let mut failures = Vec::new();
    for row in claimed {
        let single = [row.id];
        match conn.transaction(|conn| plan.decode(conn, Source::Stored(&single))) {
            Ok(rows) => distribute(rows, index, prepared),
            Err(err) => failures.push((row.id, err)),
        }
    }
    // A cancelled statement (statement_timeout, a cancel request) says
    // nothing about the payload: leave the batch for later.
    if let Some((_, err)) = failures.iter().find(|(_, err)| is_cancel(err)) {
        return Err(BatchError::Channel(format!(
            "its decode query was cancelled: {}",
            error_chain(err)
        )));
    }
    let database = failures
        .iter()
        .any(|(_, err)| matches!(err, diesel::result::Error::DatabaseError(..)));
    if database {
        if let Err(err) = plan.probe(conn) {
            return Err(BatchError::Channel(format!(
                "its decode query fails: {}",
                error_chain(&err)
            )));
        }
    }
    for (id, err) in failures {
        let message = plan.explain(conn, Source::Stored(&[id]), id, &err);
        if let Some(&position) = index.get(&id) {
            prepared[position] = Err(HandlerError::decode(message));
        }
    }
    Ok(())
}

/// True for PostgreSQL's "canceling statement due to …" (SQLSTATE 57014),
/// which Diesel reports without its code.
fn is_cancel(err: &diesel::result::Error) -> bool {
    matches!(err, diesel::result::Error::DatabaseError(_, info) if info.message().starts_with("canceling statement"))
}

/// Where each claimed notification that is still good sits in the batch.
fn positions(claimed: &[Claimed], prepared: &[Prepared]) -> HashMap<i64, usize> {
    claimed
        .iter()
        .enumerate()
        .filter(|(position, _)| prepared[*position].is_ok())
        .map(|(position, row)| (row.id, position))
        .collect()
}

/// A decoded row of a claim: notification, side, value (`None`: all NULL).
type ClaimDecoded = (i64, Side, Option<Box<dyn std::any::Any>>);

/// A claim-and-decode result as the claimed notifications, in claim order,
/// and their decoded rows.
fn group_claimed(rows: Vec<ClaimedRow>) -> (Vec<Claimed>, Vec<ClaimDecoded>) {
    let mut claimed: Vec<Claimed> = Vec::with_capacity(rows.len());
    let mut decoded = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.claimed.id;
        if claimed.last().map_or(true, |last| last.id != id) {
            claimed.push(row.claimed);
        }
        if let Some((side, value)) = row.row {
            decoded.push((id, side, value));
        }
    }
    (claimed, decoded)
}

fn distribute_one(
    index: &HashMap<i64, usize>,
    prepared: &mut [Prepared],
    id: i64,
    side: Side,
    row: Box<dyn std::any::Any>,
) {
    if let Some(Ok((event, _))) = index.get(&id).map(|&position| &mut prepared[position]) {
        event.push_row(side, row);
    }
}

fn distribute(
    rows: Vec<crate::decode::DecodedRow>,
    index: &HashMap<i64, usize>,
    prepared: &mut [Prepared],
) {
    for row in rows {
        distribute_one(index, prepared, row.key, row.side, row.row);
    }
}

fn process(
    conn: &mut PgConnection,
    entry: &ChannelEntry,
    row: &Claimed,
    event: &mut Event,
    context: &Context,
) -> Result<(), AttemptError> {
    let span = tracing::info_span!("notification", channel = %row.channel, id = row.id, attempt = row.attempts + 1);
    let _entered = span.enter();
    let ran = execute(conn, entry, event, context)?;
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
    let permanent = err.is_permanent();
    let wait = shared.config.retry.backoff(attempt);
    if permanent {
        tracing::error!(
            channel = %row.channel,
            id = row.id,
            attempt,
            error = %err,
            "notification cannot be processed by this code; kept stored with its error, not retried"
        );
    } else {
        tracing::warn!(
            channel = %row.channel,
            id = row.id,
            attempt,
            retry_in = ?wait,
            error = %err,
            "notification failed"
        );
    }
    diesel::sql_query(sql::NOTIFICATION_FAIL)
        .bind::<BigInt, _>(row.id)
        .bind::<Text, _>(err.to_string())
        .bind::<Double, _>(wait.as_secs_f64())
        .bind::<Bool, _>(permanent)
        .execute(conn)
        .map_err(Error::query("recording a failed notification"))?;
    Ok(())
}

/// The fields a worker reads from a broadcast payload.
fn raw_event(payload: &Payload<'_>) -> RawEvent {
    let is_object = |raw: Option<&serde_json::value::RawValue>| {
        raw.is_some_and(|raw| raw.get().trim_start().starts_with('{'))
    };
    RawEvent {
        op: payload.op.clone(),
        matched: payload.when.clone(),
        when_malformed: false,
        has_old: is_object(payload.old),
        has_new: is_object(payload.new),
        message: payload.message.map(|raw| raw.get().to_owned()),
    }
}

fn handle_broadcast(
    shared: &Shared,
    conn: &mut PgConnection,
    plans: &mut Plans,
    broadcast: Broadcast,
) -> Result<()> {
    let span = tracing::info_span!("notification", channel = %broadcast.channel);
    let _entered = span.enter();
    let Some(entry) = shared.entry(&broadcast.channel) else {
        return Ok(());
    };
    let stored = match serde_json::from_str::<Payload<'_>>(&broadcast.payload) {
        Ok(payload) => payload.pgpubsub_stored,
        Err(err) => {
            tracing::error!(error = %err, "broadcast payload cannot be read; dropped");
            shared.stats.failed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    };
    // Payloads too large for NOTIFY are stored and referenced by id; the
    // reference must name a stored broadcast of this very channel.
    let text = match stored {
        Some(id) => {
            let stored: Option<StoredPayload> = diesel::sql_query(sql::NOTIFICATION_PAYLOAD)
                .bind::<BigInt, _>(id)
                .bind::<Text, _>(&broadcast.channel)
                .get_results(conn)
                .map_err(Error::query("reading a stored broadcast payload"))?
                .pop();
            match stored {
                Some(stored) => stored.payload,
                None => {
                    tracing::error!(
                        id,
                        "stored broadcast payload is gone (or of another channel); dropped"
                    );
                    shared.stats.failed.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        None => broadcast.payload,
    };
    let texts = [text];
    // Built (and probed) outside the transaction, which a failing catalog
    // query would abort.
    let plan = plans.get(conn, entry);
    let outcome = conn.transaction(|conn| {
        let payload = serde_json::from_str::<Payload<'_>>(&texts[0]).map_err(|err| {
            AttemptError::Handler(HandlerError::decode(format!(
                "broadcast payload cannot be read: {err}"
            )))
        })?;
        let mut event = Event::validate(raw_event(&payload), entry.def.is_trigger())
            .map_err(AttemptError::Handler)?;
        let context = Context {
            channel: broadcast.channel.clone(),
            data: parse_context(payload.context.map(|raw| raw.get()))
                .map_err(AttemptError::Handler)?,
            notification_id: None,
            created_at: payload.created_at.as_deref().and_then(|text| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .ok()
                    .map(|at| at.with_timezone(&chrono::Utc))
            }),
            db_version: payload.db_version.clone(),
            attempt: 1,
        };
        if let Some(plan) = plan {
            let plan = plan.as_ref().map_err(|reason| {
                AttemptError::Handler(HandlerError::decode(format!(
                    "cannot decode rows of channel `{}`: {reason}",
                    entry.def.name
                )))
            })?;
            if plan.needs_rows() {
                let source = Source::Inline(&texts);
                match conn.transaction(|conn| plan.decode(conn, source)) {
                    Ok(rows) => {
                        for row in rows {
                            event.push_row(row.side, row.row);
                        }
                    }
                    Err(err) => {
                        return Err(AttemptError::Handler(HandlerError::decode(
                            plan.explain(conn, source, 1, &err),
                        )))
                    }
                }
            }
        }
        execute(conn, entry, &mut event, &context)
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
