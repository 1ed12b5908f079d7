/**
 * Plan-time checks of a table's mapping against the live catalogs. Postgres itself parses and
 * types every expression: in a rolled-back transaction on the TARGET we create a temp table shaped
 * like the source row, a temp view per expression (its pg_depend rows tell which source columns
 * the expression reads) and EXPLAIN an INSERT into the target column (which applies Postgres's
 * assignment-cast rules). Nothing is left behind.
 */
import type { Connection } from '../db/connect.ts';
import type { Problem } from '../errors.ts';
import type { LoadedSync, LoadedTable } from '../spec/loaded-sync.ts';
import { quoteIdent, quoteQualified } from '../sql/quote.ts';
import type { ColumnFacts, TableFacts } from './facts.ts';

/** Objects with oids below this are built into Postgres (FirstNormalObjectId). */
const FIRST_NORMAL_OID = 16384;

export interface MappingAnalysis {
  readonly problems: readonly Problem[];
  /** Source columns each target column's expression reads. */
  readonly columnsRead: ReadonlyMap<string, readonly string[]>;
  /** Source columns the key's expressions read. */
  readonly keyColumnsRead: readonly string[];
  /** Source columns the row filter reads. */
  readonly whereColumnsRead: readonly string[];
  /** Source column -> the type it is staged as in the target (its own type, or text where the target lacks it). */
  readonly stagingTypes: ReadonlyMap<string, string>;
}

export async function analyzeMapping(
  target: Connection,
  sync: LoadedSync,
  table: LoadedTable,
  source: TableFacts,
  targetTable: TableFacts,
): Promise<MappingAnalysis> {
  const problems: Problem[] = [];
  const at = (path: string, message: string) => problems.push({ file: sync.file, path: `tables.${table.name}.${path}`, message });
  const columnsRead = new Map<string, string[]>();
  const whereColumnsRead: string[] = [];
  const stagingTypes = await stagingTypesFor(target, source.columns);

  // Postgres's hints name the staging table ("Perhaps you meant to reference the column
  // "syncctl_source_row.name""): name the source table instead.
  const asSource = (message: string) => message.replaceAll('syncctl_source_row', source.name.name);
  const targetColumns = new Map(targetTable.columns.map((c) => [c.name, c]));
  for (const mapping of table.columns) {
    const column = targetColumns.get(mapping.target);
    if (!column) at(`columns.${mapping.target}`, `target table ${describe(table.target)} has no column "${mapping.target}"`);
    else if (column.generated) at(`columns.${mapping.target}`, `target column "${mapping.target}" is a generated column; it cannot be written`);
  }
  const mapped = new Set(table.columns.map((c) => c.target));
  for (const column of targetTable.columns) {
    if (column.notNull && !column.hasDefault && !column.generated && !column.identity && !mapped.has(column.name)) {
      at('columns', `target column "${column.name}" of ${describe(table.target)} is NOT NULL without a default and is not mapped: every insert would fail`);
    }
  }
  if (problems.length > 0) return { problems, columnsRead, keyColumnsRead: [], whereColumnsRead, stagingTypes };

  await target.query('BEGIN');
  try {
    const staging = 'pg_temp.syncctl_source_row';
    await target.query(`CREATE TEMP TABLE syncctl_source_row (${source.columns
      .map((c) => `${quoteIdent(c.name)} ${stagingTypes.get(c.name)!}`).join(', ')})`);
    for (const mapping of table.columns) {
      const read = await probeExpression(target, staging, mapping.expression, {
        assignTo: `${quoteQualified(table.target)} (${quoteIdent(mapping.target)})`,
      });
      if (read.error !== undefined) at(`columns.${mapping.target}`, asSource(read.error));
      else columnsRead.set(mapping.target, read.columns);
    }
    if (table.where !== undefined) {
      const read = await probeExpression(target, staging, table.where, { boolean: true });
      if (read.error !== undefined) at('where', asSource(read.error));
      else whereColumnsRead.push(...read.columns);
    }
  } finally {
    await target.query('ROLLBACK');
  }
  const keyColumnsRead = [...new Set(table.key.flatMap((k) => columnsRead.get(k) ?? []))];
  return { problems, columnsRead, keyColumnsRead, whereColumnsRead, stagingTypes };
}

/**
 * Parses and types one expression over the staged source row; returns the source columns it reads
 * or Postgres's own error message.
 */
async function probeExpression(
  db: Connection,
  staging: string,
  expression: string,
  check: { assignTo?: string; boolean?: boolean },
): Promise<{ columns: string[]; error?: undefined } | { columns?: undefined; error: string }> {
  await db.query('SAVEPOINT syncctl_probe');
  try {
    await db.query(`CREATE TEMP VIEW syncctl_probe AS SELECT (${expression}) AS v FROM ${staging}`);
    const { rows } = await db.query<{ attname: string; type: string }>(`
      SELECT a.attname, format_type(v.atttypid, v.atttypmod) AS type
        FROM pg_rewrite r
        JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        JOIN pg_attribute v ON v.attrelid = r.ev_class AND v.attnum = 1
       WHERE r.ev_class = 'pg_temp.syncctl_probe'::regclass
         AND d.refobjid = $1::regclass AND d.refobjsubid > 0
       ORDER BY a.attnum`, [staging]);
    if (check.boolean) {
      const type = await db.query<{ type: string }>(
        `SELECT format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = 'pg_temp.syncctl_probe'::regclass AND attnum = 1`);
      if (type.rows[0]?.type !== 'boolean') return { error: `expected a boolean expression, got ${type.rows[0]?.type ?? 'unknown'}` };
    }
    if (check.assignTo) await db.query(`EXPLAIN INSERT INTO ${check.assignTo} SELECT v FROM pg_temp.syncctl_probe`);
    return { columns: [...new Set(rows.map((r) => r.attname))] };
  } catch (error) {
    return { error: postgresMessage(error) };
  } finally {
    await db.query('ROLLBACK TO SAVEPOINT syncctl_probe');
  }
}

/** Postgres's message with its hint, which usually says how to fix it. */
export function postgresMessage(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const hint = (error as { hint?: string }).hint;
  return hint ? `${error.message} (hint: ${hint})` : error.message;
}

/**
 * Built-in types keep their exact type; a user type (enum, domain, composite) is used when the
 * target has one of the same schema and name, otherwise the value is staged as text.
 */
async function stagingTypesFor(target: Connection, columns: readonly ColumnFacts[]): Promise<Map<string, string>> {
  const userTypes = columns.filter((c) => c.typeOid >= FIRST_NORMAL_OID);
  const existing = new Set<string>();
  if (userTypes.length > 0) {
    const { rows } = await target.query<{ schema: string; name: string }>(`
      SELECT n.nspname AS schema, t.typname AS name
        FROM unnest($1::text[], $2::text[]) AS w(schema, name)
        JOIN pg_namespace n ON n.nspname = w.schema JOIN pg_type t ON t.typnamespace = n.oid AND t.typname = w.name`,
      [userTypes.map((c) => c.typeSchema), userTypes.map((c) => c.typeName)]);
    for (const r of rows) existing.add(`${r.schema}\0${r.name}`);
  }
  return new Map(columns.map((c) => {
    if (c.typeOid < FIRST_NORMAL_OID) return [c.name, c.type];
    if (existing.has(`${c.typeSchema}\0${c.typeName}`)) return [c.name, `${quoteIdent(c.typeSchema)}.${quoteIdent(c.typeName)}`];
    return [c.name, 'text'];
  }));
}

function describe(name: { schema: string; name: string }): string {
  return `${name.schema}.${name.name}`;
}
