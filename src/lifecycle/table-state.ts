/**
 * A table's lifecycle, online (`syncctl pause | resume | resync`): which table a command names,
 * and what its state on the target allows. The states (syncctl.sync_tables.state):
 *
 *   pending    registered, never copied: `syncctl apply` copies it
 *   copying    a copy is under way or was cut short (the worker holds its changes); apply, or a
 *              resync, finishes it
 *   streaming  the worker applies its changes
 *   held       `syncctl pause`: the worker holds its changes (syncctl.held_changes) while the
 *              other tables stream; `syncctl resume` replays them in order
 *   paused     stopped by an error, its changes dropped: `syncctl apply` or `resync` copies it again
 */
import { recordFinishedRun, type RunCounts } from '../history/record-run.ts';
import type { Connection } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import type { LoadedSync, LoadedTable } from '../spec/loaded-sync.ts';

export interface NamedTable {
  readonly sync: LoadedSync;
  readonly table: LoadedTable;
}

/**
 * The table `name` refers to: `<sync>.<table>` (the spec's names), or a bare table name that
 * exactly one of the syncs has.
 */
export function locateTable(syncs: readonly LoadedSync[], name: string): NamedTable {
  const qualified = syncs.flatMap((sync) => sync.tables.filter((t) => `${sync.name}.${t.name}` === name).map((table) => ({ sync, table })));
  if (qualified.length === 1) return qualified[0]!;
  const bare = syncs.flatMap((sync) => sync.tables.filter((t) => t.name === name).map((table) => ({ sync, table })));
  if (bare.length === 1) return bare[0]!;
  const known = syncs.flatMap((s) => s.tables.map((t) => `${s.name}.${t.name}`));
  if (bare.length > 1) {
    throw new SyncctlError('SPEC_INVALID', `${name} names a table of several syncs (${bare.map((b) => `${b.sync.name}.${name}`).join(', ')}): give <sync>.<table>`);
  }
  throw new SyncctlError('SPEC_INVALID', `no table ${name} in the specs; the tables are: ${known.join(', ') || '(none)'}`);
}

export interface TableState {
  readonly mode: string;
  readonly state: string;
  readonly error: string | null;
}

/** The table's registration on the target; fails when apply has not made what the commands need. */
export async function readTableState(target: Connection, { sync, table }: NamedTable): Promise<TableState> {
  const { rows: schema } = await target.query<{ runs: boolean }>(`SELECT to_regclass('syncctl.runs') IS NOT NULL AS runs`);
  if (!schema[0]!.runs) {
    throw new SyncctlError('PLAN_PENDING', `${sync.name}: the target's syncctl schema predates pause, resume and resync (migration 8): run syncctl apply first`);
  }
  const { rows } = await target.query<TableState>(
    `SELECT mode, state, error FROM syncctl.sync_tables WHERE sync_name = $1 AND table_name = $2`, [sync.name, table.name]);
  const row = rows[0];
  if (row === undefined) {
    throw new SyncctlError('PLAN_PENDING', `${sync.name}.${table.name} is not registered on the target: run syncctl apply first`);
  }
  if (row.mode !== 'mapped') {
    throw new SyncctlError('CATALOG_MISMATCH', `${sync.name}.${table.name} is a native table (a native subscription streams it): ` +
      'pause, resume and resync are for mapped tables', { details: { sync: sync.name, table: table.name, mode: row.mode } });
  }
  return row;
}

/** Why a command cannot act on a table in `state`, and what to do instead. */
export function wrongState(command: 'pause' | 'resume' | 'resync', { sync, table }: NamedTable, found: TableState): SyncctlError {
  const name = `${sync.name}.${table.name}`;
  const next: Record<string, string> = {
    pending: 'it has not been copied yet: run syncctl apply',
    copying: 'its copy is under way or was cut short: syncctl apply (or syncctl resync) finishes it',
    streaming: 'it streams already',
    held: 'it is paused already (its changes are held): syncctl resume streams it again',
    paused: `it was stopped by an error${found.error !== null ? ` (${found.error})` : ''}: syncctl resync (or syncctl apply) copies it again`,
  };
  const allowed = command === 'pause' ? 'streaming' : 'held';
  return new SyncctlError('CATALOG_MISMATCH',
    `cannot ${command} ${name}: it is ${found.state}, not ${allowed}; ${next[found.state] ?? 'see syncctl status'}`,
    { details: { sync: sync.name, table: table.name, state: found.state } });
}

/** Who asked: recorded in the run history. */
export function requester(by: string | undefined): string {
  return by ?? process.env['USER'] ?? process.env['LOGNAME'] ?? 'unknown';
}

/** Waits this long for the row a worker's commit is updating (its changes_applied); commits are short. */
const LOCK_TIMEOUT = '30s';

/**
 * Moves a table from state `from` to `to` in one UPDATE, committed with its run-history row
 * (`counts` read inside the same transaction); a table in another state is refused with what to
 * do, and the refusal is recorded too. Returns the run's id and the counts.
 */
export async function switchState(target: Connection, named: NamedTable, change: {
  readonly command: 'pause' | 'resume'; readonly from: string; readonly to: string; readonly by: string; readonly done: string;
  readonly counts?: () => Promise<RunCounts>;
}): Promise<{ runId: number; counts: RunCounts }> {
  const { sync, table } = named;
  const found = await readTableState(target, named);
  await target.query('BEGIN');
  try {
    await target.query(`SELECT set_config('lock_timeout', $1, true)`, [LOCK_TIMEOUT]);
    const { rowCount } = await target.query(
      `UPDATE syncctl.sync_tables SET state = $4, updated_at = now() WHERE sync_name = $1 AND table_name = $2 AND state = $3`,
      [sync.name, table.name, change.from, change.to]);
    if (rowCount === 0) {
      await target.query('ROLLBACK');
      const now = await readTableState(target, named).catch(() => found);
      const error = wrongState(change.command, named, now);
      await recordFinishedRun(target, { sync: sync.name, kind: change.command, table: table.name, outcome: 'failed', detail: `${error.message} (asked by ${change.by})` })
        .catch(() => {});
      throw error;
    }
    const counts = change.counts ? await change.counts() : {};
    const runId = await recordFinishedRun(target, {
      sync: sync.name, kind: change.command, table: table.name, outcome: 'ok', ...(change.counts ? { counts } : {}), detail: `${change.done} by ${change.by}`,
    });
    await target.query('COMMIT');
    return { runId, counts };
  } catch (error) {
    await target.query('ROLLBACK').catch(() => {});
    throw error;
  }
}
