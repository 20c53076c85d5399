-- pgpubsub-state: {"objects":[{"key":"schema/0001","up":"-- The latest applied Diesel migration: a notification's db_version. Looked\n-- up once per transaction (cached in a transaction-local setting), so a bulk\n-- statement does not query the migrations table per row.\nCREATE FUNCTION pgpubsub_db_version() RETURNS text\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_version text := current_setting('pgpubsub.db_version', true);\nBEGIN\n    IF v_version IS NOT NULL AND v_version <> '' THEN\n        RETURN v_version;\n    END IF;\n    IF to_regclass('__diesel_schema_migrations') IS NULL THEN\n        RETURN NULL;\n    END IF;\n    SELECT max(version) INTO v_version FROM __diesel_schema_migrations;\n    PERFORM set_config('pgpubsub.db_version', COALESCE(v_version, ''), true);\n    RETURN v_version;\nEND;\n$pgpubsub$;\n\n-- The notification context set by with_context / set_session_context.\nCREATE FUNCTION pgpubsub_context() RETURNS jsonb\nLANGUAGE sql STABLE AS $pgpubsub$\n    SELECT COALESCE(NULLIF(current_setting('pgpubsub.context', true), ''), '{}')::jsonb\n$pgpubsub$;\n\n-- Stored notifications: every notification of a lockable channel, and the\n-- payloads of broadcast ones too large for NOTIFY.\nCREATE TABLE pgpubsub_notification (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    channel varchar(63) NOT NULL,\n    payload jsonb NOT NULL,\n    created_at timestamptz NOT NULL DEFAULT now(),\n    db_version text DEFAULT pgpubsub_db_version(),\n    -- The writing transaction: listeners started without recovery skip the\n    -- notifications committed before they started.\n    written_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),\n    broadcast boolean NOT NULL DEFAULT false,\n    attempts integer NOT NULL DEFAULT 0,\n    available_at timestamptz NOT NULL DEFAULT now(),\n    last_error text,\n    failed_at timestamptz\n);\n\nCREATE INDEX pgpubsub_notification_claim_idx\n    ON pgpubsub_notification (channel, id) WHERE NOT broadcast;\n\n-- Claims up to p_limit available notifications of a channel after id\n-- p_cursor, oldest first, skipping rows other sessions hold; with a snapshot,\n-- leaves alone the rows committed before it. The planner settings keep the\n-- ordered index scan that stops after p_limit rows even when the table's\n-- statistics are stale (a fresh bulk insert looks like an empty table, and a\n-- bitmap scan plus sort would read the whole backlog on every claim).\nCREATE FUNCTION pgpubsub_notification_claim(\n    p_channel text, p_snapshot text, p_limit bigint, p_cursor bigint\n)\nRETURNS SETOF pgpubsub_notification\nLANGUAGE sql\nSET enable_seqscan = off\nSET enable_bitmapscan = off\nSET enable_sort = off\nAS $pgpubsub$\n    SELECT *\n    FROM pgpubsub_notification\n    WHERE channel = p_channel\n      AND NOT broadcast\n      AND available_at <= now()\n      AND id > p_cursor\n      AND (p_snapshot IS NULL\n           OR NOT pg_visible_in_snapshot(written_xid, p_snapshot::pg_snapshot))\n    ORDER BY id\n    LIMIT p_limit\n    FOR UPDATE SKIP LOCKED\n$pgpubsub$;\n\n-- Sends one notification: stored and woken (lockable) or broadcast.\nCREATE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)\nRETURNS void\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_payload jsonb := p_payload || jsonb_build_object('context', pgpubsub_context());\n    v_text text;\n    v_id bigint;\nBEGIN\n    IF p_lock THEN\n        INSERT INTO pgpubsub_notification (channel, payload) VALUES (p_channel, v_payload);\n        -- A wake-up: identical notifications of one transaction fold into one.\n        PERFORM pg_notify(p_channel, '');\n        RETURN;\n    END IF;\n    v_text := v_payload::text;\n    -- NOTIFY payloads must stay under 8000 bytes; larger ones are stored.\n    IF octet_length(v_text) <= 7900 THEN\n        PERFORM pg_notify(p_channel, v_text);\n    ELSE\n        INSERT INTO pgpubsub_notification (channel, payload, broadcast)\n        VALUES (p_channel, v_payload, true)\n        RETURNING id INTO v_id;\n        PERFORM pg_notify(p_channel, jsonb_build_object('pgpubsub_stored', v_id)::text);\n    END IF;\nEND;\n$pgpubsub$;\n","down":"DROP FUNCTION IF EXISTS pgpubsub_notification_send(text, boolean, jsonb);\nDROP FUNCTION IF EXISTS pgpubsub_notification_claim(text, text, bigint, bigint);\nDROP TABLE IF EXISTS pgpubsub_notification;\nDROP FUNCTION IF EXISTS pgpubsub_context();\nDROP FUNCTION IF EXISTS pgpubsub_db_version();\n"},{"key":"schema/0002","up":"-- Names the columns of a payload row that the table's types reject: for each\n-- key of p_row that is a column of p_base's row type, reads that one column\n-- with the same conversion jsonb_populate_record uses (jsonb_to_record with\n-- the column's type) and returns the key with PostgreSQL's error. The\n-- listener calls it only after a row failed to decode, so the error names the\n-- column.\nCREATE FUNCTION pgpubsub_row_check(p_base anyelement, p_row jsonb)\nRETURNS TABLE (column_name text, error text)\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_column record;\nBEGIN\n    IF jsonb_typeof(p_row) IS DISTINCT FROM 'object' THEN\n        column_name := NULL;\n        error := format('the row is a JSON %s, not an object', COALESCE(jsonb_typeof(p_row), 'NULL'));\n        RETURN NEXT;\n        RETURN;\n    END IF;\n    FOR v_column IN\n        SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type_name\n        FROM pg_type AS t\n        JOIN pg_attribute AS a ON a.attrelid = t.typrelid\n        WHERE t.oid = pg_typeof(p_base) AND a.attnum > 0 AND NOT a.attisdropped\n          AND p_row ? a.attname\n        ORDER BY a.attnum\n    LOOP\n        BEGIN\n            EXECUTE format('SELECT 1 FROM jsonb_to_record($1) AS r(%I %s)', v_column.name, v_column.type_name)\n                USING p_row;\n        EXCEPTION WHEN OTHERS THEN\n            column_name := v_column.name;\n            error := SQLERRM;\n            RETURN NEXT;\n        END;\n    END LOOP;\nEND;\n$pgpubsub$;\n\n-- Sends one notification: stored and woken (lockable) or broadcast; a\n-- broadcast payload also carries created_at and db_version.\nCREATE OR REPLACE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)\nRETURNS void\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_payload jsonb := p_payload || jsonb_build_object('context', pgpubsub_context());\n    v_text text;\n    v_id bigint;\nBEGIN\n    IF p_lock THEN\n        INSERT INTO pgpubsub_notification (channel, payload) VALUES (p_channel, v_payload);\n        -- A wake-up: identical notifications of one transaction fold into one.\n        PERFORM pg_notify(p_channel, '');\n        RETURN;\n    END IF;\n    -- Broadcasts have no stored row to keep their write time and schema\n    -- version: the payload carries them.\n    v_payload := v_payload || jsonb_build_object('created_at', now(), 'db_version', pgpubsub_db_version());\n    v_text := v_payload::text;\n    -- NOTIFY payloads must stay under 8000 bytes; larger ones are stored.\n    IF octet_length(v_text) <= 7900 THEN\n        PERFORM pg_notify(p_channel, v_text);\n    ELSE\n        INSERT INTO pgpubsub_notification (channel, payload, broadcast)\n        VALUES (p_channel, v_payload, true)\n        RETURNING id INTO v_id;\n        PERFORM pg_notify(p_channel, jsonb_build_object('pgpubsub_stored', v_id)::text);\n    END IF;\nEND;\n$pgpubsub$;\n","down":"DROP FUNCTION IF EXISTS pgpubsub_row_check(anyelement, jsonb);\nCREATE OR REPLACE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)\nRETURNS void\nLANGUAGE plpgsql AS $pgpubsub$\nDECLARE\n    v_payload jsonb := p_payload || jsonb_build_object('context', pgpubsub_context());\n    v_text text;\n    v_id bigint;\nBEGIN\n    IF p_lock THEN\n        INSERT INTO pgpubsub_notification (channel, payload) VALUES (p_channel, v_payload);\n        -- A wake-up: identical notifications of one transaction fold into one.\n        PERFORM pg_notify(p_channel, '');\n        RETURN;\n    END IF;\n    v_text := v_payload::text;\n    -- NOTIFY payloads must stay under 8000 bytes; larger ones are stored.\n    IF octet_length(v_text) <= 7900 THEN\n        PERFORM pg_notify(p_channel, v_text);\n    ELSE\n        INSERT INTO pgpubsub_notification (channel, payload, broadcast)\n        VALUES (p_channel, v_payload, true)\n        RETURNING id INTO v_id;\n        PERFORM pg_notify(p_channel, jsonb_build_object('pgpubsub_stored', v_id)::text);\n    END IF;\nEND;\n$pgpubsub$;\n"},{"key":"channel/media_channel","up":"-- Channel `media_channel` (media_example::channels::MediaChannel): INSERT OR UPDATE on \"media\".\nCREATE OR REPLACE FUNCTION \"pgpubsub_media_channel\"() RETURNS trigger\nLANGUAGE plpgsql\nAS $pgpubsub$\nBEGIN\n    PERFORM pgpubsub_notification_send('media_channel', true, jsonb_build_object(\n        'app', 'media_example',\n        'model', 'Media',\n        'op', TG_OP,\n        'old', to_jsonb(OLD),\n        'new', to_jsonb(NEW)));\n    RETURN NULL;\nEND;\n$pgpubsub$;\nDROP TRIGGER IF EXISTS \"pgpubsub_media_channel\" ON \"media\";\nCREATE TRIGGER \"pgpubsub_media_channel\" AFTER INSERT OR UPDATE ON \"media\"\n    FOR EACH ROW EXECUTE FUNCTION \"pgpubsub_media_channel\"();\n","down":"DROP TRIGGER IF EXISTS \"pgpubsub_media_channel\" ON \"media\";\nDROP FUNCTION IF EXISTS \"pgpubsub_media_channel\"();\n"}]}
-- Generated by pgpubsub-gen from this crate's channels and listeners; do not edit.
-- Regenerate with `cargo run --bin pgpubsub-gen`.
-- + schema/0002
-- ~ channel/media_channel

