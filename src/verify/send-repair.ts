/**
 * `syncctl verify --repair`: the differing keys are re-applied from the source by the worker, in
 * stream order, through the normal apply path (the table's mapping and filter, the batch writer).
 *
 * One source transaction locks the source table in SHARE mode, reads the keys' current source
 * rows (those the row filter passes) and writes them as transactional logical messages
 * (REPAIR_PREFIX): whole rows for keys the filtered source has, target keys to delete for those it
 * has not. SHARE conflicts with every writer's ROW EXCLUSIVE, so the rows read are exactly the
 * source as of the repair's place in the stream: every write that committed before it is in them,
 * and every write after it commits after the repair and is applied after it by the worker.
 */
import { connect, type Connection } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { applyValueSettings, type ValueSettings } from '../snapshot/source-evaluation.ts';
import { quoteQualified } from '../sql/quote.ts';
import { REPAIR_PREFIX, type Repair } from '../stream/repair-message.ts';
import { sourceRowsByKey, versionOf } from './read-rows.ts';
import type { Finding } from './recheck.ts';
import { renderWholeRows } from './render-verify-sql.ts';
import { groupByKey, type Candidate } from './scan-table.ts';
import type { VerifyShape } from './verify-shape.ts';

/** Rows (and keys to delete) per message, to keep each message a modest size. */
const PER_MESSAGE = 1000;
/** How long the repair waits for writers of the source table to finish before it gives up. */
const LOCK_TIMEOUT = '5s';

export interface SentRepair {
  readonly rows: number;
  readonly deletes: number;
  /** The repaired keys, with the source versions the repair read: what the re-check starts from. */
  readonly keys: ReadonlyMap<string, Candidate>;
}

export async function sendRepair(sync: LoadedSync, target: Connection, settings: ValueSettings, shape: VerifyShape, findings: readonly Finding[]): Promise<SentRepair> {
  const source = await connect('source', sync.sourceUrl, 'syncctl verify --repair');
  try {
    await source.query('BEGIN');
    // The target's value settings, made lossless: the key expressions give what verify compared,
    // and every value prints as text the worker reads back to the same value.
    await applyValueSettings(source, settings.apply);
    await source.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
    await lockSource(source, shape);
    const found = groupByKey(await sourceRowsByKey(source, target, shape, findings.map((f) => f.kv)));
    const whole = await wholeRows(source, shape, [...found.values()].flat());
    const rows: (string | null)[][] = [];
    const deleteKeys: Record<string, string>[] = [];
    const keys = new Map<string, Candidate>();
    for (const f of findings) {
      const current = found.get(f.k) ?? [];
      keys.set(f.k, { kv: f.kv, sourceVersion: versionOf(current) });
      if (current.length === 0) deleteKeys.push(Object.fromEntries(shape.key.map((k, i) => [k.name, f.kv[i] ?? ''])));
      for (const r of current) rows.push(whole.get(`${r.rel}:${r.tid}`)!);
    }
    for (const message of repairMessages(sync.name, shape, rows, deleteKeys)) {
      await source.query(`SELECT pg_logical_emit_message(true, $1, $2)`, [REPAIR_PREFIX, JSON.stringify(message)]);
    }
    await source.query('COMMIT');
    return { rows: rows.length, deletes: deleteKeys.length, keys };
  } catch (error) {
    await source.query('ROLLBACK').catch(() => {});
    throw error;
  } finally {
    await source.close();
  }
}

async function lockSource(source: Connection, shape: VerifyShape): Promise<void> {
  try {
    await source.query(`LOCK TABLE ${quoteQualified(shape.table.source)} IN SHARE MODE`);
  } catch (error) {
    if ((error as { code?: string }).code !== '55P03') throw error;
    throw new SyncctlError('APPLY_FAILED', `the repair of ${shape.table.name} could not lock ${quoteQualified(shape.table.source)} on the source within ` +
      `${LOCK_TIMEOUT} (a long transaction is writing it); nothing was repaired: run verify --repair again`);
  }
}

/** Place (relation:ctid) -> the whole source row, every column as text in attnum order. */
async function wholeRows(source: Connection, shape: VerifyShape, places: readonly { rel?: string; tid?: string }[]): Promise<Map<string, (string | null)[]>> {
  if (places.length === 0) return new Map();
  const { rows } = await source.query<{ rel: string; tid: string; r: (string | null)[] }>(renderWholeRows(shape),
    [places.map((p) => p.rel), places.map((p) => p.tid)]);
  return new Map(rows.map((r) => [`${r.rel}:${r.tid}`, r.r]));
}

/** The repair as messages of at most PER_MESSAGE rows and PER_MESSAGE keys to delete each. */
export function repairMessages(syncName: string, shape: VerifyShape, rows: readonly (readonly (string | null)[])[], deleteKeys: readonly Record<string, string>[]): Repair[] {
  const messages: Repair[] = [];
  for (let i = 0; i < Math.max(rows.length, deleteKeys.length); i += PER_MESSAGE) {
    messages.push({
      sync: syncName, table: shape.table.name, columns: shape.sourceColumns,
      rows: rows.slice(i, i + PER_MESSAGE), deleteKeys: deleteKeys.slice(i, i + PER_MESSAGE),
    });
  }
  return messages;
}
