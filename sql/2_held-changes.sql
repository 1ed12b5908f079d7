-- Changes of a table whose initial copy is still running, received by the worker meanwhile.
-- They are written in the same target transaction as the checkpoint that moves past them (so a
-- restart neither loses nor repeats them) and applied, in order, in the transaction that finds
-- the copy finished: the other tables of the sync stream on while one table is copied.
CREATE TABLE syncctl.held_changes (
  sync_name   text NOT NULL REFERENCES syncctl.syncs (name) ON DELETE CASCADE,
  table_name  text NOT NULL,
  seq         bigint GENERATED ALWAYS AS IDENTITY,
  -- Commit position of the source transaction: changes before the copy's snapshot are in the copy.
  commit_lsn  pg_lsn NOT NULL,
  -- W write, D delete, M move a row to a new key (unchanged TOAST), T truncate.
  op          "char" NOT NULL,
  unchanged   int2[],
  columns     text[] NOT NULL,
  vals        text[],
  old_vals    text[],
  PRIMARY KEY (sync_name, table_name, seq)
);
