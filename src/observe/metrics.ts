/**
 * The worker's Prometheus metrics. They wrap the worker from outside: the worker and the monitor
 * emit events (see events.ts), and this module alone imports prom-client and turns them into
 * series. Labels are bounded (sync, table, kind, outcome, op, state, status): no connection
 * string, key or value of a row ever becomes a label.
 */
import client from 'prom-client';
import type { SourceSample, SyncEvents, TargetSample } from './events.ts';

/** Every metric the worker exports, by name: the dashboard and the alert rules may name only these. */
export const METRICS = {
  replicationLagSeconds: { name: 'syncctl_replication_lag_seconds', help: 'Age of the oldest source change not yet applied to the target, from source-side times (heartbeat-corrected).', labels: ['sync'] },
  replicationLagBytes: { name: 'syncctl_replication_lag_bytes', help: 'Source WAL between the source\'s current position and the position applied to the target.', labels: ['sync'] },
  slotRetainedWalBytes: { name: 'syncctl_slot_retained_wal_bytes', help: 'Source WAL the sync\'s replication slot retains (current position minus restart_lsn).', labels: ['sync'] },
  slotSafeWalSizeBytes: { name: 'syncctl_slot_safe_wal_size_bytes', help: 'WAL that can still be written before the slot is in danger of being lost (pg_replication_slots.safe_wal_size; absent when max_slot_wal_keep_size is unlimited).', labels: ['sync'] },
  slotWalStatus: { name: 'syncctl_slot_wal_status', help: 'The slot\'s wal_status: 1 for the current one (reserved, extended, unreserved, lost; missing when the slot is gone).', labels: ['sync', 'status'] },
  slotActive: { name: 'syncctl_slot_active', help: '1 when a walsender reads the sync\'s slot.', labels: ['sync'] },
  appliedChangesTotal: { name: 'syncctl_applied_changes_total', help: 'Source changes the worker committed to the target (applied, or recorded in sync_conflicts when parked), by table and operation (insert, update, delete, truncate).', labels: ['sync', 'table', 'op'] },
  appliedTransactionsTotal: { name: 'syncctl_applied_transactions_total', help: 'Source transactions applied to the target.', labels: ['sync'] },
  batchDurationSeconds: { name: 'syncctl_batch_duration_seconds', help: 'Time from a batch\'s first staged change to its target commit.', labels: ['sync'] },
  conflictsTotal: { name: 'syncctl_conflicts_total', help: 'Conflicts and parked changes recorded in sync_conflicts, by kind and the outcome the rule gave.', labels: ['sync', 'table', 'kind', 'outcome'] },
  conflictsPending: { name: 'syncctl_conflicts_pending', help: 'Conflicts waiting for a person (manual rule), per table.', labels: ['sync', 'table'] },
  conflictsOldestPendingSeconds: { name: 'syncctl_conflicts_oldest_pending_seconds', help: 'Age of the oldest conflict waiting for a person, per table (0 when none).', labels: ['sync', 'table'] },
  applyErrorsPending: { name: 'syncctl_apply_errors_pending', help: 'Changes the target rejected (apply_error), parked and not yet retried or resolved, per table.', labels: ['sync', 'table'] },
  tableState: { name: 'syncctl_table_state', help: '1 for each table\'s current state (pending, copying, streaming, paused, held).', labels: ['sync', 'table', 'state'] },
  leader: { name: 'syncctl_leader', help: '1 when this process leads the sync (holds its lock and applies), 0 while it stands by.', labels: ['sync'] },
  copyRowsTotal: { name: 'syncctl_copy_rows_total', help: 'Rows the current initial copy (or recopy) of each table has written.', labels: ['sync', 'table'] },
  lastAppliedCommitTimestampSeconds: { name: 'syncctl_last_applied_commit_timestamp_seconds', help: 'Source commit time (Unix seconds) of the last transaction applied.', labels: ['sync'] },
  heartbeatTimestampSeconds: { name: 'syncctl_heartbeat_timestamp_seconds', help: 'Source time (Unix seconds) of the last heartbeat the worker wrote on the source and applied.', labels: ['sync'] },
  buildInfo: { name: 'syncctl_build_info', help: 'Always 1; the version label says which syncctl runs.', labels: ['version'] },
} as const;

