/**
 * Parked `apply_error`s applied again: by `syncctl conflicts retry`, and by the worker now and
 * then for those a foreign key refused (the parent row may have arrived since, through this sync
 * or another one).
 *
 * A parked change is applied again exactly as source order would have applied it, mapped by the
 * current spec: its stage rows (sync_conflicts.change) go into a stage of their own, oldest
 * parked first, and one source-order block in retry mode walks them (source-order.ts). One that
 * applies is `retried` and supersedes older pending changes of its key; one that fails again
 * stays pending with its new error. A pending change is never applied after a later change of its
 * key: that later change superseded it when it applied. Runs inside the caller's transaction, as
 * the worker's writer (change tracking leaves these writes alone).
 */
import type pg from 'pg';
import { buildBatchTable, publishedColumns } from '../apply/apply-table.ts';
import { connect } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import { planSync, type ResolvedTable } from '../plan/plan-sync.ts';
import { WRITER_SETTING } from '../plan/render-ddl.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { quoteIdent, quoteLiteral, quoteQualified } from '../sql/quote.ts';
import { OP, SEQ, UNCHANGED, renderApply, stageTableName } from '../apply/render-apply.ts';
import { CONFLICT_ID, renderSourceOrder, ROW_FAULT_SQLSTATE, type RetryMode, type SourceOrderTable } from '../apply/source-order.ts';
import { planSetWrite, renderSetWrite, renderValueCheck, type Assignments, type SetTarget, type SetWrite } from './resolve-set.ts';

export interface RetryFilter {
  /** These sync_conflicts ids only. */
  readonly ids?: readonly number[];
  /** Spec table names. */
  readonly tables?: readonly string[];
  /** Only changes that failed with this SQLSTATE (23503: a foreign key). */
  readonly sqlstate?: string;
}

export interface RetryResult {
  /** Applied now. */
  readonly retried: number;
  /** Failed again: still pending. */
  readonly failed: number;
  /** Superseded by a later change of the same key retried with them. */
  readonly superseded: number;
  /** Pending but not retryable here: parked without their staged change, or of a table not in the spec. */
  readonly skipped: number;
}

interface StoredChange {
  readonly columns: readonly string[];
  readonly rows: readonly Record<string, unknown>[];
}

/** A spec table whose parked changes may be retried: as resolved against the catalogs now. */
export interface RetryTable {
  readonly resolved: ResolvedTable;
  readonly order: number;
}

/**
 * `tables`: each spec table that may be retried, by name. `skipLocked`: leave pending changes
 * another session holds (someone resolving them) for next time instead of waiting.
 */
export async function retryParked(client: pg.Client, syncName: string, tables: ReadonlyMap<string, RetryTable>, filter: RetryFilter,
  options: { by: string; skipLocked?: boolean }): Promise<RetryResult> {
  const { rows } = await client.query<{ id: string; table_name: string; change: StoredChange | null }>(
    `SELECT s.id::text AS id, s.table_name, s.change FROM syncctl.sync_conflicts AS s
      WHERE s.sync_name = $1 AND s.kind = 'apply_error' AND s.outcome = 'pending'
        AND ($2::bigint[] IS NULL OR s.id = ANY ($2)) AND ($3::text[] IS NULL OR s.table_name = ANY ($3)) AND ($4::text IS NULL OR s.sqlstate = $4)
      ORDER BY s.id FOR UPDATE${options.skipLocked ? ' SKIP LOCKED' : ''}`,
    [syncName, filter.ids ?? null, filter.tables ?? null, filter.sqlstate ?? null]);
  const retryable = rows.filter((r) => r.change !== null && tables.has(r.table_name));
  const skipped = rows.length - retryable.length;
  if (retryable.length === 0) return { retried: 0, failed: 0, superseded: 0, skipped };

  await replay(client, syncName, tables, retryable, { by: options.by });
  const outcomes = await client.query<{ outcome: string; n: number }>(
    `SELECT outcome, count(*)::int AS n FROM syncctl.sync_conflicts WHERE id = ANY ($1::bigint[]) GROUP BY outcome`, [retryable.map((r) => r.id)]);
  const count = (outcome: string) => outcomes.rows.find((o) => o.outcome === outcome)?.n ?? 0;
  return { retried: count('retried'), failed: count('pending'), superseded: count('resolved'), skipped };
}

