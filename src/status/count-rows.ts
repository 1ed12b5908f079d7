/**
 * `status --counts`: rows of the source table for which the table's row filter holds, and rows of
 * the target table, each a count(*) (a full scan: the figure people compare every morning, not
 * something to poll). The two counts are taken at different instants, so under load they differ
 * by the changes in flight.
 *
 * The source query is the publication's own rendering of the table and its filter. A filter the
 * worker evaluates (one the publication cannot carry) is the same SQL over the source row, so it
 * counts the same rows. These run over src/db connections: the extended protocol runs exactly one
 * statement, so the spec's filter text cannot carry a second one.
 */
import type { Connection } from '../db/connect.ts';
import { renderPublishedTable } from '../plan/render-ddl.ts';
import type { LoadedTable } from '../spec/loaded-sync.ts';
import { quoteQualified } from '../sql/quote.ts';
import type { TableCounts } from './sync-status.ts';

/** Pure: the source count of a table, filtered as the publication filters it. */
export function renderSourceCount(table: Pick<LoadedTable, 'source' | 'where'>): string {
  return `SELECT count(*)::float8 AS n FROM ${renderPublishedTable({ table: table.source, ...(table.where !== undefined ? { rowFilter: table.where } : {}) })}`;
}

export function renderTargetCount(table: Pick<LoadedTable, 'target'>): string {
  return `SELECT count(*)::float8 AS n FROM ${quoteQualified(table.target)}`;
}

/** Both counts of one table; a count that fails is null, with the database's reason. */
export async function countTableRows(source: Connection, target: Connection, table: Pick<LoadedTable, 'source' | 'target' | 'where'>): Promise<TableCounts> {
  const [sourceRows, targetRows] = await Promise.all([count(source, renderSourceCount(table)), count(target, renderTargetCount(table))]);
  const errors = [sourceRows, targetRows].flatMap((c, i) => (typeof c === 'string' ? [`${i === 0 ? 'source' : 'target'}: ${c}`] : []));
  return {
    sourceRows: typeof sourceRows === 'number' ? sourceRows : null,
    targetRows: typeof targetRows === 'number' ? targetRows : null,
    error: errors.length > 0 ? errors.join('; ') : null,
  };
}

/** The count, or the error message when the query fails (the connection's errors carry no secrets). */
async function count(db: Connection, text: string): Promise<number | string> {
  try {
    return (await db.query<{ n: number }>(text)).rows[0]!.n;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}