export type MetricKey = keyof typeof METRICS;

/** The names of every series the worker exports (syncctl's own, prom-client's default process metrics aside). */
export const METRIC_NAMES: readonly string[] = Object.values(METRICS).map((m) => m.name);

export const TABLE_STATES = ['pending', 'copying', 'streaming', 'paused', 'held'] as const;
export const WAL_STATUSES = ['reserved', 'extended', 'unreserved', 'lost'] as const;
export const CHANGE_OPS = ['insert', 'update', 'delete', 'truncate'] as const;

/** The syncs a process serves, as Prometheus series in one registry. */
export class SyncMetrics {
  readonly registry = new client.Registry();
  private readonly syncs = new Map<string, Observed>();
  private readonly changes: client.Counter;
  private readonly transactions: client.Counter;
  private readonly batches: client.Histogram;
  private readonly conflicts: client.Counter;

  constructor(version: string) {
    client.collectDefaultMetrics({ register: this.registry });
    const { registry } = this;
    const gauge = (key: MetricKey, collect: (g: client.Gauge) => void) => new client.Gauge({
      name: METRICS[key].name, help: METRICS[key].help, labelNames: [...METRICS[key].labels], registers: [registry],
      collect() {
        this.reset();
        collect(this);
      },
    });
    const counter = (key: MetricKey) => new client.Counter({ name: METRICS[key].name, help: METRICS[key].help, labelNames: [...METRICS[key].labels], registers: [registry] });
    this.changes = counter('appliedChangesTotal');
    this.transactions = counter('appliedTransactionsTotal');
    this.conflicts = counter('conflictsTotal');
    this.batches = new client.Histogram({
      name: METRICS.batchDurationSeconds.name, help: METRICS.batchDurationSeconds.help, labelNames: [...METRICS.batchDurationSeconds.labels],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry],
    });
    new client.Gauge({ name: METRICS.buildInfo.name, help: METRICS.buildInfo.help, labelNames: ['version'], registers: [registry] }).set({ version }, 1);
    const each = (f: (sync: string, o: Observed) => void) => { for (const [sync, o] of this.syncs) f(sync, o); };
    gauge('leader', (g) => each((sync, o) => g.set({ sync }, o.leader ? 1 : 0)));
    // Source-side series come from the leader's monitor; a standby has none.
    const leading = (f: (sync: string, o: Observed, s: SourceSample) => void) => each((sync, o) => { if (o.leader && o.source) f(sync, o, o.source); });
    gauge('replicationLagSeconds', (g) => leading((sync, o, s) => g.set({ sync }, lagSeconds(o, s))));
    gauge('replicationLagBytes', (g) => leading((sync, o, s) => g.set({ sync }, Math.max(0, Number(s.currentLsn - o.events.progress.appliedLsn)))));
    gauge('slotRetainedWalBytes', (g) => leading((sync, _o, s) => { if (s.slot?.retainedBytes != null) g.set({ sync }, s.slot.retainedBytes); }));
    gauge('slotSafeWalSizeBytes', (g) => leading((sync, _o, s) => { if (s.slot?.safeWalSizeBytes != null) g.set({ sync }, s.slot.safeWalSizeBytes); }));
    gauge('slotActive', (g) => leading((sync, _o, s) => g.set({ sync }, s.slot?.active ? 1 : 0)));
    gauge('slotWalStatus', (g) => leading((sync, _o, s) => {
      for (const status of WAL_STATUSES) g.set({ sync, status }, s.slot?.walStatus === status ? 1 : 0);
    }));
    gauge('lastAppliedCommitTimestampSeconds', (g) => each((sync, o) => {
      const ms = o.events.progress.lastAppliedCommitMs;
      if (o.leader && ms !== null) g.set({ sync }, ms / 1000);
    }));
    gauge('heartbeatTimestampSeconds', (g) => leading((sync, o) => {
      if (o.appliedHeartbeatMs !== undefined) g.set({ sync }, o.appliedHeartbeatMs / 1000);
    }));
    // Target-side series: the monitor's last sample of syncctl's control tables.
    const tables = (f: (sync: string, t: TargetSample['tables'][number]) => void) => each((sync, o) => { if (o.leader) for (const t of o.target?.tables ?? []) f(sync, t); });
    gauge('tableState', (g) => tables((sync, t) => { for (const state of TABLE_STATES) g.set({ sync, table: t.table, state }, t.state === state ? 1 : 0); }));
    gauge('conflictsPending', (g) => tables((sync, t) => g.set({ sync, table: t.table }, t.conflictsPending)));
    gauge('conflictsOldestPendingSeconds', (g) => tables((sync, t) => g.set({ sync, table: t.table }, t.oldestPendingSeconds)));
    gauge('applyErrorsPending', (g) => tables((sync, t) => g.set({ sync, table: t.table }, t.applyErrorsPending)));
    gauge('copyRowsTotal', (g) => tables((sync, t) => g.set({ sync, table: t.table }, t.copyRows)));
  }

  /** Serves one sync's events from now on. */
  observe(events: SyncEvents): void {
    const o: Observed = { events, leader: false, streaming: false, heartbeats: [] };
    this.syncs.set(events.sync, o);
    const sync = events.sync;
    events.on('leader', (leading) => {
      o.leader = leading;
      if (!leading) {
        o.source = undefined;
        o.target = undefined;
        o.heartbeats = [];
      }
    });
    events.on('streaming', (on) => { o.streaming = on; });
    events.on('source', (sample) => {
      o.source = sample;
      if (sample.heartbeat) o.heartbeats.push(sample.heartbeat);
      settleHeartbeats(o);
    });
    events.on('target', (sample) => { o.target = sample; });
    events.on('committed', (e) => {
      this.transactions.inc({ sync }, e.transactions);
      this.batches.observe({ sync }, e.seconds);
      for (const [table, ops] of e.changes) for (const op of CHANGE_OPS) if (ops[op] > 0) this.changes.inc({ sync, table, op }, ops[op]);
      for (const c of e.conflicts) this.conflicts.inc({ sync, table: c.table, kind: c.kind, outcome: c.outcome }, c.count);
    });
  }

  /** Ready: every sync this process serves is led by it and streaming. */
  ready(): { ready: boolean; syncs: Record<string, { leader: boolean; streaming: boolean }> } {
    const syncs = Object.fromEntries([...this.syncs].map(([name, o]) => [name, { leader: o.leader, streaming: o.streaming }]));
    return { ready: this.syncs.size > 0 && Object.values(syncs).every((s) => s.leader && s.streaming), syncs };
  }
}

