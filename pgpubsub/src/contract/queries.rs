//! Every SQL statement the runtime sends, named after what it does. Bind
//! parameters only; the tables and functions they use are created by the
//! schema steps (see ARCHITECTURE.md, "The SQL protocol").
//!
//! The payload is never loaded whole: the claim reads the few fields the
//! worker needs as text, and rows are decoded by the decoder (`decode.rs`) through
//! `jsonb_populate_record`, so a payload no client-side JSON parser accepts
//! cannot fail a claim.

use std::sync::LazyLock;

/// The fields a claim returns per notification, from the claimed row
/// `row`: its metadata and the payload's fields as text, never the payload:
/// `op`, the `when` list (NULL when absent, `when_malformed` when not an
/// array), whether `old`/`new` are objects, the message and context JSON
/// text. The order is `decode::Claimed`'s. A trigger channel reads no
/// message, and one without `when` conditions no `when`.
pub(crate) fn claim_fields(row: &str, trigger: bool, conditions: bool) -> String {
    let when = if conditions || !trigger {
        format!(
            "CASE WHEN jsonb_typeof({row}.payload -> 'when') = 'array' \
             THEN ARRAY(SELECT jsonb_array_elements_text({row}.payload -> 'when')) END AS matched, \
             COALESCE({row}.payload ? 'when' AND jsonb_typeof({row}.payload -> 'when') <> 'array', false) AS when_malformed"
        )
    } else {
        "NULL::text[] AS matched, false AS when_malformed".to_owned()
    };
    let message = if trigger {
        "NULL::text AS message".to_owned()
    } else {
        format!("({row}.payload -> 'message')::text AS message")
    };
    format!(
        "{row}.id, {row}.channel, {row}.created_at, {row}.db_version, {row}.attempts, \
         {row}.payload ->> 'op' AS op, {when}, \
         COALESCE(jsonb_typeof({row}.payload -> 'old') = 'object', false) AS has_old, \
         COALESCE(jsonb_typeof({row}.payload -> 'new') = 'object', false) AS has_new, \
         {message}, ({row}.payload -> 'context')::text AS context"
    )
}

/// Leases up to `$3` available notifications of channel `$1` with ids above
/// `$4` (the worker's cursor), oldest first, that no lease holds, for `$5`
/// seconds; `$6` is the channel's attempt limit (a notification out of
/// attempts is made dead instead). `$2`, when not NULL, is the snapshot
/// taken when a listener without recovery started: rows committed before
/// it are left alone. First, leases of the channel that ran out unheld are
/// reaped. Returns one row: `lease` and its `ids` (ascending; NULL when
/// nothing was leased), and the ids made `dead` with their `dead_attempts`.
///
/// The lease commits on its own, asynchronously (`synchronous_commit` off
/// for this one implicit transaction): it costs no WAL flush, and a server
/// crash can only lose a lease whose handlers had not committed either.
pub(crate) static NOTIFICATION_LEASE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT l.lease, l.ids, l.dead, l.dead_attempts, set_config('synchronous_commit', 'off', true) AS async \
         FROM {}(NULL, NULL, true, $1, $2, $3, $4, $5, $6) AS l",
        super::names::NOTIFICATION_LEASE_BATCH_FN
    )
});

/// Removes handled notifications `$1` and their lease `$2`, then leases the
/// next batch as [`NOTIFICATION_LEASE`] does with `$3`–`$8`, without
/// reaping (the chain's first lease did), in the transaction that ran them:
/// the next lease commits with their work, and synchronously, as that work
/// does.
pub(crate) static NOTIFICATION_LEASE_NEXT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT l.lease, l.ids, l.dead, l.dead_attempts \
         FROM {}($1, $2, false, $3, $4, $5, $6, $7, $8) AS l",
        super::names::NOTIFICATION_LEASE_BATCH_FN
    )
});

