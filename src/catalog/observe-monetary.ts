import type { Connection } from '../db/connect.ts';

/** What decides how money values print and read on one side. */
export interface MonetaryFacts {
  /** lc_monetary of a session of this role in this database (the walsender's on the source). */
  readonly lcMonetary: string;
  /** Per table oid: columns of type money or of a type built on it (domain, array, composite, range). */
  readonly moneyColumns: ReadonlyMap<number, readonly { readonly name: string; readonly type: string }[]>;
}

/** money prints and reads through lc_monetary: currency symbol, separators, fraction digits. */
export async function observeMonetary(db: Connection, tableOids: readonly number[]): Promise<MonetaryFacts> {
  const setting = await db.query<{ lc: string }>(`SELECT current_setting('lc_monetary') AS lc`);
  const moneyColumns = new Map<number, { name: string; type: string }[]>();
  if (tableOids.length > 0) {
    // Every type whose text output contains a money value's: money, and what is built on it.
    const { rows } = await db.query<{ oid: number; name: string; type: string }>(`
      WITH RECURSIVE money_types (oid) AS (
        SELECT 'money'::regtype::oid
        UNION
        SELECT t.oid FROM pg_type t JOIN money_types m
          ON t.typbasetype = m.oid OR t.typelem = m.oid
          OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = m.oid)
          OR EXISTS (SELECT 1 FROM pg_range r WHERE r.rngsubtype = m.oid AND t.oid IN (r.rngtypid, r.rngmultitypid))
      )
      SELECT a.attrelid::int AS oid, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_attribute a
       WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid IN (SELECT oid FROM money_types)
       ORDER BY a.attrelid, a.attnum`, [tableOids]);
    for (const r of rows) {
      const list = moneyColumns.get(r.oid) ?? [];
      list.push({ name: r.name, type: r.type });
      moneyColumns.set(r.oid, list);
    }
  }
  return { lcMonetary: setting.rows[0]!.lc, moneyColumns };
}
