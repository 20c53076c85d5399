DROP TABLE IF EXISTS pgpubsub_listener;
DROP FUNCTION IF EXISTS pgpubsub_notification_leased(bigint[], integer[]);
DROP FUNCTION IF EXISTS pgpubsub_notification_lease(text, text, bigint, bigint, double precision, integer);
CREATE INDEX IF NOT EXISTS pgpubsub_notification_claim_idx
    ON pgpubsub_notification (channel, id) WHERE NOT broadcast;
DROP INDEX IF EXISTS pgpubsub_notification_live_idx;
UPDATE pgpubsub_notification SET available_at = 'infinity' WHERE dead_at IS NOT NULL;
ALTER TABLE pgpubsub_notification DROP COLUMN IF EXISTS dead_at, DROP COLUMN IF EXISTS leased_until;
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
