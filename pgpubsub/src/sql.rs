//! Every SQL statement the runtime sends, named after what it does.
//! The tables and functions they use are created by the migrations that
//! `pgpubsub-diesel` writes (see ARCHITECTURE.md, "The SQL protocol").

/// Claims up to `$3` available notifications of channel `$1` with ids above
/// `$4` (the worker's cursor), oldest first, skipping rows other workers
/// hold. `$2`, when not NULL, is the snapshot taken when a listener without
/// recovery started: rows committed before it (visible in it) are left alone.
/// The query lives in the SQL function (see `pgpubsub-diesel`'s schema) so it
/// can pin its plan to the ordered index scan.
pub(crate) const NOTIFICATION_CLAIM: &str = "\
SELECT id, channel, payload, created_at, db_version, attempts \
FROM pgpubsub_notification_claim($1, $2, $3, $4)";

/// Removes handled notifications `$1` (in the claiming transaction).
pub(crate) const NOTIFICATION_COMPLETE: &str =
    "DELETE FROM pgpubsub_notification WHERE id = ANY($1)";

/// Records a failed attempt of notification `$1` with error `$2`; it becomes
/// available again after `$3` seconds.
pub(crate) const NOTIFICATION_FAIL: &str = "\
UPDATE pgpubsub_notification \
SET attempts = attempts + 1, last_error = $2, failed_at = now(), \
    available_at = now() + make_interval(secs => $3) \
WHERE id = $1";

/// The transactions committed now, for listeners started without recovery.
pub(crate) const SNAPSHOT_CURRENT: &str = "SELECT pg_current_snapshot()::text AS snapshot";

/// True when pgpubsub's own schema is installed.
pub(crate) const SCHEMA_INSTALLED: &str = "\
SELECT to_regclass('pgpubsub_notification') IS NOT NULL \
   AND to_regprocedure('pgpubsub_notification_send(text, boolean, jsonb)') IS NOT NULL \
   AND to_regprocedure('pgpubsub_notification_claim(text, text, bigint, bigint)') IS NOT NULL AS ok";

/// The names of the triggers `$1` that exist.
pub(crate) const TRIGGERS_PRESENT: &str =
    "SELECT tgname::text AS name FROM pg_trigger WHERE tgname = ANY($1) AND NOT tgisinternal";

/// Reads a stored broadcast payload `$1` (too large for NOTIFY).
pub(crate) const NOTIFICATION_PAYLOAD: &str =
    "SELECT payload FROM pgpubsub_notification WHERE id = $1 AND broadcast";

/// Removes stored broadcast payloads older than `$1` seconds.
pub(crate) const BROADCAST_PURGE: &str = "\
DELETE FROM pgpubsub_notification \
WHERE broadcast AND created_at < now() - make_interval(secs => $1)";

/// Sends a notification: stored and woken (`$2` true) or broadcast.
pub(crate) const NOTIFICATION_SEND: &str = "SELECT pgpubsub_notification_send($1, $2, $3)";

/// Reads the notification context of this session or transaction.
pub(crate) const CONTEXT_GET: &str = "SELECT current_setting('pgpubsub.context', true) AS value";

/// Sets the notification context: `$1` the JSON text, `$2` true for the
/// current transaction only.
pub(crate) const CONTEXT_SET: &str = "SELECT set_config('pgpubsub.context', $1, $2)";

/// Quotes a PostgreSQL identifier (`LISTEN` takes no bind parameters).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("media"), "\"media\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