/// The notifications of a lease, for the transaction that runs their
/// handlers, as a subquery: `LEASE_CLAIM[0]`, the lease's ids (ascending),
/// `LEASE_CLAIM[1]`, the ids again, … and the lease before the last piece
/// (see [`LEASE_CLAIM_BINDS`]). It locks the lease row (an `InitPlan`, run
/// once: a lease being reaped is waited for, and then yields nothing), and
/// returns the notifications the lease row names that are still there and
/// not dead, ids ascending, with the claim's columns and `attempts`
/// counting the attempt about to run. The first and last id bound a range
/// scan of the primary key; membership in the lease is a hashed lookup
/// (`IS TRUE` keeps the `IN` a filter rather than a join), not a search of
/// the array per row.
pub(crate) const LEASE_CLAIM: [&str; 5] = [
    "(SELECT n.id, n.channel, n.payload, n.created_at, n.db_version, n.attempts + 1 AS attempts \
     FROM pgpubsub_notification AS n \
     WHERE n.id BETWEEN (",
    "::bigint[])[1] AND (",
    "::bigint[])[cardinality(",
    "::bigint[])] AND n.dead_at IS NULL \
       AND ((n.id + 0) IN (SELECT x.id FROM unnest((SELECT l.ids FROM pgpubsub_notification_leases AS l WHERE l.id = ",
    " FOR UPDATE)) AS x(id))) IS TRUE \
     ORDER BY n.id)",
];

/// What goes between the pieces of [`LEASE_CLAIM`]: `true` for the ids,
/// `false` for the lease.
pub(crate) const LEASE_CLAIM_BINDS: [bool; 4] = [true, true, true, false];

/// [`LEASE_CLAIM`] with lease `$1` and ids `$2`, returning the claim fields
/// (see [`claim_fields`]). Trigger channels whose handlers take rows claim
/// and decode in one query instead (`decode::Plan`).
pub(crate) static NOTIFICATION_LEASED: LazyLock<String> = LazyLock::new(|| {
    let mut source = String::from(LEASE_CLAIM[0]);
    for (ids, piece) in LEASE_CLAIM_BINDS.iter().zip(&LEASE_CLAIM[1..]) {
        source.push_str(if *ids { "$2" } else { "$1" });
        source.push_str(piece);
    }
    format!(
        "SELECT {} FROM {source} AS c",
        claim_fields("c", false, true)
    )
});

/// Removes handled notifications `$1` (in the transaction that ran them).
pub(crate) const NOTIFICATION_COMPLETE: &str =
    "DELETE FROM pgpubsub_notification WHERE id = ANY($1)";

/// Removes handled notifications `$1` and their lease `$2`, whose batch is
/// settled (in the transaction that ran them).
pub(crate) const NOTIFICATION_COMPLETE_LEASE: &str = "\
WITH done AS (DELETE FROM pgpubsub_notification WHERE id = ANY($1)) \
DELETE FROM pgpubsub_notification_leases WHERE id = $2";

/// Records the failed attempt of notification `$1` with error `$2`: the
/// attempt is counted and it becomes available again after `$3` seconds,
/// or, with `$4` true (out of attempts, or a permanent error such as a
/// payload that cannot decode), is dead: kept with its error, never
/// claimed, until someone retries it.
pub(crate) const NOTIFICATION_FAIL: &str = "\
UPDATE pgpubsub_notification \
SET attempts = attempts + 1, last_error = $2, failed_at = now(), interrupted_at = NULL, \
    dead_at = CASE WHEN $4 THEN now() END, \
    available_at = CASE WHEN $4 THEN 'infinity'::timestamptz \
                        ELSE clock_timestamp() + make_interval(secs => $3) END \
WHERE id = $1";

/// Ends lease `$1`: its notifications no handler ran are available again at
/// once, their attempt uncounted.
pub(crate) const NOTIFICATION_RELEASE: &str =
    "DELETE FROM pgpubsub_notification_leases WHERE id = $1";

/// Renews lease `$1` for the notifications `$2` still to run, `$3` seconds
/// from now (the clock, not the transaction's start: it runs at the end of
/// a long transaction): a batch cut by handler time keeps the rest
/// reserved.
pub(crate) const NOTIFICATION_EXTEND: &str = "\
UPDATE pgpubsub_notification_leases \
SET ids = $2, leased_until = clock_timestamp() + make_interval(secs => $3) \
WHERE id = $1";

/// Dead notifications, of channel `$1` when not NULL, oldest first.
pub(crate) const DEAD_LIST: &str = "\
SELECT id, channel, created_at, dead_at, attempts, last_error \
FROM pgpubsub_notification \
WHERE dead_at IS NOT NULL AND ($1::text IS NULL OR channel = $1) \
ORDER BY id";