interface Observed {
  readonly events: SyncEvents;
  leader: boolean;
  streaming: boolean;
  source?: SourceSample;
  target?: TargetSample;
  /** Heartbeats written on the source and not yet applied, oldest first. */
  heartbeats: { readonly lsn: bigint; readonly atMs: number }[];
  /** Source time of the newest heartbeat applied. */
  appliedHeartbeatMs?: number;
}

/** Drops the heartbeats the worker has applied past. */
function settleHeartbeats(o: Observed): void {
  const applied = o.events.progress.appliedLsn;
  while (o.heartbeats.length > 0 && o.heartbeats[0]!.lsn <= applied) o.appliedHeartbeatMs = o.heartbeats.shift()!.atMs;
}

/**
 * The age of the oldest source change not yet applied, on the source's clock: the oldest of the
 * transactions read and not committed yet, and of the heartbeats written and not applied yet
 * (a heartbeat stands for every transaction that committed before it, read or not). Zero when
 * neither exists: everything up to the last heartbeat is applied and nothing newer was read.
 * Its resolution is the heartbeat interval: a change committed since the last heartbeat and not
 * yet sent by the walsender is not seen.
 */
function lagSeconds(o: Observed, s: SourceSample): number {
  settleHeartbeats(o);
  const candidates = [o.heartbeats[0]?.atMs, o.events.progress.oldestUnappliedMs ?? undefined].filter((x): x is number => x !== undefined);
  if (candidates.length === 0) return 0;
  return Math.max(0, (Date.now() + s.clockOffsetMs - Math.min(...candidates)) / 1000);
}
