/**
 * `syncctl status` for a set of loaded specs: opens each database once (syncs sharing a target
 * share its pool), reads every sync, and turns a sync whose databases cannot be read into an
 * error line naming the sync, never its connection string.
 */
import { createPool, type DatabasePool } from 'slonik';
import { connect, type Side } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import { describeConnection, passwordOf, redactSecrets } from '../observe/redact.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { countTableRows } from './count-rows.ts';
import { readSyncStatus } from './read-status.ts';
import type { SyncStatus, TableStatus } from './sync-status.ts';

export type StatusReport =
  | { readonly kind: 'read'; readonly status: SyncStatus }
  | { readonly kind: 'failed'; readonly name: string; readonly error: string };

export interface CollectOptions {
  /** Count source rows (after the row filter) and target rows per table. */
  readonly counts: boolean;
}

export async function collectStatus(syncs: readonly LoadedSync[], options: CollectOptions): Promise<StatusReport[]> {
  const pools = new PoolCache();
  try {
    const reports: StatusReport[] = [];
    for (const sync of syncs) reports.push(await reportOf(sync, pools, options));
    return reports;
  } finally {
    await pools.close();
  }
}

async function reportOf(sync: LoadedSync, pools: PoolCache, options: CollectOptions): Promise<StatusReport> {
  try {
    const [source, target] = await Promise.all([pools.get('source', sync.sourceUrl), pools.get('target', sync.targetUrl)]);
    const status = await readSyncStatus({ source, target }, sync);
    return { kind: 'read', status: options.counts ? { ...status, tables: await withCounts(sync, status.tables) } : status };
  } catch (error) {
    const secrets = [passwordOf(sync.sourceUrl), passwordOf(sync.targetUrl)].filter((s) => s !== undefined);
    return { kind: 'failed', name: sync.name, error: `sync ${sync.name}: ${redactSecrets(error instanceof Error ? error.message : String(error), secrets)}` };
  }
}

/** The tables with their row counts; a table no longer in the spec has no filter to count by, so none. */
async function withCounts(sync: LoadedSync, tables: readonly TableStatus[]): Promise<TableStatus[]> {
  const source = await connect('source', sync.sourceUrl, 'syncctl status');
  try {
    const target = await connect('target', sync.targetUrl, 'syncctl status');
    try {
      const out: TableStatus[] = [];
      for (const t of tables) {
        const spec = sync.tables.find((s) => s.name === t.name);
        out.push(spec !== undefined && t.inSpec ? { ...t, counts: await countTableRows(source, target, spec) } : t);
      }
      return out;
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

/** One slonik pool per connection string, opened on first use. */
class PoolCache {
  private readonly pools = new Map<string, Promise<DatabasePool>>();

  get(side: Side, url: string): Promise<DatabasePool> {
    let pool = this.pools.get(url);
    if (pool === undefined) {
      pool = openPool(side, url);
      pool.catch(() => {});
      this.pools.set(url, pool);
    }
    return pool;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.pools.values()].map(async (p) => (await p).end()));
  }
}

async function openPool(side: Side, url: string): Promise<DatabasePool> {
  const secret = passwordOf(url);
  try {
    // Three: the target's registration, tables and leader lock are read at once.
    return await createPool(url, { maximumPoolSize: 3, captureStackTrace: false });
  } catch (error) {
    throw new SyncctlError('CONNECTION_FAILED', `cannot connect to the ${side} database ${describeConnection(url)}: ` +
      redactSecrets(error instanceof Error ? error.message : String(error), secret ? [secret] : []));
  }
}
