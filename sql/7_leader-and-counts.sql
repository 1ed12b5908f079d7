-- High availability: several `syncctl run` processes may serve one sync; the one holding the
-- sync's session advisory lock on the target leads. Taking over bumps leader_epoch (waiting
-- for the old leader's commit in flight, which holds this row), and every commit of the worker
-- runs syncctl.fence with the epoch it took over with: a process that lost the lead (its lock
-- connection cut while its others live) fails its next commit instead of applying beside the
-- new leader. leader_host/pid/since say who leads, for `syncctl status`.
ALTER TABLE syncctl.checkpoints
  ADD COLUMN leader_epoch bigint NOT NULL DEFAULT 0,
  ADD COLUMN leader_host  text,
  ADD COLUMN leader_pid   integer,
  ADD COLUMN leader_since timestamptz;

CREATE FUNCTION syncctl.fence(sync text, epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM syncctl.checkpoints AS c WHERE c.sync_name = sync AND c.leader_epoch = epoch FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'sync %: another syncctl run took over (leader epoch is no longer %)', sync, epoch USING ERRCODE = 'SYLDR';
  END IF;
END
$$;

-- Changes the worker applied per table (committed with them), for `syncctl status`.
ALTER TABLE syncctl.sync_tables
  ADD COLUMN changes_applied bigint NOT NULL DEFAULT 0,
  ADD COLUMN last_applied_at timestamptz;

-- Conflicts counted where they are recorded, whatever records them (the set form parking an
-- incomputable TOAST value, the source-order block, a retry): each insert appends
-- "table|kind|outcome" to a transaction-local setting, which the worker reads in its commit and
-- emits as one event (the metrics' conflict counters). A rolled-back subtransaction takes its
-- entries back with it, so only what commits is counted.
CREATE FUNCTION syncctl.count_conflict() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('syncctl.conflicts_logged',
    coalesce(current_setting('syncctl.conflicts_logged', true), '') || NEW.table_name || '|' || NEW.kind || '|' || NEW.outcome || E'\n', true);
  RETURN NULL;
END
$$;

CREATE TRIGGER count_conflict AFTER INSERT ON syncctl.sync_conflicts
  FOR EACH ROW EXECUTE FUNCTION syncctl.count_conflict();