/** Stored changes (oldest first) applied in one source-order block in retry mode; each marks its own sync_conflicts row. */
async function replay(client: pg.Client, syncName: string, tables: ReadonlyMap<string, RetryTable>,
  rows: readonly { id: string; table_name: string; change: StoredChange | null }[], mode: RetryMode): Promise<void> {
  if (rows.length === 0) return;
  // One stage per table, in the order the rows were parked; sequence numbers across all of them.
  const names = [...new Set(rows.map((r) => r.table_name))];
  const shape = (name: string, asText: boolean): SourceOrderTable => {
    const t = tables.get(name)!;
    return buildBatchTable(`retry_${names.indexOf(name)}`, t.resolved, publishedColumns(t.resolved), t.order, { asText });
  };
  const staged = new Map<string, Record<string, unknown>[]>(names.map((n) => [n, []]));
  let seq = 0;
  for (const r of rows) {
    const columns = shape(r.table_name, false).apply.staged.map((c) => c.name);
    for (const row of r.change!.rows) {
      staged.get(r.table_name)!.push({ ...row, [SEQ]: ++seq, [UNCHANGED]: remapUnchanged(row[UNCHANGED], r.change!.columns, columns), [CONFLICT_ID]: Number(r.id) });
    }
  }
  const used: SourceOrderTable[] = [];
  // On an error the caller rolls the transaction back, and the stages, created in it, go with it.
  for (const name of names) used.push(await stage(client, shape, name, staged.get(name)!));
  await client.query(renderSourceOrder(syncName, used, [], true, mode));
  await client.query(`DROP TABLE ${used.map((t) => stageTableName(t.apply)).join(', ')}`);
}

/** `incoming` applies the parked change, `current` keeps the target row, `set` writes the incoming row with these columns set (resolve-set.ts). */
export type Decision = 'incoming' | 'current' | { readonly set: Assignments };

export interface ResolveResult {
  /** Decided: the incoming change applied, the target row kept, or the row written. */
  readonly resolved: number;
  /** Later changes of the same keys that had queued behind them, applied now. */
  readonly replayed: number;
  /** Of those, the ones that failed: parked as apply_error. */
  readonly failed: number;
}

interface PendingConflict {
  readonly id: string;
  readonly table_name: string;
  readonly key: Record<string, unknown>;
  readonly change: StoredChange | null;
}

/**
 * Decides pending conflicts (a `manual` table's): `incoming` applies the parked change, `current`
 * keeps the target row, `set` writes the incoming row with columns set by a person. Either way
 * the local change is forgotten (the row is syncctl's again) and the changes of that key that
 * queued behind it are applied after it, in order. The target row is locked first: a change of
 * that key the worker applies meanwhile waits, and lands after. With `set`, every conflict's
 * columns and values are checked before anything is written.
 */
