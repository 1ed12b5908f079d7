/**
 * The conflict rules in the initial copy. A target row present when a table's first copy begins
 * was written by someone else than syncctl: the copy (or, for a key the source does not hold yet,
 * the stream later) meets it as a source INSERT meets a local one, `insert_exists`, decided by the
 * table's rule and recorded in sync_conflicts, as the stream would decide it.
 *
 * The apply path already does this for keys with a local change (syncctl.local_changes): so the
 * copy records each present row there before its first chunk (`markPresentRows`, changed_by
 * PRESENT_BEFORE_COPY), stages its rows as INSERTs (op I), and lets the staged apply meet them.
 * A present row that already holds what the copy would write is no conflict (nothing to decide;
 * adopting a target an earlier job filled logs only the rows that differ): each chunk forgets
 * those marks first (`forgetSameRows`). The rows of a chunk whose key still has a local change are
 * set aside and applied after the others (`applyMeetingPresentRows`): the others go set-based,
 * and only those go through source order, where the rule meets them one by one. An empty target
 * marks nothing and takes the direct path as before.
 */
import { Readable } from 'node:stream';
import { to as copyTo } from 'pg-copy-streams';
import type { BatchTable, BatchWriter, SourcePosition } from '../apply/batch-writer.ts';
import { OP, SEQ, UNCHANGED, stagedRows, stageTableName, updatedColumns, type ApplyTable } from '../apply/render-apply.ts';
import type { Connection } from '../db/connect.ts';
import { quoteIdent, quoteLiteral, quoteQualified } from '../sql/quote.ts';

/** local_changes.changed_by of a row the target held before the table's first copy. */
export const PRESENT_BEFORE_COPY = 'syncctl: present before the first copy';

/** `target_table` of local_changes: the target's qualified name, unquoted, as the tracking trigger writes it. */
function trackedName(table: ApplyTable): string {
  return `${table.target.schema}.${table.target.name}`;
}

/**
 * Records every row of the target table as a local INSERT (a local change already recorded for
 * its key stays as it is). The key is written as the tracking trigger writes it: to_jsonb of the
 * row's key columns.
 */
export function markPresentRows(table: ApplyTable): string {
  const key = `jsonb_build_object(${table.key.map((k) => `${quoteLiteral(k)}, t.${quoteIdent(k)}`).join(', ')})`;
  return `INSERT INTO syncctl.local_changes (target_table, key, operation, changed_by) ` +
    `SELECT ${quoteLiteral(trackedName(table))}, ${key}, 'INSERT', ${quoteLiteral(PRESENT_BEFORE_COPY)} FROM ${quoteQualified(table.target)} AS t ` +
    `ON CONFLICT (target_table, key) DO NOTHING`;
}

/**
 * In a chunk's transaction, its rows staged: forgets the marks of present rows that hold what the
 * copy would write (every column an incoming write sets, compared as the target's types print
 * them, as the copy's upsert compares: a difference is never hidden) and that the row filter
 * keeps. `targetTypes`: each mapped column's type in the target.
 */
export function forgetSameRows(table: ApplyTable, targetTypes: ReadonlyMap<string, string>): string {
  const mapped = table.columns.map((c) => `CAST((${c.expression}) AS ${targetTypes.get(c.target) ?? 'text'}) AS ${quoteIdent(c.target)}`);
  const keep = table.workerFilter !== undefined ? ` WHERE coalesce((${table.workerFilter}), false)` : '';
  const row = (alias: string) => `ROW(${updatedColumns(table).map((c) => `${alias}.${quoteIdent(c.target)}`).join(', ')})::text`;
  const keyMatch = table.key.map((k) => `t.${quoteIdent(k)} = s.${quoteIdent(k)}`).join(' AND ');
  const key = `jsonb_build_object(${table.key.map((k) => `${quoteLiteral(k)}, t.${quoteIdent(k)}`).join(', ')})`;
  return `DELETE FROM syncctl.local_changes AS c USING (SELECT ${mapped.join(', ')} FROM ${stagedRows(table, 'syncctl$rows')}${keep}) AS s ` +
    `JOIN ${quoteQualified(table.target)} AS t ON ${keyMatch} ` +
    `WHERE c.target_table = ${quoteLiteral(trackedName(table))} AND c.changed_by = ${quoteLiteral(PRESENT_BEFORE_COPY)} AND c.key = ${key} ` +
    `AND ${row('t')} = ${row('s')}`;
}

