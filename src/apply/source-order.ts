/**
 * Source-order apply: every staged change of a slice, across its tables, applied one by one in
 * the order the source made them, exactly as Postgres's own apply worker does. This is the
 * definition the set-based statements of render-apply are an optimization of; the batch writer
 * falls back to it for any slice whose set form is not provably the same, or fails.
 *
 * Pure: the slice's tables in, one DO block out. The block walks the union of the stages ordered
 * by sequence number and, per change:
 *   D  deletes the row with the old key;
 *   K  (the old row of a source UPDATE) is remembered: the W staged right after it is the new row,
 *      and the pair updates the target row in place, key columns included, as a native UPDATE
 *      would (foreign keys with ON UPDATE actions see a key change, not a delete and an insert);
 *   W  upserts the mapped row; a row the worker-side filter rejects is deleted; a write with
 *      unchanged TOAST columns updates the target row and keeps the target's values of the
 *      columns computed only from them.
 * `careful`: each change runs in its own subtransaction; one that fails because of the row itself
 * (SQLSTATE classes 22 and 23, or an exception raised by a user's function) is parked in
 * sync_conflicts as `apply_error` with its own transaction's position and the change as staged
 * (so it can be applied again: retry), and the walk goes on; any other error (a deadlock, a lock
 * timeout, a cancel, resources, a connection) aborts the block, so the batch is retried and
 * nothing is parked for it.
 *
 * A parked change stays pending until a later change of the same key applies: that one
 * supersedes it (the row is then what source order gives without it, and applying the parked
 * change afterwards would go back in time). Retry mode applies parked changes again, oldest
 * first: one that applies is `retried`, one that fails again stays pending with the new error.
 * The block records the tables it parked rows of in the transaction's setting
 * syncctl.parked_tables (comma-separated), for the writer's bookkeeping.
 */
import { quoteIdent, quoteLiteral, quoteQualified } from '../sql/quote.ts';
import { KEEP, OP, SEQ, UNCHANGED, stageTableName, stagedRows, toastReasons, type ApplyTable } from './render-apply.ts';

export interface SourceOrderTable {
  readonly apply: ApplyTable;
  /** The spec's table name, for sync_conflicts. */
  readonly tableName: string;
  /** The table's conflict strategy, recorded with what is parked. */
  readonly strategy: string;
  /** `stop`: a row at fault is not parked; the error ends the block (and the worker). */
  readonly onError: 'park' | 'stop';
}

/** Where each source transaction of the slice begins: changes with seq >= fromSeq belong to it. */
export interface TransactionMark {
  readonly fromSeq: number;
  readonly lsn: string | null;
  readonly commitTime: string | null;
}

/** Errors that are the row's own fault: data exceptions, integrity violations, a user function's RAISE. */
export const ROW_FAULT_SQLSTATE = /^(22|23|P0001)/;

/** The stage column that carries, in retry mode, the id of the sync_conflicts row a change came from. */
export const CONFLICT_ID = 'syncctl$conflict';
/** The setting the block lists the tables it parked rows of in. */
export const PARKED_SETTING = 'syncctl.parked_tables';

export interface RetryMode {
  /** Recorded as resolved_by of what applies. */
  readonly by: string;
}

// plpgsql variables, named so that no source or target column can be taken for them.
const C = 'syncctl$c';
const N = 'syncctl$n';
const O = 'syncctl$o';
const K = 'syncctl$k';
const KEYJ = 'syncctl$key';
const TX = 'syncctl$tx';
/** The old row (K) of the pair the current change completes, if it does. */
const PK = 'syncctl$pk';
/** The current change applied (it was not parked). */
const OK = 'syncctl$ok';
/** Per table: some change of it is pending in sync_conflicts (gates the supersede statement). */
const parkedVar = (i: number) => `syncctl$parked${i}`;
const INTERNALS = `ARRAY[${[SEQ, OP, UNCHANGED].map(quoteLiteral).join(', ')}]`;

