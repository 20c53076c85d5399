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

/// Claims up to `$3` available notifications of channel `$1` with ids above
/// `$4` (the worker's cursor), oldest first, skipping rows other workers
/// hold. `$2`, when not NULL, is the snapshot taken when a listener without
/// recovery started: rows committed before it (visible in it) are left alone.
/// The query lives in the SQL function (see the schema) so it can pin its
/// plan to the ordered index scan. Trigger channels whose handlers take rows
/// claim and decode in one query instead (`decode::Plan`).
pub(crate) static NOTIFICATION_CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM {}($1, $2, $3, $4) AS c",
        claim_fields("c", false, true),
        super::names::NOTIFICATION_CLAIM_FN
    )
});

/// Removes handled notifications `$1` (in the claiming transaction).
pub(crate) const NOTIFICATION_COMPLETE: &str =
    "DELETE FROM pgpubsub_notification WHERE id = ANY($1)";

/// Records a failed attempt of notification `$1` with error `$2`; it becomes
/// available again after `$3` seconds, or never (`$4` true: a permanent
/// error, such as a payload that cannot decode into the model; it stays
/// stored with its error until someone makes it available again).
pub(crate) const NOTIFICATION_FAIL: &str = "\
UPDATE pgpubsub_notification \
SET attempts = attempts + 1, last_error = $2, failed_at = now(), \
    available_at = CASE WHEN $4 THEN 'infinity'::timestamptz \
                        ELSE now() + make_interval(secs => $3) END \
WHERE id = $1";

/// The transactions committed now, for listeners started without recovery.
pub(crate) const SNAPSHOT_CURRENT: &str = "SELECT pg_current_snapshot()::text AS snapshot";

/// Whether the notification table exists.
pub(crate) const SCHEMA_TABLE_PRESENT: &str =
    "SELECT to_regclass('pgpubsub_notification') IS NOT NULL AS ok";

/// For each schema step's marker function in `$1`, whether it exists, in order.
pub(crate) const SCHEMA_STEPS_PRESENT: &str = "\
SELECT to_regprocedure(marker) IS NOT NULL AS ok \
FROM unnest($1::text[]) WITH ORDINALITY AS step(marker, position) \
ORDER BY position";

/// The names of the triggers `$1` that exist.
pub(crate) const TRIGGERS_PRESENT: &str =
    "SELECT tgname::text AS name FROM pg_trigger WHERE tgname = ANY($1) AND NOT tgisinternal";

/// Reads stored broadcast payload `$1` of channel `$2` (too large for NOTIFY),
/// as text.
pub(crate) const NOTIFICATION_PAYLOAD: &str = "\
SELECT payload::text AS payload FROM pgpubsub_notification \
WHERE id = $1 AND broadcast AND channel = $2";

/// Removes stored broadcast payloads older than `$1` seconds.
pub(crate) const BROADCAST_PURGE: &str = "\
DELETE FROM pgpubsub_notification \
WHERE broadcast AND created_at < now() - make_interval(secs => $1)";

/// Sends payload `$3` (JSON text, see [`super::Payload`]) on channel `$1`:
/// stored and woken (`$2` true) or broadcast.
pub(crate) const NOTIFICATION_SEND: &str = "SELECT pgpubsub_notification_send($1, $2, $3::jsonb)";

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
