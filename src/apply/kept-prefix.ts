/**
 * The changes set aside for conflicts (ApplyStatements.split) that source order would only log:
 * logged set-based, before the rest goes to source order. Pure: a table in, one statement out.
 *
 * Under target-wins, last-write-wins and manual, a change whose key has a local change and whose
 * rule keeps the target row (`kept`) or parks it (`pending`) writes nothing, and leaves the local
 * change in place: the key's next change meets the very same row and local change. So, per key,
 * the changes before the first one the rule lets in are decided by one look at the row and the
 * local change, as source order decides each of them (source-order.ts, `detect` and `decide`).
 * This statement finds that prefix for every key of the side table at once, logs each of its
 * changes in sync_conflicts exactly as source order would (kind, key, incoming, current, result,
 * its own transaction's position, the outcome; for `pending`, the change as staged), takes them
 * out of the side table; the rows it reads are locked before it reads them, as source order locks
 * each row before it looks at the row's local changes. What is left (from a
 * key's first change the rule lets in, or one this statement does not decide) goes to source
 * order unchanged, after it: each key's conflicts stay in source order.
 *
 * Decided here only what needs no more than the row and the local change: an INSERT, UPDATE or
 * DELETE (an UPDATE's old row rides with its new one: a split slice changes no key) with no
 * unchanged TOAST value, whose key has a local change and which is a conflict (an INSERT meeting
 * no row is not one). Other rules (source-wins, fields, merge) write at their first conflict:
 * nothing is decided here for them.
 */
import type { ConflictRule } from '../spec/schema.ts';
import { quoteIdent, quoteLiteral, quoteQualified } from '../sql/quote.ts';
import { KEEP, OP, SEQ, UNCHANGED, keyObject, sideTableName, stagedRows } from './render-apply.ts';
import { markArrays, type SourceOrderTable, type TransactionMark } from './source-order.ts';

/** The rules whose conflicts this decides, and what a change the rule holds back becomes. */
function heldOutcome(rule: ConflictRule | undefined): 'kept' | 'pending' | undefined {
  switch (rule?.strategy) {
    case 'target-wins': case 'last-write-wins': return 'kept';
    case 'manual': return 'pending';
    default: return undefined;
  }
}

/**
 * The statements for one table's side table, or undefined when its rule lets every conflict in
 * (nothing to decide here). `lock` locks the target rows of the keys set aside; `log`, run after
 * it, decides and logs, and its row count is the changes it took out (an UPDATE's old row
 * counted). Two statements, because under READ COMMITTED a statement reads the side tables
 * (local_changes) as of its start: had it waited for a row's lock itself, it would still see what
 * the lock holder changed meanwhile as before (a `conflicts resolve` forgetting the local change),
 * and log as held a change source order, reading after the lock, applies. Once the rows are
 * locked, whatever changes their local changes (a local write, a resolve) has committed, or
 * waits for this transaction.
 */