export function renderSourceOrder(syncName: string, tables: readonly SourceOrderTable[], marks: readonly TransactionMark[], careful: boolean, retry?: RetryMode): string {
  const union = tables.map((t, i) =>
    `SELECT ${i} AS t, ${quoteIdent(SEQ)} AS seq, ${quoteIdent(OP)} AS op, ${quoteIdent(UNCHANGED)} AS unchanged, ctid AS id, ` +
    `${retry ? quoteIdent(CONFLICT_ID) : 'NULL::bigint'} AS conflict FROM ${stageTableName(t.apply)}`)
    .join(' UNION ALL ');
  const pending = (t: SourceOrderTable) => `EXISTS (SELECT 1 FROM syncctl.sync_conflicts WHERE sync_name = ${quoteLiteral(syncName)} ` +
    `AND table_name = ${quoteLiteral(t.tableName)} AND outcome = 'pending' AND kind = 'apply_error')`;
  const array = (values: readonly (string | number | null)[], type: string) =>
    `${quoteLiteral(`{${values.map((v) => (v === null ? 'NULL' : `"${String(v)}"`)).join(',')}}`)}::${type}[]`;
  const ordered = marks.length > 0 ? marks : [{ fromSeq: 0, lsn: null, commitTime: null }];
  const branches = tables.map((t, i) => `${i === 0 ? 'IF' : 'ELSIF'} ${C}.t = ${i} THEN\n${renderTable(syncName, t, i, retry)}`).join('\n');
  const onFault = (t: SourceOrderTable, i: number) => (retry ? failedAgain('SQLERRM', 'SQLSTATE')
    : t.onError === 'stop' ? stop(t) : park(syncName, t, i, 'SQLERRM', 'SQLSTATE'));
  const body = careful
    ? `BEGIN\n${branches}\nEND IF;\nEXCEPTION WHEN OTHERS THEN\n` +
      // The pair K+W is one change: a K whose W fails is consumed with it.
      `${K} := NULL;\nIF SQLSTATE !~ '${ROW_FAULT_SQLSTATE.source}' THEN RAISE; END IF;\n` +
      tables.map((t, i) => `${i === 0 ? 'IF' : 'ELSIF'} ${C}.t = ${i} THEN\n${onFault(t, i)}`).join('\n') +
      '\nEND IF;\nEND;'
    : `${branches}\nEND IF;`;
  return `DO $syncctl$
#variable_conflict use_column
DECLARE
  ${C} record;
  ${N} record;
  ${O} record;
  ${K} tid;
  ${KEYJ} jsonb;
  ${PK} tid;
  ${OK} boolean;
  ${TX} int := 1;
${tables.map((t, i) => `  ${parkedVar(i)} boolean := ${pending(t)};`).join('\n')}
  syncctl$seqs bigint[] := ${array(ordered.map((m) => m.fromSeq), 'bigint')};
  syncctl$lsns pg_lsn[] := ${array(ordered.map((m) => m.lsn), 'pg_lsn')};
  syncctl$times timestamptz[] := ${array(ordered.map((m) => m.commitTime), 'timestamptz')};
BEGIN
PERFORM set_config(${quoteLiteral(PARKED_SETTING)}, '', true);
FOR ${C} IN SELECT * FROM (${union}) AS changes ORDER BY seq LOOP
WHILE ${TX} < cardinality(syncctl$seqs) AND syncctl$seqs[${TX} + 1] <= ${C}.seq LOOP ${TX} := ${TX} + 1; END LOOP;
${PK} := CASE WHEN ${C}.op = 'W' THEN ${K} END;
${OK} := true;
${body}
END LOOP;
END
$syncctl$`;
}

