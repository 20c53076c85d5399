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
