-- syncctl's own schema on the target. postgres-migrations runs this once, with search_path set to
-- syncctl (so its `migrations` table lives here too), inside one transaction.

-- One row per sync (a spec's `name`).
CREATE TABLE syncctl.syncs (
  name          text PRIMARY KEY,
  spec_file     text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per table of a sync: what it maps and where its copy and stream stand.
CREATE TABLE syncctl.sync_tables (
  sync_name     text NOT NULL REFERENCES syncctl.syncs (name) ON DELETE CASCADE,
  table_name    text NOT NULL,
  source_table  text NOT NULL,
  target_table  text NOT NULL UNIQUE,
  mode          text NOT NULL CHECK (mode IN ('mapped', 'native')),
  -- pending: not copied yet; copying: initial snapshot under way; streaming: applied by the
  -- worker; paused: stopped with `error` (e.g. a source schema change broke the mapping).
  state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'copying', 'streaming', 'paused')),
  error         text,
  -- Source LSN at which the initial copy was consistent; changes at or before it are in the copy.
  snapshot_lsn  pg_lsn,
  -- The source table's replica identity before syncctl changed it ('d', 'n', 'f', 'i:<index>'),
  -- so that destroy can put it back.
  replica_identity_before text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (sync_name, table_name)
);

-- Resumable initial copy: one row per chunk of a table.
CREATE TABLE syncctl.snapshot_chunks (
  sync_name     text NOT NULL,
  table_name    text NOT NULL,
  chunk         integer NOT NULL,
  lower_bound   text,
  upper_bound   text,
  rows_copied   bigint,
  done_at       timestamptz,
  PRIMARY KEY (sync_name, table_name, chunk),
  FOREIGN KEY (sync_name, table_name) REFERENCES syncctl.sync_tables ON DELETE CASCADE
);

-- The stream's position, written in the same transaction as the rows it covers: a crash at any
-- instant leaves rows and position in step.
CREATE TABLE syncctl.checkpoints (
  sync_name     text PRIMARY KEY REFERENCES syncctl.syncs (name) ON DELETE CASCADE,
  commit_lsn    pg_lsn NOT NULL,
  commit_time   timestamptz,
  updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Every conflict, however resolved; kept after a sync is destroyed, for audit.
CREATE TABLE syncctl.sync_conflicts (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sync_name     text NOT NULL,
  table_name    text NOT NULL,
  -- insert_exists | update_missing | delete_missing | locally_modified | apply_error
  kind          text NOT NULL,
  key           jsonb NOT NULL,
  incoming      jsonb,
  current       jsonb,
  source_lsn    pg_lsn,
  source_commit_time timestamptz,
  strategy      text NOT NULL,
  -- applied | skipped | merged | pending (manual) | resolved
  outcome       text NOT NULL,
  reason        text,
  resolved_by   text,
  resolved_at   timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_conflicts_pending ON syncctl.sync_conflicts (sync_name, table_name) WHERE outcome = 'pending';

-- Change tracking: a target row written by a local writer since syncctl last wrote it. The
-- worker deletes the entry when it writes the row; an entry present when a change arrives is a
-- conflict.
CREATE TABLE syncctl.local_changes (
  target_table  text NOT NULL,
  key           jsonb NOT NULL,
  operation     text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
  changed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
  changed_by    text NOT NULL DEFAULT current_user,
  PRIMARY KEY (target_table, key)
);

-- Row trigger for target tables. Arguments: the sync's name, the target table's qualified name,
-- then its key columns. The worker sets `syncctl.writer = on` locally in its transactions and the trigger's
-- WHEN clause skips those, so only other writers are tracked.
CREATE FUNCTION syncctl.track_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  row_new jsonb;
  row_old jsonb;
  key_new jsonb;
  key_old jsonb;
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    row_new := to_jsonb(NEW);
    SELECT jsonb_object_agg(k, row_new -> k) INTO key_new FROM unnest(TG_ARGV[2:]) AS k;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    row_old := to_jsonb(OLD);
    SELECT jsonb_object_agg(k, row_old -> k) INTO key_old FROM unnest(TG_ARGV[2:]) AS k;
  END IF;
  -- A key change is a delete of the old key and an insert of the new one.
  IF key_old IS NOT NULL AND key_old IS DISTINCT FROM key_new THEN
    INSERT INTO syncctl.local_changes AS c (target_table, key, operation)
    VALUES (TG_ARGV[1], key_old, 'DELETE')
    ON CONFLICT (target_table, key) DO UPDATE
      SET operation = excluded.operation, changed_at = excluded.changed_at, changed_by = excluded.changed_by;
  END IF;
  IF key_new IS NOT NULL THEN
    INSERT INTO syncctl.local_changes AS c (target_table, key, operation)
    VALUES (TG_ARGV[1], key_new, CASE WHEN key_old IS DISTINCT FROM key_new THEN 'INSERT' ELSE TG_OP END)
    ON CONFLICT (target_table, key) DO UPDATE
      SET operation = excluded.operation, changed_at = excluded.changed_at, changed_by = excluded.changed_by;
  END IF;
  RETURN NULL;
END
$$;
