//! One lockable channel's batch: a short transaction leases it (the
//! attempt is counted before any handler runs), then the handlers and the
//! removal commit together in a second one, cut by handler time.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use diesel::connection::Connection;
use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Nullable, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use serde_json::Value;

use crate::context::Context;
use crate::contract::queries as sql;
use crate::decode::{error_chain, ClaimArgs, Claimed, ClaimedRow, Plans, Side, Source};
use crate::error::{Error, Result};
use crate::event::{Event, HandlerError};
use crate::executor::{execute, AttemptError};
use crate::registry::ChannelEntry;
use crate::shared::Shared;

/// The longest error text kept in `last_error` (and logged): a handler
/// error that quotes a 1 MB value is cut, its length noted.
pub(crate) const ERROR_LIMIT: usize = 4096;

/// What one lease and its transactions did.
pub(super) struct Done {
    /// Notifications leased (dead ones included).
    pub(super) leased: usize,
    /// The highest id leased: the worker's cursor.
    pub(super) last_id: i64,
    pub(super) completed: u64,
    pub(super) failed: u64,
    pub(super) dead: u64,
    /// When a transaction was cut by handler time: how many notifications
    /// fitted in it (the next lease takes about that many).
    pub(super) fitted: Option<i64>,
    /// The chain of leases ended with one that found nothing: the channel
    /// had nothing more after the cursor as of that lease.
    pub(super) drained: bool,
}

impl Done {
    fn empty(cursor: i64) -> Done {
        Done {
            leased: 0,
            last_id: cursor,
            completed: 0,
            failed: 0,
            dead: 0,
            fitted: None,
            drained: false,
        }
    }
}

/// What a lease returns: one row, with the lease and its notifications'
/// ids, and the ones made dead instead (out of attempts) with their
/// attempts so far.
#[derive(QueryableByName, Default)]
struct Lease {
    #[diesel(sql_type = Nullable<BigInt>)]
    lease: Option<i64>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    ids: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    dead: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<Integer>>)]
    dead_attempts: Option<Vec<i32>>,
}

impl Lease {
    /// The one row a lease statement returns.
    fn one(mut rows: Vec<Lease>) -> Lease {
        rows.pop().unwrap_or_default()
    }

    fn live(&self) -> &[i64] {
        self.ids.as_deref().unwrap_or_default()
    }

    fn dead(&self) -> &[i64] {
        self.dead.as_deref().unwrap_or_default()
    }

    /// It found nothing: neither live nor dead notifications.
    fn is_empty(&self) -> bool {
        self.live().is_empty() && self.dead().is_empty()
    }
}

/// A lease's notifications still to run, ids ascending.
#[derive(Default)]
struct Pending {
    /// The lease row that reserves them.
    lease: i64,
    ids: Vec<i64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn args(&self) -> ClaimArgs<'_> {
        ClaimArgs {
            lease: self.lease,
            ids: &self.ids,
        }
    }

    /// Keeps the notifications after position `ran`.
    fn drop_first(&mut self, ran: usize) {
        self.ids.drain(..ran.min(self.ids.len()));
    }
}

