/**
 * `syncctl resume`: a held table streams again. One UPDATE ('held' -> 'streaming'), committed with
 * its run-history row. The worker notices within its next poll (refreshHeld, every 500 ms while
 * changes or keepalives arrive), replays the held changes in order in one target transaction with
 * their deletion, and streams the table on. With no worker running, the next one replays them
 * before anything else.
 *
 * waitForReplay watches that happen: held_changes of the table empty means the worker has
 * taken the table over.
 */
import { createPool, createSqlTag } from 'slonik';
import { z } from 'zod';
import type { Connection } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import { describeConnection, passwordOf, redactSecrets } from '../observe/redact.ts';
import { readLeaderLock } from '../status/read-status.ts';
import { switchState, type NamedTable } from './table-state.ts';

const sql = createSqlTag();

export interface ResumeResult {
  readonly sync: string;
  readonly table: string;
  readonly runId: number;
  /** Changes held for the table when it was resumed. */
  readonly heldChanges: number;
}

export async function resumeTable(target: Connection, named: NamedTable, by: string): Promise<ResumeResult> {
  const { sync, table } = named;
  const { runId, counts } = await switchState(target, named, {
    command: 'resume', from: 'held', to: 'streaming', by, done: 'resumed',
    counts: async () => ({ heldChanges: await countHeld(target, sync.name, table.name) }),
  });
  return { sync: sync.name, table: table.name, runId, heldChanges: counts['heldChanges']! };
}

async function countHeld(target: Connection, sync: string, table: string): Promise<number> {
  const { rows } = await target.query<{ n: number }>(
    'SELECT count(*)::float8 AS n FROM syncctl.held_changes WHERE sync_name = $1 AND table_name = $2', [sync, table]);
  return rows[0]!.n;
}

export type ReplayOutcome =
  /** The worker replayed them (or there were none). */
  | { readonly kind: 'replayed'; readonly waitedMs: number }
  /** No `syncctl run` leads the sync: the next one replays them. */
  | { readonly kind: 'no-worker'; readonly heldChanges: number }
  /** Someone paused or resynced the table meanwhile. */
  | { readonly kind: 'state-changed'; readonly state: string }
  | { readonly kind: 'timeout'; readonly heldChanges: number; readonly waitedMs: number };

export interface WaitOptions {
  readonly timeoutMs: number;
  readonly pollMs?: number;
  /** Told once, when there is something to wait for. */
  readonly onWaiting?: (heldChanges: number) => void;
}

const heldRow = z.object({ state: z.string().nullable(), held: z.number() });

/** Waits until the table's held changes are gone (the worker replayed them), for timeoutMs at most. */
export async function waitForReplay(targetUrl: string, { sync, table }: NamedTable, options: WaitOptions): Promise<ReplayOutcome> {
  const started = Date.now();
  const secret = passwordOf(targetUrl);
  const pool = await createPool(targetUrl, { maximumPoolSize: 1, captureStackTrace: false }).catch((error: unknown) => {
    throw new SyncctlError('CONNECTION_FAILED', `cannot connect to the target database ${describeConnection(targetUrl)}: ` +
      redactSecrets(error instanceof Error ? error.message : String(error), secret ? [secret] : []));
  });
  try {
    let told = false;
    for (;;) {
      const now = await pool.one(sql.type(heldRow)`
        SELECT (SELECT state FROM syncctl.sync_tables WHERE sync_name = ${sync.name} AND table_name = ${table.name}) AS state,
               (SELECT count(*) FROM syncctl.held_changes WHERE sync_name = ${sync.name} AND table_name = ${table.name})::float8 AS held`);
      if (now.state !== 'streaming') return { kind: 'state-changed', state: now.state ?? 'unregistered' };
      if (now.held === 0) return { kind: 'replayed', waitedMs: Date.now() - started };
      if ((await readLeaderLock(pool, sync.name)) === null) return { kind: 'no-worker', heldChanges: now.held };
      if (Date.now() - started >= options.timeoutMs) return { kind: 'timeout', heldChanges: now.held, waitedMs: Date.now() - started };
      if (!told) {
        options.onWaiting?.(now.held);
        told = true;
      }
      await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 250));
    }
  } finally {
    await pool.end();
  }
}
