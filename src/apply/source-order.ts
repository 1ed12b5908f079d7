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
 *
 * Conflicts (careful, tracked tables): the rule decides the whole row (`incoming`, `current`,
 * `pending`) or, for `fields` and `merge` when the change writes a row that exists, each column:
 * the merged row is one UPDATE of the target row aliased `current`, FROM the row the incoming
 * change would leave (`incoming`: the target row with the mapped columns written), so a merge
 * column's SQL reads both exactly as plan typed it (plan/check-merge.ts).
 */
import { MERGE_CURRENT, MERGE_INCOMING, type ConflictRule, type MergeOtherwiseRule } from '../spec/schema.ts';
import { quoteIdent, quoteLiteral, quoteQualified } from '../sql/quote.ts';
import { KEEP, OP, SEQ, UNCHANGED, keyObject, stageTableName, stagedRows, toastReasons, updatedColumns, type ApplyTable } from './render-apply.ts';

export interface SourceOrderTable {
  readonly apply: ApplyTable;
  /** The spec's table name, for sync_conflicts. */
  readonly tableName: string;
  /** The table's conflict strategy, recorded with what is parked. */
  readonly strategy: string;
  /** The table's conflict rule (default source-wins), met by a change whose key has a local change (`apply.tracked`). */
  readonly conflict?: ConflictRule;
  /** `stop`: a row at fault is not parked; the error ends the block (and the worker). */
  readonly onError: 'park' | 'stop';
}

/** Where each source transaction of the slice begins: changes with seq >= fromSeq belong to it. */
export interface TransactionMark {
  readonly fromSeq: number;
  readonly lsn: string | null;
  readonly commitTime: string | null;
}

/**
 * Of `marks` (in sequence order), those the changes numbered `seqs` fall in, in order: for each,
 * the last mark at or before it, or the first mark for a change before every mark. That is the
 * mark source order and kept-prefix.ts find for a change (the last one at or before it, else the
 * first), and it finds the same one among these: its own mark is here, and no mark here after it
 * begins at or before it. So the statements for a few changes set aside carry their own few
 * transactions, not every transaction of the batch (thousands, parsed by the target each time).
 */
export function marksOf<M extends { readonly fromSeq: number }>(marks: readonly M[], seqs: Iterable<number>): M[] {
  if (marks.length === 0) return [];
  const used = new Set<number>();
  for (const seq of seqs) {
    // Binary search: the last index whose mark begins at or before seq (0 when none does).
    let lo = 0;
    let hi = marks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (marks[mid]!.fromSeq <= seq) lo = mid;
      else hi = mid - 1;
    }
    used.add(lo);
  }
  return [...used].sort((a, b) => a - b).map((i) => marks[i]!);
}

/**
 * The marks as three SQL array literals, index i of each for mark i: where each transaction
 * begins (bigint[]), its commit LSN (pg_lsn[]) and commit time (timestamptz[]). Without marks, one
 * mark with no position, from the first change on: every change then finds it, and logs NULL for both.
 */
