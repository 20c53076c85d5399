-- The latest applied Diesel migration: a notification's db_version. Looked
-- up once per transaction (cached in a transaction-local setting), so a bulk
-- statement does not query the migrations table per row.
CREATE FUNCTION pgpubsub_db_version() RETURNS text
LANGUAGE plpgsql AS $pgpubsub$
DECLARE
    v_version text := current_setting('pgpubsub.db_version', true);
BEGIN
    IF v_version IS NOT NULL AND v_version <> '' THEN
        RETURN v_version;
    END IF;
    IF to_regclass('__diesel_schema_migrations') IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT max(version) INTO v_version FROM __diesel_schema_migrations;
    PERFORM set_config('pgpubsub.db_version', COALESCE(v_version, ''), true);
    RETURN v_version;
END;
$pgpubsub$;

-- The notification context set by with_context / set_session_context.
CREATE FUNCTION pgpubsub_context() RETURNS jsonb
LANGUAGE sql STABLE AS $pgpubsub$
    SELECT COALESCE(NULLIF(current_setting('pgpubsub.context', true), ''), '{}')::jsonb
$pgpubsub$;

-- Stored notifications: every notification of a lockable channel, and the
-- payloads of broadcast ones too large for NOTIFY.
CREATE TABLE pgpubsub_notification (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel varchar(63) NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    db_version text DEFAULT pgpubsub_db_version(),
    -- The writing transaction: listeners started without recovery skip the
    -- notifications committed before they started.
    written_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    broadcast boolean NOT NULL DEFAULT false,
    attempts integer NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    failed_at timestamptz
);

CREATE INDEX pgpubsub_notification_claim_idx
    ON pgpubsub_notification (channel, id) WHERE NOT broadcast;

-- Claims up to p_limit available notifications of a channel after id
-- p_cursor, oldest first, skipping rows other sessions hold; with a snapshot,
-- leaves alone the rows committed before it. The planner settings keep the
-- ordered index scan that stops after p_limit rows even when the table's
-- statistics are stale (a fresh bulk insert looks like an empty table, and a
-- bitmap scan plus sort would read the whole backlog on every claim).
CREATE FUNCTION pgpubsub_notification_claim(
    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint
)
RETURNS SETOF pgpubsub_notification
LANGUAGE sql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
AS $pgpubsub$
    SELECT *
    FROM pgpubsub_notification
    WHERE channel = p_channel
      AND NOT broadcast
      AND available_at <= now()
      AND id > p_cursor
      AND (p_snapshot IS NULL
           OR NOT pg_visible_in_snapshot(written_xid, p_snapshot::pg_snapshot))
    ORDER BY id
    LIMIT p_limit
    FOR UPDATE SKIP LOCKED
$pgpubsub$;

-- Sends one notification: stored and woken (lockable) or broadcast.
CREATE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)
RETURNS void
LANGUAGE plpgsql AS $pgpubsub$
DECLARE
    v_payload jsonb := p_payload || jsonb_build_object('context', pgpubsub_context());
    v_text text;
    v_id bigint;
BEGIN
    IF p_lock THEN
        INSERT INTO pgpubsub_notification (channel, payload) VALUES (p_channel, v_payload);
        -- A wake-up: identical notifications of one transaction fold into one.
        PERFORM pg_notify(p_channel, '');
        RETURN;
    END IF;
    v_text := v_payload::text;
    -- NOTIFY payloads must stay under 8000 bytes; larger ones are stored.
    IF octet_length(v_text) <= 7900 THEN
        PERFORM pg_notify(p_channel, v_text);
    ELSE
        INSERT INTO pgpubsub_notification (channel, payload, broadcast)
        VALUES (p_channel, v_payload, true)
        RETURNING id INTO v_id;
        PERFORM pg_notify(p_channel, jsonb_build_object('pgpubsub_stored', v_id)::text);
    END IF;
END;
$pgpubsub$;
