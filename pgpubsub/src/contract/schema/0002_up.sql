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