/** The statements for one change of one table (`${C}` is the change: t, seq, op, unchanged, id). */
function renderTable(syncName: string, t: SourceOrderTable, index: number, retry: RetryMode | undefined): string {
  const table = t.apply;
  const target = quoteQualified(table.target);
  const keyCols = table.key.map(quoteIdent);
  const nonKey = table.columns.filter((c) => !table.key.includes(c.target));
  const positions = new Map(table.staged.map((c, i) => [c.name, i + 1]));
  const positionsOf = (names: readonly string[]) => names.map((r) => positions.get(r)).filter((p): p is number => p !== undefined);
  const keep = table.workerFilter !== undefined ? `coalesce((${table.workerFilter}), false)` : 'true';
  const mapped = table.columns.map((c) => `(${c.expression}) AS ${quoteIdent(c.target)}`);
  const keyExpr = table.key.map((k) => `(${table.columns.find((c) => c.target === k)!.expression}) AS ${quoteIdent(k)}`);
  const byId = (id: string) => `FROM ${stagedRows(table, 'syncctl$row', `ctid = ${id}`)}`;
  const keyMatch = (rec: string) => table.key.map((k) => `t.${quoteIdent(k)} = ${rec}.${quoteIdent(k)}`).join(' AND ');
  const col = (c: string) => `${N}.${quoteIdent(c)}`;
  const unchangedHas = (reads: readonly number[]) => `${C}.unchanged @> '{${reads.join(',')}}'::int2[]`;
  const unchangedOverlaps = (reads: readonly number[]) => `${C}.unchanged && '{${reads.join(',')}}'::int2[]`;
  // A column whose mapping reads only unchanged TOAST values is unchanged itself: the target keeps its value.
  const toastedValue = (c: ApplyTable['columns'][number]) => {
    const reads = positionsOf(c.reads);
    return reads.length === 0 ? col(c.target) : `CASE WHEN ${unchangedHas(reads)} THEN t.${quoteIdent(c.target)} ELSE ${col(c.target)} END`;
  };
  const insertCols = table.columns.map((c) => quoteIdent(c.target));
  const onConflict = nonKey.length === 0
    ? 'DO NOTHING'
    : `DO UPDATE SET ${nonKey.map((c) => `${quoteIdent(c.target)} = excluded.${quoteIdent(c.target)}`).join(', ')}`;
  const upsert = `INSERT INTO ${target} AS t (${insertCols.join(', ')}) VALUES (${table.columns.map((c) => col(c.target)).join(', ')}) ` +
    `ON CONFLICT (${keyCols.join(', ')}) ${onConflict};`;
  const deleteKey = (rec: string) => `DELETE FROM ${target} AS t WHERE ${keyMatch(rec)};`;
  const updateToasted = (where: string, withKey: boolean) => {
    const sets = [...(withKey ? table.key.map((k) => `${quoteIdent(k)} = ${col(k)}`) : []), ...nonKey.map((c) => `${quoteIdent(c.target)} = ${toastedValue(c)}`)];
    return sets.length === 0 ? `PERFORM 1 FROM ${target} AS t WHERE ${where};` : `UPDATE ${target} AS t SET ${sets.join(', ')} WHERE ${where};`;
  };
  const updatePlain = (where: string) =>
    `UPDATE ${target} AS t SET ${table.columns.map((c) => `${quoteIdent(c.target)} = ${col(c.target)}`).join(', ')} WHERE ${where};`;

  // Unchanged TOAST values are not in the stream: a column reading one of them together with a
  // changed column, or a filter reading one, cannot be computed without the old row.
  const partial = nonKey.map((c) => positionsOf(c.reads)).filter((reads) => reads.length > 0)
    .map((reads) => `(${unchangedOverlaps(reads)} AND NOT ${unchangedHas(reads)})`);
  const filterReads = table.workerFilter !== undefined ? positionsOf(table.filterReads ?? []) : [];
  const incomputable = [...(filterReads.length > 0 ? [unchangedOverlaps(filterReads)] : []), ...partial];
  const { partial: reasonPartial, missing: reasonMissing } = toastReasons(table, `${C}.unchanged`);
  const parkHere = (reason: string) => (retry ? failedAgain(reason, 'NULL')
    : t.onError === 'stop'
      ? `RAISE EXCEPTION '%', ${quoteLiteral(`${syncName}.${t.tableName}: cannot apply the row: `)} || ${reason} USING ERRCODE = '22000';`
      : park(syncName, t, index, reason, 'NULL'));
  // An applied change supersedes what is pending of its key (see the header); in retry mode, only
  // what was parked before the change being retried, which is then `retried` itself.
  const supersede = (rec: string) => `UPDATE syncctl.sync_conflicts SET outcome = 'resolved', resolved_by = 'syncctl', resolved_at = clock_timestamp(), ` +
    `reason = coalesce(reason || '; ', '') || 'superseded: a later change of this key was applied' ` +
    `WHERE sync_name = ${quoteLiteral(syncName)} AND table_name = ${quoteLiteral(t.tableName)} AND kind = 'apply_error' AND outcome = 'pending' ` +
    `AND key = jsonb_build_object(${table.key.map((k) => `${quoteLiteral(k)}, ${rec}.${quoteIdent(k)}`).join(', ')})${retry ? ` AND id < ${C}.conflict` : ''};`;
  const applied = (recs: string) => `IF ${OK} THEN\n` +
    `IF ${parkedVar(index)} THEN\n${recs}\nEND IF;\n` +
    (retry ? `UPDATE syncctl.sync_conflicts SET outcome = 'retried', resolved_by = ${quoteLiteral(retry.by)}, resolved_at = clock_timestamp() WHERE id = ${C}.conflict;\n` : '') +
    'END IF;';

  // A write with unchanged TOAST columns: `where` finds the row to keep their values from.
  // Both reasons may hold: a missing row is named first, as the set form names it (render-apply).
  const toastedWrite = (where: string, withKey: boolean, notKept: string) =>
    `${incomputable.length > 0 ? `IF ${incomputable.join(' OR ')} THEN\n` +
      `${parkHere(`CASE WHEN NOT EXISTS (SELECT 1 FROM ${target} AS t WHERE ${where}) THEN ${reasonMissing} ELSE ${reasonPartial} END`)}\nELSIF` : 'IF'} NOT ${N}.${quoteIdent(KEEP)} THEN\n${notKept}\n` +
    `ELSE\n${updateToasted(where, withKey)}\nIF NOT FOUND THEN\n${parkHere(reasonMissing)}\nEND IF;\nEND IF;`;
  const write = `SELECT ${mapped.join(', ')}, ${keep} AS ${quoteIdent(KEEP)} INTO ${N} ${byId(`${C}.id`)};\n` +
    `IF ${K} IS NOT NULL THEN\n` +
    // The new row of an UPDATE: the target row with the old key becomes it.
    `SELECT ${keyExpr.join(', ')} INTO ${O} ${byId(K)};\n${K} := NULL;\n` +
    `IF ${C}.unchanged IS NULL THEN\n` +
    `IF NOT ${N}.${quoteIdent(KEEP)} THEN\n${deleteKey(O)}\n${deleteKey(N)}\n` +
    `ELSE\n${updatePlain(keyMatch(O))}\nIF NOT FOUND THEN\n${upsert}\nEND IF;\nEND IF;\n` +
    `ELSE\n${toastedWrite(keyMatch(O), true, `${deleteKey(O)}\n${deleteKey(N)}`)}\nEND IF;\n` +
    `ELSIF ${C}.unchanged IS NULL THEN\n` +
    `IF ${N}.${quoteIdent(KEEP)} THEN\n${upsert}\nELSE\n${deleteKey(N)}\nEND IF;\n` +
    `ELSE\n${toastedWrite(keyMatch(N), false, deleteKey(N))}\nEND IF;\n` +
    applied(`${supersede(N)}\nIF ${PK} IS NOT NULL THEN\n${supersede(O)}\nEND IF;`);
  return `IF ${C}.op = 'K' THEN\n${K} := ${C}.id;\n` +
    `ELSIF ${C}.op = 'D' THEN\nSELECT ${keyExpr.join(', ')} INTO ${O} ${byId(`${C}.id`)};\n${deleteKey(O)}\n${applied(supersede(O))}\n` +
    `ELSE\n${write}\nEND IF;`;
}