/// The dead notifications a selection names: all (`$1` true), those of
/// channel `$2`, or ids `$3`.
const DEAD_SELECTED: &str = "dead_at IS NOT NULL AND ($1 OR channel = $2 OR id = ANY($3))";

/// Makes the selected dead notifications (see `DEAD_SELECTED`) available
/// again with a fresh count of attempts (their last error is kept); returns
/// their channels, to wake the listeners.
pub(crate) static DEAD_RETRY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE pgpubsub_notification \
         SET dead_at = NULL, attempts = 0, available_at = now(), interrupted_at = NULL \
         WHERE {DEAD_SELECTED} RETURNING channel::text AS name"
    )
});

/// Deletes the selected dead notifications (see `DEAD_SELECTED`).
pub(crate) static DEAD_PURGE: LazyLock<String> =
    LazyLock::new(|| format!("DELETE FROM pgpubsub_notification WHERE {DEAD_SELECTED}"));

/// Wakes the listeners of channel `$1`.
pub(crate) const WAKE: &str = "SELECT pg_notify($1, '') AS woken";

/// Registers a listener: host `$1`, pid `$2`, channels `$3`, workers `$4`;
/// returns its id. Registrations whose heartbeat stopped more than a day
/// ago are removed.
pub(crate) const LISTENER_REGISTER: &str = "\
WITH gone AS (DELETE FROM pgpubsub_listener WHERE heartbeat_at < now() - interval '1 day') \
INSERT INTO pgpubsub_listener (host, pid, channels, workers) VALUES ($1, $2, $3, $4) RETURNING id";

/// Beats listener `$1`'s heartbeat (the LISTEN session's ping, too).
pub(crate) const LISTENER_HEARTBEAT: &str =
    "UPDATE pgpubsub_listener SET heartbeat_at = now() WHERE id = $1";

/// Removes listener `$1`'s registration (on a graceful stop).
pub(crate) const LISTENER_UNREGISTER: &str = "DELETE FROM pgpubsub_listener WHERE id = $1::bigint";

/// Channels with live stored notifications that neither this listener
/// (`$1`) nor any listener with a heartbeat in the last `$2` seconds serves,
/// with their counts (counted up to [`UNSERVED_COUNT_CAP`]). The channels
/// are found by skipping through the live index, one probe per channel,
/// not by reading every stored notification: a listener starting on a
/// large backlog does not scan it.
pub(crate) const UNSERVED_CHANNELS: &str = "\
WITH RECURSIVE live(channel) AS ( \
    (SELECT n.channel FROM pgpubsub_notification AS n \
     WHERE NOT n.broadcast AND n.dead_at IS NULL ORDER BY n.channel LIMIT 1) \
    UNION ALL \
    SELECT (SELECT n.channel FROM pgpubsub_notification AS n \
            WHERE NOT n.broadcast AND n.dead_at IS NULL AND n.channel > live.channel \
            ORDER BY n.channel LIMIT 1) \
    FROM live WHERE live.channel IS NOT NULL \
) \
SELECT live.channel::text AS name, \
       (SELECT count(*) FROM (SELECT 1 FROM pgpubsub_notification AS n \
                              WHERE n.channel = live.channel AND NOT n.broadcast AND n.dead_at IS NULL \
                              LIMIT 100000) AS capped) AS n \
FROM live \
WHERE live.channel IS NOT NULL AND live.channel <> ALL($1) \
  AND NOT EXISTS (SELECT 1 FROM pgpubsub_listener AS l \
                  WHERE live.channel = ANY(l.channels) \
                    AND l.heartbeat_at > now() - make_interval(secs => $2)) \
ORDER BY 1";

/// The most stored notifications [`UNSERVED_CHANNELS`] counts per channel.
pub(crate) const UNSERVED_COUNT_CAP: i64 = 100_000;

