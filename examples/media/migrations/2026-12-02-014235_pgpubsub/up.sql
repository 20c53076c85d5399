-- pgpubsub-state: {"objects":[{"key":"schema/0001","up":"-- The latest applied Diesel migration: a notification's db_version. Looked\n-- up once per transaction (cached in a transaction-local setting), so a bulk\n-- statement does not query the migrations table per row.\nCREATE FUNCTION pgpubsub_db_version() RETURNS text\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_version text := current_setting('pgpubsub.db_version', true);\nBEGIN\n    IF v_version IS NOT NULL AND v_version <> '' THEN\n        RETURN v_version;\n    END IF;\n    IF to_regclass('__diesel_schema_migrations') IS NULL THEN\n        RETURN NULL;\n    END IF;\n    SELECT max(version) INTO v_version FROM __diesel_schema_migrations;\n    PERFORM set_config('pgpubsub.db_version', COALESCE(v_version, ''), true);\n    RETURN v_version;\nEND;\n$pgpubsub$;\n\n-- The notification context set by with_context / set_session_context.\nCREATE FUNCTION pgpubsub_context() RETURNS jsonb\nLANGUAGE sql STABLE AS $pgpubsub$\n    SELECT COALESCE(NULLIF(current_setting('pgpubsub.context', true), ''), '{}')::jsonb\n$pgpubsub$;\n\n-- Stored notifications: every notification of a lockable channel, and the\n-- payloads of broadcast ones too large for NOTIFY.\nCREATE TABLE pgpubsub_notification (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    channel varchar(63) NOT NULL,\n    payload jsonb NOT NULL,\n    created_at timestamptz NOT NULL DEFAULT now(),\n    db_version text DEFAULT pgpubsub_db_version(),\n    -- The writing transaction: listeners started without recovery skip the\n    -- notifications committed before they started.\n    written_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),\n    broadcast boolean NOT NULL DEFAULT false,\n    attempts integer NOT NULL DEFAULT 0,\n    available_at timestamptz NOT NULL DEFAULT now(),\n    last_error text,\n    failed_at timestamptz\n);\n\nCREATE INDEX pgpubsub_notification_claim_idx\n    ON pgpubsub_notification (channel, id) WHERE NOT broadcast;\n\n-- Claims up to p_limit available notifications of a channel after id\n-- p_cursor, oldest first, skipping rows other sessions hold; with a snapshot,\n-- leaves alone the rows committed before it. The planner settings keep the\n-- ordered index scan that stops after p_limit rows even when the table's\n-- statistics are stale (a fresh bulk insert looks like an empty table, and a\n-- bitmap scan plus sort would read the whole backlog on every claim).\nCREATE FUNCTION pgpubsub_notification_claim(\n    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint\n)\nRETURNS SETOF pgpubsub_notification\nLANGUAGE sql\nSET enable_seqscan = off\nSET enable_bitmapscan = off\nSET enable_sort = off\nAS $pgpubsub$\n    SELECT *\n    FROM pgpubsub_notification\n    WHERE channel = p_channel\n      AND NOT broadcast\n      AND available_at <= now()\n      AND id > p_cursor\n      AND (p_snapshot IS NULL\n           OR NOT pg_visible_in_snapshot(written_xid, p_snapshot::pg_snapshot))\n    ORDER BY id\n    LIMIT p_limit\n    FOR UPDATE SKIP LOCKED\n$pgpubsub$;\n\n-- Sends one notification: stored and woken (lockable) or broadcast.\nCREATE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)\nRETURNS void\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_payload jsonb := p_payload || jsonb_build_object('context', pgpubsub_context());\n    v_text text;\n    v_id bigint;\nBEGIN\n    IF p_lock THEN\n        INSERT INTO pgpubsub_notification (channel, payload) VALUES (p_channel, v_payload);\n        -- A wake-up: identical notifications of one transaction fold into one.\n        PERFORM pg_notify(p_channel, '');\n        RETURN;\n    END IF;\n    v_text := v_payload::text;\n    -- NOTIFY payloads must stay under 8000 bytes; larger ones are stored.\n    IF octet_length(v_text) <= 7900 THEN\n        PERFORM pg_notify(p_channel, v_text);\n    ELSE\n        INSERT INTO pgpubsub_notification (channel, payload, broadcast)\n        VALUES (p_channel, v_payload, true)\n        RETURNING id INTO v_id;\n        PERFORM pg_notify(p_channel, jsonb_build_object('pgpubsub_stored', v_id)::text);\n    END IF;\nEND;\n$pgpubsub$;\n","down":"DROP FUNCTION IF EXISTS pgpubsub_notification_send(text, boolean, jsonb);\nDROP FUNCTION IF EXISTS pgpubsub_notification_claim(text, text, bigint, bigint);\nDROP TABLE IF EXISTS pgpubsub_notification;\nDROP FUNCTION IF EXISTS pgpubsub_context();\nDROP FUNCTION IF EXISTS pgpubsub_db_version();\n"},{"key":"schema/0002","up":"-- Names the columns of a payload row that the table's types reject: for each\n-- key of p_row that is a column of p_base's row type, reads that one column\n-- with the same conversion jsonb_populate_record uses (jsonb_to_record with\n-- the column's type) and returns the key with PostgreSQL's error. The\n-- listener calls it only after a row failed to decode, so the error names the\n-- column.\nCREATE FUNCTION pgpubsub_row_check(p_base anyelement, p_row jsonb)\nRETURNS TABLE (column_name text, error text)\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_column record;\nBEGIN\n    IF jsonb_typeof(p_row) IS DISTINCT FROM 'object' THEN\n        column_name := NULL;\n        error := format('the row is a JSON %s, not an object', COALESCE(jsonb_typeof(p_row), 'NULL'));\n        RETURN NEXT;\n        RETURN;\n    END IF;\n    FOR v_column IN\n        SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type_name\n        FROM pg_type AS t\n        JOIN pg_attribute AS a ON a.attrelid = t.typrelid\n        WHERE t.oid = pg_typeof(p_base) AND a.attnum > 0 AND NOT a.attisdropped\n          AND p_row ? a.attname\n        ORDER BY a.attnum\n    LOOP\n        BEGIN\n            EXECUTE format('SELECT 1 FROM jsonb_to_record($1) AS r(%I %s)', v_column.name, v_column.type_name)\n                USING p_row;\n        EXCEPTION WHEN OTHERS THEN\n            column_name := v_column.name;\n            error := SQLERRM;\n            RETURN NEXT;\n        END;\n    END LOOP;\nEND;\n$pgpubsub$;\n\n-- Sends one notification: stored and woken (lockable) or broadcast; a\n-- broadcast payload also carries created_at and db_version.\nCREATE OR REPLACE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)\nRETURNS void\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_payload jsonb := p_payload || jsonb_build_object('context', pgpubsub_context());\n    v_text text;\n    v_id bigint;\nBEGIN\n    IF p_lock THEN\n        INSERT INTO pgpubsub_notification (channel, payload) VALUES (p_channel, v_payload);\n        -- A wake-up: identical notifications of one transaction fold into one.\n        PERFORM pg_notify(p_channel, '');\n        RETURN;\n    END IF;\n    -- Broadcasts have no stored row to keep their write time and schema\n    -- version: the payload carries them.\n    v_payload := v_payload || jsonb_build_object('created_at', now(), 'db_version', pgpubsub_db_version());\n    v_text := v_payload::text;\n    -- NOTIFY payloads must stay under 8000 bytes; larger ones are stored.\n    IF octet_length(v_text) <= 7900 THEN\n        PERFORM pg_notify(p_channel, v_text);\n    ELSE\n        INSERT INTO pgpubsub_notification (channel, payload, broadcast)\n        VALUES (p_channel, v_payload, true)\n        RETURNING id INTO v_id;\n        PERFORM pg_notify(p_channel, jsonb_build_object('pgpubsub_stored', v_id)::text);\n    END IF;\nEND;\n$pgpubsub$;\n","down":"DROP FUNCTION IF EXISTS pgpubsub_row_check(anyelement, jsonb);\nCREATE OR REPLACE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)\nRETURNS void\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_payload jsonb := p_payload || jsonb_build_object('context', pgpubsub_context());\n    v_text text;\n    v_id bigint;\nBEGIN\n    IF p_lock THEN\n        INSERT INTO pgpubsub_notification (channel, payload) VALUES (p_channel, v_payload);\n        -- A wake-up: identical notifications of one transaction fold into one.\n        PERFORM pg_notify(p_channel, '');\n        RETURN;\n    END IF;\n    v_text := v_payload::text;\n    -- NOTIFY payloads must stay under 8000 bytes; larger ones are stored.\n    IF octet_length(v_text) <= 7900 THEN\n        PERFORM pg_notify(p_channel, v_text);\n    ELSE\n        INSERT INTO pgpubsub_notification (channel, payload, broadcast)\n        VALUES (p_channel, v_payload, true)\n        RETURNING id INTO v_id;\n        PERFORM pg_notify(p_channel, jsonb_build_object('pgpubsub_stored', v_id)::text);\n    END IF;\nEND;\n$pgpubsub$;\n"},{"key":"schema/0003","up":"-- Leases and dead notifications. A claim first leases its notifications in\n-- a short transaction of its own: the attempt is counted and the\n-- notification is reserved until its lease runs out. The handlers and the\n-- removal then commit together in a second transaction. A lease that runs\n-- out (the process or its connection died) makes the notification claimable\n-- again, its attempt already counted; one out of attempts is dead instead.\nALTER TABLE pgpubsub_notification\n    ADD COLUMN leased_until timestamptz,\n    ADD COLUMN dead_at timestamptz;\n\n-- Notifications parked by an earlier version (a payload that cannot decode)\n-- are dead.\nUPDATE pgpubsub_notification\nSET dead_at = COALESCE(failed_at, now())\nWHERE NOT broadcast AND available_at = 'infinity';\n\n-- Claims scan live notifications only: dead ones never slow a claim.\nCREATE INDEX pgpubsub_notification_live_idx\n    ON pgpubsub_notification (channel, id) WHERE NOT broadcast AND dead_at IS NULL;\nDROP INDEX pgpubsub_notification_claim_idx;\n\n-- Leases up to p_limit available notifications of a channel after id\n-- p_cursor, oldest first, skipping rows other sessions hold (with a\n-- snapshot, leaving alone the rows committed before it): counts the attempt\n-- and reserves each for p_lease seconds. A notification whose last attempt\n-- was interrupted (its lease ran out: the process or its session died) is\n-- leased alone, so a notification that kills its process takes no\n-- batch-mates down with it again; the batch stops before the first such\n-- one. A notification with p_max_attempts attempts or more is made dead\n-- instead, and when its last attempt never finished its error says so.\n-- Returns the leased and the dead ones, with their attempts so far. The\n-- planner settings keep the ordered index scan that stops after p_limit\n-- rows even when the statistics are stale; the costs they add would\n-- otherwise make a tiny query worth compiling (jit).\nCREATE FUNCTION pgpubsub_notification_lease(\n    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint,\n    p_lease double precision, p_max_attempts integer\n)\nRETURNS TABLE (id bigint, attempts integer, dead boolean)\nLANGUAGE sql\nSET enable_seqscan = off\nSET enable_bitmapscan = off\nSET enable_sort = off\nSET jit = off\nAS $pgpubsub$\n    WITH picked AS MATERIALIZED (\n        SELECT n.id, n.attempts, n.leased_until\n        FROM pgpubsub_notification AS n\n        WHERE n.channel = p_channel\n          AND NOT n.broadcast\n          AND n.dead_at IS NULL\n          AND n.available_at <= now()\n          AND n.id > p_cursor\n          AND (p_snapshot IS NULL\n               OR NOT pg_visible_in_snapshot(n.written_xid, p_snapshot::pg_snapshot))\n        ORDER BY n.id\n        LIMIT p_limit\n        FOR UPDATE SKIP LOCKED\n    ),\n    bounds AS (\n        SELECT min(p.id) AS first_id,\n               min(p.id) FILTER (WHERE p.leased_until IS NOT NULL) AS first_interrupted\n        FROM picked AS p\n    ),\n    chosen AS (\n        SELECT p.* FROM picked AS p CROSS JOIN bounds AS b\n        WHERE b.first_interrupted IS NULL\n           OR p.id < b.first_interrupted\n           OR (p.id = b.first_interrupted AND p.id = b.first_id)\n    ),\n    updated AS (\n        UPDATE pgpubsub_notification AS n\n        SET attempts = CASE WHEN p.attempts >= p_max_attempts THEN n.attempts ELSE n.attempts + 1 END,\n            available_at = CASE WHEN p.attempts >= p_max_attempts THEN 'infinity'::timestamptz\n                                ELSE now() + make_interval(secs => p_lease) END,\n            leased_until = CASE WHEN p.attempts >= p_max_attempts THEN NULL\n                                ELSE now() + make_interval(secs => p_lease) END,\n            dead_at = CASE WHEN p.attempts >= p_max_attempts THEN now() END,\n            failed_at = CASE WHEN p.leased_until IS NOT NULL THEN p.leased_until ELSE n.failed_at END,\n            last_error = CASE WHEN p.leased_until IS NOT NULL\n                              THEN 'attempt ' || p.attempts || ' did not finish before its lease ran out at '\n                                   || p.leased_until || ': the listener process or its database session died'\n                              ELSE n.last_error END\n        FROM chosen AS p\n        WHERE n.id = p.id\n        RETURNING n.id, n.attempts, n.dead_at IS NOT NULL AS dead\n    )\n    SELECT u.id, u.attempts, u.dead FROM updated AS u ORDER BY u.id\n$pgpubsub$;\n\n-- The notifications p_ids a worker leased, with the attempt counts it leased\n-- them at, locked for the transaction that runs their handlers. One leased\n-- again by another worker since (its lease ran out) or already removed is\n-- not returned. The lock waits rather than skips: another worker's lease\n-- scan may hold a row for an instant while it rechecks it, and a skipped row\n-- would wait for its lease to run out. Rows are locked in id order, as the\n-- lease scan takes them, so two workers never deadlock here.\nCREATE FUNCTION pgpubsub_notification_leased(p_ids bigint[], p_attempts integer[])\nRETURNS SETOF pgpubsub_notification\nLANGUAGE sql\nSET jit = off\nAS $pgpubsub$\n    SELECT n.*\n    FROM unnest(p_ids, p_attempts) AS l(id, attempts)\n    JOIN pgpubsub_notification AS n ON n.id = l.id\n    WHERE n.attempts = l.attempts AND n.leased_until IS NOT NULL AND n.dead_at IS NULL\n    ORDER BY n.id\n    FOR UPDATE OF n\n$pgpubsub$;\n\n-- Running listeners: each registers itself and beats its heartbeat, so an\n-- operator can tell a dead listener from a quiet channel.\nCREATE TABLE pgpubsub_listener (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    host text NOT NULL,\n    pid integer NOT NULL,\n    channels text[] NOT NULL,\n    workers integer NOT NULL,\n    started_at timestamptz NOT NULL DEFAULT now(),\n    heartbeat_at timestamptz NOT NULL DEFAULT now()\n);\n\n-- Sends one notification: stored and woken (lockable) or broadcast. A\n-- broadcast payload is stored too and only its id goes through NOTIFY: a\n-- role that can NOTIFY but not insert into pgpubsub_notification cannot make\n-- a handler run.\nCREATE OR REPLACE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)\nRETURNS void\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_payload jsonb := p_payload || jsonb_build_object('context', pgpubsub_context());\n    v_id bigint;\nBEGIN\n    IF p_lock THEN\n        INSERT INTO pgpubsub_notification (channel, payload) VALUES (p_channel, v_payload);\n        -- A wake-up: identical notifications of one transaction fold into one.\n        PERFORM pg_notify(p_channel, '');\n        RETURN;\n    END IF;\n    v_payload := v_payload || jsonb_build_object('created_at', now(), 'db_version', pgpubsub_db_version());\n    INSERT INTO pgpubsub_notification (channel, payload, broadcast)\n    VALUES (p_channel, v_payload, true)\n    RETURNING id INTO v_id;\n    PERFORM pg_notify(p_channel, jsonb_build_object('pgpubsub_stored', v_id)::text);\nEND;\n$pgpubsub$;\n","down":"DROP TABLE IF EXISTS pgpubsub_listener;\nDROP FUNCTION IF EXISTS pgpubsub_notification_leased(bigint[], integer[]);\nDROP FUNCTION IF EXISTS pgpubsub_notification_lease(text, text, bigint, bigint, double precision, integer);\nCREATE INDEX IF NOT EXISTS pgpubsub_notification_claim_idx\n    ON pgpubsub_notification (channel, id) WHERE NOT broadcast;\nDROP INDEX IF EXISTS pgpubsub_notification_live_idx;\nUPDATE pgpubsub_notification SET available_at = 'infinity' WHERE dead_at IS NOT NULL;\nALTER TABLE pgpubsub_notification DROP COLUMN IF EXISTS dead_at, DROP COLUMN IF EXISTS leased_until;\nCREATE OR REPLACE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)\nRETURNS void\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_payload jsonb := p_payload || jsonb_build_object('context', pgpubsub_context());\n    v_text text;\n    v_id bigint;\nBEGIN\n    IF p_lock THEN\n        INSERT INTO pgpubsub_notification (channel, payload) VALUES (p_channel, v_payload);\n        -- A wake-up: identical notifications of one transaction fold into one.\n        PERFORM pg_notify(p_channel, '');\n        RETURN;\n    END IF;\n    -- Broadcasts have no stored row to keep their write time and schema\n    -- version: the payload carries them.\n    v_payload := v_payload || jsonb_build_object('created_at', now(), 'db_version', pgpubsub_db_version());\n    v_text := v_payload::text;\n    -- NOTIFY payloads must stay under 8000 bytes; larger ones are stored.\n    IF octet_length(v_text) <= 7900 THEN\n        PERFORM pg_notify(p_channel, v_text);\n    ELSE\n        INSERT INTO pgpubsub_notification (channel, payload, broadcast)\n        VALUES (p_channel, v_payload, true)\n        RETURNING id INTO v_id;\n        PERFORM pg_notify(p_channel, jsonb_build_object('pgpubsub_stored', v_id)::text);\n    END IF;\nEND;\n$pgpubsub$;\n"},{"key":"schema/0004","up":"-- Leases as rows of their own: one row per leased batch instead of an\n-- update of every leased notification. Leasing a batch of 100 writes one\n-- row, not 100 new row versions, and the transaction that runs the\n-- handlers locks that one row, not 100.\n--\n-- A lease row names the notifications it reserves; while it exists, no\n-- other lease takes them. The transaction that runs their handlers locks\n-- it (the runtime's claim query locks it and reads its notifications),\n-- removes the handled notifications, and removes it (or, when the\n-- batch is cut by handler time, renews it with the rest). A lease whose\n-- deadline passed and that no transaction holds (its process or session\n-- died) is reaped by the next lease of its channel: each of its\n-- notifications has the interrupted attempt counted and the time noted in\n-- `interrupted_at`, and is leased alone next time.\n--\n-- `attempts` now counts the attempts that ended: failed, or interrupted.\n-- A handler sees `attempts + 1`. Rows leased under step 0003 when this\n-- step runs count as interrupted (their attempt was counted then).\nALTER TABLE pgpubsub_notification RENAME COLUMN leased_until TO interrupted_at;\n\nCREATE TABLE pgpubsub_notification_leases (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    channel varchar(63) NOT NULL,\n    ids bigint[] NOT NULL,\n    leased_at timestamptz NOT NULL DEFAULT now(),\n    leased_until timestamptz NOT NULL\n);\nCREATE INDEX pgpubsub_notification_leases_channel_idx\n    ON pgpubsub_notification_leases (channel);\n\nDROP FUNCTION pgpubsub_notification_leased(bigint[], integer[]);\nDROP FUNCTION pgpubsub_notification_lease(text, text, bigint, bigint, double precision, integer);\n\n-- Leases up to p_limit available notifications of a channel after id\n-- p_cursor, oldest first, that no lease holds (with a snapshot, leaving\n-- alone the rows committed before it), for p_lease seconds. Returns the\n-- lease's id with each notification, the attempt it is about to run\n-- (attempts + 1), and whether it was made dead instead (out of attempts:\n-- then the lease is NULL). A notification whose last attempt was\n-- interrupted is leased alone; the batch stops before the first such one.\n--\n-- Two workers never lease one notification: the scan locks what it picks\n-- (skipping rows other sessions hold, so it never waits), then a second\n-- statement, whose snapshot is newer than any lease committed by a session\n-- that held one of those rows, drops the ones such a lease took meanwhile.\n-- The planner settings keep the ordered index scan that stops after\n-- p_limit rows even when the statistics are stale, and plan each statement\n-- once per session (the plans do not depend on the values).\nCREATE FUNCTION pgpubsub_notification_lease_take(\n    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint,\n    p_lease double precision, p_max_attempts integer\n)\nRETURNS TABLE (lease bigint, id bigint, attempt integer, dead boolean)\nLANGUAGE plpgsql\nSET enable_seqscan = off\nSET enable_bitmapscan = off\nSET enable_sort = off\nSET jit = off\nSET plan_cache_mode = force_generic_plan\nAS $pgpubsub$\nDECLARE\n    v_ids bigint[];\n    v_attempts integer[];\n    v_interrupted boolean[];\n    v_live bigint[] := '{}';\n    v_live_attempts integer[] := '{}';\n    v_dead bigint[] := '{}';\n    v_dead_attempts integer[] := '{}';\n    v_lease bigint;\n    v_scan integer;\nBEGIN\n    -- Reap the channel's leases that ran out and that no transaction holds.\n    WITH expired AS (\n        DELETE FROM pgpubsub_notification_leases AS l\n        WHERE l.id IN (\n            SELECT e.id FROM pgpubsub_notification_leases AS e\n            WHERE e.channel = p_channel AND e.leased_until < now()\n            FOR UPDATE SKIP LOCKED\n        )\n        RETURNING l.ids, l.leased_until\n    )\n    UPDATE pgpubsub_notification AS n\n    SET attempts = n.attempts + 1,\n        interrupted_at = e.leased_until,\n        failed_at = e.leased_until,\n        available_at = now(),\n        last_error = 'attempt ' || (n.attempts + 1) || ' did not finish before its lease ran out at '\n                     || e.leased_until || ': the listener process or its database session died'\n    FROM expired AS e CROSS JOIN LATERAL unnest(e.ids) AS x(id)\n    WHERE n.id = x.id AND n.dead_at IS NULL;\n\n    -- When every row the scan locked was taken by a lease it could not see\n    -- yet, scan again: the next statement's snapshot sees that lease.\n    FOR v_scan IN 1 .. 3 LOOP\n        SELECT array_agg(s.id ORDER BY s.id),\n               array_agg(s.attempts ORDER BY s.id),\n               array_agg(s.interrupted_at IS NOT NULL ORDER BY s.id)\n        INTO v_ids, v_attempts, v_interrupted\n        FROM (\n            SELECT n.id, n.attempts, n.interrupted_at\n            FROM pgpubsub_notification AS n\n            WHERE n.channel = p_channel\n              AND NOT n.broadcast\n              AND n.dead_at IS NULL\n              AND n.available_at <= now()\n              AND n.id > p_cursor\n              AND (p_snapshot IS NULL\n                   OR NOT pg_visible_in_snapshot(n.written_xid, p_snapshot::pg_snapshot))\n              AND n.id NOT IN (\n                  SELECT x.id FROM pgpubsub_notification_leases AS l\n                  CROSS JOIN LATERAL unnest(l.ids) AS x(id)\n                  WHERE l.channel = p_channel\n              )\n            ORDER BY n.id\n            LIMIT p_limit\n            FOR UPDATE OF n SKIP LOCKED\n        ) AS s;\n        IF v_ids IS NULL THEN\n            RETURN;\n        END IF;\n        -- A lease committed after the scan's snapshot by a session that\n        -- held one of these rows until then.\n        EXIT WHEN NOT EXISTS (SELECT 1 FROM pgpubsub_notification_leases AS l\n                              WHERE l.channel = p_channel AND l.ids && v_ids);\n        SELECT array_agg(u.id ORDER BY u.id), array_agg(u.attempts ORDER BY u.id),\n               array_agg(u.interrupted ORDER BY u.id)\n        INTO v_ids, v_attempts, v_interrupted\n        FROM unnest(v_ids, v_attempts, v_interrupted) AS u(id, attempts, interrupted)\n        WHERE u.id NOT IN (\n            SELECT x.id FROM pgpubsub_notification_leases AS l\n            CROSS JOIN LATERAL unnest(l.ids) AS x(id)\n            WHERE l.channel = p_channel\n        );\n        EXIT WHEN v_ids IS NOT NULL;\n    END LOOP;\n    IF v_ids IS NULL THEN\n        RETURN;\n    END IF;\n\n    IF true = ANY(v_interrupted) OR p_max_attempts <= ANY(v_attempts) THEN\n        FOR i IN 1 .. cardinality(v_ids) LOOP\n            IF v_attempts[i] >= p_max_attempts THEN\n                v_dead := v_dead || v_ids[i];\n                v_dead_attempts := v_dead_attempts || v_attempts[i];\n                CONTINUE;\n            END IF;\n            IF v_interrupted[i] THEN\n                IF cardinality(v_live) = 0 THEN\n                    v_live := ARRAY[v_ids[i]];\n                    v_live_attempts := ARRAY[v_attempts[i]];\n                END IF;\n                EXIT;\n            END IF;\n            v_live := v_live || v_ids[i];\n            v_live_attempts := v_live_attempts || v_attempts[i];\n        END LOOP;\n    ELSE\n        v_live := v_ids;\n        v_live_attempts := v_attempts;\n    END IF;\n\n    IF cardinality(v_dead) > 0 THEN\n        UPDATE pgpubsub_notification AS n\n        SET dead_at = now(), available_at = 'infinity'\n        WHERE n.id = ANY(v_dead);\n        RETURN QUERY SELECT NULL::bigint, d.id, d.attempt, true\n            FROM unnest(v_dead, v_dead_attempts) AS d(id, attempt);\n    END IF;\n    IF cardinality(v_live) > 0 THEN\n        INSERT INTO pgpubsub_notification_leases (channel, ids, leased_until)\n        VALUES (p_channel, v_live, now() + make_interval(secs => p_lease))\n        RETURNING pgpubsub_notification_leases.id INTO v_lease;\n        RETURN QUERY SELECT v_lease, l.id, l.attempts + 1, false\n            FROM unnest(v_live, v_live_attempts) AS l(id, attempts);\n    END IF;\nEND;\n$pgpubsub$;\n\n-- Ends lease p_done_lease, whose notifications p_done were handled (in\n-- the transaction that ran them), and leases the next batch as\n-- pgpubsub_notification_lease_take does: the next lease commits with the\n-- handlers' work, in one round trip.\nCREATE FUNCTION pgpubsub_notification_lease_next(\n    p_done bigint[], p_done_lease bigint,\n    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint,\n    p_lease double precision, p_max_attempts integer\n)\nRETURNS TABLE (lease bigint, id bigint, attempt integer, dead boolean)\nLANGUAGE plpgsql\nSET jit = off\nSET plan_cache_mode = force_generic_plan\nAS $pgpubsub$\nBEGIN\n    DELETE FROM pgpubsub_notification AS n WHERE n.id = ANY(p_done);\n    DELETE FROM pgpubsub_notification_leases AS l WHERE l.id = p_done_lease;\n    RETURN QUERY SELECT t.lease, t.id, t.attempt, t.dead\n        FROM pgpubsub_notification_lease_take(p_channel, p_snapshot, p_limit, p_cursor,\n                                              p_lease, p_max_attempts) AS t;\nEND;\n$pgpubsub$;\n","down":"DROP FUNCTION IF EXISTS pgpubsub_notification_lease_next(bigint[], bigint, text, text, bigint, bigint, double precision, integer);\nDROP FUNCTION IF EXISTS pgpubsub_notification_lease_take(text, text, bigint, bigint, double precision, integer);\nDROP TABLE IF EXISTS pgpubsub_notification_leases;\nALTER TABLE pgpubsub_notification RENAME COLUMN interrupted_at TO leased_until;\nCREATE FUNCTION pgpubsub_notification_lease(\n    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint,\n    p_lease double precision, p_max_attempts integer\n)\nRETURNS TABLE (id bigint, attempts integer, dead boolean)\nLANGUAGE sql\nSET enable_seqscan = off\nSET enable_bitmapscan = off\nSET enable_sort = off\nSET jit = off\nAS $pgpubsub$\n    WITH picked AS MATERIALIZED (\n        SELECT n.id, n.attempts, n.leased_until\n        FROM pgpubsub_notification AS n\n        WHERE n.channel = p_channel\n          AND NOT n.broadcast\n          AND n.dead_at IS NULL\n          AND n.available_at <= now()\n          AND n.id > p_cursor\n          AND (p_snapshot IS NULL\n               OR NOT pg_visible_in_snapshot(n.written_xid, p_snapshot::pg_snapshot))\n        ORDER BY n.id\n        LIMIT p_limit\n        FOR UPDATE SKIP LOCKED\n    ),\n    bounds AS (\n        SELECT min(p.id) AS first_id,\n               min(p.id) FILTER (WHERE p.leased_until IS NOT NULL) AS first_interrupted\n        FROM picked AS p\n    ),\n    chosen AS (\n        SELECT p.* FROM picked AS p CROSS JOIN bounds AS b\n        WHERE b.first_interrupted IS NULL\n           OR p.id < b.first_interrupted\n           OR (p.id = b.first_interrupted AND p.id = b.first_id)\n    ),\n    updated AS (\n        UPDATE pgpubsub_notification AS n\n        SET attempts = CASE WHEN p.attempts >= p_max_attempts THEN n.attempts ELSE n.attempts + 1 END,\n            available_at = CASE WHEN p.attempts >= p_max_attempts THEN 'infinity'::timestamptz\n                                ELSE now() + make_interval(secs => p_lease) END,\n            leased_until = CASE WHEN p.attempts >= p_max_attempts THEN NULL\n                                ELSE now() + make_interval(secs => p_lease) END,\n            dead_at = CASE WHEN p.attempts >= p_max_attempts THEN now() END,\n            failed_at = CASE WHEN p.leased_until IS NOT NULL THEN p.leased_until ELSE n.failed_at END,\n            last_error = CASE WHEN p.leased_until IS NOT NULL\n                              THEN 'attempt ' || p.attempts || ' did not finish before its lease ran out at '\n                                   || p.leased_until || ': the listener process or its database session died'\n                              ELSE n.last_error END\n        FROM chosen AS p\n        WHERE n.id = p.id\n        RETURNING n.id, n.attempts, n.dead_at IS NOT NULL AS dead\n    )\n    SELECT u.id, u.attempts, u.dead FROM updated AS u ORDER BY u.id\n$pgpubsub$;\nCREATE FUNCTION pgpubsub_notification_leased(p_ids bigint[], p_attempts integer[])\nRETURNS SETOF pgpubsub_notification\nLANGUAGE sql\nSET jit = off\nAS $pgpubsub$\n    SELECT n.*\n    FROM unnest(p_ids, p_attempts) AS l(id, attempts)\n    JOIN pgpubsub_notification AS n ON n.id = l.id\n    WHERE n.attempts = l.attempts AND n.leased_until IS NOT NULL AND n.dead_at IS NULL\n    ORDER BY n.id\n    FOR UPDATE OF n\n$pgpubsub$;\n"},{"key":"channel/media_channel","up":"-- Channel `media_channel` (media_example::channels::MediaChannel): INSERT OR UPDATE on \"media\".\nCREATE OR REPLACE FUNCTION \"pgpubsub_media_channel\"() RETURNS trigger\nLANGUAGE plpgsql\nAS $pgpubsub$\nBEGIN\n    PERFORM pgpubsub_notification_send('media_channel', true, jsonb_build_object(\n        'app', 'media_example',\n        'model', 'Media',\n        'op', TG_OP,\n        'old', to_jsonb(OLD),\n        'new', to_jsonb(NEW)));\n    RETURN NULL;\nEND;\n$pgpubsub$;\nDROP TRIGGER IF EXISTS \"pgpubsub_media_channel\" ON \"media\";\nCREATE TRIGGER \"pgpubsub_media_channel\" AFTER INSERT OR UPDATE ON \"media\"\n    FOR EACH ROW EXECUTE FUNCTION \"pgpubsub_media_channel\"();\n","down":"DROP TRIGGER IF EXISTS \"pgpubsub_media_channel\" ON \"media\";\nDROP FUNCTION IF EXISTS \"pgpubsub_media_channel\"();\n"}]}
-- Generated by pgpubsub-gen from this crate's channels and listeners; do not edit.
-- Regenerate with `cargo run --bin pgpubsub-gen`.
-- + schema/0004

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