-- Names the columns of a payload row that the table's types reject: for each
-- key of p_row that is a column of p_base's row type, reads that one column
-- with the same conversion jsonb_populate_record uses (jsonb_to_record with
-- the column's type) and returns the key with PostgreSQL's error. The
-- listener calls it only after a row failed to decode, so the error names the
-- column.
CREATE FUNCTION pgpubsub_row_check(p_base anyelement, p_row jsonb)
RETURNS TABLE (column_name text, error text)
LANGUAGE plpgsql AS $pgpubsub$
DECLARE
    v_column record;
BEGIN
    IF jsonb_typeof(p_row) IS DISTINCT FROM 'object' THEN
        column_name := NULL;
        error := format('the row is a JSON %s, not an object', COALESCE(jsonb_typeof(p_row), 'NULL'));
        RETURN NEXT;
        RETURN;
    END IF;
    FOR v_column IN
        SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type_name
        FROM pg_type AS t
        JOIN pg_attribute AS a ON a.attrelid = t.typrelid
        WHERE t.oid = pg_typeof(p_base) AND a.attnum > 0 AND NOT a.attisdropped
          AND p_row ? a.attname
        ORDER BY a.attnum
    LOOP
        BEGIN
            EXECUTE format('SELECT 1 FROM jsonb_to_record($1) AS r(%I %s)', v_column.name, v_column.type_name)
                USING p_row;
        EXCEPTION WHEN OTHERS THEN
            column_name := v_column.name;
            error := SQLERRM;
            RETURN NEXT;
        END;
    END LOOP;
END;
$pgpubsub$;

-- Sends one notification: stored and woken (lockable) or broadcast; a
-- broadcast payload also carries created_at and db_version.
CREATE OR REPLACE FUNCTION pgpubsub_notification_send(p_channel text, p_lock boolean, p_payload jsonb)
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
    -- Broadcasts have no stored row to keep their write time and schema
    -- version: the payload carries them.
    v_payload := v_payload || jsonb_build_object('created_at', now(), 'db_version', pgpubsub_db_version());
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

DROP TRIGGER IF EXISTS "pgpubsub_media_channel" ON "media";
DROP FUNCTION IF EXISTS "pgpubsub_media_channel"();
-- Channel `media_channel` (media_example::channels::MediaChannel): INSERT OR UPDATE on "media".
CREATE OR REPLACE FUNCTION "pgpubsub_media_channel"() RETURNS trigger
LANGUAGE plpgsql
AS $pgpubsub$
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

