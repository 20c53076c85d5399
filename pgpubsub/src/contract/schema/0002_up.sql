-- Names the columns of a payload row that the table's types reject: for each
-- key of p_row that is a column of p_base's row type, tries that column's own
-- input function and returns the key with PostgreSQL's error. The listener
-- calls it only after a row failed to decode, so the error names the column.
CREATE FUNCTION pgpubsub_row_check(p_base anyelement, p_row jsonb)
RETURNS TABLE (column_name text, error text)
LANGUAGE plpgsql AS $pgpubsub$
DECLARE
    v_key text;
BEGIN
    IF jsonb_typeof(p_row) IS DISTINCT FROM 'object' THEN
        column_name := NULL;
        error := format('the row is a JSON %s, not an object', COALESCE(jsonb_typeof(p_row), 'NULL'));
        RETURN NEXT;
        RETURN;
    END IF;
    FOR v_key IN SELECT jsonb_object_keys(p_row) LOOP
        BEGIN
            PERFORM jsonb_populate_record(p_base, jsonb_build_object(v_key, p_row -> v_key));
        EXCEPTION WHEN OTHERS THEN
            column_name := v_key;
            error := SQLERRM;
            RETURN NEXT;
        END;
    END LOOP;
END;
$pgpubsub$;
