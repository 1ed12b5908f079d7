/**
 * The queries behind `syncctl status`, each usable alone (the metrics poller reads the slot and
 * the tables on its own schedule). Control-plane SQL through slonik, every row checked by zod;
 * they read, never write, and take any slonik pool, connection or transaction.
 *
 * Columns added by later migrations (leader_*, changes_applied, last_applied_at) are read through
 * to_jsonb(row): a target provisioned by an older syncctl reads as "unknown", not as an error.
 */
import { createSqlTag, type CommonQueryMethods } from 'slonik';
import { z } from 'zod';
import { slotName } from '../plan/render-ddl.ts';
import type { LoadedTable } from '../spec/loaded-sync.ts';
import { formatQualifiedName } from '../sql/quote.ts';
import { assessSync } from './assess-status.ts';
import type { LastCommit, SlotStatus, SyncStatus, TableState, TableStatus } from './sync-status.ts';

const sql = createSqlTag();

/** A timestamptz expression as ISO 8601 in UTC (slonik would turn timestamps into milliseconds). */
const utc = (expression: ReturnType<typeof sql.fragment>) =>
  sql.fragment`to_char((${expression}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/** The two databases of a sync. */
export interface StatusPools {
  readonly source: CommonQueryMethods;
  readonly target: CommonQueryMethods;
}

/** What status needs of a spec: its name and, per table, the names (a LoadedSync fits). */
export interface SyncOutline {
  readonly name: string;
  readonly tables: readonly Pick<LoadedTable, 'name' | 'source' | 'target' | 'mode'>[];
}

/** The sync's registration and checkpoint on the target. */
export interface TargetRecord {
  readonly registered: boolean;
  readonly lastCommit: LastCommit | null;
  readonly leader: { readonly host: string | null; readonly pid: number | null; readonly since: string | null; readonly epoch: number };
}

/** A table as syncctl.sync_tables and the pending rows of sync_conflicts have it. */
export interface RegisteredTable {
  readonly name: string;
  readonly source: string;
  readonly target: string;
  readonly mode: 'mapped' | 'native';
  readonly state: Exclude<TableState, 'unregistered'>;
  readonly error: string | null;
  readonly changesApplied: number;
  readonly lastAppliedAt: string | null;
  readonly pendingConflicts: number;
  readonly parkedErrors: number;
  /** Reason of the newest pending apply_error. */
  readonly lastParkedReason: string | null;
}

export interface SlotReading {
  readonly slot: SlotStatus;
  readonly lagBytes: number | null;
}

const targetRecordRow = z.object({
  registered: z.boolean(),
  commitLsn: z.string().nullable(),
  commitTime: z.string().nullable(),
  leaderHost: z.string().nullable(),
  leaderPid: z.number().nullable(),
  leaderSince: z.string().nullable(),
  leaderEpoch: z.number(),
});

const registeredTableRow = z.object({
  name: z.string(),
  source: z.string(),
  target: z.string(),
  mode: z.enum(['mapped', 'native']),
  state: z.enum(['pending', 'copying', 'streaming', 'paused']),
  error: z.string().nullable(),
  changesApplied: z.number(),
  lastAppliedAt: z.string().nullable(),
  pendingConflicts: z.number(),
  parkedErrors: z.number(),
  lastParkedReason: z.string().nullable(),
});

const slotRow = z.object({
  active: z.boolean(),
  walStatus: z.string().nullable(),
  retainedWalBytes: z.number().nullable(),
  safeWalSizeBytes: z.number().nullable(),
  confirmedFlushLsn: z.string().nullable(),
  lagBytes: z.number().nullable(),
  failover: z.boolean(),
  standbySlots: z.string().nullable(),
});

/** False when the target has no syncctl schema yet (nothing was ever applied there). */
export async function hasSyncctlSchema(target: CommonQueryMethods): Promise<boolean> {
  return target.oneFirst(sql.type(z.object({ present: z.boolean() }))`SELECT to_regclass('syncctl.checkpoints') IS NOT NULL AS present`);
}

/** The sync's registration, its checkpoint and the leader the checkpoint names. Needs the syncctl schema. */
export async function readTargetRecord(target: CommonQueryMethods, sync: string): Promise<TargetRecord> {
  const c = sql.fragment`to_jsonb(c)`;
  const row = await target.one(sql.type(targetRecordRow)`
    SELECT EXISTS (SELECT 1 FROM syncctl.syncs WHERE name = ${sync}) AS registered,
           c.commit_lsn::text AS "commitLsn", ${utc(sql.fragment`c.commit_time`)} AS "commitTime",
           ${c} ->> 'leader_host' AS "leaderHost", (${c} ->> 'leader_pid')::int AS "leaderPid",
           ${utc(sql.fragment`(${c} ->> 'leader_since')::timestamptz`)} AS "leaderSince",
           coalesce((${c} ->> 'leader_epoch')::float8, 0) AS "leaderEpoch"
      FROM (SELECT 1) AS one LEFT JOIN syncctl.checkpoints AS c ON c.sync_name = ${sync}`);
  return {
    registered: row.registered,
    lastCommit: row.commitLsn === null ? null : { lsn: row.commitLsn, time: row.commitTime },
    leader: { host: row.leaderHost, pid: row.leaderPid, since: row.leaderSince, epoch: row.leaderEpoch },
  };
}

/**
 * The target backend holding the sync's leader lock, or null when none does. `syncctl run` takes
 * pg_try_advisory_lock(hashtextextended('syncctl leader ' || name, 0)); pg_locks shows a bigint
 * advisory key as classid (high 32 bits), objid (low 32 bits) and objsubid 1.
 */
export async function readLeaderLock(target: CommonQueryMethods, sync: string): Promise<number | null> {
  return target.maybeOneFirst(sql.type(z.object({ pid: z.number() }))`
    SELECT l.pid FROM pg_locks AS l, (SELECT hashtextextended('syncctl leader ' || ${sync}::text, 0) AS key) AS k
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.pid IS NOT NULL
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid::bigint = (k.key >> 32) & 4294967295 AND l.objid::bigint = k.key & 4294967295
     LIMIT 1`);
}

/** Every registered table of the sync with its pending conflicts and parked errors, by table name. */
export async function readRegisteredTables(target: CommonQueryMethods, sync: string): Promise<readonly RegisteredTable[]> {
  const t = sql.fragment`to_jsonb(t)`;
  const pending = sql.fragment`c.sync_name = t.sync_name AND c.table_name = t.table_name AND c.outcome = 'pending'`;
  return target.any(sql.type(registeredTableRow)`
    SELECT t.table_name AS name, t.source_table AS source, t.target_table AS target, t.mode, t.state, t.error,
           coalesce((${t} ->> 'changes_applied')::float8, 0) AS "changesApplied",
           ${utc(sql.fragment`(${t} ->> 'last_applied_at')::timestamptz`)} AS "lastAppliedAt",
           p.conflicts AS "pendingConflicts", p.parked AS "parkedErrors",
           (SELECT c.reason FROM syncctl.sync_conflicts AS c WHERE ${pending} AND c.kind = 'apply_error' ORDER BY c.id DESC LIMIT 1) AS "lastParkedReason"
      FROM syncctl.sync_tables AS t
      CROSS JOIN LATERAL (SELECT (count(*) FILTER (WHERE c.kind <> 'apply_error'))::float8 AS conflicts,
                                 (count(*) FILTER (WHERE c.kind = 'apply_error'))::float8 AS parked
                            FROM syncctl.sync_conflicts AS c WHERE ${pending}) AS p
     WHERE t.sync_name = ${sync}
     ORDER BY t.table_name`);
}

/** The slot on the source (in the database connected to) and how far its consumer is behind. */
export async function readSlot(source: CommonQueryMethods, slot: string): Promise<SlotReading> {
  const row = await source.maybeOne(sql.type(slotRow)`
    SELECT s.active, s.wal_status AS "walStatus", (w.lsn - s.restart_lsn)::float8 AS "retainedWalBytes",
           s.safe_wal_size::float8 AS "safeWalSizeBytes", s.confirmed_flush_lsn::text AS "confirmedFlushLsn",
           (w.lsn - s.confirmed_flush_lsn)::float8 AS "lagBytes",
           coalesce((to_jsonb(s) ->> 'failover')::boolean, false) AS failover,
           nullif(current_setting('synchronized_standby_slots', true), '') AS "standbySlots"
      FROM pg_replication_slots AS s,
           (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn) AS w
     WHERE s.slot_name = ${slot} AND s.database = current_database()`);
  if (row === null) {
    return { slot: { name: slot, exists: false, active: false, walStatus: null, retainedWalBytes: null, safeWalSizeBytes: null, confirmedFlushLsn: null, failover: false, standbySlots: null }, lagBytes: null };
  }
  const { lagBytes, ...rest } = row;
  return { slot: { name: slot, exists: true, ...rest }, lagBytes };
}

/** Everything `syncctl status` says about one sync, without row counts (see countTableRows). */
export async function readSyncStatus(pools: StatusPools, sync: SyncOutline): Promise<SyncStatus> {
  const hasSlot = sync.tables.some((t) => t.mode === 'mapped');
  const [target, slot] = await Promise.all([
    readTargetSide(pools.target, sync.name),
    hasSlot ? readSlot(pools.source, slotName(sync.name)) : Promise.resolve(null),
  ]);
  const tables = mergeTables(sync, target.tables);
  const leader = { ...target.record.leader, alive: target.lockPid !== null, lockBackendPid: target.lockPid };
  const facts = { registered: target.record.registered, leader, lastCommit: target.record.lastCommit,
    lagBytes: slot?.lagBytes ?? null, slot: slot?.slot ?? null, tables };
  const problems = assessSync({ name: sync.name, ...facts });
  return { name: sync.name, health: problems.length === 0 ? 'healthy' : 'degraded', problems, ...facts };
}

async function readTargetSide(target: CommonQueryMethods, sync: string) {
  if (!(await hasSyncctlSchema(target))) {
    return { record: { registered: false, lastCommit: null, leader: { host: null, pid: null, since: null, epoch: 0 } }, tables: [], lockPid: null };
  }
  const [record, tables, lockPid] = await Promise.all([readTargetRecord(target, sync), readRegisteredTables(target, sync), readLeaderLock(target, sync)]);
  return { record, tables, lockPid };
}

/** The spec's tables in spec order, then tables registered but no longer in the spec. */
function mergeTables(sync: SyncOutline, registered: readonly RegisteredTable[]): TableStatus[] {
  const byName = new Map(registered.map((r) => [r.name, r]));
  const fromSpec = sync.tables.map((t) => tableStatus(byName.get(t.name), {
    name: t.name, source: formatQualifiedName(t.source), target: formatQualifiedName(t.target), mode: t.mode, inSpec: true,
  }));
  const specNames = new Set(sync.tables.map((t) => t.name));
  const leftOver = registered.filter((r) => !specNames.has(r.name))
    .map((r) => tableStatus(r, { name: r.name, source: r.source, target: r.target, mode: r.mode, inSpec: false }));
  return [...fromSpec, ...leftOver];
}

function tableStatus(r: RegisteredTable | undefined, names: Pick<TableStatus, 'name' | 'source' | 'target' | 'mode' | 'inSpec'>): TableStatus {
  return {
    ...names,
    state: r?.state ?? 'unregistered',
    changesApplied: r?.changesApplied ?? 0,
    lastAppliedAt: r?.lastAppliedAt ?? null,
    pendingConflicts: r?.pendingConflicts ?? 0,
    parkedErrors: r?.parkedErrors ?? 0,
    lastError: r?.error ?? r?.lastParkedReason ?? null,
    counts: null,
  };
}
