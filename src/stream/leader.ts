/**
 * High availability: any number of `syncctl run` processes may serve one sync; exactly one applies.
 *
 * Invariants:
 * - The leader holds the sync's session advisory lock on the target (LEADER_LOCK_KEY) on a
 *   connection of its own. When the process dies, or that connection is cut, the server
 *   releases the lock and a standby, polling every POLL_MS, takes it.
 * - Taking over bumps syncctl.checkpoints.leader_epoch. That UPDATE waits for a commit of the old
 *   leader still in flight (its fence holds the row), and every commit of the new leader fences
 *   on the new epoch (syncctl.fence, sql/7_leader-and-counts.sql): whatever the old process still
 *   tries to commit fails. The checkpoint the new leader starts from is therefore final.
 * - The slot accepts one reader: the new leader's stream waits (55006 is transient) until the old
 *   walsender is gone.
 */
import { sleep } from '../sleep.ts';
import { hostname } from 'node:os';
import { connect, type Connection } from '../db/connect.ts';
import { closeLostRuns, finishRun, messageOf, startRun, updateRunCounts } from '../history/record-run.ts';
import type { CommittedEvent, SyncEvents } from '../observe/events.ts';
import type { Logger } from '../observe/logger.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';

/** The advisory lock key of a sync, as SQL over a text parameter holding the sync's name. */
export const leaderLockKey = (syncNameSql: string) => `hashtextextended('syncctl leader ' || ${syncNameSql}, 0)`;

/** How often a standby tries to take the lead, and the leader checks its lock connection. */
const POLL_MS = 2_000;
/** After losing the lead, how long a process waits before it tries again (a standby takes over meanwhile). */
const STEP_BACK_MS = 5_000;

export interface LeadOptions {
  readonly sync: LoadedSync;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  readonly events?: SyncEvents;
  readonly pollMs?: number;
  /**
   * Runs while this process leads, with the epoch it took over with; `lost` aborts when the lock
   * connection fails. It should return once `lost` (or the caller's signal) aborts.
   */
  readonly lead: (epoch: string | undefined, lost: AbortSignal) => Promise<void>;
}

/** Waits for the lead, leads, stands by again when it is lost; returns when the signal aborts. */
export async function runAsLeader(options: LeadOptions): Promise<void> {
  const { sync, logger, signal } = options;
  const pollMs = options.pollMs ?? POLL_MS;
  let waitingSaid = false;
  while (!signal.aborted) {
    let lock: Connection;
    try {
      lock = await connect('target', sync.targetUrl, 'syncctl run (leader lock)');
    } catch (error) {
      logger.warn({ err: (error as Error).message }, 'cannot reach the target to take the lead; trying again');
      await sleep(pollMs, signal);
      continue;
    }
    try {
      const held = await tryLock(lock, sync.name);
      if (!held) {
        options.events?.emit('leader', false);
        if (!waitingSaid) {
          const leader = await lock.query<{ leader_host: string | null; leader_pid: number | null }>(
            'SELECT leader_host, leader_pid FROM syncctl.checkpoints WHERE sync_name = $1', [sync.name]).catch(() => ({ rows: [] }));
          logger.info({ leaderHost: leader.rows[0]?.leader_host ?? undefined, leaderPid: leader.rows[0]?.leader_pid ?? undefined },
            'standing by: another syncctl run leads this sync');
          waitingSaid = true;
        }
        await lock.close();
        await sleep(pollMs, signal);
        continue;
      }
      waitingSaid = false;
      const epoch = await takeOver(lock, sync.name);
      logger.info({ epoch }, 'leading the sync');
      options.events?.emit('leader', true);
      const run = await recordSession(lock, sync.name, epoch, options);
      const lost = new AbortController();
      const onAbort = () => lost.abort();
      signal.addEventListener('abort', onAbort, { once: true });
      const watch = watchLock(lock, pollMs, () => {
        if (!lost.signal.aborted) logger.error('the leader lock connection was lost: stopping, another process may take over');
        lost.abort();
      });
      try {
        await options.lead(epoch, lost.signal);
        await run?.finish(signal.aborted ? 'stopped' : 'lost', signal.aborted ? 'stopped' : 'the leader lock connection was lost');
      } catch (error) {
        // Another process took over while this one still had a commit to make.
        if ((error as { code?: string }).code !== 'SYLDR' && (error as { cause?: { code?: string } }).cause?.code !== 'SYLDR') {
          await run?.finish('failed', messageOf(error));
          throw error;
        }
        await run?.finish('lost', 'another syncctl run took over');
        logger.error({ err: (error as Error).message }, 'another syncctl run took over this sync');
      } finally {
        run?.stop();
        watch();
        signal.removeEventListener('abort', onAbort);
        options.events?.emit('leader', false);
      }
      if (signal.aborted) return;
      await lock.close();
      await sleep(STEP_BACK_MS, signal);
    } finally {
      await lock.close().catch(() => {});
    }
  }
}