export function markArrays(marks: readonly TransactionMark[]): { readonly seqs: string; readonly lsns: string; readonly times: string } {
  const ordered = marks.length > 0 ? marks : [{ fromSeq: 0, lsn: null, commitTime: null }];
  // Elements are digits, LSNs and ISO times: nothing in them needs escaping inside the quotes.
  const array = (values: readonly (string | number | null)[], type: string) =>
    `${quoteLiteral(`{${values.map((v) => (v === null ? 'NULL' : `"${String(v)}"`)).join(',')}}`)}::${type}[]`;
  return {
    seqs: array(ordered.map((m) => m.fromSeq), 'bigint'),
    lsns: array(ordered.map((m) => m.lsn), 'pg_lsn'),
    times: array(ordered.map((m) => m.commitTime), 'timestamptz'),
  };
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
  /** The outcome of what applies: `retried` (an apply_error applied again) or `resolved` (a pending conflict decided). */
  readonly outcome?: 'retried' | 'resolved';
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
/** Per tracked table: the target row a conflicting change meets, locked. */
const currentVar = (i: number) => `syncctl$cr${i}`;
/** Per table whose rule merges: the target row as the incoming change would leave it. */
const incomingVar = (i: number) => `syncctl$in${i}`;
const SOURCE_WINS = { strategy: 'source-wins' } as const;
// A conflict: whether the target row exists, whether a local change was seen, its time, its kind, the rule's verdict, the outcome.
const HAS = 'syncctl$has';
const SEEN = 'syncctl$seen';
const LCT = 'syncctl$lct';
/** The versions (xmin) of the local-change entries the careful pass saw: one it deletes after writing that is not among them raced it. */
const SEENX = 'syncctl$seenx';
const RACED = 'syncctl$raced';
const KIND = 'syncctl$kind';
const WIN = 'syncctl$win';
const OUTCOME = 'syncctl$outcome';
const INTERNALS = `ARRAY[${[SEQ, OP, UNCHANGED].map(quoteLiteral).join(', ')}]`;

/**
 * `careful`: true, or 'strict': careful about conflicts, without the subtransaction per change
 * (for tables that are all onError: stop): the first change that fails fails the block, and the
 * caller applies the slice again another way.
 */
export function renderSourceOrder(syncName: string, tables: readonly SourceOrderTable[], marks: readonly TransactionMark[], careful: boolean | 'strict', retry?: RetryMode): string {
  if (careful === 'strict' && tables.some((t) => t.onError !== 'stop')) throw new Error('strict source order is for onError: stop tables');
  const union = tables.map((t, i) =>
    `SELECT ${i} AS t, ${quoteIdent(SEQ)} AS seq, ${quoteIdent(OP)} AS op, ${quoteIdent(UNCHANGED)} AS unchanged, ctid AS id, ` +
    `${retry ? quoteIdent(CONFLICT_ID) : 'NULL::bigint'} AS conflict FROM ${stageTableName(t.apply)}`)
    .join(' UNION ALL ');
  const pending = (t: SourceOrderTable) => `EXISTS (SELECT 1 FROM syncctl.sync_conflicts WHERE sync_name = ${quoteLiteral(syncName)} ` +
    `AND table_name = ${quoteLiteral(t.tableName)} AND outcome = 'pending' AND kind = 'apply_error')`;
  const arrays = markArrays(marks);
  const branches = tables.map((t, i) => `${i === 0 ? 'IF' : 'ELSIF'} ${C}.t = ${i} THEN\n${renderTable(syncName, t, i, careful, retry)}`).join('\n');
  const onFault = (t: SourceOrderTable, i: number) => (retry ? failedAgain('SQLERRM', 'SQLSTATE')
    : t.onError === 'stop' ? stop(t) : park(syncName, t, i, 'SQLERRM', 'SQLSTATE'));
  const body = careful === true
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
  ${HAS} boolean;
  ${SEEN} boolean := false;
  ${LCT} timestamptz;
  ${SEENX} text[];
  ${RACED} boolean;
  ${KIND} text;
  ${WIN} text;
  ${OUTCOME} text;
${tables.flatMap((t, i) => (t.apply.tracked && careful ? [`  ${currentVar(i)} ${quoteQualified(t.apply.target)}%ROWTYPE;`,
    ...(merges(t.conflict) ? [`  ${incomingVar(i)} ${quoteQualified(t.apply.target)}%ROWTYPE;`] : [])] : [])).join('\n')}
  ${TX} int := 1;
${tables.map((t, i) => `  ${parkedVar(i)} boolean := ${pending(t)};`).join('\n')}
  syncctl$seqs bigint[] := ${arrays.seqs};
  syncctl$lsns pg_lsn[] := ${arrays.lsns};
  syncctl$times timestamptz[] := ${arrays.times};
BEGIN
PERFORM set_config(${quoteLiteral(PARKED_SETTING)}, '', true);
FOR ${C} IN SELECT * FROM (${union}) AS changes ORDER BY seq LOOP
WHILE ${TX} < cardinality(syncctl$seqs) AND syncctl$seqs[${TX} + 1] <= ${C}.seq LOOP ${TX} := ${TX} + 1; END LOOP;
${PK} := CASE WHEN ${C}.op = 'W' THEN ${K} END;
${OK} := true;
${SEEN} := false;
${SEENX} := NULL;
${KIND} := NULL;
${body}
END LOOP;
END
$syncctl$`;
}

/** The statements for one change of one table (`${C}` is the change: t, seq, op, unchanged, id). */
function renderTable(syncName: string, t: SourceOrderTable, index: number, careful: boolean | 'strict', retry: RetryMode | undefined): string {
  const table = t.apply;
  const target = quoteQualified(table.target);
  const keyCols = table.key.map(quoteIdent);
  const nonKey = table.columns.filter((c) => !table.key.includes(c.target));
  const updated = updatedColumns(table);
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
  const onConflict = updated.length === 0
    ? 'DO NOTHING'
    : `DO UPDATE SET ${updated.map((c) => `${quoteIdent(c.target)} = excluded.${quoteIdent(c.target)}`).join(', ')}`;
  const upsert = `INSERT INTO ${target} AS t (${insertCols.join(', ')}) VALUES (${table.columns.map((c) => col(c.target)).join(', ')}) ` +
    `ON CONFLICT (${keyCols.join(', ')}) ${onConflict};`;
  const deleteKey = (rec: string) => `DELETE FROM ${target} AS t WHERE ${keyMatch(rec)};`;
  const updateToasted = (where: string, withKey: boolean) => {
    const sets = [...(withKey ? table.key.map((k) => `${quoteIdent(k)} = ${col(k)}`) : []), ...updated.map((c) => `${quoteIdent(c.target)} = ${toastedValue(c)}`)];
    return sets.length === 0 ? `PERFORM 1 FROM ${target} AS t WHERE ${where};` : `UPDATE ${target} AS t SET ${sets.join(', ')} WHERE ${where};`;
  };
  const updatePlain = (where: string) =>
    `UPDATE ${target} AS t SET ${[...table.key.map((k) => ({ target: k })), ...updated].map((c) => `${quoteIdent(c.target)} = ${col(c.target)}`).join(', ')} WHERE ${where};`;

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
    `AND key = ${keyObject(table, (k) => `${rec}.${quoteIdent(k)}`, false)}${retry ? ` AND id < ${C}.conflict` : ''};`;
  const applied = (recs: string) => `IF ${OK} THEN\n` +
    `IF ${parkedVar(index)} THEN\n${recs}\nEND IF;\n` +
    (retry ? `UPDATE syncctl.sync_conflicts SET outcome = ${quoteLiteral(retry.outcome ?? 'retried')}, resolved_by = ${quoteLiteral(retry.by)}, resolved_at = clock_timestamp() WHERE id = ${C}.conflict;\n` : '') +
    'END IF;';

  // A write with unchanged TOAST columns: `where` finds the row to keep their values from.
  // Both reasons may hold: a missing row is named first, as the set form names it (render-apply).
  const toastedWrite = (where: string, withKey: boolean, notKept: string) =>
    `${incomputable.length > 0 ? `IF ${incomputable.join(' OR ')} THEN\n` +
      `${parkHere(`CASE WHEN NOT EXISTS (SELECT 1 FROM ${target} AS t WHERE ${where}) THEN ${reasonMissing} ELSE ${reasonPartial} END`)}\nELSIF` : 'IF'} NOT ${N}.${quoteIdent(KEEP)} THEN\n${notKept}\n` +
    `ELSE\n${updateToasted(where, withKey)}\nIF NOT FOUND THEN\n${parkHere(reasonMissing)}\nEND IF;\nEND IF;`;
  // Change tracking (see the header): a change applied must not meet a local change after the
  // fact. The fast pass fails on one (SQLSTATE SYCON), so that the careful pass meets it with the
  // rule; the careful pass looked before it wrote, so an entry it deletes now that is not one it
  // saw (a version, xmin, it did not see) raced it: a serialization failure, the batch is retried.
  const tracked = table.tracked;
  const targetName = quoteLiteral(`${table.target.schema}.${table.target.name}`);
  const keyJson = (rec: string) => keyObject(table, (k) => `${rec}.${quoteIdent(k)}`, true);
  const localKeys = (recs: readonly string[]) => `c.target_table = ${targetName} AND c.key IN (${recs.map(keyJson).join(', ')})`;
  const localCheck = (recs: readonly string[]) => (!tracked ? '' : careful
    ? `WITH gone AS (DELETE FROM syncctl.local_changes AS c WHERE ${localKeys(recs)} RETURNING c.xmin::text AS "syncctl$x") ` +
      `SELECT bool_or(NOT coalesce(gone."syncctl$x" = ANY (${SEENX}), false)) INTO ${RACED} FROM gone;\n` +
      `IF ${RACED} THEN RAISE EXCEPTION 'a local write of % raced the worker', ${targetName} USING ERRCODE = '40001'; END IF;`
    : `PERFORM syncctl.local_changes_found(${targetName}) FROM syncctl.local_changes AS c WHERE ${localKeys(recs)};`);
  // The new row of a write, and the old key: of the pair's old row, or the write's own.
  const writeRecs = `IF ${PK} IS NOT NULL THEN\n${localCheck([O, N])}\nELSE\n${localCheck([N])}\nEND IF;`;

  const normalWrite = `IF ${PK} IS NOT NULL THEN\n` +
    // The new row of an UPDATE: the target row with the old key becomes it.
    `IF ${C}.unchanged IS NULL THEN\n` +
    `IF NOT ${N}.${quoteIdent(KEEP)} THEN\n${deleteKey(O)}\n${deleteKey(N)}\n` +
    `ELSE\n${updatePlain(keyMatch(O))}\nIF NOT FOUND THEN\n${upsert}\nEND IF;\nEND IF;\n` +
    `ELSE\n${toastedWrite(keyMatch(O), true, `${deleteKey(O)}\n${deleteKey(N)}`)}\nEND IF;\n` +
    `ELSIF ${C}.unchanged IS NULL THEN\n` +
    `IF ${N}.${quoteIdent(KEEP)} THEN\n${upsert}\nELSE\n${deleteKey(N)}\nEND IF;\n` +
    `ELSE\n${toastedWrite(keyMatch(N), false, deleteKey(N))}\nEND IF;`;
  const writeApplied = applied(`${supersede(N)}\nIF ${PK} IS NOT NULL THEN\n${supersede(O)}\nEND IF;`);
  const deleteApplied = applied(supersede(O));

  if (!(tracked && careful)) {
    const write = `SELECT ${mapped.join(', ')}, ${keep} AS ${quoteIdent(KEEP)} INTO ${N} ${byId(`${C}.id`)};\n` +
      `IF ${PK} IS NOT NULL THEN\nSELECT ${keyExpr.join(', ')} INTO ${O} ${byId(PK)};\nEND IF;\n${K} := NULL;\n` +
      `${normalWrite}\n${writeApplied}\n${tracked ? `IF ${OK} THEN\n${writeRecs}\nEND IF;` : ''}`;
    return `IF ${C}.op = 'K' THEN\n${K} := ${C}.id;\n` +
      `ELSIF ${C}.op = 'D' THEN\nSELECT ${keyExpr.join(', ')} INTO ${O} ${byId(`${C}.id`)};\n${deleteKey(O)}\n${deleteApplied}\n${localCheck([O])}\n` +
      `ELSE\n${write}\nEND IF;`;
  }

  // Careful, with change tracking: the local changes of the keys are looked up, then the target
  // row is locked. In this order, the row is at least as new as every local change seen (the two
  // commit together), and a local write that commits after the lookup (in between, or into a row
  // that did not exist, which no lock holds) is an entry the write finds unseen: localCheck. The
  // other order lost a local INSERT committing between the two: the lock missed its row, the
  // lookup saw its entry, and the insert was taken for a change meeting no row.
  // O is the key of the row the change meets (the pair's old row, the write's own key, the
  // delete's key); a pair also looks at its new key.
  const cr = currentVar(index);
  const detect = (recs: readonly string[]) =>
    `SELECT max(c.changed_at), array_agg(c.xmin::text) INTO ${LCT}, ${SEENX} FROM syncctl.local_changes AS c WHERE ${localKeys(recs)};\n` +
    `${SEEN} := ${SEENX} IS NOT NULL;\n` +
    `SELECT t.* INTO ${cr} FROM ${target} AS t WHERE ${keyMatch(O)} FOR UPDATE OF t;\n${HAS} := FOUND;\n` +
    `${KIND} := CASE WHEN NOT ${SEEN} THEN NULL WHEN ${C}.op = 'I' THEN CASE WHEN ${HAS} THEN 'insert_exists' END ` +
    `WHEN NOT ${HAS} THEN CASE WHEN ${C}.op = 'D' THEN 'delete_missing' ELSE 'update_missing' END ELSE 'locally_modified' END;`;
  const rule = t.conflict ?? SOURCE_WINS;
  // merge: the rule for what it does not list (and for changes that meet no row, or delete one).
  const otherwise = rule.strategy === 'merge' ? (rule.otherwise ?? SOURCE_WINS) : rule;
  const byTime = `CASE WHEN syncctl$times[${TX}] IS NULL OR syncctl$times[${TX}] >= ${LCT} THEN 'incoming' ELSE 'current' END`;
  // Column by column only when there is a row to merge into and the incoming row stays in the
  // target (a write the filter rejects removes the row: the whole-row rule decides, as for a delete).
  const mergeable = `${HAS} AND ${N}.${quoteIdent(KEEP)}`;
  const verdict = (r: MergeOtherwiseRule | { strategy: 'manual' }, isDelete: boolean): string => {
    switch (r.strategy) {
      case 'source-wins': return `'incoming'`;
      case 'target-wins': return `'current'`;
      case 'manual': return `'pending'`;
      case 'last-write-wins': {
        if (isDelete) return byTime;
        const c = quoteIdent(r.column);
        // Newer wins, a tie goes to the source; a delete, or a row gone, compares the times.
        return `CASE WHEN NOT ${HAS} THEN ${byTime} WHEN ${cr}.${c} IS NULL OR (${N}.${c} IS NOT NULL AND ${N}.${c} >= ${cr}.${c}) THEN 'incoming' ELSE 'current' END`;
      }
      case 'fields': {
        const byDefault = r.default === 'target' ? `'current'` : `'incoming'`;
        return isDelete ? byDefault : `CASE WHEN ${mergeable} THEN 'merge' ELSE ${byDefault} END`;
      }
    }
  };
  const ruleVerdict = (isDelete: boolean) => (rule.strategy !== 'merge' ? verdict(rule, isDelete)
    : isDelete ? verdict(otherwise, true) : `CASE WHEN ${mergeable} THEN 'merge' ELSE ${verdict(otherwise, false)} END`);

  // The merged row: each column from what the rule says, over `incoming` and `current`; the key moves with the source.
  const incoming = (c: string) => `${MERGE_INCOMING}.${quoteIdent(c)}`;
  const current = (c: string) => `${MERGE_CURRENT}.${quoteIdent(c)}`;
  const chosen = (c: string): string => {
    if (rule.strategy === 'merge' && Object.hasOwn(rule.columns, c)) return `(${rule.columns[c]!.text})`;
    switch (otherwise.strategy) {
      case 'target-wins': return current(c);
      case 'fields': return (otherwise.owners[c] ?? otherwise.default) === 'target' ? current(c) : incoming(c);
      case 'last-write-wins': {
        const by = otherwise.column;
        return `CASE WHEN ${current(by)} IS NULL OR (${incoming(by)} IS NOT NULL AND ${incoming(by)} >= ${current(by)}) THEN ${incoming(c)} ELSE ${current(c)} END`;
      }
      default: return incoming(c);
    }
  };
  const inc = incomingVar(index);
  // incoming: the target row as the change would leave it; a column computed only from unchanged TOAST values keeps its value.
  const incomingRow = [`${inc} := ${cr};`, ...table.columns.map((c) => {
    const reads = positionsOf(c.reads);
    const value = reads.length === 0 || table.key.includes(c.target) ? col(c.target)
      : `CASE WHEN ${unchangedHas(reads)} THEN ${cr}.${quoteIdent(c.target)} ELSE ${col(c.target)} END`;
    return `${inc}.${quoteIdent(c.target)} := ${value};`;
  })].join('\n');
  const mergedSets = [...table.key.map((k) => `${quoteIdent(k)} = ${incoming(k)}`), ...nonKey.map((c) => `${quoteIdent(c.target)} = ${chosen(c.target)}`)];
  const mergedUpdate = `UPDATE ${target} AS ${MERGE_CURRENT} SET ${mergedSets.join(', ')} FROM (SELECT (${inc}).*) AS ${MERGE_INCOMING} ` +
    `WHERE ${table.key.map((k) => `${current(k)} = ${O}.${quoteIdent(k)}`).join(' AND ')};`;
  // A column that reads a changed and an unchanged TOAST value cannot be computed: parked, as a plain write would be.
  const merged = merges(rule) ? `${incomputable.length > 0 ? `IF ${incomputable.join(' OR ')} THEN\n${parkHere(reasonPartial)}\nELSE\n` : ''}` +
    `${incomingRow}\n${mergedUpdate}${incomputable.length > 0 ? '\nEND IF;' : ''}` : '';
  const log = (isDelete: boolean) => `INSERT INTO syncctl.sync_conflicts (sync_name, table_name, kind, key, incoming, current, result, source_lsn, ` +
    `source_commit_time, strategy, outcome, change) VALUES (${quoteLiteral(syncName)}, ${quoteLiteral(t.tableName)}, ${KIND}, ` +
    `${keyObject(table, (k) => `${O}.${quoteIdent(k)}`, false)}, ` +
    `${isDelete ? 'NULL' : `to_jsonb(${N}) - ${quoteLiteral(KEEP)}`}, CASE WHEN ${HAS} THEN to_jsonb(${cr}) END, ` +
    `(SELECT to_jsonb(t) FROM ${target} AS t WHERE ${isDelete ? keyMatch(O) : `CASE WHEN ${OUTCOME} IN ('applied', 'merged') THEN ${keyMatch(N)} ELSE ${keyMatch(O)} END`}), ` +
    `syncctl$lsns[${TX}], syncctl$times[${TX}], ${quoteLiteral(t.strategy)}, ${OUTCOME}, CASE WHEN ${OUTCOME} = 'pending' THEN ${changeJson(table)} END);`;
  // What the rule decided, applied: incoming as any change is (then its local change is
  // forgotten), merged, or nothing (the local change stays: the next change of the key meets it
  // too, which is how later changes queue behind a pending one).
  const decide = (isDelete: boolean, apply: string, afterApply: string) => `${WIN} := ${ruleVerdict(isDelete)};\n` +
    `IF ${WIN} = 'incoming' THEN\n${apply}\n${OUTCOME} := 'applied';\n` +
    (isDelete || !merges(rule) ? '' : `ELSIF ${WIN} = 'merge' THEN\n${merged}\n${OUTCOME} := 'merged';\n`) +
    `ELSE\n${OUTCOME} := CASE WHEN ${WIN} = 'pending' THEN 'pending' ELSE 'kept' END;\n${OK} := false;\n` +
    (retry ? `UPDATE syncctl.sync_conflicts SET outcome = ${quoteLiteral(retry.outcome ?? 'retried')}, resolved_by = ${quoteLiteral(retry.by)}, resolved_at = clock_timestamp() WHERE id = ${C}.conflict;\n` : '') +
    `END IF;\n${afterApply}\n` +
    // Applied or merged but parked on the way (an unchanged TOAST value it cannot keep): the park is the record.
    `IF ${OUTCOME} NOT IN ('applied', 'merged') OR ${OK} THEN\n${log(isDelete)}\nEND IF;`;
  const write = `SELECT ${mapped.join(', ')}, ${keep} AS ${quoteIdent(KEEP)} INTO ${N} ${byId(`${C}.id`)};\n` +
    `IF ${PK} IS NOT NULL THEN\nSELECT ${keyExpr.join(', ')} INTO ${O} ${byId(PK)};\nELSE\nSELECT ${keyExpr.join(', ')} INTO ${O} ${byId(`${C}.id`)};\nEND IF;\n${K} := NULL;\n` +
    `IF ${PK} IS NOT NULL THEN\n${detect([O, N])}\nELSE\n${detect([O])}\nEND IF;\n` +
    `IF ${KIND} IS NULL THEN\n${normalWrite}\n${writeApplied}\nIF ${OK} THEN\n${writeRecs}\nEND IF;\n` +
    `ELSE\n${decide(false, normalWrite, `${writeApplied}\nIF ${OK} THEN\n${writeRecs}\nEND IF;`)}\nEND IF;`;
  const del = `SELECT ${keyExpr.join(', ')} INTO ${O} ${byId(`${C}.id`)};\n${detect([O])}\n` +
    `IF ${KIND} IS NULL THEN\n${deleteKey(O)}\n${deleteApplied}\n${localCheck([O])}\n` +
    `ELSE\n${decide(true, deleteKey(O), `${deleteApplied}\nIF ${OK} THEN\n${localCheck([O])}\nEND IF;`)}\nEND IF;`;
  return `IF ${C}.op = 'K' THEN\n${K} := ${C}.id;\n` +
    `ELSIF ${C}.op = 'D' THEN\n${del}\n` +
    `ELSE\n${write}\nEND IF;`;
}

/** Rules that may write a row column by column. */
function merges(rule: ConflictRule | undefined): boolean {
  return rule?.strategy === 'fields' || rule?.strategy === 'merge';
}

/** The current change as staged (with the old row of its pair), for sync_conflicts.change. */
function changeJson(table: ApplyTable): string {
  const columns = quoteLiteral(JSON.stringify(table.staged.map((c) => c.name)));
  return `jsonb_build_object('columns', ${columns}::jsonb, 'rows', ` +
    `(SELECT jsonb_agg(to_jsonb(r) ORDER BY r.${quoteIdent(SEQ)}) FROM ${stageTableName(table)} AS r WHERE r.ctid = ${C}.id OR r.ctid = ${PK}))`;
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
  const change = changeJson(table);
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
