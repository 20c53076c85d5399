DROP FUNCTION IF EXISTS pgpubsub_row_check(anyelement, jsonb);
