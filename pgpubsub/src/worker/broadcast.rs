//! Broadcast notifications: every listener runs them once, at most, from
//! the stored payload their `NOTIFY` names; and the purge of old payloads.

use std::sync::atomic::Ordering;
use std::time::Duration;

use diesel::connection::Connection;
use diesel::sql_types::{BigInt, Double, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};

use super::batch::parse_context;
use crate::context::Context;
use crate::contract::payload::Payload;
use crate::contract::queries as sql;
use crate::decode::{Plans, Source};
use crate::error::{Error, Result};
use crate::event::{Event, HandlerError, RawEvent};
use crate::executor::{execute, AttemptError};
use crate::shared::{Broadcast, Shared};

#[derive(QueryableByName)]
struct StoredPayload {
    #[diesel(sql_type = Text)]
    payload: String,
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

pub(super) fn handle(
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
    // Every pgpubsub broadcast is stored and only its id is notified: the
    // id must name a stored broadcast of this very channel, seen once.
    let id = broadcast.id;
    if !shared.first_sight(id) {
        shared
            .stats
            .broadcasts_rejected
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(id, "broadcast notified again (a replayed NOTIFY): ignored");
        return Ok(());
    }
    let stored: Option<StoredPayload> = diesel::sql_query(sql::NOTIFICATION_PAYLOAD)
        .bind::<BigInt, _>(id)
        .bind::<Text, _>(&broadcast.channel)
        .bind::<Text, _>(&shared.start_snapshot)
        .get_results(conn)
        .map_err(Error::query("reading a stored broadcast payload"))?
        .pop();
    let text = match stored {
        Some(stored) => stored.payload,
        None => {
            shared
                .stats
                .broadcasts_rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                id,
                "NOTIFY names no stored broadcast of this channel (forged, of another channel, or purged): ignored"
            );
            return Ok(());
        }
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
const RETENTION: Duration = Duration::from_secs(3600);

/// Worker 0 removes expired broadcast payloads this often.
pub(super) const PURGE_EVERY: Duration = Duration::from_secs(60);

pub(super) fn purge(conn: &mut PgConnection) -> Result<()> {
    let purged = diesel::sql_query(sql::BROADCAST_PURGE)
        .bind::<Double, _>(RETENTION.as_secs_f64())
        .execute(conn)
        .map_err(Error::query("purging stored broadcast payloads"))?;
    if purged > 0 {
        tracing::debug!(purged, "expired broadcast payloads removed");
    }
    Ok(())
}
