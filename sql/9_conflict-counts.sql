-- Conflict counts per transaction (replaces 7_leader-and-counts.sql's count_conflict): the
-- setting holds one JSON object, {"[table, kind, outcome]": count}, instead of one line per
-- conflict. Appending a line copied the whole setting at every insert: a slice with n conflicts
-- cost O(n²) (15,000 conflicts in one transaction, 1.6 s in this trigger alone). The object has
-- one entry per table, kind and outcome, so each insert costs the same. Transaction-local as
-- before: a rolled-back subtransaction takes its counts back with it.
CREATE OR REPLACE FUNCTION syncctl.count_conflict() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  counts jsonb := coalesce(nullif(current_setting('syncctl.conflicts_logged', true), ''), '{}')::jsonb;
  entry text := jsonb_build_array(NEW.table_name, NEW.kind, NEW.outcome)::text;
BEGIN
  PERFORM set_config('syncctl.conflicts_logged',
    jsonb_set(counts, ARRAY[entry], to_jsonb(coalesce((counts ->> entry)::bigint, 0) + 1))::text, true);
  RETURN NULL;
END
$$;
