/**
 * A table is copied again from scratch when the changes it missed cannot be streamed: it was
 * paused (its changes were dropped), its sync has a new slot (the old one was dropped or lost its
 * WAL), or its source file was rewritten under a copy cut short (see chunk-plan.ts). The copy
 * upserts, so rows the source deleted meanwhile (their deletes never arrived) would stay on the
 * target. After the chunks, the keys the source holds under the copy's snapshot
 * are collected in the target, and every target row whose key is not among them goes, except rows
 * written locally on the target (syncctl.local_changes), which syncctl never removes on its own.
 *
 * The keys are computed in the target by the spec's own SQL over staged source columns, as the
 * worker computes them (so a key that only the worker can compute is fine), and the row filter
 * applies: a row the filter rejects is not on the target either.
 */
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { pipeline } from 'node:stream/promises';
import type { Connection } from '../db/connect.ts';
import type { ResolvedTable } from '../plan/plan-sync.ts';
import { WRITER_SETTING } from '../plan/render-ddl.ts';
import { quoteIdent, quoteLiteral, quoteQualified } from '../sql/quote.ts';

/**
 * A recopy that is cut short resumes as an ordinary copy ('copying'), so the fact that it must
 * prune lives in a row of its own in snapshot_chunks (chunk -1, never copied), removed together
 * with the prune.
 */
const RECOPY_MARK = -1;

async function markRecopy(target: Connection, syncName: string, tableName: string, reason: string): Promise<void> {
  await target.query(
    `INSERT INTO syncctl.snapshot_chunks (sync_name, table_name, chunk, lower_bound) VALUES ($1, $2, ${RECOPY_MARK}, $3)
     ON CONFLICT DO NOTHING`, [syncName, tableName, reason]);
}

/**
 * Starts a table's copy over, in one target transaction: its chunks and its snapshot position go
 * (the next copy plans new chunks and takes its own snapshot's position), the table waits for its
 * copy ('copying': a running worker holds its changes; the next apply copies it), and the finished
 * copy prunes. Changes the worker already holds for it stay: the replay skips those the new
 * snapshot contains.
 */
export async function restartCopy(target: Connection, syncName: string, tableName: string, reason: string): Promise<void> {
  await target.query('BEGIN');
  try {
    await target.query(`DELETE FROM syncctl.snapshot_chunks WHERE sync_name = $1 AND table_name = $2`, [syncName, tableName]);
    await target.query(`UPDATE syncctl.sync_tables SET state = 'copying', snapshot_lsn = NULL, error = NULL, updated_at = now()
      WHERE sync_name = $1 AND table_name = $2`, [syncName, tableName]);
    await markRecopy(target, syncName, tableName, reason);
    await target.query('COMMIT');
  } catch (error) {
    await target.query('ROLLBACK').catch(() => {});
    throw error;
  }
}

/** The table has been copied before (finished or not): a copy under a new slot must start it over. */
export async function hasCopyState(target: Connection, syncName: string, tableName: string): Promise<boolean> {
  const { rows } = await target.query<{ any: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM syncctl.sync_tables WHERE sync_name = $1 AND table_name = $2 AND snapshot_lsn IS NOT NULL)
         OR EXISTS (SELECT 1 FROM syncctl.snapshot_chunks WHERE sync_name = $1 AND table_name = $2) AS any`, [syncName, tableName]);
  return rows[0]!.any;
}

export async function isRecopy(target: Connection, syncName: string, tableName: string): Promise<boolean> {
  const { rows } = await target.query(`SELECT 1 FROM syncctl.snapshot_chunks WHERE sync_name = $1 AND table_name = $2 AND chunk = ${RECOPY_MARK}`,
    [syncName, tableName]);
  return rows.length > 0;
}

/**
 * Runs inside the caller's open target transaction; `openSource` gives a source session reading
 * under the copy's snapshot. Returns the number of target rows removed.
 */
export async function pruneRecopy(
  syncName: string, resolved: ResolvedTable, target: Connection, openSource: () => Promise<Connection>,
): Promise<number> {
  const { table, decision } = resolved;
  await target.query(`SELECT set_config(${quoteLiteral(WRITER_SETTING)}, 'on', true)`);
  await target.query(`DELETE FROM syncctl.snapshot_chunks WHERE sync_name = $1 AND table_name = $2 AND chunk = ${RECOPY_MARK}`, [syncName, table.name]);
  const keyMappings = resolved.key.map((k) => table.columns.find((c) => c.target === k));
  // An unmapped key column holds its default on every row: there is no source key to compare with.
  if (keyMappings.some((m) => m === undefined)) return 0;
  const workerFilter = decision.filterAt === 'worker' && table.where !== undefined ? table.where : undefined;
  const reads = [...new Set([...resolved.key.flatMap((k) => resolved.columnsRead.get(k) ?? []), ...(workerFilter !== undefined ? resolved.whereColumnsRead : [])])];
  if (reads.length === 0) return 0;

  await target.query(`CREATE TEMP TABLE syncctl_prune_rows (${reads.map((c) => `${quoteIdent(c)} ${resolved.stagingTypes.get(c) ?? 'text'}`).join(', ')}) ON COMMIT DROP`);
  const source = await openSource();
  try {
    const filter = decision.filterAt === 'publication' && table.where !== undefined ? ` WHERE (${table.where})` : '';
    const out = source.client.query(copyTo(`COPY (SELECT ${reads.map(quoteIdent).join(', ')} FROM ${quoteQualified(table.source)}${filter}) TO STDOUT`));
    const sink = target.client.query(copyFrom(`COPY pg_temp.syncctl_prune_rows (${reads.map(quoteIdent).join(', ')}) FROM STDIN`));
    await pipeline(out, sink);
    await source.query('COMMIT');
  } finally {
    await source.close();
  }
  const types = new Map(resolved.targetFacts.columns.map((c) => [c.name, c.type]));
  const keys = keyMappings.map((m) => `CAST((${m!.expression}) AS ${types.get(m!.target) ?? 'text'}) AS ${quoteIdent(m!.target)}`);
  await target.query(`CREATE TEMP TABLE syncctl_prune_keys ON COMMIT DROP AS SELECT DISTINCT ${keys.join(', ')} FROM pg_temp.syncctl_prune_rows` +
    (workerFilter !== undefined ? ` WHERE coalesce((${workerFilter}), false)` : ''));
  await target.query('ANALYZE pg_temp.syncctl_prune_keys');
  const cols = resolved.key.map(quoteIdent);
  const targetName = `${table.target.schema}.${table.target.name}`;
  // A NULL key equals nothing, so it could never be found among the source's keys; such rows
  // (which no upsert can address either) are left alone rather than removed by mistake.
  const { rowCount } = await target.query(
    `DELETE FROM ${quoteQualified(table.target)} AS t WHERE ${cols.map((c) => `t.${c} IS NOT NULL`).join(' AND ')}
        AND NOT EXISTS (SELECT 1 FROM pg_temp.syncctl_prune_keys AS k WHERE ${cols.map((c) => `k.${c} = t.${c}`).join(' AND ')})
        AND NOT EXISTS (SELECT 1 FROM syncctl.local_changes AS c WHERE c.target_table = $1
                          AND c.key = jsonb_build_object(${resolved.key.map((k) => `${quoteLiteral(k)}, t.${quoteIdent(k)}`).join(', ')}))`,
    [targetName]);
  return rowCount ?? 0;
}
