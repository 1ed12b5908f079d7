-- Conflict counts once per INSERT statement instead of once per row (replaces the row trigger
-- of 9_conflict-counts.sql; same setting, same JSON object {"[table, kind, outcome]": count}).
-- Set-based logging inserts a slice's conflicts in one statement (kept-prefix: ~1,600 rows a
-- batch in the bench's (g)), and the row trigger's PL/pgSQL call per row was a sixth of that
-- statement. A statement of one row (source order logs so) costs a little more than before.
-- Transaction-local as before: a rolled-back subtransaction takes its counts back with it.
CREATE FUNCTION syncctl.count_conflicts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('syncctl.conflicts_logged', (
    SELECT jsonb_object_agg(e, n)::text FROM (
      SELECT e, sum(n) AS n FROM (
        SELECT key AS e, value::bigint AS n
          FROM jsonb_each_text(coalesce(nullif(current_setting('syncctl.conflicts_logged', true), ''), '{}')::jsonb)
        UNION ALL
        SELECT jsonb_build_array(table_name, kind, outcome)::text, count(*) FROM new_rows GROUP BY table_name, kind, outcome) AS a
      GROUP BY e) AS b), true)
  WHERE EXISTS (SELECT 1 FROM new_rows);
  RETURN NULL;
END
$$;

DROP TRIGGER count_conflict ON syncctl.sync_conflicts;
DROP FUNCTION syncctl.count_conflict();
CREATE TRIGGER count_conflicts AFTER INSERT ON syncctl.sync_conflicts
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION syncctl.count_conflicts();