/// The privileges a listener needs that the current role lacks, as
/// `(object, privilege)` pairs.
pub(crate) const LISTENER_PRIVILEGES_MISSING: &str = "\
SELECT p.object AS name, p.privilege AS privilege FROM (VALUES \
    ('table pgpubsub_notification', 'SELECT', has_table_privilege('pgpubsub_notification', 'SELECT')), \
    ('table pgpubsub_notification', 'UPDATE', has_table_privilege('pgpubsub_notification', 'UPDATE')), \
    ('table pgpubsub_notification', 'DELETE', has_table_privilege('pgpubsub_notification', 'DELETE')), \
    ('table pgpubsub_listener', 'SELECT', has_table_privilege('pgpubsub_listener', 'SELECT')), \
    ('table pgpubsub_listener', 'INSERT', has_table_privilege('pgpubsub_listener', 'INSERT')), \
    ('table pgpubsub_listener', 'UPDATE', has_table_privilege('pgpubsub_listener', 'UPDATE')), \
    ('table pgpubsub_listener', 'DELETE', has_table_privilege('pgpubsub_listener', 'DELETE')), \
    ('table pgpubsub_notification_leases', 'SELECT', has_table_privilege('pgpubsub_notification_leases', 'SELECT')), \
    ('table pgpubsub_notification_leases', 'INSERT', has_table_privilege('pgpubsub_notification_leases', 'INSERT')), \
    ('table pgpubsub_notification_leases', 'UPDATE', has_table_privilege('pgpubsub_notification_leases', 'UPDATE')), \
    ('table pgpubsub_notification_leases', 'DELETE', has_table_privilege('pgpubsub_notification_leases', 'DELETE')), \
    ('function pgpubsub_notification_lease_batch', 'EXECUTE', \
        has_function_privilege('pgpubsub_notification_lease_batch(bigint[], bigint, boolean, text, text, bigint, bigint, double precision, integer)', 'EXECUTE')), \
    ('function pgpubsub_row_check', 'EXECUTE', has_function_privilege('pgpubsub_row_check(anyelement, jsonb)', 'EXECUTE')) \
) AS p(object, privilege, granted) WHERE NOT p.granted";

/// Whether the current role has USAGE on the schema that holds pgpubsub's
/// table, and which schema that is (NULL: not on the search path).
pub(crate) const SCHEMA_USAGE: &str = "\
SELECT s.nspname::text AS name, has_schema_privilege(s.oid, 'USAGE') AS ok \
FROM pg_class AS c JOIN pg_namespace AS s ON s.oid = c.relnamespace \
WHERE c.relname = 'pgpubsub_notification' AND c.relkind IN ('r', 'p') \
ORDER BY array_position(current_schemas(false), s.nspname::name) NULLS LAST LIMIT 1";

/// The current transaction's id (assigned now if need be), as text.
pub(crate) const TRANSACTION_ID: &str = "SELECT pg_current_xact_id()::text AS xid";

/// The status of transaction `$1` when it is not the current one any more
/// (`committed`, `aborted`); NULL while it is still the current one.
pub(crate) const TRANSACTION_ENDED: &str = "\
SELECT CASE WHEN pg_current_xact_id_if_assigned() IS NOT DISTINCT FROM $1::xid8 \
            AND now() <> statement_timestamp() THEN NULL \
            ELSE pg_xact_status($1::xid8) END AS status";

/// The transactions committed now, for listeners started without recovery.
pub(crate) const SNAPSHOT_CURRENT: &str = "SELECT pg_current_snapshot()::text AS snapshot";

/// Whether the notification table exists.
pub(crate) const SCHEMA_TABLE_PRESENT: &str =
    "SELECT to_regclass('pgpubsub_notification') IS NOT NULL AS ok";

/// For each schema step's marker function in `$1`, whether it exists, in order.
pub(crate) const SCHEMA_STEPS_PRESENT: &str = "\
SELECT CASE WHEN strpos(marker, '(') > 0 THEN to_regprocedure(marker) IS NOT NULL \
            ELSE to_regclass(marker) IS NOT NULL END AS ok \
FROM unnest($1::text[]) WITH ORDINALITY AS step(marker, position) \
ORDER BY position";

/// The names of the triggers `$1` that exist.
pub(crate) const TRIGGERS_PRESENT: &str =
    "SELECT tgname::text AS name FROM pg_trigger WHERE tgname = ANY($1) AND NOT tgisinternal";

/// Reads stored broadcast `$1` of channel `$2` as text, unless its writing
/// transaction had committed by snapshot `$3` (the listener's start: a
/// broadcast from before it started is not this listener's, and a NOTIFY
/// naming it is a replay).
pub(crate) const NOTIFICATION_PAYLOAD: &str = "\
SELECT payload::text AS payload FROM pgpubsub_notification \
WHERE id = $1 AND broadcast AND channel = $2 \
  AND NOT pg_visible_in_snapshot(written_xid, $3::pg_snapshot)";

