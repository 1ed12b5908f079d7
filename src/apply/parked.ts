/**
 * Which tables of a sync have changes pending in sync_conflicts as `apply_error`. Their slices are
 * applied in source order only: a change applied there supersedes what is pending of its key (see
 * source-order.ts), which the set form does not do.
 *
 * Kept per sync in this process, loaded at each worker session's start and added to as rows are
 * parked. It can only be too large (a pending change resolved by another process since), which
 * costs speed, never correctness; everything that parks changes of a sync's tables from another
 * process (the initial copy of `apply`) changes the table's state, and the worker starts a new
 * session on that.
 */
import type pg from 'pg';

const bySync = new Map<string, Set<string>>();
/** Per sync: how many times a change was parked in this process (a retry looks again when it moves). */
const generations = new Map<string, number>();

/** The sync's tables with pending apply errors, as far as this process knows. */
export function parkedTables(syncName: string): Set<string> {
  let set = bySync.get(syncName);
  if (set === undefined) bySync.set(syncName, set = new Set());
  return set;
}

/** A writer parked a change of `table`. */
export function noteParked(syncName: string, table: string): void {
  parkedTables(syncName).add(table);
  generations.set(syncName, parkedGeneration(syncName) + 1);
}

export function parkedGeneration(syncName: string): number {
  return generations.get(syncName) ?? 0;
}

/** Reads the set from the target: at a session's start. */
export async function loadParkedTables(client: pg.Client, syncName: string): Promise<Set<string>> {
  const { rows } = await client.query<{ table_name: string }>(
    `SELECT DISTINCT table_name FROM syncctl.sync_conflicts WHERE sync_name = $1 AND outcome = 'pending' AND kind = 'apply_error'`, [syncName]);
  const set = parkedTables(syncName);
  set.clear();
  for (const r of rows) set.add(r.table_name);
  return set;
}

/**
 * Resolves the sync's pending apply errors of whole tables at once, when what the table holds
 * no longer depends on them (the source emptied it, or it was copied again): `$1` the sync name,
 * `tables` a condition on `c.table_name` (and `c.source_lsn`) with more parameters from `$2`.
 */
export function resolveParkedSql(tables: string, reason: string): string {
  return `UPDATE syncctl.sync_conflicts AS c SET outcome = 'resolved', resolved_by = 'syncctl', resolved_at = clock_timestamp(),
      reason = coalesce(c.reason || '; ', '') || 'superseded: ${reason}'
    WHERE c.sync_name = $1 AND c.outcome = 'pending' AND c.kind = 'apply_error' AND ${tables}`;
}
