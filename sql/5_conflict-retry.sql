-- What a parked change was, as it was staged, so that it can be applied again later (`syncctl
-- conflicts retry`, or the worker once the parent row a foreign key missed has arrived):
-- {"columns": [the staged source columns, in stage order], "rows": [the stage rows of the change:
-- the old row (op K) and new row (op W) of an UPDATE, or the one row of a write or delete]}.
-- `sqlstate` is the error that parked it (NULL when no statement failed: an unchanged TOAST value
-- the stream does not carry).
ALTER TABLE syncctl.sync_conflicts ADD COLUMN change jsonb, ADD COLUMN sqlstate text;

-- Pending changes of one key: a later change of that key that applies supersedes them.
CREATE INDEX sync_conflicts_pending_key ON syncctl.sync_conflicts (sync_name, table_name, key) WHERE outcome = 'pending';