/// Removes stored broadcast payloads older than `$1` seconds.
pub(crate) const BROADCAST_PURGE: &str = "\
DELETE FROM pgpubsub_notification \
WHERE broadcast AND created_at < now() - make_interval(secs => $1)";

/// Sends payload `$3` (JSON text, see [`super::Payload`]) on channel `$1`:
/// stored and woken (`$2` true) or broadcast.
pub(crate) const NOTIFICATION_SEND: &str = "SELECT pgpubsub_notification_send($1, $2, $3::jsonb)";

/// Sends the payloads `$3` on channel `$1` (lockable when `$2`), in array
/// order (the function scan yields the elements in order and the send runs
/// per row as it goes), in one statement.
pub(crate) const NOTIFICATION_SEND_ALL: &str = "\
SELECT count(pgpubsub_notification_send($1, $2, p.payload::jsonb)) AS n \
FROM unnest($3::text[]) AS p(payload)";

/// Reads the notification context of this session or transaction.
pub(crate) const CONTEXT_GET: &str = "SELECT current_setting('pgpubsub.context', true) AS value";

/// Sets the notification context: `$1` the JSON text, `$2` true for the
/// current transaction only.
pub(crate) const CONTEXT_SET: &str = "SELECT set_config('pgpubsub.context', $1, $2)";

/// The schema version now (the latest applied Diesel migration).
pub(crate) const DB_VERSION_CURRENT: &str = "SELECT pgpubsub_db_version() AS version";

/// Whether table `$1` has a column whose type involves `interval` or
/// `money` (directly, as an array element, through a domain or inside a
/// composite type): their text is read per session settings.
pub(crate) const TABLE_HAS_INTERVAL: &str = "\
WITH RECURSIVE types(oid) AS ( \
    SELECT a.atttypid FROM pg_attribute a \
    WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped \
  UNION \
    SELECT x.oid FROM types t JOIN pg_type ty ON ty.oid = t.oid \
    CROSS JOIN LATERAL ( \
        SELECT ty.typbasetype WHERE ty.typbasetype <> 0 \
        UNION ALL SELECT ty.typelem WHERE ty.typelem <> 0 \
        UNION ALL SELECT a.atttypid FROM pg_attribute a \
                  WHERE ty.typrelid <> 0 AND a.attrelid = ty.typrelid \
                    AND a.attnum > 0 AND NOT a.attisdropped \
    ) AS x(oid) \
) \
SELECT EXISTS (SELECT 1 FROM types WHERE oid IN ('interval'::regtype, 'money'::regtype)) AS ok";

/// The columns of table `$1` with their types as PostgreSQL spells them
/// (`format_type`, quoted where needed): the decode reads only the model's
/// columns, each as its own type (`jsonb_to_record(...) AS r(col type, ...)`).
pub(crate) const TABLE_COLUMN_TYPES: &str = "\
SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type_name \
FROM pg_attribute AS a \
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped";

/// The missing-column values (`attmissingval`: what the table's existing
/// rows read for a column added with a default) of table `$1`'s columns
/// `$2`, as a JSON object's text.
pub(crate) const TABLE_MISSING_VALUES: &str = "\
SELECT COALESCE(jsonb_object_agg(a.attname, to_jsonb(a.attmissingval) -> 0), '{}'::jsonb)::text AS missing \
FROM pg_attribute AS a \
WHERE a.attrelid = $1::regclass AND a.atthasmissing AND NOT a.attisdropped AND a.attname = ANY($2)";

/// Sets the input settings of a decode for the rest of the transaction and
/// returns the previous values: PostgreSQL reads an interval written in the
/// `sql_standard` style correctly only under that style (and every other
/// style correctly under it too), and `money` under the `lc_monetary` the
/// trigger writes it with (`C`).
pub(crate) const INTERVAL_STYLE_SET: &str = "\
SELECT current_setting('IntervalStyle') AS value, \
       current_setting('lc_monetary') AS monetary, \
       set_config('IntervalStyle', 'sql_standard', true) AS set_style, \
       set_config('lc_monetary', 'C', true) AS set_monetary";

/// Restores `IntervalStyle` `$1` and `lc_monetary` `$2` for the rest of the
/// transaction.
pub(crate) const INTERVAL_STYLE_RESTORE: &str =
    "SELECT set_config('IntervalStyle', $1, true) AS style, set_config('lc_monetary', $2, true) AS monetary";