export async function resolvePending(client: pg.Client, syncName: string, tables: ReadonlyMap<string, RetryTable>, ids: readonly number[],
  decision: Decision, by: string): Promise<ResolveResult> {
  const { rows } = await client.query<PendingConflict>(
    `SELECT s.id::text AS id, s.table_name, s.key, s.change FROM syncctl.sync_conflicts AS s
      WHERE s.sync_name = $1 AND s.id = ANY ($2::bigint[]) AND s.outcome = 'pending' AND s.kind <> 'apply_error' ORDER BY s.id FOR UPDATE`, [syncName, ids]);
  const writes = typeof decision === 'object' ? await planSets(client, syncName, tables, rows, decision.set) : undefined;
  let resolved = 0;
  let replayed = 0;
  let failed = 0;
  const done = new Set<string>();
  for (const r of rows) {
    if (done.has(r.id)) continue;
    const t = tables.get(r.table_name);
    if (t === undefined) continue;
    // A conflict queued behind an older pending one of its key waits for that one's decision.
    const older = await olderPending(client, syncName, r);
    if (older !== undefined) {
      throw new SyncctlError('SPEC_INVALID', `${syncName}.${r.table_name}: conflict ${r.id} is queued behind conflict ${older.id} of the same key ` +
        `${JSON.stringify(r.key)}: resolve ${older.id} first (its decision applies the changes queued behind it)`);
    }
    const target = quoteQualified(t.resolved.table.target);
    const match = Object.keys(r.key).map((k) => `t.${quoteIdent(k)} = k.${quoteIdent(k)}`).join(' AND ');
    await client.query(`SELECT 1 FROM ${target} AS t, jsonb_populate_record(NULL::${target}, $1::jsonb) AS k WHERE ${match} FOR UPDATE OF t`, [r.key]);
    // The same key's later pending changes: they queued behind this one.
    const queue = (await client.query<{ id: string; table_name: string; change: StoredChange | null }>(
      `SELECT s.id::text AS id, s.table_name, s.change FROM syncctl.sync_conflicts AS s
        WHERE s.sync_name = $1 AND s.table_name = $2 AND s.key = $3::jsonb AND s.id > $4 AND s.outcome = 'pending' AND s.kind <> 'apply_error' ORDER BY s.id FOR UPDATE`,
      [syncName, r.table_name, r.key, r.id])).rows;
    await client.query(`DELETE FROM syncctl.local_changes AS c USING jsonb_populate_record(NULL::${target}, $1::jsonb) AS k
      WHERE c.target_table = $2 AND c.key = jsonb_build_object(${Object.keys(r.key).map((k) => `${quoteLiteral(k)}, k.${quoteIdent(k)}`).join(', ')})`,
    [r.key, `${t.resolved.table.target.schema}.${t.resolved.table.target.name}`]);
    if (decision === 'current') {
      await client.query(`UPDATE syncctl.sync_conflicts SET outcome = 'resolved', resolved_by = $2, resolved_at = clock_timestamp(),
        reason = coalesce(reason || '; ', '') || 'decided: the target row kept' WHERE id = $1`, [r.id, by]);
    } else if (writes !== undefined) {
      await writeSet(client, syncName, t, r, writes.get(r.id)!, by);
    }
    const apply = [...(decision === 'incoming' ? [r] : []), ...queue].filter((c) => c.change !== null);
    await replay(client, syncName, tables, apply, { by, outcome: 'resolved' });
    const outcomes = (await client.query<{ id: string; outcome: string; kind: string }>(
      `SELECT id::text AS id, outcome, kind FROM syncctl.sync_conflicts WHERE id = ANY ($1::bigint[])`, [[r.id, ...queue.map((q) => q.id)]])).rows;
    resolved += outcomes.some((o) => o.id === r.id && o.outcome === 'resolved') ? 1 : 0;
    for (const q of queue) {
      done.add(q.id);
      if (outcomes.find((o) => o.id === q.id)?.outcome === 'resolved') replayed++;
      else failed++;
    }
  }
  return { resolved, replayed, failed };
}

/** The oldest pending conflict of the same key before `r`: `r` is queued behind it. */
async function olderPending(client: pg.Client, syncName: string, r: PendingConflict): Promise<{ id: string } | undefined> {
  return (await client.query<{ id: string }>(
    `SELECT s.id::text AS id FROM syncctl.sync_conflicts AS s WHERE s.sync_name = $1 AND s.table_name = $2 AND s.key = $3::jsonb AND s.id < $4
       AND s.outcome = 'pending' AND s.kind <> 'apply_error' ORDER BY s.id LIMIT 1`, [syncName, r.table_name, r.key, r.id])).rows[0];
}

/** A conflict's --set, planned: its table's shape now, its change as staged for that shape, what is written. */
interface PlannedSet {
  readonly at: SetTarget;
  readonly shape: (name: string, asText: boolean) => SourceOrderTable;
  readonly rows: readonly Record<string, unknown>[];
  readonly write: SetWrite;
}

