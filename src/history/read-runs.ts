/**
 * Reading the run history for people (`syncctl history`): slonik, every row checked against a zod
 * schema, newest first. Writes are in record-run.ts.
 */
import { createPool, createSqlTag, type DatabasePool } from 'slonik';
import { z } from 'zod';
import { SyncctlError } from '../errors.ts';
import { describeConnection, passwordOf, redactSecrets } from '../observe/redact.ts';

const sql = createSqlTag();

export const runRow = z.object({
  id: z.number(),
  sync: z.string(),
  kind: z.string(),
  table: z.string().nullable(),
  startedAt: z.string(),
  endedAt: z.string().nullable(),
  /** Until now for a run still going. */
  durationMs: z.number(),
  outcome: z.string(),
  counts: z.record(z.string(), z.unknown()),
  detail: z.string().nullable(),
  host: z.string().nullable(),
  pid: z.number().nullable(),
});
export type RunRow = z.infer<typeof runRow>;

export interface RunFilter {
  readonly syncs: readonly string[];
  readonly table?: string;
  readonly kind?: string;
  readonly outcome?: string;
  /** At most this many, the newest. */
  readonly limit?: number;
}

const utc = (column: ReturnType<typeof sql.identifier>) => sql.fragment`to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

const COLUMNS = sql.fragment`id::float8 AS id, sync_name AS sync, kind, table_name AS table,
  ${utc(sql.identifier(['started_at']))} AS "startedAt", ${utc(sql.identifier(['ended_at']))} AS "endedAt",
  (extract(epoch FROM coalesce(ended_at, clock_timestamp()) - started_at) * 1000)::float8 AS "durationMs",
  outcome, counts, detail, host, pid`;

export class RunStore {
  private readonly pool: DatabasePool;

  private constructor(pool: DatabasePool) {
    this.pool = pool;
  }

  static async open(targetUrl: string): Promise<RunStore> {
    const secret = passwordOf(targetUrl);
    try {
      return new RunStore(await createPool(targetUrl, { maximumPoolSize: 1, captureStackTrace: false }));
    } catch (error) {
      throw new SyncctlError('CONNECTION_FAILED', `cannot connect to the target database ${describeConnection(targetUrl)}: ` +
        redactSecrets(error instanceof Error ? error.message : String(error), secret ? [secret] : []));
    }
  }

  /** False before migration 8 (or before the first apply): there is no history to read. */
  async exists(): Promise<boolean> {
    return this.pool.oneFirst(sql.type(z.object({ exists: z.boolean() }))`SELECT to_regclass('syncctl.runs') IS NOT NULL AS exists`);
  }

  /** Newest first. */
  async list(filter: RunFilter): Promise<readonly RunRow[]> {
    return this.pool.any(sql.type(runRow)`SELECT ${COLUMNS} FROM syncctl.runs WHERE ${where(filter)} ORDER BY started_at DESC, id DESC LIMIT ${filter.limit ?? 50}`);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

function where(filter: RunFilter) {
  return sql.join([
    sql.fragment`sync_name = ANY (${sql.array(filter.syncs, 'text')})`,
    ...(filter.table !== undefined ? [sql.fragment`table_name = ${filter.table}`] : []),
    ...(filter.kind !== undefined ? [sql.fragment`kind = ${filter.kind}`] : []),
    ...(filter.outcome !== undefined ? [sql.fragment`outcome = ${filter.outcome}`] : []),
  ], sql.fragment` AND `);
}