/** How often a leading worker's session row in syncctl.runs gets its counts. */
const RUN_COUNTS_MS = 30_000;

/**
 * The worker session in the run history (syncctl.runs, kind 'worker'): the sessions of a leader
 * that died without a word are closed as 'lost' first; counts (transactions, changes, conflicts)
 * come from the worker's events. Undefined where the target has no run history yet.
 */
async function recordSession(lock: Connection, sync: string, epoch: string | undefined, options: LeadOptions) {
  if (epoch === undefined) return undefined;
  await closeLostRuns(lock, sync, 'worker');
  const id = await startRun(lock, { sync, kind: 'worker', detail: `leader epoch ${epoch}` });
  const counts = { transactions: 0, changes: 0, conflicts: 0 };
  const onCommit = (e: CommittedEvent) => {
    counts.transactions += e.transactions;
    for (const ops of e.changes.values()) counts.changes += ops.insert + ops.update + ops.delete + ops.truncate;
    for (const c of e.conflicts) counts.conflicts += c.count;
  };
  options.events?.on('committed', onCommit);
  const timer = setInterval(() => void updateRunCounts(lock, id, counts).catch(() => {}), RUN_COUNTS_MS);
  return {
    stop() {
      clearInterval(timer);
      options.events?.off('committed', onCommit);
    },
    async finish(outcome: 'stopped' | 'lost' | 'failed', detail: string) {
      // The lock connection may be what failed: the next leader then closes this session as lost.
      await finishRun(lock, id, { outcome, counts, detail }).catch(() => {});
    },
  };
}

async function tryLock(lock: Connection, sync: string): Promise<boolean> {
  const { rows } = await lock.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(${leaderLockKey('$1::text')}) AS ok`, [sync]);
  return rows[0]!.ok;
}

/** Records this process as the leader with a new epoch (undefined before `syncctl apply` made the checkpoint: run then says so). */
async function takeOver(lock: Connection, sync: string): Promise<string | undefined> {
  const { rows } = await lock.query<{ epoch: string }>(
    `UPDATE syncctl.checkpoints SET leader_epoch = leader_epoch + 1, leader_host = $2, leader_pid = $3, leader_since = now()
      WHERE sync_name = $1 RETURNING leader_epoch::text AS epoch`, [sync, hostname(), process.pid]);
  return rows[0]?.epoch;
}

/** Calls `lost` once the lock connection fails (an error, its end, or a ping that fails); returns the stop function. */
function watchLock(lock: Connection, pollMs: number, lost: () => void): () => void {
  const onGone = () => lost();
  lock.client.on('error', onGone);
  lock.client.on('end', onGone);
  let pinging = false;
  const timer = setInterval(() => {
    if (pinging) return;
    pinging = true;
    lock.query('SELECT 1').catch(onGone).finally(() => { pinging = false; });
  }, pollMs);
  return () => {
    clearInterval(timer);
    lock.client.off('error', onGone);
    lock.client.off('end', onGone);
  };
}