/// Leases a batch of `channel` after id `cursor` and runs it.
pub(super) fn claim(
    shared: &Shared,
    conn: &mut PgConnection,
    plans: &mut Plans,
    channel: &str,
    cursor: i64,
    limit: i64,
) -> Result<Done> {
    let Some(entry) = shared.entry(channel) else {
        return Err(Error::UnknownChannel {
            name: channel.to_owned(),
            known: Vec::new(),
        });
    };
    // A channel whose decode plan does not work is left alone (the reason
    // was logged when the plan was built); its notifications stay stored.
    if let Some(Err(_)) = plans.get(conn, entry) {
        return Ok(Done::empty(cursor));
    }
    let max_attempts = i32::try_from(shared.max_attempts(entry)).unwrap_or(i32::MAX);
    let terms = LeaseTerms {
        channel,
        limit,
        max_attempts,
    };
    let leased = diesel::sql_query(sql::NOTIFICATION_LEASE.as_str())
        .bind::<Text, _>(channel)
        .bind::<Nullable<Text>, _>(shared.skip_committed_before.as_deref())
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(cursor)
        .bind::<Double, _>(shared.config.lease.as_secs_f64())
        .bind::<Integer, _>(max_attempts)
        .load(conn)
        .map(Lease::one)
        .map_err(Error::query("leasing notifications"))?;
    let counter = if leased.is_empty() {
        &shared.stats.leases_empty
    } else {
        &shared.stats.leases_alone
    };
    counter.fetch_add(1, Ordering::Relaxed);
    // A full lease: there is likely more, so bring in another worker.
    if i64::try_from(leased.live().len()).unwrap_or(i64::MAX) >= limit {
        shared.wake_another();
    }
    let started = Instant::now();
    let mut done = Done::empty(cursor);
    let mut next = Some(leased);
    while let Some(leased) = next.take() {
        // A lease short of the limit is not always the end of the backlog:
        // rows another worker leased at the same moment are dropped from it.
        // So any lease that found live rows chains the next one; the chain
        // ends with a lease that finds nothing.
        let found = !leased.live().is_empty();
        done.leased += leased.live().len() + leased.dead().len();
        done.last_id = leased
            .live()
            .iter()
            .chain(leased.dead())
            .copied()
            .max()
            .unwrap_or(done.last_id);
        let attempts = leased.dead_attempts.as_deref().unwrap_or_default();
        for (at, id) in leased.dead().iter().enumerate() {
            done.dead += 1;
            tracing::error!(
                channel,
                id,
                attempts = attempts.get(at).copied().unwrap_or_default(),
                "notification is dead: out of attempts (its last attempt did not finish: the process or its session died); kept with its error, see `dead list`"
            );
        }
        let mut pending = Pending::default();
        if let (Some(lease), Some(ids)) = (leased.lease, leased.ids) {
            pending.lease = lease;
            pending.ids = ids;
        }
        while !pending.is_empty() {
            if shared.stopping() {
                release(conn, &pending)?;
                break;
            }
            // A batch leases the next one in the transaction that
            // settles it (one commit per batch while a backlog lasts), for
            // up to `batch_time`, and not while broadcasts wait.
            let chain = (found
                && started.elapsed() < shared.config.batch_time
                && shared.wake_state().broadcasts.is_empty())
            .then_some(Chain {
                terms: &terms,
                cursor: done.last_id,
            });
            let mut outcome = run_leased(shared, conn, plans, entry, &pending, false, chain);
            if matches!(outcome, Err(BatchError::Careful)) {
                shared.stats.careful_claims.fetch_add(1, Ordering::Relaxed);
                outcome = run_leased(shared, conn, plans, entry, &pending, true, chain);
            }
            match outcome {
                Ok(part) => {
                    done.completed += part.completed.len() as u64;
                    done.failed += part.failed;
                    done.dead += part.dead;
                    pending.drop_first(part.ran);
                    if part.cut && !pending.is_empty() {
                        // Their lease was renewed inside that transaction.
                        shared.stats.batches_cut.fetch_add(1, Ordering::Relaxed);
                        done.fitted = Some(i64::try_from(part.ran).unwrap_or(i64::MAX));
                    }
                    done.drained = part.next.as_ref().is_some_and(Lease::is_empty);
                    next = part.next.filter(|lease| !lease.is_empty());
                    if part.ran == 0 {
                        // Stopping before the first: give the rest back.
                        release(conn, &pending)?;
                        break;
                    }
                }
                // A failed connection: the leases run out and the
                // notifications are claimed again with this attempt counted.
                Err(BatchError::Fatal(err)) => return Err(err),
                // The careful path never asks for itself again.
                Err(BatchError::Careful) => {
                    release(conn, &pending)?;
                    break;
                }
                Err(BatchError::Channel(reason)) => {
                    plans.broken(entry.def.name, reason);
                    release(conn, &pending)?;
                    break;
                }
                // Settled already; Diesel's view of the connection's
                // transaction no longer matches the server's: start over.
                Err(BatchError::Ended { offender, .. }) => {
                    return Err(Error::Worker {
                        worker: 0,
                        message: format!(
                            "a handler ended the listener's transaction while handling notification {offender}; reconnecting"
                        ),
                    })
                }
            }
        }
    }
    Ok(done)
}

/// What a lease asks for: reused by the leases chained after the first.
struct LeaseTerms<'a> {
    channel: &'a str,
    limit: i64,
    max_attempts: i32,
}

/// The next lease, taken in the transaction that settles the current one.
#[derive(Clone, Copy)]
struct Chain<'a> {
    terms: &'a LeaseTerms<'a>,
    /// The highest id leased so far.
    cursor: i64,
}

