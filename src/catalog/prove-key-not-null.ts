/**
 * Which key columns of a mapped table can never be written NULL, although the target column is
 * nullable: every row that travels passes the row filter, and Postgres proves that a row passing
 * the filter gives the key's expression a value. A NULL key would never match its row again
 * (NULL never equals NULL in a unique index), so each change to it would insert another one.
 *
 * The proof is Postgres's own (constraint exclusion, predtest.c): over an empty temp table shaped
 * like the source row, with the source's NOT NULL columns, the planner finds
 * `WHERE (filter) AND (key expression) IS NULL` contradictory and plans no scan at all. It proves
 * `sku IS NOT NULL` or `sku = 'x'` (a strict operator) against `sku IS NULL`, and a bare NOT NULL
 * source column; it proves nothing through functions (lower(email)), which then stays unproven.
 * Runs in a rolled-back transaction on the target; nothing is left behind.
 */
import type { Connection } from '../db/connect.ts';
import type { LoadedTable } from '../spec/loaded-sync.ts';
import { quoteIdent } from '../sql/quote.ts';
import type { TableFacts } from './facts.ts';

export async function keyColumnsNeverNull(
  target: Connection, table: LoadedTable, source: TableFacts, stagingTypes: ReadonlyMap<string, string>, candidates: readonly string[],
): Promise<string[]> {
  const mapped = candidates.flatMap((key) => {
    const mapping = table.columns.find((c) => c.target === key);
    return mapping ? [{ key, expression: mapping.expression }] : [];
  });
  if (mapped.length === 0) return [];
  const proven: string[] = [];
  await target.query('BEGIN');
  try {
    await target.query(`SELECT set_config('constraint_exclusion', 'on', true)`);
    await target.query(`CREATE TEMP TABLE syncctl_key_probe (${source.columns
      .map((c) => `${quoteIdent(c.name)} ${stagingTypes.get(c.name) ?? 'text'}${c.notNull ? ' NOT NULL' : ''}`).join(', ')})`);
    for (const { key, expression } of mapped) {
      await target.query('SAVEPOINT syncctl_key_probe');
      try {
        const { rows } = await target.query<{ 'QUERY PLAN': [{ Plan: { 'Node Type': string; Plans?: unknown[] } }] }>(
          `EXPLAIN (FORMAT JSON) SELECT 1 FROM pg_temp.syncctl_key_probe WHERE (${table.where ?? 'true'}) AND ((${expression}) IS NULL)`);
        const plan = rows[0]!['QUERY PLAN'][0].Plan;
        // Excluded: a Result node with a constant-false filter and nothing under it.
        if (plan['Node Type'] === 'Result' && (plan.Plans ?? []).length === 0) proven.push(key);
      } catch {
        // Not provable (the mapping's own errors are reported by analyzeMapping).
      } finally {
        await target.query('ROLLBACK TO SAVEPOINT syncctl_key_probe');
      }
    }
  } finally {
    await target.query('ROLLBACK');
  }
  return proven;
}
