-- Leases and dead notifications. A claim first leases its notifications in
-- a short transaction of its own: the attempt is counted and the
-- notification is reserved until its lease runs out. The handlers and the
-- removal then commit together in a second transaction. A lease that runs
-- out (the process or its connection died) makes the notification claimable
-- again, its attempt already counted; one out of attempts is dead instead.
ALTER TABLE pgpubsub_notification
    ADD COLUMN leased_until timestamptz,
    ADD COLUMN dead_at timestamptz;

-- Notifications parked by an earlier version (a payload that cannot decode)
-- are dead.
UPDATE pgpubsub_notification
SET dead_at = COALESCE(failed_at, now())
WHERE NOT broadcast AND available_at = 'infinity';

-- Claims scan live notifications only: dead ones never slow a claim.
CREATE INDEX pgpubsub_notification_live_idx
    ON pgpubsub_notification (channel, id) WHERE NOT broadcast AND dead_at IS NULL;
DROP INDEX pgpubsub_notification_claim_idx;

-- Leases up to p_limit available notifications of a channel after id
-- p_cursor, oldest first, skipping rows other sessions hold (with a
-- snapshot, leaving alone the rows committed before it): counts the attempt
-- and reserves each for p_lease seconds. A notification whose last attempt
-- was interrupted (its lease ran out: the process or its session died) is
-- leased alone, so a notification that kills its process takes no
-- batch-mates down with it again; the batch stops before the first such
-- one. A notification with p_max_attempts attempts or more is made dead
-- instead, and when its last attempt never finished its error says so.
-- Returns the leased and the dead ones, with their attempts so far. The
-- planner settings keep the ordered index scan that stops after p_limit
-- rows even when the statistics are stale; the costs they add would
-- otherwise make a tiny query worth compiling (jit).
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

-- The notifications p_ids a worker leased, with the attempt counts it leased
-- them at, locked for the transaction that runs their handlers. One leased
-- again by another worker since (its lease ran out) or already removed is
-- not returned. The lock waits rather than skips: another worker's lease
-- scan may hold a row for an instant while it rechecks it, and a skipped row
-- would wait for its lease to run out. Rows are locked in id order, as the
-- lease scan takes them, so two workers never deadlock here.
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

-- Running listeners: each registers itself and beats its heartbeat, so an
-- operator can tell a dead listener from a quiet channel.
CREATE TABLE pgpubsub_listener (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    channels text[] NOT NULL,
    workers integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Sends one notification: stored and woken (lockable) or broadcast. A
-- broadcast payload is stored too and only its id goes through NOTIFY: a
-- role that can NOTIFY but not insert into pgpubsub_notification cannot make
-- a handler run.
CREATE OR REPLACE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)
RETURNS void
LANGUAGE plpgsql AS $pgpubsub$
DECLARE
    v_payload jsonb := p_payload || jsonb_build_object('context', pgpubsub_context());
    v_id bigint;
BEGIN
    IF p_lock THEN
        INSERT INTO pgpubsub_notification (channel, payload) VALUES (p_channel, v_payload);
        -- A wake-up: identical notifications of one transaction fold into one.
        PERFORM pg_notify(p_channel, '');
        RETURN;
    END IF;
    v_payload := v_payload || jsonb_build_object('created_at', now(), 'db_version', pgpubsub_db_version());
    INSERT INTO pgpubsub_notification (channel, payload, broadcast)
    VALUES (p_channel, v_payload, true)
    RETURNING id INTO v_id;
    PERFORM pg_notify(p_channel, jsonb_build_object('pgpubsub_stored', v_id)::text);
END;
$pgpubsub$;
