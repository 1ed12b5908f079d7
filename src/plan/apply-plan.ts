/**
 * Runs a plan's changes in order, each in its own transaction on its side (or statement by
 * statement where Postgres forbids a transaction). A failure stops the run with the change that
 * failed; everything before it is in place and a second apply continues from there.
 */
import pg from 'pg';
import { migrate } from 'postgres-migrations';
import { postgresMessage } from '../catalog/analyze-mapping.ts';
import { SYNCCTL_SCHEMA } from '../catalog/observe-target.ts';
import type { Connection } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import type { Change } from './change.ts';
import { MIGRATIONS_DIR } from './migrations.ts';
import type { Connections, SyncPlan } from './plan-sync.ts';
import { initialCopy, type CopyProgress } from '../snapshot/initial-copy.ts';

export interface ApplyHooks {
  readonly onChange?: (change: Change) => void;
  readonly onCopyProgress?: (progress: CopyProgress) => void;
}

export async function applyChange(change: Change, db: Connections, plan: SyncPlan, hooks: ApplyHooks = {}): Promise<void> {
  const conn = change.side === 'source' ? db.source : db.target;
  try {
    if (change.runner === 'migrate') await migrateSchema(conn);
    else if (change.runner === 'initial-copy' || change.runner === 'table-copy') {
      const tables = (change.copyTables ?? []).map((name) => plan.tables.get(name)!);
      await initialCopy({ sync: plan.sync, tables, createSlot: change.runner === 'initial-copy', ...(hooks.onCopyProgress ? { onProgress: hooks.onCopyProgress } : {}) });
    }
    else if (change.runner === 'replication-command') await onReplicationConnection(plan.sync.sourceUrl, change);
    else if (change.transactional) await inTransaction(conn, change);
    else for (const statement of change.statements) await conn.query(statement.sql, statement.params);
  } catch (error) {
    if (error instanceof SyncctlError) throw error;
    throw new SyncctlError('APPLY_FAILED', `${change.action} ${change.subject} failed on the ${change.side} (${change.id}): ${postgresMessage(error)}`, {
      details: { change: change.id },
    });
  }
  hooks.onChange?.(change);
}

/** Statements only a replication connection accepts (ALTER_REPLICATION_SLOT). */
async function onReplicationConnection(url: string, change: Change): Promise<void> {
  const client = new pg.Client({ connectionString: url, replication: 'database', application_name: 'syncctl apply' } as pg.ClientConfig);
  client.on('error', () => {});
  await client.connect();
  try {
    for (const statement of change.statements) await client.query(statement.sql);
  } finally {
    await client.end().catch(() => {});
  }
}

async function inTransaction(conn: Connection, change: Change): Promise<void> {
  await conn.query('BEGIN');
  try {
    for (const statement of change.statements) await conn.query(statement.sql, statement.params);
    await conn.query('COMMIT');
  } catch (error) {
    await conn.query('ROLLBACK').catch(() => {});
    throw error;
  }
}

/**
 * syncctl's schema through postgres-migrations, whose bookkeeping table lives in the syncctl
 * schema too (it resolves `migrations` through search_path).
 */
export async function migrateSchema(conn: Connection): Promise<void> {
  await conn.query(`CREATE SCHEMA IF NOT EXISTS ${SYNCCTL_SCHEMA}`);
  const { rows } = await conn.query<{ search_path: string }>('SELECT current_setting($1) AS search_path', ['search_path']);
  await conn.query(`SELECT set_config('search_path', $1, false)`, [SYNCCTL_SCHEMA]);
  try {
    await migrate({ client: conn.client }, MIGRATIONS_DIR, { logger: () => {} });
  } finally {
    await conn.query(`SELECT set_config('search_path', $1, false)`, [rows[0]!.search_path]);
  }
}

/** Session-level advisory lock on the target: concurrent applies of one sync run one after another. */
export async function withApplyLock<T>(target: Connection, sync: string, fn: () => Promise<T>): Promise<T> {
  await target.query(`SELECT pg_advisory_lock(hashtextextended('syncctl:apply:' || $1, 0))`, [sync]);
  try {
    return await fn();
  } finally {
    await target.query(`SELECT pg_advisory_unlock(hashtextextended('syncctl:apply:' || $1, 0))`, [sync]).catch(() => {});
  }
}
