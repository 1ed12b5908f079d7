-- The stream worker's guard, run in every target transaction it commits: the sync's mapped tables
-- are still the ones it routes. `syncctl apply` registers a table before it takes that table's
-- copy snapshot; a table added as a second target of a source table the worker already reads is
-- announced by no message in the stream. A batch that would commit without routing it fails here
-- (SQLSTATE SYTAB) and the worker starts over from the checkpoint with the spec read again, so
-- no change the copy lacks is passed over unseen.
CREATE FUNCTION syncctl.expect_tables(sync text, routed text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM syncctl.sync_tables AS t
              WHERE t.sync_name = sync AND t.mode = 'mapped' AND t.table_name <> ALL (routed)) THEN
    RAISE EXCEPTION 'sync % has mapped tables this worker does not route', sync USING ERRCODE = 'SYTAB';
  END IF;
END
$$;
