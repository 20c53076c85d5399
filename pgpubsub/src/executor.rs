//! Runs the handlers of one notification, catching errors and panics.

use std::panic::{catch_unwind, AssertUnwindSafe};

use diesel::connection::Connection;
use diesel::PgConnection;

use crate::context::Context;
use crate::event::{Event, HandlerError, Invocation};
use crate::registry::ChannelEntry;

/// Why one notification's handlers did not all complete.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// A handler failed (or the payload did not decode); the notification is
    /// recorded as failed and the others go on.
    Handler(HandlerError),
    /// The connection failed outside any handler: the batch is abandoned.
    Database(diesel::result::Error),
}

impl From<diesel::result::Error> for AttemptError {
    fn from(err: diesel::result::Error) -> Self {
        AttemptError::Database(err)
    }
}

/// Runs every handler of `entry` that accepts `event`, in order, stopping at
/// the first failure.
///
/// When a handler of the channel takes the connection, the handlers run in a
/// savepoint, so a failure undoes their writes and leaves the surrounding
/// transaction usable.
pub(crate) fn execute(
    conn: &mut PgConnection,
    entry: &ChannelEntry,
    event: &mut Event,
    context: &Context,
) -> Result<usize, AttemptError> {
    if !entry.uses_conn() {
        return run_handlers(conn, entry, event, context).map_err(AttemptError::Handler);
    }
    let outcome = conn.transaction(|conn| {
        run_handlers(conn, entry, event, context).map_err(AttemptError::Handler)
    });
    match outcome {
        // A statement of the handler's left its savepoint unreleasable; the
        // savepoint was rolled back, so only this notification failed.
        Err(AttemptError::Database(err)) if !conn_is_broken(&err) => {
            Err(AttemptError::Handler(HandlerError::failed(format!(
                "database error in the handler's transaction: {err}"
            ))))
        }
        other => other,
    }
}

fn conn_is_broken(err: &diesel::result::Error) -> bool {
    matches!(
        err,
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            _
        ) | diesel::result::Error::BrokenTransactionManager
    )
}

fn run_handlers(
    conn: &mut PgConnection,
    entry: &ChannelEntry,
    event: &mut Event,
    context: &Context,
) -> Result<usize, HandlerError> {
    let op = event.ops();
    let mut ran = 0;
    for handler in &entry.handlers {
        if !handler.accepts(op, event.matched()) {
            continue;
        }
        let _span = tracing::debug_span!("handler", name = handler.name).entered();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            (handler.call)(Invocation::new(conn, context, &mut *event))
        }));
        match outcome {
            Ok(Ok(())) => ran += 1,
            Ok(Err(err)) => {
                return Err(HandlerError {
                    kind: err.kind,
                    message: format!("{}: {}", handler.name, err.message),
                })
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".to_owned());
                return Err(HandlerError::panicked(format!(
                    "{}: {message}",
                    handler.name
                )));
            }
        }
    }
    Ok(ran)
}
