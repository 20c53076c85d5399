DROP FUNCTION IF EXISTS pgpubsub_notification_lease_batch(bigint[], bigint, boolean, text, text, bigint, bigint, double precision, integer);