/** Some present row of the table is still marked (its chunks then check for rows the same as the copy's). */
export function hasPresentMarks(table: ApplyTable): string {
  return `SELECT EXISTS (SELECT 1 FROM syncctl.local_changes WHERE target_table = ${quoteLiteral(trackedName(table))} ` +
    `AND changed_by = ${quoteLiteral(PRESENT_BEFORE_COPY)}) AS any`;
}

/**
 * Moves the staged rows whose key has a local change (a present row that differs, or a local
 * write) from the stage into `aside`, a table of the stage's shape. The stage must hold the
 * source's types (the copy never stages as text): the key is computed from them.
 */
export function setAsideConflicting(table: ApplyTable, aside: string): string {
  const stage = stageTableName(table);
  const key = `jsonb_build_object(${table.key.map((k, i) =>
    `${quoteLiteral(k)}, (${table.columns.find((c) => c.target === k)!.expression})::${table.keyTypes[i]}`).join(', ')})`;
  return `WITH moved AS (DELETE FROM ${stage} AS s USING (SELECT r.ctid AS "syncctl$row", ${key} AS "syncctl$key" FROM ${stage} AS r) AS k, ` +
    `syncctl.local_changes AS c WHERE s.ctid = k."syncctl$row" AND c.target_table = ${quoteLiteral(trackedName(table))} AND c.key = k."syncctl$key" ` +
    `RETURNING s.*) INSERT INTO ${aside} SELECT * FROM moved`;
}

const ASIDE = 'pg_temp.syncctl_copy_aside';
/** Rows set aside go back to the stage this many at a time (each slice held in memory as COPY text). */
const SLICE_ROWS = 20_000;

/**
 * Applies a chunk of a first copy whose target held rows, its rows staged in `batch`'s stage, in
 * the chunk's transaction: forgets the marks of present rows it leaves as they are, applies the
 * rows that meet no local change set-based, then the others, which meet the table's rule.
 */
export async function applyMeetingPresentRows(writer: BatchWriter, target: Connection, batch: BatchTable, targetTypes: ReadonlyMap<string, string>,
  context: SourcePosition): Promise<void> {
  const table = batch.apply;
  await target.query(forgetSameRows(table, targetTypes));
  if (table.staged.some((c) => c.castTo !== undefined)) return writer.applyStaged(context);
  await target.query(`CREATE TEMP TABLE IF NOT EXISTS ${ASIDE} (LIKE ${stageTableName(table)}) ON COMMIT DROP`);
  const aside = (await target.query(setAsideConflicting(table, ASIDE))).rowCount ?? 0;
  await writer.applyStaged(context);
  const columns = [SEQ, OP, UNCHANGED, ...table.staged.map((c) => c.name)];
  for (let done = 0; done < aside; done += SLICE_ROWS) {
    const text: Buffer[] = [];
    for await (const block of target.client.query(copyTo(`COPY (SELECT ${columns.map(quoteIdent).join(', ')} FROM ${ASIDE} ` +
      `ORDER BY ctid LIMIT ${SLICE_ROWS} OFFSET ${done}) TO STDOUT`))) text.push(block as Buffer);
    await writer.stageCopy(table.id, columns, Readable.from(text));
    await writer.applyStaged(context);
  }
  await target.query(`DROP TABLE ${ASIDE}`);
}
