-- A table's lifecycle, online: `syncctl pause` sets a streaming table to 'held': the worker holds
-- its changes in syncctl.held_changes (durably, with the checkpoint, as during a copy) while the
-- other tables stream; `syncctl resume` sets it back to 'streaming' and the worker replays them
-- in order. ('paused' stays what it was: stopped by an error, its changes dropped until a copy.)
ALTER TABLE syncctl.sync_tables DROP CONSTRAINT sync_tables_state_check;
ALTER TABLE syncctl.sync_tables ADD CONSTRAINT sync_tables_state_check
  CHECK (state IN ('pending', 'copying', 'streaming', 'paused', 'held'));

-- The stream worker's guard (replaces 4_expect-tables.sql's): the sync's mapped tables are the
-- ones it routes, and the tables it applies as streaming still are, from the copy it knows of
-- (snapshot_lsn: a resync that went copying and back to streaming between two of its commits
-- changed it). Otherwise SQLSTATE SYTAB, and the worker starts its session over from the
-- checkpoint with the tables read again, so the change falls between two of its transactions.
-- `snapshots` holds the snapshot position the worker knows for each of `streaming`.
CREATE FUNCTION syncctl.expect_tables(sync text, routed text[], streaming text[], snapshots pg_lsn[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM syncctl.sync_tables AS t
              WHERE t.sync_name = sync AND t.mode = 'mapped' AND t.table_name <> ALL (routed))
     OR EXISTS (SELECT 1 FROM unnest(streaming, snapshots) AS s (table_name, snapshot_lsn)
                  JOIN syncctl.sync_tables AS t ON t.sync_name = sync AND t.table_name = s.table_name
                 WHERE t.state <> 'streaming' OR t.snapshot_lsn IS DISTINCT FROM s.snapshot_lsn) THEN
    RAISE EXCEPTION 'sync % has mapped tables this worker does not route, or routes in another state', sync USING ERRCODE = 'SYTAB';
  END IF;
END
$$;

-- Run history: every apply, copy, resync, verify, repair, pause, resume and worker session.
-- A worker session that died without saying so is closed as 'lost' by the next leader.
CREATE TABLE syncctl.runs (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sync_name   text NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('apply', 'copy', 'resync', 'verify', 'repair', 'pause', 'resume', 'worker')),
  table_name  text,
  started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  ended_at    timestamptz,
  outcome     text NOT NULL DEFAULT 'running' CHECK (outcome IN ('running', 'ok', 'failed', 'stopped', 'lost')),
  counts      jsonb NOT NULL DEFAULT '{}',
  detail      text,
  host        text,
  pid         integer
);
CREATE INDEX runs_by_sync ON syncctl.runs (sync_name, id);
