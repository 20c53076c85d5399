-- Leases as rows of their own: one row per leased batch instead of an
-- update of every leased notification. Leasing a batch of 100 writes one
-- row, not 100 new row versions, and the transaction that runs the
-- handlers locks that one row, not 100.
--
-- A lease row names the notifications it reserves; while it exists, no
-- other lease takes them. The transaction that runs their handlers locks
-- it (the runtime's claim query locks it and reads its notifications),
-- removes the handled notifications, and removes it (or, when the
-- batch is cut by handler time, renews it with the rest). A lease whose
-- deadline passed and that no transaction holds (its process or session
-- died) is reaped by the next lease of its channel: each of its
-- notifications has the interrupted attempt counted and the time noted in
-- `interrupted_at`, and is leased alone next time.
--
-- `attempts` now counts the attempts that ended: failed, or interrupted.
-- A handler sees `attempts + 1`. Rows leased under step 0003 when this
-- step runs count as interrupted (their attempt was counted then).
ALTER TABLE pgpubsub_notification RENAME COLUMN leased_until TO interrupted_at;

CREATE TABLE pgpubsub_notification_leases (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel varchar(63) NOT NULL,
    ids bigint[] NOT NULL,
    leased_at timestamptz NOT NULL DEFAULT now(),
    leased_until timestamptz NOT NULL
);
CREATE INDEX pgpubsub_notification_leases_channel_idx
    ON pgpubsub_notification_leases (channel);

DROP FUNCTION pgpubsub_notification_leased(bigint[], integer[]);
DROP FUNCTION pgpubsub_notification_lease(text, text, bigint, bigint, double precision, integer);

-- Leases up to p_limit available notifications of a channel after id
-- p_cursor, oldest first, that no lease holds (with a snapshot, leaving
-- alone the rows committed before it), for p_lease seconds. Returns the
-- lease's id with each notification, the attempt it is about to run
-- (attempts + 1), and whether it was made dead instead (out of attempts:
-- then the lease is NULL). A notification whose last attempt was
-- interrupted is leased alone; the batch stops before the first such one.
--
-- Two workers never lease one notification: the scan locks what it picks
-- (skipping rows other sessions hold, so it never waits), then a second
-- statement, whose snapshot is newer than any lease committed by a session
-- that held one of those rows, drops the ones such a lease took meanwhile.
-- The planner settings keep the ordered index scan that stops after
-- p_limit rows even when the statistics are stale, and plan each statement
-- once per session (the plans do not depend on the values).
CREATE FUNCTION pgpubsub_notification_lease_take(
    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint,
    p_lease double precision, p_max_attempts integer
)
RETURNS TABLE (lease bigint, id bigint, attempt integer, dead boolean)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $pgpubsub$
DECLARE
    v_ids bigint[];
    v_attempts integer[];
    v_interrupted boolean[];
    v_live bigint[] := '{}';
    v_live_attempts integer[] := '{}';
    v_dead bigint[] := '{}';
    v_dead_attempts integer[] := '{}';
    v_lease bigint;
    v_scan integer;
BEGIN
    -- Reap the channel's leases that ran out and that no transaction holds.
    WITH expired AS (
        DELETE FROM pgpubsub_notification_leases AS l
        WHERE l.id IN (
            SELECT e.id FROM pgpubsub_notification_leases AS e
            WHERE e.channel = p_channel AND e.leased_until < now()
            FOR UPDATE SKIP LOCKED
        )
        RETURNING l.ids, l.leased_until
    )
    UPDATE pgpubsub_notification AS n
    SET attempts = n.attempts + 1,
        interrupted_at = e.leased_until,
        failed_at = e.leased_until,
        available_at = now(),
        last_error = 'attempt ' || (n.attempts + 1) || ' did not finish before its lease ran out at '
                     || e.leased_until || ': the listener process or its database session died'
    FROM expired AS e CROSS JOIN LATERAL unnest(e.ids) AS x(id)
    WHERE n.id = x.id AND n.dead_at IS NULL;

    -- When every row the scan locked was taken by a lease it could not see
    -- yet, scan again: the next statement's snapshot sees that lease.
    FOR v_scan IN 1 .. 3 LOOP
        SELECT array_agg(s.id ORDER BY s.id),
               array_agg(s.attempts ORDER BY s.id),
               array_agg(s.interrupted_at IS NOT NULL ORDER BY s.id)
        INTO v_ids, v_attempts, v_interrupted
        FROM (
            SELECT n.id, n.attempts, n.interrupted_at
            FROM pgpubsub_notification AS n
            WHERE n.channel = p_channel
              AND NOT n.broadcast
              AND n.dead_at IS NULL
              AND n.available_at <= now()
              AND n.id > p_cursor
              AND (p_snapshot IS NULL
                   OR NOT pg_visible_in_snapshot(n.written_xid, p_snapshot::pg_snapshot))
              AND n.id NOT IN (
                  SELECT x.id FROM pgpubsub_notification_leases AS l
                  CROSS JOIN LATERAL unnest(l.ids) AS x(id)
                  WHERE l.channel = p_channel
              )
            ORDER BY n.id
            LIMIT p_limit
            FOR UPDATE OF n SKIP LOCKED
        ) AS s;
        IF v_ids IS NULL THEN
            RETURN;
        END IF;
        -- A lease committed after the scan's snapshot by a session that
        -- held one of these rows until then.
        EXIT WHEN NOT EXISTS (SELECT 1 FROM pgpubsub_notification_leases AS l
                              WHERE l.channel = p_channel AND l.ids && v_ids);
        SELECT array_agg(u.id ORDER BY u.id), array_agg(u.attempts ORDER BY u.id),
               array_agg(u.interrupted ORDER BY u.id)
        INTO v_ids, v_attempts, v_interrupted
        FROM unnest(v_ids, v_attempts, v_interrupted) AS u(id, attempts, interrupted)
        WHERE u.id NOT IN (
            SELECT x.id FROM pgpubsub_notification_leases AS l
            CROSS JOIN LATERAL unnest(l.ids) AS x(id)
            WHERE l.channel = p_channel
        );
        EXIT WHEN v_ids IS NOT NULL;
    END LOOP;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    IF true = ANY(v_interrupted) OR p_max_attempts <= ANY(v_attempts) THEN
        FOR i IN 1 .. cardinality(v_ids) LOOP
            IF v_attempts[i] >= p_max_attempts THEN
                v_dead := v_dead || v_ids[i];
                v_dead_attempts := v_dead_attempts || v_attempts[i];
                CONTINUE;
            END IF;
            IF v_interrupted[i] THEN
                IF cardinality(v_live) = 0 THEN
                    v_live := ARRAY[v_ids[i]];
                    v_live_attempts := ARRAY[v_attempts[i]];
                END IF;
                EXIT;
            END IF;
            v_live := v_live || v_ids[i];
            v_live_attempts := v_live_attempts || v_attempts[i];
        END LOOP;
    ELSE
        v_live := v_ids;
        v_live_attempts := v_attempts;
    END IF;

    IF cardinality(v_dead) > 0 THEN
        UPDATE pgpubsub_notification AS n
        SET dead_at = now(), available_at = 'infinity'
        WHERE n.id = ANY(v_dead);
        RETURN QUERY SELECT NULL::bigint, d.id, d.attempt, true
            FROM unnest(v_dead, v_dead_attempts) AS d(id, attempt);
    END IF;
    IF cardinality(v_live) > 0 THEN
        INSERT INTO pgpubsub_notification_leases (channel, ids, leased_until)
        VALUES (p_channel, v_live, now() + make_interval(secs => p_lease))
        RETURNING pgpubsub_notification_leases.id INTO v_lease;
        RETURN QUERY SELECT v_lease, l.id, l.attempts + 1, false
            FROM unnest(v_live, v_live_attempts) AS l(id, attempts);
    END IF;
END;
$pgpubsub$;

-- Ends lease p_done_lease, whose notifications p_done were handled (in
-- the transaction that ran them), and leases the next batch as
-- pgpubsub_notification_lease_take does: the next lease commits with the
-- handlers' work, in one round trip.
CREATE FUNCTION pgpubsub_notification_lease_next(
    p_done bigint[], p_done_lease bigint,
    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint,
    p_lease double precision, p_max_attempts integer
)
RETURNS TABLE (lease bigint, id bigint, attempt integer, dead boolean)
LANGUAGE plpgsql
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $pgpubsub$
BEGIN
    DELETE FROM pgpubsub_notification AS n WHERE n.id = ANY(p_done);
    DELETE FROM pgpubsub_notification_leases AS l WHERE l.id = p_done_lease;
    RETURN QUERY SELECT t.lease, t.id, t.attempt, t.dead
        FROM pgpubsub_notification_lease_take(p_channel, p_snapshot, p_limit, p_cursor,
                                              p_lease, p_max_attempts) AS t;
END;
$pgpubsub$;