const isNewRow = (row: Record<string, unknown>) => row[OP] === 'W' || row[OP] === 'I';

/**
 * Checks --set for every selected conflict before anything is written: the columns (planSetWrite),
 * then each value read as its column's type. The first problem is thrown, naming the conflict,
 * its table and the column.
 */
async function planSets(client: pg.Client, syncName: string, tables: ReadonlyMap<string, RetryTable>, rows: readonly PendingConflict[],
  assignments: Assignments): Promise<Map<string, PlannedSet>> {
  const planned = new Map<string, PlannedSet>();
  const keys = new Set<string>();
  for (const r of rows) {
    const t = tables.get(r.table_name);
    // A conflict selected together with an older one of its key is replayed behind that one's decision, not written.
    const key = `${r.table_name} ${JSON.stringify(r.key)}`;
    if (t === undefined || keys.has(key)) continue;
    keys.add(key);
    // One queued behind an older pending conflict not selected is refused in resolvePending, with that one's id.
    if (await olderPending(client, syncName, r) !== undefined) continue;
    const at = { id: r.id, sync: syncName, table: r.table_name };
    const shape = (_: string, asText: boolean) => buildBatchTable('resolve_set', t.resolved, publishedColumns(t.resolved), t.order, { asText });
    const columns = shape('', false).apply.staged.map((c) => c.name);
    const change = r.change;
    if (change === null || !change.rows.some(isNewRow)) {
      throw new SyncctlError('SPEC_INVALID', `conflict ${r.id} (${syncName}.${r.table_name}): ` + (change === null
        ? 'the change was not kept with the conflict: there is no incoming row to set columns of; decide it with --use current'
        : 'the incoming change deletes the row: there is no incoming row to set columns of; decide it with --use incoming or --use current'),
      { details: { conflict: Number(r.id), sync: syncName, table: r.table_name } });
    }
    const staged = change.rows.map((row, i) => ({ ...row, [SEQ]: i + 1, [UNCHANGED]: remapUnchanged(row[UNCHANGED], change.columns, columns) }));
    const unchanged = ((staged.findLast(isNewRow)![UNCHANGED] ?? []) as number[]).map((p) => columns[p - 1]!);
    const write = planSetWrite(at, shape('', false).apply, t.resolved.targetFacts.columns, assignments, unchanged);
    for (const s of write.set) {
      await client.query('SAVEPOINT syncctl_set_value');
      try {
        await client.query(renderValueCheck(s.type), [s.value]);
        await client.query('RELEASE SAVEPOINT syncctl_set_value');
      } catch (error) {
        await client.query('ROLLBACK TO SAVEPOINT syncctl_set_value; RELEASE SAVEPOINT syncctl_set_value');
        throw new SyncctlError('SPEC_INVALID', `conflict ${r.id} (${syncName}.${r.table_name}): --set ${s.column}=${s.value}: ` +
          `not a value of the column's type ${s.type}: ${(error as Error).message}`,
        { details: { conflict: Number(r.id), sync: syncName, table: r.table_name, column: s.column } });
      }
    }
    planned.set(r.id, { at, shape, rows: staged, write });
  }
  return planned;
}

/**
 * --set for one conflict, its target row locked and its local change forgotten: the incoming row
 * with the columns set, over the target row with the conflict's key, or inserted where there is
 * none. The conflict is `resolved`, with the row written as its result; pending apply_errors of
 * the key parked before it are superseded, as an applied change supersedes them.
 */
