/**
 * Reading sync_conflicts for people (`syncctl conflicts list|show`): control-plane queries through
 * slonik, every row checked against a zod schema. The apply path writes the table through pg.
 */
import { createPool, createSqlTag, type DatabasePool } from 'slonik';
import { z } from 'zod';
import { SyncctlError } from '../errors.ts';
import { describeConnection, passwordOf, redactSecrets } from '../observe/redact.ts';
import type { QualifiedName } from '../sql/quote.ts';

const sql = createSqlTag();

export const conflictRow = z.object({
  id: z.number(),
  sync: z.string(),
  table: z.string(),
  kind: z.string(),
  key: z.record(z.string(), z.unknown()),
  incoming: z.record(z.string(), z.unknown()).nullable(),
  current: z.record(z.string(), z.unknown()).nullable(),
  sourceLsn: z.string().nullable(),
  sourceCommitTime: z.string().nullable(),
  strategy: z.string(),
  outcome: z.string(),
  reason: z.string().nullable(),
  sqlstate: z.string().nullable(),
  resolvedBy: z.string().nullable(),
  resolvedAt: z.string().nullable(),
  createdAt: z.string(),
  /** The change as staged is kept: `conflicts retry` can apply it again. */
  retryable: z.boolean(),
});
export type ConflictRow = z.infer<typeof conflictRow>;

export interface ConflictFilter {
  readonly syncs: readonly string[];
  readonly table?: string;
  readonly kind?: string;
  /** Pending only (the default), or every outcome. */
  readonly status?: 'pending' | 'all';
  readonly ids?: readonly number[];
  readonly limit?: number;
}

const COLUMNS = sql.fragment`id::float8 AS id, sync_name AS sync, table_name AS table, kind, key, incoming, current, source_lsn::text AS "sourceLsn",
  to_char(source_commit_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "sourceCommitTime", strategy, outcome, reason, sqlstate,
  resolved_by AS "resolvedBy", to_char(resolved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "resolvedAt",
  to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "createdAt", change IS NOT NULL AS retryable`;

export class ConflictStore {
  private readonly pool: DatabasePool;

  private constructor(pool: DatabasePool) {
    this.pool = pool;
  }

  static async open(targetUrl: string): Promise<ConflictStore> {
    const secret = passwordOf(targetUrl);
    try {
      return new ConflictStore(await createPool(targetUrl, { maximumPoolSize: 1, captureStackTrace: false }));
    } catch (error) {
      throw new SyncctlError('CONNECTION_FAILED', `cannot connect to the target database ${describeConnection(targetUrl)}: ` +
        redactSecrets(error instanceof Error ? error.message : String(error), secret ? [secret] : []));
    }
  }

  async list(filter: ConflictFilter): Promise<readonly ConflictRow[]> {
    return this.pool.any(sql.type(conflictRow)`SELECT ${COLUMNS} FROM syncctl.sync_conflicts WHERE ${where(filter)} ORDER BY id LIMIT ${filter.limit ?? 1000}`);
  }

  async count(filter: ConflictFilter): Promise<number> {
    return this.pool.oneFirst(sql.type(z.object({ n: z.number() }))`SELECT count(*)::int AS n FROM syncctl.sync_conflicts WHERE ${where(filter)}`);
  }

  async get(syncs: readonly string[], id: number): Promise<ConflictRow | null> {
    return this.pool.maybeOne(sql.type(conflictRow)`SELECT ${COLUMNS} FROM syncctl.sync_conflicts
      WHERE id = ${id} AND sync_name = ANY (${sql.array(syncs, 'text')})`);
  }

  /** The target row with this key now, if there is one. */
  async currentRow(target: QualifiedName, key: Record<string, unknown>): Promise<Record<string, unknown> | null> {
    const table = sql.identifier([target.schema, target.name]);
    const match = sql.join(Object.keys(key).map((k) => sql.fragment`t.${sql.identifier([k])} = k.${sql.identifier([k])}`), sql.fragment` AND `);
    return this.pool.maybeOneFirst(sql.type(z.object({ row: z.record(z.string(), z.unknown()) }))`SELECT to_jsonb(t) AS row
      FROM ${table} AS t, jsonb_populate_record(NULL::${table}, ${sql.jsonb(key as never)}) AS k WHERE ${match}`);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

function where(filter: ConflictFilter) {
  return sql.join([
    sql.fragment`sync_name = ANY (${sql.array(filter.syncs, 'text')})`,
    ...(filter.table !== undefined ? [sql.fragment`table_name = ${filter.table}`] : []),
    ...(filter.kind !== undefined ? [sql.fragment`kind = ${filter.kind}`] : []),
    ...((filter.status ?? 'pending') === 'pending' ? [sql.fragment`outcome = 'pending'`] : []),
    ...(filter.ids !== undefined ? [sql.fragment`id = ANY (${sql.array(filter.ids, 'int8')})`] : []),
  ], sql.fragment` AND `);
}