export function renderKeptPrefix(syncName: string, t: SourceOrderTable, marks: readonly TransactionMark[]): { readonly lock: string; readonly log: string } | undefined {
  const table = t.apply;
  const outcome = heldOutcome(t.conflict);
  if (!table.tracked || outcome === undefined) return undefined;
  const side = sideTableName(table);
  const target = quoteQualified(table.target);
  const targetName = quoteLiteral(`${table.target.schema}.${table.target.name}`);
  const keyExpr = (k: string) => table.columns.find((c) => c.target === k)!.expression;
  const keyVar = (i: number) => quoteIdent(`syncctl$k${i}`);
  const mapped = table.columns.map((c) => `(${c.expression}) AS ${quoteIdent(c.target)}`);
  const keep = table.workerFilter !== undefined ? `coalesce((${table.workerFilter}), false)` : 'true';
  const arrays = markArrays(marks);
  const rule = t.conflict!;
  const lww = rule.strategy === 'last-write-wins' ? quoteIdent(rule.column) : undefined;

  // Every change but the old rows of UPDATEs: its mapped key (syncctl$k<i>, as source order's O)
  // and its mapped row (`n`, as N; not computed for a delete, whose row is only a key). The key is
  // computed in a subquery of its own and the row in a lateral one over it, because the mapping's
  // SQL names the staged columns unqualified: beside the key's columns, `id` would be ambiguous.
  const changes = `SELECT s.${quoteIdent('syncctl$id')} AS id, s.${quoteIdent(SEQ)} AS seq, s.${quoteIdent(OP)} AS op, ` +
    `s.${quoteIdent(UNCHANGED)} AS unchanged, ${table.key.map((_, i) => `s.${keyVar(i)}`).join(', ')}, ` +
    `${keyObject(table, (_, i) => `s.${keyVar(i)}`, true)} AS local_key, ${keyObject(table, (_, i) => `s.${keyVar(i)}`, false)} AS logged_key, ` +
    `to_jsonb(n) - ${quoteLiteral(KEEP)} AS incoming${lww ? `, n.${lww} AS incoming_lww` : ''}, k.id AS k_id, ` +
    `greatest(width_bucket(s.${quoteIdent(SEQ)}, ${arrays.seqs}), 1) AS tx ` +
    `FROM (SELECT s.*, ${table.key.map((k, i) => `(${keyExpr(k)}) AS ${keyVar(i)}`).join(', ')} ` +
    `FROM ${stagedRows(table, 's', `${quoteIdent(OP)} <> 'K'`, true, side)}) AS s ` +
    `LEFT JOIN LATERAL (SELECT ${mapped.join(', ')}, ${keep} AS ${quoteIdent(KEEP)} WHERE s.${quoteIdent(OP)} <> 'D') AS n ON true ` +
    // An UPDATE's old row is staged right before its new row.
    `LEFT JOIN (SELECT ctid AS id, ${quoteIdent(SEQ)} AS seq FROM ${side} WHERE ${quoteIdent(OP)} = 'K') AS k ` +
    `ON s.${quoteIdent(OP)} = 'W' AND k.seq = s.${quoteIdent(SEQ)} - 1`;
  // As source order's detect: the local changes of the key (seen, and the newest one's time), and
  // the target row, locked.
  const local = `SELECT c.key, max(c.changed_at) AS lct FROM syncctl.local_changes AS c ` +
    `WHERE c.target_table = ${targetName} AND c.key IN (SELECT ch.local_key FROM ch) GROUP BY c.key`;
  const current = `SELECT ${table.key.map((k, i) => `t.${quoteIdent(k)} AS ${keyVar(i)}`).join(', ')}, to_jsonb(t) AS cur_row` +
    `${lww ? `, t.${lww} AS current_lww` : ''} FROM ${target} AS t ` +
    `WHERE (${table.key.map((k) => `t.${quoteIdent(k)}`).join(', ')}) IN (SELECT ${table.key.map((_, i) => `ch.${keyVar(i)}`).join(', ')} FROM ch) FOR UPDATE OF t`;
  // The position of each change's own transaction (ch.tx): the last mark at or before it (source
  // order's TX; the first mark for what precedes every mark). Marks are in sequence order:
  // width_bucket finds it by binary search (the count of marks at or before the change). The marks'
  // arrays stay constants of the expressions, never columns: a row carrying them (a join with a
  // one-row relation of them) is as wide as every mark, and the join's sort spilled them to disk.
  const position = `CROSS JOIN LATERAL (SELECT (${arrays.lsns})[ch.tx] AS lsn, ` +
    `(${arrays.times})[ch.tx] AS t) AS m`;
  // The rule's verdict is `current` (source order: CASE … THEN 'incoming' ELSE 'current'; a
  // condition that is NULL falls to current there too).
  const byTime = '(m.t IS NULL OR m.t >= l.lct)';
  const heldBack = lww === undefined ? 'true'
    : `(CASE WHEN ch.op = 'D' OR cur.cur_row IS NULL THEN ${byTime} ELSE cur.current_lww IS NULL OR (ch.incoming_lww IS NOT NULL AND ch.incoming_lww >= cur.current_lww) END) IS NOT TRUE`;
  const decided = `ch.op IN ('I', 'W', 'D') AND ch.unchanged IS NULL AND l.key IS NOT NULL AND (ch.op <> 'I' OR cur.cur_row IS NOT NULL) AND ${heldBack}`;
  const verdicts = `SELECT ch.id, ch.k_id, ch.seq, ch.op, ch.local_key, ch.logged_key, ch.incoming, cur.cur_row, m.lsn, m.t, ` +
    `CASE WHEN ch.op = 'I' THEN 'insert_exists' WHEN cur.cur_row IS NULL THEN CASE WHEN ch.op = 'D' THEN 'delete_missing' ELSE 'update_missing' END ` +
    `ELSE 'locally_modified' END AS kind, ${decided} AS decided ` +
    `FROM ch LEFT JOIN cur ON ${table.key.map((_, i) => `cur.${keyVar(i)} = ch.${keyVar(i)}`).join(' AND ')} LEFT JOIN l ON l.key = ch.local_key ${position}`;
  // Source order's sync_conflicts.change for what it parks as pending: the change as staged, with its UPDATE's old row.
  const change = outcome !== 'pending' ? 'NULL'
    : `jsonb_build_object('columns', ${quoteLiteral(JSON.stringify(table.staged.map((c) => c.name)))}::jsonb, 'rows', ` +
      `(SELECT jsonb_agg(to_jsonb(r) ORDER BY r.${quoteIdent(SEQ)}) FROM ${side} AS r WHERE r.ctid = ANY (ARRAY[p.id, p.k_id])))`;
  const insert = `INSERT INTO syncctl.sync_conflicts (sync_name, table_name, kind, key, incoming, current, result, source_lsn, ` +
    `source_commit_time, strategy, outcome, change) SELECT ${quoteLiteral(syncName)}, ${quoteLiteral(t.tableName)}, p.kind, p.logged_key, ` +
    `CASE WHEN p.op = 'D' THEN NULL ELSE p.incoming END, p.cur_row, p.cur_row, p.lsn, p.t, ${quoteLiteral(t.strategy)}, ${quoteLiteral(outcome)}, ${change} ` +
    'FROM p WHERE p.held ORDER BY p.seq';
  const lock = `SELECT 1 FROM ${target} AS t WHERE (${table.key.map((k) => `t.${quoteIdent(k)}`).join(', ')}) IN ` +
    `(SELECT ${table.key.map((k) => `(${keyExpr(k)})`).join(', ')} FROM ${stagedRows(table, 's', `${quoteIdent(OP)} <> 'K'`, false, side)}) FOR UPDATE OF t`;
  const log = `WITH ch AS MATERIALIZED (${changes}), l AS MATERIALIZED (${local}), cur AS MATERIALIZED (${current}), ` +
    `v AS MATERIALIZED (${verdicts}), ` +
    // Held back: decided, and so is every earlier change of its key.
    'p AS MATERIALIZED (SELECT v.*, bool_and(v.decided) OVER (PARTITION BY v.local_key ORDER BY v.seq) AS held FROM v), ' +
    `logged AS (${insert}) ` +
    // By ctid, one array: a TID scan (an OR of two, or a join, reads the side table per change).
    `DELETE FROM ${side} AS s WHERE s.ctid = ANY (ARRAY(SELECT p.id FROM p WHERE p.held UNION ALL SELECT p.k_id FROM p WHERE p.held AND p.k_id IS NOT NULL))`;
  return { lock, log };
}