async function writeSet(client: pg.Client, syncName: string, t: RetryTable, r: PendingConflict, planned: PlannedSet, by: string): Promise<void> {
  const { at, write } = planned;
  const name = `${at.sync}.${at.table}`;
  const table = await stage(client, planned.shape, at.table, planned.rows);
  const statements = renderSetWrite(table.apply, write);
  const values = write.set.map((s) => s.value);
  if (statements.filter !== undefined && !(await client.query<{ keep: boolean }>(statements.filter)).rows[0]?.keep) {
    throw new SyncctlError('SPEC_INVALID', `conflict ${at.id} (${name}): the incoming row does not pass the table's row filter (the change removes ` +
      'the row from the target): there is no row to write; decide it with --use incoming or --use current', { details: { conflict: Number(at.id), sync: at.sync, table: at.table } });
  }
  let row: Record<string, unknown> | undefined;
  await client.query('SAVEPOINT syncctl_set_write');
  try {
    row = (await client.query<{ row: Record<string, unknown> }>(statements.update, [r.key, ...values])).rows[0]?.row;
    if (row === undefined && write.kept.length > 0) {
      throw new SyncctlError('SPEC_INVALID', `conflict ${at.id} (${name}): --set ${write.kept.join(', ')}: the target has no row with this key, and the ` +
        `incoming change left the TOAST values these are computed from unchanged (the stream does not carry them): set them too`,
      { details: { conflict: Number(at.id), sync: at.sync, table: at.table, column: write.kept[0] } });
    }
    row ??= (await client.query<{ row: Record<string, unknown> }>(statements.insert, values)).rows[0]?.row;
    await client.query('RELEASE SAVEPOINT syncctl_set_write');
  } catch (error) {
    await client.query('ROLLBACK TO SAVEPOINT syncctl_set_write; RELEASE SAVEPOINT syncctl_set_write');
    if (error instanceof SyncctlError || !ROW_FAULT_SQLSTATE.test((error as { code?: string }).code ?? '')) throw error;
    throw new SyncctlError('SPEC_INVALID', `conflict ${at.id} (${name}): the row with --set ${write.set.map((s) => s.column).join(', ')} cannot be written: ` +
      `${(error as Error).message}`, { details: { conflict: Number(at.id), sync: at.sync, table: at.table, column: write.set[0]?.column } });
  }
  await client.query(`DROP TABLE ${stageTableName(table.apply)}`);
  const target = t.resolved.table.target;
  const newKey = row === undefined ? r.key : Object.fromEntries(table.apply.key.map((k) => [k, row![k]]));
  // The old row was locked before its local change was forgotten; a row inserted under a key that had none was not: a local write there raced this one.
  const raced = await client.query(`SELECT 1 FROM syncctl.local_changes AS c, jsonb_populate_record(NULL::${quoteQualified(target)}, $1::jsonb) AS k
    WHERE c.target_table = $2 AND c.key IN (jsonb_build_object(${table.apply.key.map((k) => `${quoteLiteral(k)}, k.${quoteIdent(k)}`).join(', ')}), $3::jsonb)`,
  [r.key, `${target.schema}.${target.name}`, newKey]);
  if (raced.rows.length > 0) {
    throw new SyncctlError('APPLY_FAILED', `conflict ${at.id} (${name}): a local write of the key ${JSON.stringify(newKey)} committed while the row was written: ` +
      'nothing was applied; run the resolve again (syncctl conflicts show tells what the target holds now)', { details: { conflict: Number(at.id), sync: at.sync, table: at.table } });
  }
  await client.query(`UPDATE syncctl.sync_conflicts SET outcome = 'resolved', resolved_by = 'syncctl', resolved_at = clock_timestamp(),
      reason = coalesce(reason || '; ', '') || 'superseded: a later change of this key was applied'
    WHERE sync_name = $1 AND table_name = $2 AND kind = 'apply_error' AND outcome = 'pending' AND key IN ($3::jsonb, $4::jsonb) AND id < $5`,
  [syncName, at.table, r.key, newKey, at.id]);
  await client.query(`UPDATE syncctl.sync_conflicts SET outcome = 'resolved', resolved_by = $2, resolved_at = clock_timestamp(), result = $3::jsonb,
      reason = coalesce(reason || '; ', '') || $4 WHERE id = $1`,
  [at.id, by, row === undefined ? null : JSON.stringify(row), `decided: the incoming row written with ${write.set.map((s) => s.column).join(', ')} set`]);
}

