/**
 * "Has the native subscription applied everything the source had when we read it?" A native
 * table is written by the apply worker of the sync's Postgres subscription, not by syncctl's
 * worker, so syncctl.checkpoints says nothing about it. The position waited on is the
 * subscription's slot's confirmed_flush_lsn on the source:
 *
 * - The apply worker confirms a source position only once every transaction it received before
 *   it is committed in the target and that commit is flushed (it keeps each applied
 *   transaction's source end with its local commit's WAL end, and confirms it when that is
 *   flushed; with nothing pending it confirms what it has received). The walsender sends
 *   transactions in commit order, and never again one that committed before confirmed_flush_lsn:
 *   Postgres relies on it, so a transaction before it that was not applied would be lost to the
 *   subscription itself. So confirmed_flush_lsn >= L: every source transaction committed before L
 *   is visible in the target.
 * - It passes verify's barrier (sourceBarrier): pgoutput sends a subscription no logical
 *   messages and skips a transaction it sends nothing of, but once the walsender has decoded past
 *   L with nothing to send it sends a keepalive with its position, and the idle worker confirms
 *   it. The subscription's replication origin (remote_lsn) does not: it moves only with a
 *   transaction applied.
 * - Not pg_stat_subscription.latest_end_lsn: it is the walsender position of the last keepalive
 *   the worker handled, not a position it confirmed; that it implies "applied" rests on how the
 *   apply loop is written, and it is per worker process (a table sync worker's, from 16 a
 *   parallel apply worker's rows beside it) and empty again after the worker restarts.
 * - The price: the confirmed position follows the target's WAL flush (the apply worker commits
 *   asynchronously by default; the WAL writer flushes within a few hundred ms) and the worker's
 *   next status report (each second when idle).
 *
 * The table must be ready (pg_subscription_rel 'r'): while a table sync worker copies it, the
 * apply worker skips its changes and the sync worker applies them up to its own position. Its
 * state is read after the slot's position, so 'r' then covers everything before L.
 */
import type { Connection } from '../db/connect.ts';
import { quoteQualified, type QualifiedName } from '../sql/quote.ts';
import type { Applied } from './worker-position.ts';

export interface SubscribedTable {
  readonly subscription: string;
  readonly table: QualifiedName;
}

export interface SubscriptionReading {
  readonly slot: string | null;
  readonly enabled: boolean;
  /** pg_subscription_rel.srsubstate of the table; null when the subscription does not hold it. */
  readonly state: string | null;
  readonly running: boolean;
}

/** The subscription as the target has it now; undefined when there is none. */
export async function readSubscription(target: Connection, { subscription, table }: SubscribedTable): Promise<SubscriptionReading | undefined> {
  const { rows } = await target.query<SubscriptionReading>(`
    SELECT s.subslotname::text AS slot, s.subenabled AS enabled, r.srsubstate::text AS state,
           EXISTS (SELECT 1 FROM pg_stat_subscription w WHERE w.subid = s.oid AND w.relid IS NULL AND w.pid IS NOT NULL) AS running
      FROM pg_subscription s
      LEFT JOIN pg_subscription_rel r ON r.srsubid = s.oid AND r.srrelid = to_regclass($2)
     WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
  [subscription, quoteQualified(table)]);
  return rows[0];
}

/** Why the subscription's copy of the table is not expected to equal the source now, or undefined when it is. */
export function notMirrored(subscription: string, reading: SubscriptionReading | undefined): string | undefined {
  if (reading === undefined) return `there is no subscription ${subscription}: run syncctl apply`;
  if (reading.state === null) return `subscription ${subscription} does not hold the table: run syncctl apply`;
  if (reading.state !== 'r') {
    return `subscription ${subscription} is still copying the table (pg_subscription_rel state '${reading.state}'): its target is not expected to equal the source yet`;
  }
  return undefined;
}

/** Polls the subscription's slot until its confirmed_flush_lsn is at or past `lsn` with the table ready, for at most `timeoutMs`. */
export async function waitForSubscription(source: Connection, target: Connection, sub: SubscribedTable, lsn: string, timeoutMs: number): Promise<Applied> {
  const deadline = Date.now() + timeoutMs;
  let reading = await readSubscription(target, sub);
  let confirmed: string | null = null;
  let pause = 10;
  for (;;) {
    if (reading?.slot) {
      const { rows } = await source.query<{ lsn: string | null; reached: boolean }>(
        `SELECT confirmed_flush_lsn::text AS lsn, coalesce(confirmed_flush_lsn >= $2::pg_lsn, false) AS reached FROM pg_replication_slots WHERE slot_name = $1`,
        [reading.slot, lsn]);
      confirmed = rows[0]?.lsn ?? null;
      // After the slot's position: see the file's comment.
      reading = await readSubscription(target, sub);
      if (rows[0]?.reached && reading?.state === 'r') return { reached: true };
    }
    if (Date.now() >= deadline) return { reached: false, behind: describeBehind(sub.subscription, reading, confirmed, lsn, timeoutMs) };
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(200, pause * 2);
    if (!reading?.slot) reading = await readSubscription(target, sub);
  }
}

function describeBehind(subscription: string, reading: SubscriptionReading | undefined, confirmed: string | null, lsn: string, timeoutMs: number): string {
  const why = reading === undefined ? `; there is no subscription ${subscription}`
    : !reading.enabled ? '; the subscription is disabled'
      : reading.state !== 'r' ? `; the table is ${reading.state === null ? 'not in the subscription' : `being copied (state '${reading.state}')`}`
        : !reading.running ? '; its apply worker is not running' : '';
  return `the subscription ${subscription} is not running or is behind: its slot's confirmed position (${confirmed ?? 'none'}) did not reach ` +
    `the source position ${lsn} within ${Math.round(timeoutMs / 1000)} s${why}`;
}
