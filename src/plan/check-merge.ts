/**
 * Plan-time check of a `merge` rule: Postgres parses and types each merge column's SQL exactly
 * where the worker evaluates it (apply/source-order.ts): as the new value of the column in an
 * UPDATE of the target table aliased `current`, FROM a row of the target table's type aliased
 * `incoming`. EXPLAIN only, in a rolled-back transaction: nothing runs, nothing is left behind.
 */
import type { Connection } from '../db/connect.ts';
import type { Problem } from '../errors.ts';
import type { LoadedTable } from '../spec/loaded-sync.ts';
import { MERGE_CURRENT, MERGE_INCOMING } from '../spec/schema.ts';
import { formatQualifiedName, quoteIdent, quoteQualified } from '../sql/quote.ts';
import { postgresMessage } from '../catalog/analyze-mapping.ts';

/** The statement that types one merge column's SQL (pure; EXPLAIN it). */
export function renderMergeProbe(table: LoadedTable, column: string, expression: string): string {
  const target = quoteQualified(table.target);
  return `EXPLAIN UPDATE ${target} AS ${MERGE_CURRENT} SET ${quoteIdent(column)} = (${expression}) ` +
    `FROM (SELECT * FROM ${target}) AS ${MERGE_INCOMING}`;
}

/** One problem per merge column whose SQL Postgres rejects, at `conflict.columns.<column>`, with Postgres's message. */
export async function mergeProblems(target: Connection, table: LoadedTable): Promise<Problem[]> {
  const rule = table.conflict;
  if (rule.strategy !== 'merge') return [];
  const columns = Object.entries(rule.columns);
  if (columns.length === 0) return [];
  const problems: Problem[] = [];
  await target.query('BEGIN');
  try {
    for (const [column, fragment] of columns) {
      await target.query('SAVEPOINT syncctl_merge_probe');
      try {
        await target.query(renderMergeProbe(table, column, fragment.text));
      } catch (error) {
        problems.push({
          path: `conflict.columns.${column}`,
          message: `merge SQL over ${MERGE_INCOMING} and ${MERGE_CURRENT} (rows of ${formatQualifiedName(table.target)}): ${postgresMessage(error)}`,
        });
      } finally {
        await target.query('ROLLBACK TO SAVEPOINT syncctl_merge_probe');
      }
    }
  } finally {
    await target.query('ROLLBACK');
  }
  return problems;
}
