/**
 * The leader's look at both sides every few seconds: a heartbeat written on the source (so lag is
 * measured on source-side times and an idle slot keeps moving), the slot's WAL budget, and the
 * state of syncctl's control tables on the target. It emits samples; it decides nothing.
 */
import { sleep } from '../sleep.ts';
import { createPool, createSqlTag, type DatabasePool } from 'slonik';
import { z } from 'zod';
import { slotName } from '../plan/render-ddl.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { parseLsn } from '../stream/pgoutput-decoder.ts';
import type { SourceSample, SyncEvents, TargetSample } from './events.ts';
import type { Logger } from './logger.ts';
import { redactSecrets, passwordOf } from './redact.ts';

const sql = createSqlTag();

/** The prefix of syncctl's heartbeat messages in the source's WAL (their content is the sync's name). */
export const HEARTBEAT_PREFIX = 'syncctl.heartbeat';

const heartbeatRow = z.object({ atMs: z.number(), lsn: z.string() });
const sourceRow = z.object({
  nowMs: z.number(),
  current: z.string(),
  exists: z.boolean(),
  active: z.boolean().nullable(),
  walStatus: z.string().nullable(),
  retained: z.number().nullable(),
  safe: z.number().nullable(),
});
const tableRow = z.object({
  table: z.string(),
  state: z.string(),
  conflictsPending: z.number(),
  oldestPendingSeconds: z.number(),
  applyErrorsPending: z.number(),
  copyRows: z.number(),
});

export interface MonitorOptions {
  readonly sync: LoadedSync;
  readonly events: SyncEvents;
  readonly logger: Logger;
  /** Between samples; the heartbeat is written at each (0: no heartbeat). */
  readonly intervalMs: number;
  readonly heartbeat: boolean;
}

/** Samples until the signal aborts. Failures are logged and the next sample tries again. */
export async function runMonitor(options: MonitorOptions, signal: AbortSignal): Promise<void> {
  const { sync, events, logger } = options;
  const secrets = [passwordOf(sync.sourceUrl), passwordOf(sync.targetUrl)].filter((s): s is string => s !== undefined);
  let source: DatabasePool | undefined;
  let target: DatabasePool | undefined;
  let heartbeat = options.heartbeat;
  let failing = false;
  let walStatus: string | null | undefined;
  try {
    while (!signal.aborted) {
      try {
        source ??= await createPool(sync.sourceUrl, { maximumPoolSize: 1, captureStackTrace: false });
        target ??= await createPool(sync.targetUrl, { maximumPoolSize: 1, captureStackTrace: false });
        let sample: SourceSample;
        try {
          sample = await sampleSource(source, sync.name, heartbeat);
        } catch (error) {
          if (!heartbeat) throw error;
          // Not allowed (or not possible) here: lag is then measured on commit times alone.
          heartbeat = false;
          logger.warn({ err: redactSecrets((error as Error).message, secrets) }, 'cannot write heartbeats on the source (pg_logical_emit_message); lag is measured without them');
          sample = await sampleSource(source, sync.name, false);
        }
        events.emit('source', sample);
        walStatus = noteWalStatus(walStatus, sample, logger);
        events.emit('target', await sampleTarget(target, sync.name));
        if (failing) logger.info('monitor sampling again');
        failing = false;
      } catch (error) {
        if (!failing) logger.warn({ err: redactSecrets((error as Error).message, secrets) }, 'monitor sample failed; trying again');
        failing = true;
      }
      await sleep(options.intervalMs, signal);
    }
  } finally {
    await source?.end().catch(() => {});
    await target?.end().catch(() => {});
  }
}

async function sampleSource(pool: DatabasePool, syncName: string, withHeartbeat: boolean): Promise<SourceSample> {
  const before = Date.now();
  // The time is taken before the message is written: every transaction that committed before it
  // has its commit record before the message's position.
  const beat = withHeartbeat
    ? await pool.one(sql.type(heartbeatRow)`SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS "atMs",
        pg_logical_emit_message(true, ${HEARTBEAT_PREFIX}, ${syncName})::text AS lsn`)
    : undefined;
  const row = await pool.one(sql.type(sourceRow)`SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS "nowMs",
      pg_current_wal_lsn()::text AS current, s.slot_name IS NOT NULL AS exists, s.active, s.wal_status AS "walStatus",
      (pg_current_wal_lsn() - s.restart_lsn)::float8 AS retained, s.safe_wal_size::float8 AS safe
    FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots AS s ON s.slot_name = ${slotName(syncName)}`);
  const after = Date.now();
  return {
    clockOffsetMs: row.nowMs - (before + after) / 2,
    currentLsn: parseLsn(row.current),
    ...(beat ? { heartbeat: { lsn: parseLsn(beat.lsn), atMs: beat.atMs } } : {}),
    ...(row.exists ? { slot: { active: row.active ?? false, walStatus: row.walStatus, retainedBytes: row.retained, safeWalSizeBytes: row.safe } } : {}),
  };
}

async function sampleTarget(pool: DatabasePool, syncName: string): Promise<TargetSample> {
  const tables = await pool.any(sql.type(tableRow)`
    SELECT t.table_name AS "table", t.state,
           coalesce(c.conflicts, 0)::int AS "conflictsPending",
           coalesce(extract(epoch FROM now() - c.oldest), 0)::float8 AS "oldestPendingSeconds",
           coalesce(c.errors, 0)::int AS "applyErrorsPending",
           coalesce((SELECT sum(k.rows_copied) FROM syncctl.snapshot_chunks AS k
                      WHERE k.sync_name = t.sync_name AND k.table_name = t.table_name), 0)::float8 AS "copyRows"
      FROM syncctl.sync_tables AS t
      LEFT JOIN (SELECT table_name,
                        count(*) FILTER (WHERE kind <> 'apply_error') AS conflicts,
                        min(created_at) FILTER (WHERE kind <> 'apply_error') AS oldest,
                        count(*) FILTER (WHERE kind = 'apply_error') AS errors
                   FROM syncctl.sync_conflicts WHERE sync_name = ${syncName} AND outcome = 'pending' GROUP BY table_name) AS c
        ON c.table_name = t.table_name
     WHERE t.sync_name = ${syncName}
     ORDER BY t.table_name`);
  return { tables };
}

/**
 * Says so in the log when the slot's wal_status turns unreserved (past max_slot_wal_keep_size:
 * the next checkpoint may remove WAL it needs) or lost, and when it is reserved again.
 */
function noteWalStatus(before: string | null | undefined, sample: SourceSample, logger: Logger): string | null {
  const now = sample.slot ? sample.slot.walStatus : 'gone';
  if (now === before) return now;
  if (now === 'unreserved') logger.warn({ walStatus: now }, 'the slot retains more WAL than max_slot_wal_keep_size: the next checkpoint may remove WAL it needs');
  else if (now === 'lost' || now === 'gone') logger.error({ walStatus: now }, 'the slot is lost or gone: the worker stops at its next read; syncctl apply makes a new one (--allow-destroy drops a lost one)');
  else if (before === 'unreserved') logger.info({ walStatus: now }, 'the slot\'s WAL is reserved again');
  return now;
}