/**
 * Fills a table's retry stage: typed as the source's columns (the stored values are JSON of the
 * typed values they were staged as: arrays, records and the rest come back as they were), or, if
 * the target refuses a value of those types (an enum label it lacks), as text, cast where the
 * mapping reads it, so that the change that carries it fails alone.
 */
async function stage(client: pg.Client, shape: (name: string, asText: boolean) => SourceOrderTable, name: string, rows: readonly Record<string, unknown>[]): Promise<SourceOrderTable> {
  const json = JSON.stringify(rows);
  for (const asText of [false, true]) {
    const table = shape(name, asText);
    const stageName = stageTableName(table.apply);
    await client.query(`SAVEPOINT syncctl_retry_stage; DROP TABLE IF EXISTS ${stageName}; ${renderApply(table.apply).createStage}; ` +
      `ALTER TABLE ${stageName} ADD COLUMN ${quoteIdent(CONFLICT_ID)} bigint`);
    try {
      await client.query(`INSERT INTO ${stageName} SELECT * FROM jsonb_populate_recordset(NULL::${stageName}, $1::jsonb)`, [json]);
      await client.query('RELEASE SAVEPOINT syncctl_retry_stage');
      return table;
    } catch (error) {
      await client.query('ROLLBACK TO SAVEPOINT syncctl_retry_stage; RELEASE SAVEPOINT syncctl_retry_stage');
      if (asText || !ROW_FAULT_SQLSTATE.test((error as { code?: string }).code ?? '')) throw error;
    }
  }
  throw new Error('unreachable');
}

/** Unchanged TOAST positions of a row staged with `columns`, as positions among the columns staged now (a column gone is left out). */
function remapUnchanged(value: unknown, columns: readonly string[], now: readonly string[]): number[] | null {
  if (!Array.isArray(value)) return null;
  const positions = value.map((p) => now.indexOf(columns[Number(p) - 1] ?? '') + 1).filter((p) => p > 0);
  return positions.length > 0 ? positions : null;
}

/**
 * `syncctl conflicts retry`: the sync's pending apply errors that `filter` selects, applied again in
 * one target transaction (all or nothing) as the worker would, mapped by the spec as the source
 * publishes it now. Safe while the worker runs: both lock the pending rows they act on, so a
 * change is never applied after a later change of its key (see retryParked).
 */
export function retryConflicts(sync: LoadedSync, filter: RetryFilter, by: string): Promise<RetryResult> {
  return inTransaction(sync, (client, tables) => retryParked(client, sync.name, tables, filter, { by }));
}

/** `syncctl conflicts resolve`: pending conflicts decided in one target transaction (see resolvePending). */
export function resolveConflicts(sync: LoadedSync, ids: readonly number[], decision: Decision, by: string): Promise<ResolveResult> {
  return inTransaction(sync, (client, tables) => resolvePending(client, sync.name, tables, ids, decision, by));
}

/** The sync's tables as the catalogs say now, and one target transaction as the worker's writer. */
async function inTransaction<R>(sync: LoadedSync, work: (client: pg.Client, tables: ReadonlyMap<string, RetryTable>) => Promise<R>): Promise<R> {
  const source = await connect('source', sync.sourceUrl, 'syncctl conflicts');
  try {
    const target = await connect('target', sync.targetUrl, 'syncctl conflicts');
    try {
      const plan = await planSync(sync, { source, target });
      const tables = new Map<string, RetryTable>([...plan.tables.values()].filter((r) => r.table.mode === 'mapped').map((r) => [r.table.name, { resolved: r, order: 0 }]));
      await target.client.query(`BEGIN; SELECT set_config(${quoteLiteral(WRITER_SETTING)}, 'on', true)`);
      try {
        const result = await work(target.client, tables);
        await target.client.query('COMMIT');
        return result;
      } catch (error) {
        await target.client.query('ROLLBACK').catch(() => {});
        throw error;
      }
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}
