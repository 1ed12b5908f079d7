-- The conflict engine. A conflict is an incoming change meeting a target row that a local writer
-- changed since syncctl last wrote it (the change-tracking trigger's syncctl.local_changes).
-- `result` is the target row after the rule ran (NULL when there is none).
ALTER TABLE syncctl.sync_conflicts ADD COLUMN result jsonb;

-- Raised by the set-based apply when a staged key has a local change: the slice goes back to its
-- savepoint and is applied change by change, where each conflict meets the table's rule.
CREATE FUNCTION syncctl.local_changes_found(target_table text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'local changes of % meet incoming changes', target_table USING ERRCODE = 'SYCON';
END
$$;