/** The current change's key as the target knows it, into ${KEYJ}; the source row when the key's mapping itself fails. */
function currentKey(table: ApplyTable): string {
  const keyExpr = table.key.map((k) => `${quoteLiteral(k)}, (${table.columns.find((c) => c.target === k)!.expression})`);
  return `BEGIN\nSELECT jsonb_build_object(${keyExpr.join(', ')}) INTO ${KEYJ} FROM ${stagedRows(table, 'syncctl$row', `ctid = ${C}.id`)};\n` +
    `EXCEPTION WHEN OTHERS THEN ${KEYJ} := (SELECT to_jsonb(s) - ${INTERNALS} FROM ${stageTableName(table)} AS s WHERE ctid = ${C}.id);\nEND;\n`;
}

/** onError: stop: the row's error again, with the row's key as its DETAIL (the batch writer names it). */
function stop(t: SourceOrderTable): string {
  return `${currentKey(t.apply)}RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = SQLERRM, DETAIL = ${KEYJ}::text, TABLE = ${quoteLiteral(t.tableName)};`;
}

/**
 * Parks the current change as an apply_error, with its own transaction's position, the table's
 * strategy and the change as staged (with the old row of its pair).
 */
function park(syncName: string, t: SourceOrderTable, index: number, reason: string, sqlstate: string): string {
  const table = t.apply;
  const stage = stageTableName(table);
  const rawKey = `to_jsonb(s) - ${INTERNALS}`;
  const columns = quoteLiteral(JSON.stringify(table.staged.map((c) => c.name)));
  const change = `jsonb_build_object('columns', ${columns}::jsonb, 'rows', ` +
    `(SELECT jsonb_agg(to_jsonb(r) ORDER BY r.${quoteIdent(SEQ)}) FROM ${stage} AS r WHERE r.ctid = ${C}.id OR r.ctid = ${PK}))`;
  return currentKey(table) +
    `INSERT INTO syncctl.sync_conflicts (sync_name, table_name, kind, key, incoming, source_lsn, source_commit_time, strategy, outcome, reason, change, sqlstate) ` +
    `SELECT ${quoteLiteral(syncName)}, ${quoteLiteral(t.tableName)}, 'apply_error', ${KEYJ}, ${rawKey}, syncctl$lsns[${TX}], syncctl$times[${TX}], ` +
    `${quoteLiteral(t.strategy)}, 'pending', ${reason}, ${change}, ${sqlstate} FROM ${stage} AS s WHERE ctid = ${C}.id;\n` +
    `${OK} := false;\n${parkedVar(index)} := true;\n` +
    `PERFORM set_config(${quoteLiteral(PARKED_SETTING)}, current_setting(${quoteLiteral(PARKED_SETTING)}) || ${quoteLiteral(`${t.tableName},`)}, true);`;
}

/** Retry mode: the change failed again; it stays pending, with the new error. */
function failedAgain(reason: string, sqlstate: string): string {
  return `UPDATE syncctl.sync_conflicts SET reason = ${reason}, sqlstate = ${sqlstate} WHERE id = ${C}.conflict;\n${OK} := false;`;
}
