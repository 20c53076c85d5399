-- pgpubsub-state: {"objects":[{"key":"schema/0001","up":"-- The latest applied Diesel migration: a notification's db_version. Looked\n-- up once per transaction (cached in a transaction-local setting), so a bulk\n-- statement does not query the migrations table per row.\nCREATE FUNCTION pgpubsub_db_version() RETURNS text\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_version text := current_setting('pgpubsub.db_version', true);\nBEGIN\n    IF v_version IS NOT NULL AND v_version <> '' THEN\n        RETURN v_version;\n    END IF;\n    IF to_regclass('__diesel_schema_migrations') IS NULL THEN\n        RETURN NULL;\n    END IF;\n    SELECT max(version) INTO v_version FROM __diesel_schema_migrations;\n    PERFORM set_config('pgpubsub.db_version', COALESCE(v_version, ''), true);\n    RETURN v_version;\nEND;\n$pgpubsub$;\n\n-- The notification context set by with_context / set_session_context.\nCREATE FUNCTION pgpubsub_context() RETURNS jsonb\nLANGUAGE sql STABLE AS $pgpubsub$\n    SELECT COALESCE(NULLIF(current_setting('pgpubsub.context', true), ''), '{}')::jsonb\n$pgpubsub$;\n\n-- Stored notifications: every notification of a lockable channel, and the\n-- payloads of broadcast ones too large for NOTIFY.\nCREATE TABLE pgpubsub_notification (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    channel varchar(63) NOT NULL,\n    payload jsonb NOT NULL,\n    created_at timestamptz NOT NULL DEFAULT now(),\n    db_version text DEFAULT pgpubsub_db_version(),\n    -- The writing transaction: listeners started without recovery skip the\n    -- notifications committed before they started.\n    written_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),\n    broadcast boolean NOT NULL DEFAULT false,\n    attempts integer NOT NULL DEFAULT 0,\n    available_at timestamptz NOT NULL DEFAULT now(),\n    last_error text,\n    failed_at timestamptz\n);\n\nCREATE INDEX pgpubsub_notification_claim_idx\n    ON pgpubsub_notification (channel, id) WHERE NOT broadcast;\n\n-- Claims up to p_limit available notifications of a channel after id\n-- p_cursor, oldest first, skipping rows other sessions hold; with a snapshot,\n-- leaves alone the rows committed before it. The planner settings keep the\n-- ordered index scan that stops after p_limit rows even when the table's\n-- statistics are stale (a fresh bulk insert looks like an empty table, and a\n-- bitmap scan plus sort would read the whole backlog on every claim).\nCREATE FUNCTION pgpubsub_notification_claim(\n    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint\n)\nRETURNS SETOF pgpubsub_notification\nLANGUAGE sql\nSET enable_seqscan = off\nSET enable_bitmapscan = off\nSET enable_sort = off\nAS $pgpubsub$\n    SELECT *\n    FROM pgpubsub_notification\n    WHERE channel = p_channel\n      AND NOT broadcast\n      AND available_at <= now()\n      AND id > p_cursor\n      AND (p_snapshot IS NULL\n           OR NOT pg_visible_in_snapshot(written_xid, p_snapshot::pg_snapshot))\n    ORDER BY id\n    LIMIT p_limit\n    FOR UPDATE SKIP LOCKED\n$pgpubsub$;\n\n-- Sends one notification: stored and woken (lockable) or broadcast.\nCREATE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)\nRETURNS void\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_payload jsonb := p_payload || jsonb_build_object('context', pgpubsub_context());\n    v_text text;\n    v_id bigint;\nBEGIN\n    IF p_lock THEN\n        INSERT INTO pgpubsub_notification (channel, payload) VALUES (p_channel, v_payload);\n        -- A wake-up: identical notifications of one transaction fold into one.\n        PERFORM pg_notify(p_channel, '');\n        RETURN;\n    END IF;\n    v_text := v_payload::text;\n    -- NOTIFY payloads must stay under 8000 bytes; larger ones are stored.\n    IF octet_length(v_text) <= 7900 THEN\n        PERFORM pg_notify(p_channel, v_text);\n    ELSE\n        INSERT INTO pgpubsub_notification (channel, payload, broadcast)\n        VALUES (p_channel, v_payload, true)\n        RETURNING id INTO v_id;\n        PERFORM pg_notify(p_channel, jsonb_build_object('pgpubsub_stored', v_id)::text);\n    END IF;\nEND;\n$pgpubsub$;\n","down":"DROP FUNCTION IF EXISTS pgpubsub_notification_send(text, boolean, jsonb);\nDROP FUNCTION IF EXISTS pgpubsub_notification_claim(text, text, bigint, bigint);\nDROP TABLE IF EXISTS pgpubsub_notification;\nDROP FUNCTION IF EXISTS pgpubsub_context();\nDROP FUNCTION IF EXISTS pgpubsub_db_version();\n"},{"key":"channel/media_channel","up":"-- Channel `media_channel` (media_example::channels::MediaChannel): INSERT OR UPDATE on \"media\".\nCREATE OR REPLACE FUNCTION \"pgpubsub_media_channel\"() RETURNS trigger\nLANGUAGE plpgsql AS $pgpubsub$\nBEGIN\n    PERFORM pgpubsub_notification_send('media_channel', true, jsonb_build_object(\n        'app', 'media_example',\n        'model', 'Media',\n        'op', TG_OP,\n        'old', to_jsonb(OLD),\n        'new', to_jsonb(NEW)));\n    RETURN NULL;\nEND;\n$pgpubsub$;\nDROP TRIGGER IF EXISTS \"pgpubsub_media_channel\" ON \"media\";\nCREATE TRIGGER \"pgpubsub_media_channel\" AFTER INSERT OR UPDATE ON \"media\"\n    FOR EACH ROW EXECUTE FUNCTION \"pgpubsub_media_channel\"();\n","down":"DROP TRIGGER IF EXISTS \"pgpubsub_media_channel\" ON \"media\";\nDROP FUNCTION IF EXISTS \"pgpubsub_media_channel\"();\n"}]}
-- Generated by pgpubsub-gen from this crate's channels and listeners; do not edit.
-- Regenerate with `cargo run --bin pgpubsub-gen`.
-- + schema/0001
-- + channel/media_channel

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

-- Channel `media_channel` (media_example::channels::MediaChannel): INSERT OR UPDATE on "media".
CREATE OR REPLACE FUNCTION "pgpubsub_media_channel"() RETURNS trigger
LANGUAGE plpgsql AS $pgpubsub$
BEGIN
    PERFORM pgpubsub_notification_send('media_channel', true, jsonb_build_object(
        'app', 'media_example',
        'model', 'Media',
        'op', TG_OP,
        'old', to_jsonb(OLD),
        'new', to_jsonb(NEW)));
    RETURN NULL;
END;
$pgpubsub$;
DROP TRIGGER IF EXISTS "pgpubsub_media_channel" ON "media";
CREATE TRIGGER "pgpubsub_media_channel" AFTER INSERT OR UPDATE ON "media"
    FOR EACH ROW EXECUTE FUNCTION "pgpubsub_media_channel"();

