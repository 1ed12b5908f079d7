/**
 * Asks the SOURCE whether a row filter is acceptable as a publication row filter (immutable,
 * built-in functions and types only, no system columns) by creating a publication with it in a
 * transaction that is rolled back. Postgres's normalised text of the filter comes back, so plan
 * can compare it with what an existing publication holds.
 */
import type { Connection } from '../db/connect.ts';
import { quoteQualified, type QualifiedName } from '../sql/quote.ts';
import { postgresMessage } from './analyze-mapping.ts';

export type RowFilterProbe = { readonly ok: true; readonly normalized: string; readonly columnsRead: readonly string[] } | { readonly ok: false; readonly error: string };

export async function probeRowFilter(source: Connection, table: QualifiedName, where: string): Promise<RowFilterProbe> {
  await source.query('BEGIN');
  try {
    await source.query(`CREATE PUBLICATION syncctl_probe FOR TABLE ${quoteQualified(table)} WHERE (${where})`);
    const { rows } = await source.query<{ filter: string }>(`
      SELECT pg_get_expr(pr.prqual, pr.prrelid) AS filter
        FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
       WHERE p.pubname = 'syncctl_probe'`);
    // Postgres records which columns a row filter reads as dependencies of the publication rel.
    const read = await source.query<{ attname: string }>(`
      SELECT DISTINCT a.attname
        FROM pg_publication p
        JOIN pg_publication_rel pr ON pr.prpubid = p.oid
        JOIN pg_depend d ON d.classid = 'pg_publication_rel'::regclass AND d.objid = pr.oid AND d.refobjsubid > 0
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
       WHERE p.pubname = 'syncctl_probe'`);
    return { ok: true, normalized: rows[0]!.filter, columnsRead: read.rows.map((r) => r.attname) };
  } catch (error) {
    const detail = (error as { detail?: string }).detail;
    return { ok: false, error: detail ? `${postgresMessage(error)}: ${detail}` : postgresMessage(error) };
  } finally {
    await source.query('ROLLBACK');
  }
}
