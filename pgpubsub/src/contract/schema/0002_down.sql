DROP FUNCTION IF EXISTS pgpubsub_row_check(anyelement, jsonb);
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
