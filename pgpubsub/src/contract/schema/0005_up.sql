-- One lease function in place of step 0004's two, doing less per batch:
-- it returns one row (the lease and its ids as arrays) instead of a row per
-- notification; it ends the settled lease and removes its notifications in
-- one statement, testing membership by hash; the caller says when to reap
-- (at the start of a chain of leases, not in every link); and a lease that
-- races with another session's gives the rows it locked back at once.
--
-- That race: the scan skips rows in leases its snapshot sees, and locks
-- what it picks (skipping rows other sessions hold). A lease committed after
-- the scan's snapshot by a session that held some of those rows until then
-- is invisible to the scan, so the scan can lock rows of that lease. A later
-- statement (newer snapshot) sees it. Step 0004 then dropped those rows but
-- kept them locked to the end of the transaction, so the session that
-- leased them waited for it before it could remove them. Here the scan runs
-- in a subtransaction that is rolled back on such a race, which releases
-- its locks, and scans again (its new snapshot sees the lease).
--
-- Step 0004's functions stay: a listener of the previous version keeps
-- working against this schema, and both kinds share the lease rows.
CREATE FUNCTION pgpubsub_notification_lease_batch(
    p_done bigint[], p_done_lease bigint, p_reap boolean,
    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint,
    p_lease double precision, p_max_attempts integer,
    OUT lease bigint, OUT ids bigint[], OUT dead bigint[], OUT dead_attempts integer[]
)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $pgpubsub$
DECLARE
    v_ids bigint[];
    v_most integer;
    v_interrupted boolean;
    v_attempts integer[];
    v_flags boolean[];
    v_live bigint[] := '{}';
    v_dead bigint[] := '{}';
    v_dead_attempts integer[] := '{}';
BEGIN
    -- The settled lease ends: its handled notifications and its row go.
    -- The id range bounds a scan of the primary key; membership is a
    -- hashed lookup (`IS TRUE` keeps it a filter, not a join).
    IF p_done_lease IS NOT NULL THEN
        WITH done AS (
            DELETE FROM pgpubsub_notification AS n
            WHERE n.id BETWEEN (SELECT min(d.id) FROM unnest(p_done) AS d(id))
                           AND (SELECT max(d.id) FROM unnest(p_done) AS d(id))
              AND ((n.id + 0) IN (SELECT d.id FROM unnest(p_done) AS d(id))) IS TRUE
        )
        DELETE FROM pgpubsub_notification_leases AS l WHERE l.id = p_done_lease;
    END IF;

    -- Reap the channel's leases that ran out and that no transaction holds.
    IF p_reap THEN
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
    END IF;

    FOR v_scan IN 1 .. 3 LOOP
        BEGIN
            SELECT array_agg(s.id ORDER BY s.id), max(s.attempts), bool_or(s.interrupted_at IS NOT NULL)
            INTO v_ids, v_most, v_interrupted
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
            -- The race above: give the locks back and scan again.
            IF EXISTS (SELECT 1 FROM pgpubsub_notification_leases AS l
                       WHERE l.channel = p_channel AND l.ids && v_ids) THEN
                RAISE EXCEPTION USING ERRCODE = 'PPS01';
            END IF;
        EXCEPTION WHEN SQLSTATE 'PPS01' THEN
            v_ids := NULL;
            CONTINUE;
        END;
        EXIT;
    END LOOP;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    -- The usual batch: nothing interrupted, nothing out of attempts.
    IF NOT v_interrupted AND v_most < p_max_attempts THEN
        INSERT INTO pgpubsub_notification_leases (channel, ids, leased_until)
        VALUES (p_channel, v_ids, now() + make_interval(secs => p_lease))
        RETURNING pgpubsub_notification_leases.id INTO lease;
        ids := v_ids;
        RETURN;
    END IF;

    -- Out of attempts: dead at once. Interrupted last time: leased alone;
    -- the batch stops before the first such one.
    SELECT array_agg(n.id ORDER BY n.id), array_agg(n.attempts ORDER BY n.id),
           array_agg(n.interrupted_at IS NOT NULL ORDER BY n.id)
    INTO v_ids, v_attempts, v_flags
    FROM pgpubsub_notification AS n
    WHERE n.id = ANY(v_ids);
    FOR i IN 1 .. cardinality(v_ids) LOOP
        IF v_attempts[i] >= p_max_attempts THEN
            v_dead := v_dead || v_ids[i];
            v_dead_attempts := v_dead_attempts || v_attempts[i];
            CONTINUE;
        END IF;
        IF v_flags[i] THEN
            IF cardinality(v_live) = 0 THEN
                v_live := ARRAY[v_ids[i]];
            END IF;
            EXIT;
        END IF;
        v_live := v_live || v_ids[i];
    END LOOP;
    IF cardinality(v_dead) > 0 THEN
        UPDATE pgpubsub_notification AS n
        SET dead_at = now(), available_at = 'infinity'
        WHERE n.id = ANY(v_dead);
        dead := v_dead;
        dead_attempts := v_dead_attempts;
    END IF;
    IF cardinality(v_live) > 0 THEN
        INSERT INTO pgpubsub_notification_leases (channel, ids, leased_until)
        VALUES (p_channel, v_live, now() + make_interval(secs => p_lease))
        RETURNING pgpubsub_notification_leases.id INTO lease;
        ids := v_live;
    END IF;
END;
$pgpubsub$;
