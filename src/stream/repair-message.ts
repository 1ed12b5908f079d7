/**
 * The logical messages `syncctl verify --repair` writes on the source for the worker to apply
 * where they stand in the stream.
 */

/** The prefix of the logical messages `syncctl verify --repair` writes on the source. */
export const REPAIR_PREFIX = 'syncctl.repair';

/** A repair message's content (JSON). */
export interface Repair {
  readonly sync: string;
  /** The spec's table name. */
  readonly table: string;
  /** Source columns of `rows`. */
  readonly columns: readonly string[];
  /** Whole source rows as text. */
  readonly rows: readonly (readonly (string | null)[])[];
  /** Target keys to delete: target key column -> text value. */
  readonly deleteKeys: readonly Record<string, string>[];
}

export function parseRepair(content: Buffer): Repair {
  const r = JSON.parse(content.toString('utf8')) as Partial<Repair>;
  const strings = (a: unknown) => Array.isArray(a) && a.every((v) => v === null || typeof v === 'string');
  if (typeof r.sync !== 'string' || typeof r.table !== 'string' || !Array.isArray(r.columns) || !strings(r.columns) ||
    !Array.isArray(r.rows) || !r.rows.every((row) => strings(row) && row.length === r.columns!.length) ||
    !Array.isArray(r.deleteKeys) || !r.deleteKeys.every((k) => typeof k === 'object' && k !== null)) {
    throw new Error('a repair needs sync, table, columns, rows (one value per column) and deleteKeys');
  }
  return r as Repair;
}
