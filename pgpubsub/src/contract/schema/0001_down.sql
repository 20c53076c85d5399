DROP FUNCTION IF EXISTS pgpubsub_notification_send(text, boolean, jsonb);
DROP FUNCTION IF EXISTS pgpubsub_notification_claim(text, text, bigint, bigint);
DROP TABLE IF EXISTS pgpubsub_notification;
DROP FUNCTION IF EXISTS pgpubsub_context();
DROP FUNCTION IF EXISTS pgpubsub_db_version();
