/**
 * `syncctl conflicts resolve <id…> --set col=value…`: a person writes the row themselves. The
 * target row becomes the incoming row, mapped by the spec as `--use incoming` maps it, with the
 * given target columns set to the given values (text, which Postgres reads as each column's type,
 * as an INSERT or UPDATE of that text would). The key follows the incoming change.
 *
 * Pure: what is written is planned from the table's apply shape and checked here (an unknown
 * column, a key column, a generated column, a column whose incoming value is not known), and the
 * statements are rendered here; resolvePending (retry-parked.ts) runs them in the resolve's
 * transaction, the target row locked first.
 */
import { SyncctlError } from '../errors.ts';
import type { ColumnFacts } from '../catalog/facts.ts';
import { quoteIdent, quoteQualified } from '../sql/quote.ts';
import { OP, stagedRows, type ApplyTable } from '../apply/render-apply.ts';

/** Target column -> its value as text (null: NULL), in the order given. */
export type Assignments = ReadonlyMap<string, string | null>;

/**
 * `col=value` items (the value may contain '=' and be empty), then the columns set to NULL
 * (`--set-null col`: no text reads as NULL); a column given twice is an error.
 */
export function parseAssignments(items: readonly string[], nulls: readonly string[] = []): Assignments {
  const out = new Map<string, string | null>();
  for (const item of items) {
    const at = item.indexOf('=');
    if (at <= 0) throw new SyncctlError('SPEC_INVALID', `--set ${item}: expected column=value`);
    const column = item.slice(0, at);
    if (out.has(column)) throw new SyncctlError('SPEC_INVALID', `--set ${column}: given twice`);
    out.set(column, item.slice(at + 1));
  }
  for (const column of nulls) {
    if (column === '') throw new SyncctlError('SPEC_INVALID', '--set-null needs a column name');
    if (out.has(column)) throw new SyncctlError('SPEC_INVALID', `--set ${column}: given twice`);
    out.set(column, null);
  }
  if (out.size === 0) throw new SyncctlError('SPEC_INVALID', '--set needs at least one column=value (or --set-null column)');
  return out;
}

/** Which conflict a --set is for, to name it in every error. */
export interface SetTarget {
  readonly id: string;
  readonly sync: string;
  readonly table: string;
}

export interface SetWrite {
  /** Mapped non-key columns written from the incoming row. */
  readonly incoming: readonly string[];
  /**
   * Mapped columns computed only from TOAST values the change left unchanged (the stream does
   * not carry them): an existing target row keeps its values, as the apply does; a missing one
   * cannot get them, unless they are set.
   */
  readonly kept: readonly string[];
  /** The columns set, in the order given, with their values (parameters of the statements). */
  readonly set: readonly { readonly column: string; readonly value: string | null; readonly type: string }[];
}

/**
 * The write for one conflict. `columns`: the target table's columns; `unchanged`: the staged
 * source columns the incoming change left unchanged (TOAST). Throws naming the conflict, the table
 * and the column.
 */
export function planSetWrite(at: SetTarget, table: ApplyTable, columns: readonly ColumnFacts[], assignments: Assignments,
  unchanged: readonly string[]): SetWrite {
  const name = `${table.target.schema}.${table.target.name}`;
  const refuse = (column: string, why: string) =>
    new SyncctlError('SPEC_INVALID', `conflict ${at.id} (${at.sync}.${at.table}): --set ${column}: ${why}`, {
      details: { conflict: Number(at.id), sync: at.sync, table: at.table, column },
    });
  const set: SetWrite['set'][number][] = [];
  for (const [column, value] of assignments) {
    const facts = columns.find((c) => c.name === column);
    if (facts === undefined) throw refuse(column, `${name} has no column "${column}" (its columns: ${columns.map((c) => c.name).join(', ')})`);
    if (table.key.includes(column)) throw refuse(column, `"${column}" is a key column of ${name}: the key follows the source (another key is another row)`);
    if (facts.generated) throw refuse(column, `"${column}" is a generated column of ${name}: Postgres computes it`);
    set.push({ column, value, type: facts.type });
  }
  const incoming: string[] = [];
  const kept: string[] = [];
  for (const c of table.columns) {
    if (table.key.includes(c.target) || assignments.has(c.target)) continue;
    const left = c.reads.filter((r) => unchanged.includes(r));
    if (left.length === 0) incoming.push(c.target);
    else if (left.length === c.reads.length) kept.push(c.target);
    else {
      throw refuse(c.target, `its incoming value is not known: its mapping reads TOAST column(s) ${left.join(', ')} that the change left ` +
        `unchanged (the stream does not carry them) together with changed ones; set it too (--set ${c.target}=…)`);
    }
  }
  return { incoming, kept, set };
}

export interface SetStatements {
  /** The incoming row passes the worker-evaluated row filter (absent without one): SELECT keep. */
  readonly filter?: string;
  /** Rewrites the target row with key $1 (jsonb), the values set in $2, $3, …; RETURNING row (jsonb). */
  readonly update: string;
  /** The row when the target has none with that key: an upsert on the incoming key, as the apply's; the values set in $1, $2, …; RETURNING row. */
  readonly insert: string;
}

/** The statements over the incoming change staged in `table`'s stage (its new row: op W or I). */
export function renderSetWrite(table: ApplyTable, write: SetWrite): SetStatements {
  const target = quoteQualified(table.target);
  const newRow = `${quoteIdent(OP)} IN ('W', 'I')`;
  const mapped = table.columns.map((c) => `(${c.expression}) AS ${quoteIdent(c.target)}`);
  const incoming = `(SELECT ${mapped.join(', ')} FROM ${stagedRows(table, 'syncctl$row', newRow)}) AS i`;
  const fromIncoming = [...table.key, ...write.incoming];
  // Untyped parameters: Postgres reads each as its column's type, with the column's typmod, as an INSERT of the text would.
  const values = (first: number) => [...fromIncoming.map((c) => `i.${quoteIdent(c)}`), ...write.set.map((_, n) => `$${n + first}`)];
  const columns = [...fromIncoming, ...write.set.map((s) => s.column)];
  const nonKey = columns.filter((c) => !table.key.includes(c));
  const keyMatch = table.key.map((k) => `t.${quoteIdent(k)} = k.${quoteIdent(k)}`).join(' AND ');
  return {
    ...(table.workerFilter !== undefined
      ? { filter: `SELECT coalesce((${table.workerFilter}), false) AS keep FROM ${stagedRows(table, 'syncctl$row', newRow)}` }
      : {}),
    update: `UPDATE ${target} AS t SET ${columns.map((c, n) => `${quoteIdent(c)} = ${values(2)[n]}`).join(', ')} ` +
      `FROM ${incoming}, jsonb_populate_record(NULL::${target}, $1::jsonb) AS k WHERE ${keyMatch} RETURNING to_jsonb(t) AS row`,
    insert: `INSERT INTO ${target} AS t (${columns.map(quoteIdent).join(', ')}) SELECT ${values(1).join(', ')} FROM ${incoming} ` +
      `ON CONFLICT (${table.key.map(quoteIdent).join(', ')}) ` +
      (nonKey.length === 0 ? 'DO NOTHING' : `DO UPDATE SET ${nonKey.map((c) => `${quoteIdent(c)} = excluded.${quoteIdent(c)}`).join(', ')}`) +
      ' RETURNING to_jsonb(t) AS row',
  };
}

/** Each value read as its column's type, alone: `SELECT $1::<type>`. */
export function renderValueCheck(type: string): string {
  return `SELECT $1::${type} IS NULL AS "null"`;
}