/// Ends the lease of notifications no handler ran: they are available
/// again at once, their attempt uncounted.
fn release(conn: &mut PgConnection, pending: &Pending) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    diesel::sql_query(sql::NOTIFICATION_RELEASE)
        .bind::<BigInt, _>(pending.lease)
        .execute(conn)
        .map_err(Error::query("releasing leased notifications"))?;
    Ok(())
}

/// Renews the lease of notifications still waiting behind slow handlers
/// (in the transaction that holds the lease's lock), for them alone.
fn extend(shared: &Shared, conn: &mut PgConnection, lease: i64, rest: &[i64]) -> Result<()> {
    diesel::sql_query(sql::NOTIFICATION_EXTEND)
        .bind::<BigInt, _>(lease)
        .bind::<Array<BigInt>, _>(rest)
        .bind::<Double, _>(shared.config.lease.as_secs_f64())
        .execute(conn)
        .map_err(Error::query("renewing leases"))?;
    Ok(())
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
    /// A handler ended the transaction (`COMMIT`/`ROLLBACK`): settled
    /// outside it, then the worker starts over on a new connection.
    Ended {
        offender: i64,
    },
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

/// What one committed transaction of a batch did.
struct Part {
    /// How many of the pending notifications it settled (ran, failed, or
    /// found gone): the rest run in the next transaction.
    ran: usize,
    completed: Vec<i64>,
    failed: u64,
    dead: u64,
    /// It stopped at `batch_time`.
    cut: bool,
    /// The next lease, committed with this transaction (see [`Chain`]),
    /// when one was taken (it may have found nothing).
    next: Option<Lease>,
}

/// One claimed notification, ready for its handlers or failed already.
type Prepared = Result<(Event, Context), HandlerError>;

/// Locks the leased notifications, decodes their rows, runs their handlers
/// until `batch_time` of handler work, records failures, removes the handled
/// ones, and commits.
fn run_leased(
    shared: &Shared,
    conn: &mut PgConnection,
    plans: &mut Plans,
    entry: &ChannelEntry,
    pending: &Pending,
    careful: bool,
    chain: Option<Chain<'_>>,
) -> Result<Part, BatchError> {
    let plan = plans.get(conn, entry);
    // Trigger channels whose handlers take rows claim and decode in one
    // query; when that fails, the batch is claimed again and decoded under
    // savepoints, one notification at a time if need be.
    let fast = match plan {
        Some(Ok(plan)) if plan.needs_rows() && !careful => Some(plan),
        _ => None,
    };
    let args = pending.args();
    conn.transaction(|conn| {
        // A handler that takes the connection could end this transaction
        // (`COMMIT`, `ROLLBACK`): its id tells afterwards what happened.
        let xid = if entry.uses_conn() {
            Some(
                diesel::sql_query(sql::TRANSACTION_ID)
                    .get_result::<TransactionId>(conn)
                    .map_err(Error::query("reading the transaction's id"))?
                    .xid,
            )
        } else {
            None
        };
        let (mut claimed, decoded) = match fast {
            Some(plan) => match plan.claim(conn, args) {
                Ok(rows) => {
                    let (claimed, decoded) = group_claimed(rows);
                    (claimed, Some(decoded))
                }
                Err(err) => {
                    tracing::debug!(channel = entry.def.name, error = %error_chain(&err), "claim with decode failed; claiming again under savepoints");
                    return Err(BatchError::Careful);
                }
            },
            None => {
                let claimed: Vec<Claimed> = diesel::sql_query(sql::NOTIFICATION_LEASED.as_str())
                    .bind::<BigInt, _>(args.lease)
                    .bind::<Array<BigInt>, _>(args.ids)
                    .load(conn)
                    .map_err(Error::query("claiming leased notifications"))?;
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
        let started = Instant::now();
        let mut part = Part {
            ran: 0,
            completed: Vec::with_capacity(claimed.len()),
            failed: 0,
            dead: 0,
            cut: false,
            next: None,
        };
        let mut settled: Vec<i64> = Vec::with_capacity(claimed.len());
        for (row, prepared) in claimed.iter().zip(prepared) {
            if !settled.is_empty() {
                // On stop, finish the notification in hand only; past
                // `batch_time`, commit what ran and go on in a new
                // transaction.
                if shared.stopping() {
                    break;
                }
                if started.elapsed() >= shared.config.batch_time {
                    part.cut = true;
                    break;
                }
            }
            let outcome = match prepared {
                Ok((mut event, context)) => process(conn, entry, row, &mut event, &context),
                Err(err) => Err(AttemptError::Handler(err)),
            };
            if let (Err(_), Some(xid)) = (&outcome, &xid) {
                if let Some(status) = transaction_ended(conn, xid) {
                    // Outside any transaction now: settle here, each
                    // statement committing on its own.
                    settle_ended(shared, conn, entry, pending, &status, row.id, &part.completed)?;
                    return Err(BatchError::Ended { offender: row.id });
                }
            }
            match outcome {
                Ok(()) => part.completed.push(row.id),
                Err(AttemptError::Handler(err)) => {
                    if record_failure(shared, conn, entry, row, &err)? {
                        part.dead += 1;
                    }
                    part.failed += 1;
                }
                Err(AttemptError::Database(source)) => {
                    return Err(BatchError::Fatal(Error::Query {
                        what: "running handlers",
                        source,
                    }))
                }
            }
            settled.push(row.id);
        }
        // Settled: the ones handled or failed, and every pending one before
        // the last of them that the claim did not return (gone, or leased
        // again by another worker).
        let last = settled.last().copied();
        part.ran = match last {
            Some(last) => pending.ids.iter().take_while(|id| **id <= last).count(),
            None if claimed.is_empty() => pending.ids.len(),
            None => 0,
        };
        let rest = &pending.ids[part.ran.min(pending.ids.len())..];
        match (rest.is_empty(), chain) {
            // Settled: its lease ends, and the next begins, with this
            // transaction.
            (true, Some(chain)) => {
                let next = diesel::sql_query(sql::NOTIFICATION_LEASE_NEXT.as_str())
                    .bind::<Array<BigInt>, _>(&part.completed)
                    .bind::<BigInt, _>(pending.lease)
                    .bind::<Text, _>(chain.terms.channel)
                    .bind::<Nullable<Text>, _>(shared.skip_committed_before.as_deref())
                    .bind::<BigInt, _>(chain.terms.limit)
                    .bind::<BigInt, _>(chain.cursor)
                    .bind::<Double, _>(shared.config.lease.as_secs_f64())
                    .bind::<Integer, _>(chain.terms.max_attempts)
                    .load(conn)
                    .map(Lease::one)
                    .map_err(Error::query("completing notifications and leasing the next"))?;
                let counter = if next.is_empty() {
                    &shared.stats.leases_empty
                } else {
                    &shared.stats.leases_chained
                };
                counter.fetch_add(1, Ordering::Relaxed);
                part.next = Some(next);
            }
            // Settled: its lease ends with this transaction.
            (true, None) => {
                diesel::sql_query(sql::NOTIFICATION_COMPLETE_LEASE)
                    .bind::<Array<BigInt>, _>(&part.completed)
                    .bind::<BigInt, _>(pending.lease)
                    .execute(conn)
                    .map_err(Error::query("completing notifications"))?;
            }
            // The rest waits for the next transaction: renew its lease
            // while this one still holds the lease's lock, so it is never
            // unlocked with a deadline that passed behind slow handlers.
            (false, _) => {
                if !part.completed.is_empty() {
                    diesel::sql_query(sql::NOTIFICATION_COMPLETE)
                        .bind::<Array<BigInt>, _>(&part.completed)
                        .execute(conn)
                        .map_err(Error::query("completing notifications"))?;
                }
                extend(shared, conn, pending.lease, rest)?;
            }
        }
        Ok(part)
    })
}

#[derive(QueryableByName)]
struct TransactionId {
    #[diesel(sql_type = Text)]
    xid: String,
}

#[derive(QueryableByName)]
struct TransactionStatus {
    #[diesel(sql_type = Nullable<Text>)]
    status: Option<String>,
}

/// After a handler failed: `Some(status)` of the batch's transaction
/// (`committed`, `aborted`) when the handler ended it, `None` while it is
/// still open (or when that cannot be read).
fn transaction_ended(conn: &mut PgConnection, xid: &str) -> Option<String> {
    diesel::sql_query(sql::TRANSACTION_ENDED)
        .bind::<Text, _>(xid)
        .get_result::<TransactionStatus>(conn)
        .ok()
        .and_then(|row| row.status)
}

/// A handler ended the batch's transaction: the connection is outside any
/// transaction now, so each statement here commits on its own. When the
/// handler committed, the notifications handled before it had their writes
/// committed: they are removed. The offender is dead (running it again would
/// commit its writes again); the rest of the batch is given back.
fn settle_ended(
    shared: &Shared,
    conn: &mut PgConnection,
    entry: &ChannelEntry,
    pending: &Pending,
    status: &str,
    offender: i64,
    completed: &[i64],
) -> Result<()> {
    let committed = status == "committed";
    let how = if committed { "COMMIT" } else { "ROLLBACK" };
    let message = format!(
        "a handler of channel `{}` ended the listener's transaction ({how}) while handling notification {offender}: \
         handlers must not commit or roll back the connection they are given (use `conn.transaction(...)` for a savepoint); \
         {} — not retried",
        entry.def.name,
        if committed {
            "its writes were committed, and so were those of the notifications handled before it in the batch"
        } else {
            "its writes were rolled back, and so were those of the notifications handled before it in the batch"
        }
    );
    tracing::error!(channel = entry.def.name, id = offender, "{message}");
    if committed && !completed.is_empty() {
        diesel::sql_query(sql::NOTIFICATION_COMPLETE)
            .bind::<Array<BigInt>, _>(completed)
            .execute(conn)
            .map_err(Error::query("completing notifications"))?;
    }
    diesel::sql_query(sql::NOTIFICATION_FAIL)
        .bind::<BigInt, _>(offender)
        .bind::<Text, _>(truncate_error(&message))
        .bind::<Double, _>(0.0)
        .bind::<Bool, _>(true)
        .execute(conn)
        .map_err(Error::query("recording a failed notification"))?;
    shared.stats.dead.fetch_add(1, Ordering::Relaxed);
    // The rest of the batch is given back with the lease.
    release(conn, pending)
}

/// Reads a payload's context JSON; `{}` when it has none.
pub(super) fn parse_context(text: Option<&str>) -> Result<Value, HandlerError> {
    match text {
        None => Ok(Value::Object(serde_json::Map::new())),
        Some(text) => serde_json::from_str(text).map_err(|err| {
            HandlerError::decode(format!(
                "malformed payload: its `context` cannot be read: {err}"
            ))
        }),
    }
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
        attempt: row.attempts,
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
    let span = tracing::info_span!("notification", channel = %row.channel, id = row.id, attempt = row.attempts);
    let _entered = span.enter();
    let ran = execute(conn, entry, event, context)?;
    tracing::debug!(handlers = ran, "notification handled");
    Ok(())
}

/// Records the failed attempt of `row`; returns true when it is dead now:
/// out of attempts, or a permanent error (a payload this code cannot
/// decode). The error text is cut at [`ERROR_LIMIT`].
fn record_failure(
    shared: &Shared,
    conn: &mut PgConnection,
    entry: &ChannelEntry,
    row: &Claimed,
    err: &HandlerError,
) -> Result<bool> {
    let attempt = row.attempts;
    let max_attempts = shared.max_attempts(entry);
    let permanent = err.is_permanent();
    let dead = permanent || u32::try_from(attempt).unwrap_or(0) >= max_attempts;
    let wait = shared.config.retry.backoff(attempt);
    let text = truncate_error(&err.to_string());
    if dead {
        let why = if permanent {
            "it cannot be processed by this code"
        } else {
            "it is out of attempts"
        };
        tracing::error!(
            channel = %row.channel,
            id = row.id,
            attempt,
            max_attempts,
            error = %text,
            "notification is dead ({why}): kept with its error, not retried; see `dead list`"
        );
    } else {
        tracing::warn!(
            channel = %row.channel,
            id = row.id,
            attempt,
            max_attempts,
            retry_in = ?wait,
            error = %text,
            "notification failed"
        );
    }
    diesel::sql_query(sql::NOTIFICATION_FAIL)
        .bind::<BigInt, _>(row.id)
        .bind::<Text, _>(&text)
        .bind::<Double, _>(wait.as_secs_f64())
        .bind::<Bool, _>(dead)
        .execute(conn)
        .map_err(Error::query("recording a failed notification"))?;
    Ok(dead)
}

/// `text`, cut to [`ERROR_LIMIT`] bytes (at a character boundary) with its
/// original length noted.
pub(crate) fn truncate_error(text: &str) -> String {
    if text.len() <= ERROR_LIMIT {
        return text.to_owned();
    }
    let mut end = ERROR_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [cut: the error had {} bytes]",
        &text[..end],
        text.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_with_their_length() {
        assert_eq!(truncate_error("short"), "short");
        let long = "é".repeat(5000);
        let cut = truncate_error(&long);
        assert!(cut.len() < ERROR_LIMIT + 64, "{}", cut.len());
        assert!(cut.ends_with("[cut: the error had 10000 bytes]"), "{cut}");
    }
}
