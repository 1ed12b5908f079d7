/**
 * The worker's Prometheus metrics. They wrap the worker from outside: the worker and the monitor
 * emit events (see events.ts), and this module alone imports prom-client and turns them into
 * series. Labels are bounded (sync, table, kind, outcome, op, state, status): no connection
 * string, key or value of a row ever becomes a label.
 */
import client from 'prom-client';

/** Every metric the worker exports, by name: the dashboard and the alert rules may name only these. */
export const METRICS = {
  replicationLagSeconds: { name: 'syncctl_replication_lag_seconds', help: 'Age of the oldest source change not yet applied to the target, from source-side times (heartbeat-corrected).', labels: ['sync'] },
  replicationLagBytes: { name: 'syncctl_replication_lag_bytes', help: 'Source WAL between the source\'s current position and the position applied to the target.', labels: ['sync'] },
  slotRetainedWalBytes: { name: 'syncctl_slot_retained_wal_bytes', help: 'Source WAL the sync\'s replication slot retains (current position minus restart_lsn).', labels: ['sync'] },
  slotSafeWalSizeBytes: { name: 'syncctl_slot_safe_wal_size_bytes', help: 'WAL that can still be written before the slot is in danger of being lost (pg_replication_slots.safe_wal_size; absent when max_slot_wal_keep_size is unlimited).', labels: ['sync'] },
  slotWalStatus: { name: 'syncctl_slot_wal_status', help: 'The slot\'s wal_status: 1 for the current one (reserved, extended, unreserved, lost; missing when the slot is gone).', labels: ['sync', 'status'] },
  slotActive: { name: 'syncctl_slot_active', help: '1 when a walsender reads the sync\'s slot.', labels: ['sync'] },
  appliedChangesTotal: { name: 'syncctl_applied_changes_total', help: 'Source changes applied to the target, by table and operation (insert, update, delete, truncate).', labels: ['sync', 'table', 'op'] },
  appliedTransactionsTotal: { name: 'syncctl_applied_transactions_total', help: 'Source transactions applied to the target.', labels: ['sync'] },
  batchDurationSeconds: { name: 'syncctl_batch_duration_seconds', help: 'Time from a batch\'s first staged change to its target commit.', labels: ['sync'] },
  conflictsTotal: { name: 'syncctl_conflicts_total', help: 'Conflicts and parked changes recorded in sync_conflicts, by kind and the outcome the rule gave.', labels: ['sync', 'table', 'kind', 'outcome'] },
  conflictsPending: { name: 'syncctl_conflicts_pending', help: 'Conflicts waiting for a person (manual rule), per table.', labels: ['sync', 'table'] },
  conflictsOldestPendingSeconds: { name: 'syncctl_conflicts_oldest_pending_seconds', help: 'Age of the oldest conflict waiting for a person, per table (0 when none).', labels: ['sync', 'table'] },
  applyErrorsPending: { name: 'syncctl_apply_errors_pending', help: 'Changes the target rejected (apply_error), parked and not yet retried or resolved, per table.', labels: ['sync', 'table'] },
  tableState: { name: 'syncctl_table_state', help: '1 for each table\'s current state (pending, copying, streaming, paused).', labels: ['sync', 'table', 'state'] },
  leader: { name: 'syncctl_leader', help: '1 when this process leads the sync (holds its lock and applies), 0 while it stands by.', labels: ['sync'] },
  copyRowsTotal: { name: 'syncctl_copy_rows_total', help: 'Rows the current initial copy (or recopy) of each table has written.', labels: ['sync', 'table'] },
  lastAppliedCommitTimestampSeconds: { name: 'syncctl_last_applied_commit_timestamp_seconds', help: 'Source commit time (Unix seconds) of the last transaction applied.', labels: ['sync'] },
  heartbeatTimestampSeconds: { name: 'syncctl_heartbeat_timestamp_seconds', help: 'Source time (Unix seconds) of the last heartbeat the worker wrote on the source and applied.', labels: ['sync'] },
  buildInfo: { name: 'syncctl_build_info', help: 'Always 1; the version label says which syncctl runs.', labels: ['version'] },
} as const;

export type MetricKey = keyof typeof METRICS;

/** The names of every series the worker exports (syncctl's own, prom-client's default process metrics aside). */
export const METRIC_NAMES: readonly string[] = Object.values(METRICS).map((m) => m.name);

export const TABLE_STATES = ['pending', 'copying', 'streaming', 'paused'] as const;
export const WAL_STATUSES = ['reserved', 'extended', 'unreserved', 'lost'] as const;
export const CHANGE_OPS = ['insert', 'update', 'delete', 'truncate'] as const;
