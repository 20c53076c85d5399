DROP FUNCTION IF EXISTS pgpubsub_notification_lease_next(bigint[], bigint, text, text, bigint, bigint, double precision, integer);
DROP FUNCTION IF EXISTS pgpubsub_notification_lease_take(text, text, bigint, bigint, double precision, integer);
DROP TABLE IF EXISTS pgpubsub_notification_leases;
ALTER TABLE pgpubsub_notification RENAME COLUMN interrupted_at TO leased_until;
CREATE FUNCTION pgpubsub_notification_lease(
    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint,
    p_lease double precision, p_max_attempts integer
)
RETURNS TABLE (id bigint, attempts integer, dead boolean)
LANGUAGE sql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
SET jit = off
AS $pgpubsub$
    WITH picked AS MATERIALIZED (
        SELECT n.id, n.attempts, n.leased_until
        FROM pgpubsub_notification AS n
        WHERE n.channel = p_channel
          AND NOT n.broadcast
          AND n.dead_at IS NULL
          AND n.available_at <= now()
          AND n.id > p_cursor
          AND (p_snapshot IS NULL
               OR NOT pg_visible_in_snapshot(n.written_xid, p_snapshot::pg_snapshot))
        ORDER BY n.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ),
    bounds AS (
        SELECT min(p.id) AS first_id,
               min(p.id) FILTER (WHERE p.leased_until IS NOT NULL) AS first_interrupted
        FROM picked AS p
    ),
    chosen AS (
        SELECT p.* FROM picked AS p CROSS JOIN bounds AS b
        WHERE b.first_interrupted IS NULL
           OR p.id < b.first_interrupted
           OR (p.id = b.first_interrupted AND p.id = b.first_id)
    ),
    updated AS (
        UPDATE pgpubsub_notification AS n
        SET attempts = CASE WHEN p.attempts >= p_max_attempts THEN n.attempts ELSE n.attempts + 1 END,
            available_at = CASE WHEN p.attempts >= p_max_attempts THEN 'infinity'::timestamptz
                                ELSE now() + make_interval(secs => p_lease) END,
            leased_until = CASE WHEN p.attempts >= p_max_attempts THEN NULL
                                ELSE now() + make_interval(secs => p_lease) END,
            dead_at = CASE WHEN p.attempts >= p_max_attempts THEN now() END,
            failed_at = CASE WHEN p.leased_until IS NOT NULL THEN p.leased_until ELSE n.failed_at END,
            last_error = CASE WHEN p.leased_until IS NOT NULL
                              THEN 'attempt ' || p.attempts || ' did not finish before its lease ran out at '
                                   || p.leased_until || ': the listener process or its database session died'
                              ELSE n.last_error END
        FROM chosen AS p
        WHERE n.id = p.id
        RETURNING n.id, n.attempts, n.dead_at IS NOT NULL AS dead
    )
    SELECT u.id, u.attempts, u.dead FROM updated AS u ORDER BY u.id
$pgpubsub$;
CREATE FUNCTION pgpubsub_notification_leased(p_ids bigint[], p_attempts integer[])
RETURNS SETOF pgpubsub_notification
LANGUAGE sql
SET jit = off
AS $pgpubsub$
    SELECT n.*
    FROM unnest(p_ids, p_attempts) AS l(id, attempts)
    JOIN pgpubsub_notification AS n ON n.id = l.id
    WHERE n.attempts = l.attempts AND n.leased_until IS NOT NULL AND n.dead_at IS NULL
    ORDER BY n.id
    FOR UPDATE OF n
$pgpubsub$;
