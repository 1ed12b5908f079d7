/**
 * `syncctl resync`: one table copied again from scratch under a new snapshot, with prune, while
 * the worker streams the others; it hands over to the stream with no gap and no duplicate.
 *
 * It is the recopy `syncctl apply` runs for a paused table, asked for by name, for a table in any
 * state but 'pending' (streaming, held, paused, or a copy cut short):
 * 1. Under the sync's apply lock (no apply or other resync copies the sync's tables meanwhile),
 *    and only when the databases match the spec (what the worker itself needs to stream).
 * 2. restartCopy, in one target transaction: the table's chunks and snapshot position go, it
 *    becomes 'copying', and a mark says its finished copy prunes. A worker applying it as
 *    streaming fails its next commit (SYTAB) and starts over from its checkpoint, holding the
 *    table's changes from then on; so every change it applied committed on the source before the
 *    snapshot of step 3 is taken.
 * 3. The table-copy runner (initialCopy under a temporary slot's exported snapshot S): chunks are
 *    upserted, then, in one transaction, target rows whose key the source does not hold at S are
 *    pruned (rows written locally on the target are kept), and the table becomes 'streaming'.
 * 4. The worker replays the changes it held from S on, and streams on. Changes before S are in
 *    the copy, and are skipped.
 *
 * A failure after step 2 leaves the table 'copying' with its mark: `syncctl apply` resumes the copy
 * at its first unfinished chunk and prunes; a second resync starts it over. Either finishes it.
 */
import pino from 'pino';
import { postgresMessage } from '../catalog/analyze-mapping.ts';
import { connect, type Connection } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import { finishRun, startRun } from '../history/record-run.ts';
import type { Logger } from '../observe/logger.ts';
import { withApplyLock } from '../plan/apply-plan.ts';
import { planSync } from '../plan/plan-sync.ts';
import { initialCopy, type CopyProgress } from '../snapshot/initial-copy.ts';
import { restartCopy } from '../snapshot/prune-recopy.ts';
import { readTableState, type NamedTable } from './table-state.ts';

export interface ResyncOptions {
  /** Who asked (recorded in the run history and in the copy's recopy mark). */
  readonly by: string;
  readonly onProgress?: (progress: CopyProgress) => void;
  /** The copy's log lines go here too. */
  readonly logger?: Logger;
}

export interface ResyncResult {
  readonly sync: string;
  readonly table: string;
  readonly runId: number;
  /** The state the table was in before. */
  readonly previousState: string;
  /** Rows copied under the new snapshot. */
  readonly rows: number;
  /** Target rows removed: their keys were not in the source at the snapshot. */
  readonly pruned: number;
}

export async function resyncTable(named: NamedTable, options: ResyncOptions): Promise<ResyncResult> {
  const { sync } = named;
  const target = await connect('target', sync.targetUrl, 'syncctl resync');
  try {
    const source = await connect('source', sync.sourceUrl, 'syncctl resync');
    try {
      return await withApplyLock(target, sync.name, () => resyncLocked(named, source, target, options));
    } finally {
      await source.close();
    }
  } finally {
    await target.close();
  }
}

async function resyncLocked(named: NamedTable, source: Connection, target: Connection, options: ResyncOptions): Promise<ResyncResult> {
  const { sync, table } = named;
  const name = `${sync.name}.${table.name}`;
  const found = await readTableState(target, named);
  if (found.state === 'pending') {
    throw new SyncctlError('PLAN_PENDING', `cannot resync ${name}: it is pending (never copied): run syncctl apply, which copies it`,
      { details: { sync: sync.name, table: table.name, state: found.state } });
  }
  const plan = await planSync(sync, { source, target });
  const blocking = plan.changes.filter((c) => !c.streamSafe);
  if (blocking.length > 0) {
    throw new SyncctlError('PLAN_PENDING', `cannot resync ${name}: the databases do not match the spec (${blocking.length} change(s) pending: ` +
      `${blocking.map((c) => c.id).join(', ')}); run syncctl apply first`);
  }
  const resolved = plan.tables.get(table.name);
  if (resolved === undefined) throw new SyncctlError('INTERNAL', `${name} was planned without its table`);

  const runId = await startRun(target, { sync: sync.name, kind: 'resync', table: table.name, detail: `requested by ${options.by}; was ${found.state}` });
  let restarted = false;
  const copyLog = observeCopy(options.logger);
  try {
    await restartCopy(target, sync.name, table.name, `resync requested by ${options.by}`);
    restarted = true;
    const { rows } = await initialCopy({
      sync, tables: [resolved], createSlot: false, logger: copyLog.logger, ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    const result = { sync: sync.name, table: table.name, runId, previousState: found.state, rows, pruned: copyLog.pruned() };
    await finishRun(target, runId, { outcome: 'ok', counts: { rows, pruned: result.pruned }, detail: `requested by ${options.by}; was ${found.state}` });
    return result;
  } catch (error) {
    const reason = error instanceof SyncctlError ? error.message : postgresMessage(error);
    const message = restarted
      ? `resync of ${name} failed: ${reason}. The table is left waiting for its copy (state copying; a running worker holds its changes): ` +
        'run syncctl resync again (it starts the copy over) or syncctl apply (it resumes the copy) to finish it'
      : `resync of ${name} failed before its copy began: ${reason}. The table is as it was (${found.state})`;
    await finishRun(target, runId, { outcome: 'failed', detail: message }).catch(() => {});
    throw new SyncctlError(error instanceof SyncctlError ? error.code : 'APPLY_FAILED', message, {
      cause: error, details: { sync: sync.name, table: table.name, state: restarted ? 'copying' : found.state },
    });
  }
}

/**
 * The copy reports what it pruned only in its log (initialCopy returns the rows it copied): a
 * logger of our own counts it, and passes every line on.
 */
function observeCopy(forward: Logger | undefined): { logger: Logger; pruned: () => number } {
  let pruned = 0;
  // 'info' whatever the forward logger's level: the count is an info line.
  const logger = pino({ level: 'info' }, {
    write(line: string) {
      const { level, msg, time: _time, pid: _pid, hostname: _host, ...fields } = JSON.parse(line) as Record<string, unknown> & { level: number; msg: string };
      if (typeof fields['pruned'] === 'number') pruned += fields['pruned'];
      const method = level >= 50 ? 'error' : level >= 40 ? 'warn' : 'info';
      if (forward?.isLevelEnabled(method)) forward[method](fields, msg);
    },
  });
  return { logger, pruned: () => pruned };
}
