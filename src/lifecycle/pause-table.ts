/**
 * `syncctl pause`: a streaming table becomes 'held'. One UPDATE, committed with its run-history
 * row. A running worker sees it at its next commit (syncctl.expect_tables raises SYTAB: the
 * session starts over from the checkpoint with the states read again) and from then on writes
 * the table's changes to syncctl.held_changes, with the checkpoint that moves past them, while
 * the other tables stream. No worker needs to run: the next one starts holding.
 */
import type { Connection } from '../db/connect.ts';
import { switchState, type NamedTable } from './table-state.ts';

export interface PauseResult {
  readonly sync: string;
  readonly table: string;
  /** The run-history id of the pause. */
  readonly runId: number;
}

export async function pauseTable(target: Connection, named: NamedTable, by: string): Promise<PauseResult> {
  const { runId } = await switchState(target, named, { command: 'pause', from: 'streaming', to: 'held', by, done: 'paused' });
  return { sync: named.sync.name, table: named.table.name, runId };
}
