/**
 * `syncctl pause`: a streaming table becomes 'held'. One UPDATE, committed with its run-history
 * row. A running worker sees it at its next commit (syncctl.expect_tables raises SYTAB: the
 * session starts over from the checkpoint with the states read again) and from then on writes
 * the table's changes to syncctl.held_changes, with the checkpoint that moves past them, while
 * the other tables stream. No worker needs to run: the next one starts holding.
 */
import type { Connection } from '../db/connect.ts';
import { recordFinishedRun } from '../history/record-run.ts';
import { readTableState, wrongState, type NamedTable } from './table-state.ts';

export interface PauseResult {
  readonly sync: string;
  readonly table: string;
  /** The run-history id of the pause. */
  readonly runId: number;
}

/** Waits this long for the row a worker's commit is updating (its changes_applied); commits are short. */
const LOCK_TIMEOUT = '30s';

export async function pauseTable(target: Connection, named: NamedTable, by: string): Promise<PauseResult> {
  const { sync, table } = named;
  const found = await readTableState(target, named);
  await target.query('BEGIN');
  try {
    await target.query(`SELECT set_config('lock_timeout', $1, true)`, [LOCK_TIMEOUT]);
    const { rowCount } = await target.query(
      `UPDATE syncctl.sync_tables SET state = 'held', updated_at = now() WHERE sync_name = $1 AND table_name = $2 AND state = 'streaming'`,
      [sync.name, table.name]);
    if (rowCount === 0) {
      await target.query('ROLLBACK');
      const now = await readTableState(target, named).catch(() => found);
      const error = wrongState('pause', named, now);
      await recordFinishedRun(target, { sync: sync.name, kind: 'pause', table: table.name, outcome: 'failed', detail: `${error.message} (asked by ${by})` })
        .catch(() => {});
      throw error;
    }
    const runId = await recordFinishedRun(target, { sync: sync.name, kind: 'pause', table: table.name, outcome: 'ok', detail: `paused by ${by}` });
    await target.query('COMMIT');
    return { sync: sync.name, table: table.name, runId };
  } catch (error) {
    await target.query('ROLLBACK').catch(() => {});
    throw error;
  }
}
