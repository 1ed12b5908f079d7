/**
 * The initial copy, consistent with the slot: the slot is created on a replication connection
 * with an exported snapshot, and every table is read under that snapshot. The slot streams exactly
 * the transactions that commit after the snapshot's consistent point, so between copy and stream
 * nothing is missed and nothing is applied twice.
 *
 * Tables are split into block ranges (ctid) copied in parallel; each chunk commits in the target
 * with its progress row, so a crash resumes at the first unfinished chunk. A resumed copy reads
 * under a newer snapshot; the stream then replays changes from the table's first snapshot onwards,
 * which brings rows copied later to the same final state (writes are upserts by key). A table
 * whose source file was rewritten since its chunks were planned is copied again from scratch
 * (chunk-plan.ts), and so is every table of a sync whose slot is new: the changes between the old
 * slot's position and the new one's snapshot were never streamed.
 */
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { buildApplyTable, buildBatchTable, publishedColumns } from '../apply/apply-table.ts';
import { BatchWriter } from '../apply/batch-writer.ts';
import { OP } from '../apply/render-apply.ts';
import { resolveParkedSql } from '../apply/parked.ts';
import { foreignKeyOrder } from '../catalog/foreign-key-order.ts';
import { tableKey } from '../catalog/facts.ts';
import { connect, type Connection } from '../db/connect.ts';
import type { Logger } from '../observe/logger.ts';
import type { ResolvedTable } from '../plan/plan-sync.ts';
import { slotName } from '../plan/render-ddl.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { quoteIdent, quoteLiteral, quoteQualified } from '../sql/quote.ts';
import { SyncctlError } from '../errors.ts';
import { describeConnection } from '../observe/redact.ts';
import { postgresMessage } from '../catalog/analyze-mapping.ts';
import { applyValueSettings, decideCopyPath, readValueSettings, type CopyPath, type ValueSettings } from './source-evaluation.ts';
import { pruneRecopy, isRecopy, restartCopy, hasCopyState } from './prune-recopy.ts';
import { existingChunks, PARALLEL, planChunks, sourceFilenode, type Chunk } from './chunk-plan.ts';
import { applyMeetingPresentRows, hasPresentMarks, markPresentRows } from './copy-conflicts.ts';
import { from as copyFrom } from 'pg-copy-streams';
import { pipeline } from 'node:stream/promises';

/** A table rewritten on the source during its copy more often than this fails the copy. */
const MAX_COPY_RESTARTS = 3;

export interface CopyProgress {
  readonly table: string;
  readonly rows: number;
  readonly chunksDone: number;
  readonly chunks: number;
  /** When this table's copy started (ms since the epoch). */
  readonly startedAt: number;
  /** Chunks of this run COPYed straight into the target table (the rest were staged). */
  readonly directChunks: number;
  /** Why the table's chunks go straight into the target table, or why they are staged. */
  readonly pathReason: string;
}

export interface InitialCopyOptions {
  readonly sync: LoadedSync;
  readonly tables: readonly ResolvedTable[];
  readonly logger?: Logger;
  readonly onProgress?: (progress: CopyProgress) => void;
  /** Create the sync's slot (first copy) or copy under a temporary slot's snapshot (tables added later, resumed copies). */
  readonly createSlot: boolean;
}

interface ExportedSnapshot {
  readonly client: pg.Client;
  readonly consistentPoint: string;
  readonly snapshotName: string;
}

async function exportSnapshot(sync: LoadedSync, permanent: boolean): Promise<ExportedSnapshot> {
  const client = new pg.Client({ connectionString: sync.sourceUrl, replication: 'database', application_name: 'syncctl copy' } as pg.ClientConfig);
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (error) {
    throw new SyncctlError('CONNECTION_FAILED', `cannot open a replication connection to ${describeConnection(sync.sourceUrl)}: ${(error as Error).message}`);
  }
  const name = permanent ? slotName(sync.name) : `${slotName(sync.name)}_copy_${process.pid}`;
  // CREATE_REPLICATION_SLOT with an exported snapshot: valid while this connection stays idle.
  const { rows } = await client.query<{ consistent_point: string; snapshot_name: string }>(
    `CREATE_REPLICATION_SLOT ${quoteIdent(name)} ${permanent ? '' : 'TEMPORARY '}LOGICAL pgoutput (SNAPSHOT 'export'${permanent && sync.failover ? ', FAILOVER true' : ''})`);
  return { client, consistentPoint: rows[0]!.consistent_point, snapshotName: rows[0]!.snapshot_name };
}

export async function initialCopy(options: InitialCopyOptions): Promise<{ consistentPoint: string; rows: number }> {
  const { sync } = options;
  const target = await connect('target', sync.targetUrl, 'syncctl copy');
  let snapshot: ExportedSnapshot | undefined;
  let rows = 0;
  try {
    await restartLostCopies(target, options);
    snapshot = await exportSnapshot(sync, options.createSlot);
    const order = await foreignKeyOrder(target, options.tables.map((t) => t.table.target));
    const tables = [...options.tables].sort((a, b) => order.get(tableKey(a.table.target))! - order.get(tableKey(b.table.target))!);
    if (options.createSlot) {
      // The stream starts where the snapshot ends.
      await target.query(
        `INSERT INTO syncctl.checkpoints (sync_name, commit_lsn) VALUES ($1, $2::pg_lsn)
         ON CONFLICT (sync_name) DO UPDATE SET commit_lsn = excluded.commit_lsn, updated_at = now()`,
        [sync.name, snapshot.consistentPoint]);
    }
    for (const resolved of tables) {
      rows += await copyTable(sync, resolved, snapshot, target, order.get(tableKey(resolved.table.target))!, options);
    }
    return { consistentPoint: snapshot.consistentPoint, rows };
  } finally {
    await snapshot?.client.end().catch(() => {});
    await target.close();
  }
}

/**
 * Tables whose changes since their last copy are in no stream start over, before the snapshot is
 * taken (so a crash in between leaves them waiting for a copy, never streaming with a gap):
 * - under a new slot, every table copied before: the old slot's position and chunks belong to a
 *   stream that is gone, and what committed between its last position and the new snapshot was
 *   never streamed;
 * - a paused table: the worker dropped its changes. It leaves 'paused' before the snapshot, so a
 *   change the worker drops afterwards is in the copy (the worker checks the state at its commit).
 */
async function restartLostCopies(target: Connection, options: InitialCopyOptions): Promise<void> {
  const { sync } = options;
  for (const { table } of options.tables) {
    const paused = await target.query(`SELECT 1 FROM syncctl.sync_tables WHERE sync_name = $1 AND table_name = $2 AND state = 'paused'`,
      [sync.name, table.name]);
    if (options.createSlot && await hasCopyState(target, sync.name, table.name)) {
      await restartCopy(target, sync.name, table.name, 'recopy under a new slot');
      options.logger?.warn({ table: table.name }, 'the sync has a new slot: the table is copied again, and rows the source deleted meanwhile are removed');
    } else if (paused.rows.length > 0) {
      await restartCopy(target, sync.name, table.name, 'recopy after pause');
    }
  }
}

async function copyTable(
  sync: LoadedSync, resolved: ResolvedTable, snapshot: ExportedSnapshot, target: Connection, order: number, options: InitialCopyOptions,
): Promise<number> {
  const { table } = resolved;
  const conflicts = await presentRows(sync, resolved, target, options.logger);
  // Changes that commit before the table's first snapshot are in the copy; the stream skips them.
  const startedAt = Date.now();
  let rows = 0;
  let path: TablePath;
  let chunkCount: number;
  for (let attempt = 1; ; attempt++) {
    const existing = await existingChunks(sync, resolved, target);
    if (existing.rewritten) {
      await restartCopy(target, sync.name, table.name, 'recopy: the source table was rewritten');
      options.logger?.warn({ table: table.name }, 'the source table was rewritten (VACUUM FULL, CLUSTER, …) since its copy began: copied again from scratch');
    }
    await target.query(
      `UPDATE syncctl.sync_tables SET state = 'copying', snapshot_lsn = coalesce(snapshot_lsn, $3::pg_lsn), updated_at = now()
        WHERE sync_name = $1 AND table_name = $2`, [sync.name, table.name, snapshot.consistentPoint]);
    const chunks = existing.chunks.length > 0 ? existing.chunks : await planChunks(sync, resolved, snapshot.snapshotName, target);
    chunkCount = chunks.length;
    path = { ...await choosePath(sync, resolved, target, chunks), ...conflicts };
    options.logger?.info({ table: table.name, path: path.direct ? 'direct' : 'staged', reason: path.reason },
      path.direct ? 'copy path: COPY straight into the target table' : 'copy path: staged and applied like the stream');
    const pending = chunks.filter((c) => !c.done);
    let done = chunks.length - pending.length;
    let rewritten = false;
    const queue = [...pending];
    const workers = Array.from({ length: Math.min(PARALLEL, queue.length) }, async () => {
      for (let chunk = queue.shift(); chunk && !rewritten; chunk = queue.shift()) {
        const copied = await copyChunk(sync, resolved, snapshot, chunk, order, path, options.logger);
        if (copied === 'rewritten') { rewritten = true; break; }
        rows += copied;
        done++;
        options.onProgress?.({ table: table.name, rows, chunksDone: done, chunks: chunks.length, startedAt, directChunks: path.chunksDirect, pathReason: path.reason });
      }
    });
    // Every copier finishes its chunk before the table starts over or fails.
    const settled = await Promise.allSettled(workers);
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    if (!rewritten) break;
    if (attempt >= MAX_COPY_RESTARTS) {
      throw new SyncctlError('APPLY_FAILED', `the copy of ${table.name} (${quoteQualified(table.source)}) found its source table rewritten ` +
        `(VACUUM FULL, CLUSTER, pg_repack, TRUNCATE) ${attempt} times; run syncctl apply again once that has stopped: the copy starts over`);
    }
    // Under the same snapshot: a rewrite that keeps rows (VACUUM FULL, CLUSTER) keeps every row
    // version that snapshot sees, now in other places.
    await restartCopy(target, sync.name, table.name, 'recopy: the source table was rewritten');
    options.logger?.warn({ table: table.name }, 'the source table was rewritten during its copy: copied again from scratch');
  }
  // Rows the source deleted while the table could not stream are gone from the source, not from
  // the target: the recopy upserts. They go before the table streams again.
  if (await isRecopy(target, sync.name, table.name)) {
    await target.query('BEGIN');
    let pruned: number;
    try {
      pruned = await pruneRecopy(sync.name, resolved, target, () => snapshotSession(sync, snapshot, path.settings));
      // Changes parked before the snapshot are in the copy (or were undone by the source since): moot.
      await target.query(resolveParkedSql(`c.table_name = $2 AND c.source_lsn < (SELECT t.snapshot_lsn FROM syncctl.sync_tables AS t ` +
        `WHERE t.sync_name = $1 AND t.table_name = $2)`, 'the table was copied again'), [sync.name, table.name]);
      await target.query(`UPDATE syncctl.sync_tables SET state = 'streaming', updated_at = now() WHERE sync_name = $1 AND table_name = $2`,
        [sync.name, table.name]);
      await target.query('COMMIT');
    } catch (error) {
      await target.query('ROLLBACK').catch(() => {});
      throw error;
    }
    options.logger?.info({ table: table.name, pruned }, 'removed rows the source deleted while the table could not stream');
  } else {
    await target.query(`UPDATE syncctl.sync_tables SET state = 'streaming', updated_at = now() WHERE sync_name = $1 AND table_name = $2`,
      [sync.name, table.name]);
  }
  options.logger?.info({ table: table.name, rows, chunks: chunkCount, direct: path.direct ? path.chunksDirect : 0 }, 'copied');
  return rows;
}

type TablePath = CopyPath & Partial<CopyConflicts> & {
  /** The target session's value settings (made lossless), given to every source session of the copy. */
  readonly settings: ValueSettings;
  /** Chunks that went the direct way; a chunk that had to fall back turns the rest of the table to staging. */
  chunksDirect: number;
  fellBack: boolean;
};

interface CopyConflicts {
  /** A table's first copy (not a recopy): its rows are staged as source INSERTs, and meet present rows as insert_exists. */
  readonly asInserts: boolean;
  /** Rows the target held before the first copy are marked (copy-conflicts.ts): each chunk forgets those the same as its rows. */
  readonly presentRows: boolean;
}

/**
 * Before a table's first chunk: on its first copy, the rows the target holds are marked as local
 * inserts, so that the copy, and later the stream, meets them under the table's conflict rule
 * (copy-conflicts.ts). Committed before the chunks are planned: a copy cut short resumes with the
 * marks it has not met yet. A recopy marks nothing: the target's rows are syncctl's, but for
 * those written locally since, which local_changes records already.
 */
async function presentRows(sync: LoadedSync, resolved: ResolvedTable, target: Connection, logger: Logger | undefined): Promise<CopyConflicts> {
  const { table } = resolved;
  if (table.mode !== 'mapped') return { asInserts: false, presentRows: false };
  const shape = buildApplyTable('copy', resolved, publishedColumns(resolved));
  if (!(await hasCopyState(target, sync.name, table.name))) {
    const marked = (await target.query(markPresentRows(shape))).rowCount ?? 0;
    if (marked > 0) {
      logger?.info({ table: table.name, rows: marked }, 'the target table holds rows: each meets the table\'s conflict rule when the copy or the stream brings its key (insert_exists)');
    }
  }
  const asInserts = !(await isRecopy(target, sync.name, table.name));
  const { rows } = await target.query<{ any: boolean }>(hasPresentMarks(shape));
  return { asInserts, presentRows: asInserts && rows[0]!.any };
}

/**
 * The direct path (COPY of the mapped rows straight into the target table) skips the staging
 * table, the reduce and the upsert: one write per row instead of three. It is taken when the
 * mapping gives the same values on the source (decideCopyPath) and the target table is empty when
 * its copy begins, so plain inserts are all the staging path would do. A resumed copy finds its
 * own finished chunks there; chunks are disjoint ctid ranges, so that is fine too. Anything else
 * (a row already there, two source rows with one key) makes the chunk's COPY fail, and that chunk
 * is copied through the staging path instead, in the same transaction.
 */
async function choosePath(sync: LoadedSync, resolved: ResolvedTable, target: Connection, chunks: readonly Chunk[]): Promise<TablePath> {
  const settings = await readValueSettings(target);
  const staged = (reason: string): TablePath => ({ direct: false, reason, settings, chunksDirect: 0, fellBack: false });
  if (!chunks.some((c) => c.done)) {
    const { rows } = await target.query<{ any: boolean }>(`SELECT EXISTS (SELECT 1 FROM ${quoteQualified(resolved.table.target)}) AS any`);
    if (rows[0]!.any) return staged('the target table already has rows');
  }
  const source = await connect('source', sync.sourceUrl, 'syncctl copy');
  try {
    const path = await decideCopyPath(source, target, resolved, settings);
    return { ...path, settings, chunksDirect: 0, fellBack: false };
  } catch (error) {
    return staged(`the source could not be probed: ${postgresMessage(error)}`);
  } finally {
    await source.close();
  }
}

/** A source session reading under the copy's snapshot, printing values as the target session would. */
async function snapshotSession(sync: LoadedSync, snapshot: ExportedSnapshot, settings: ValueSettings): Promise<Connection> {
  const source = await connect('source', sync.sourceUrl, 'syncctl copy');
  try {
    await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await source.query(`SET TRANSACTION SNAPSHOT ${quoteLiteral(snapshot.snapshotName)}`);
    // A setting the source refuses is left out (decideCopyPath has then chosen what still works).
    await applyValueSettings(source, settings.apply);
    return source;
  } catch (error) {
    await source.close();
    throw error;
  }
}

function chunkConditions(resolved: ResolvedTable, chunk: Chunk): string {
  const { table, decision } = resolved;
  const conditions: string[] = [];
  if (chunk.lower !== null) conditions.push(`ctid >= '(${chunk.lower},0)'::tid`);
  if (chunk.upper !== null) conditions.push(`ctid < '(${chunk.upper},0)'::tid`);
  // A publication row filter is applied at the source, as the publication applies it to the stream.
  if (decision.filterAt === 'publication' && table.where !== undefined) conditions.push(`(${table.where})`);
  return conditions.length > 0 ? ` WHERE ${conditions.join(' AND ')}` : '';
}

/** Copies one chunk in one target transaction; 'rewritten' (nothing committed) when it was read from another file than planned. */
async function copyChunk(
  sync: LoadedSync, resolved: ResolvedTable, snapshot: ExportedSnapshot, chunk: Chunk, order: number, path: TablePath, logger: Logger | undefined,
): Promise<number | 'rewritten'> {
  const { table } = resolved;
  const columns = publishedColumns(resolved);
  const where = chunkConditions(resolved, chunk);
  let source = await snapshotSession(sync, snapshot, path.settings);
  const target = await connect('target', sync.targetUrl, 'syncctl copy');
  try {
    const writer = new BatchWriter(target.client, sync.name);
    const id = `copy_${chunk.index}`;
    // A row the target has already, with the same values, is not written again (a recopy writes what differs).
    const shape = buildBatchTable(id, resolved, columns, order, { skipUnchanged: true });
    writer.register(shape);
    await writer.begin();
    let rows: number | undefined;
    if (path.direct && !path.fellBack && !(await hasLocalChanges(target, resolved))) {
      rows = await copyDirect(source, target, resolved, path, where).catch(async (error: unknown) => {
        // The source session may be stuck in the middle of its COPY: read the chunk again on a fresh one.
        await source.close();
        source = await snapshotSession(sync, snapshot, path.settings);
        path.fellBack = true;
        logger?.info({ table: table.name, chunk: chunk.index, reason: postgresMessage(error) }, 'direct copy rejected by the target: this chunk and the rest are staged');
        return undefined;
      });
      if (rows !== undefined) path.chunksDirect++;
    }
    if (rows === undefined) {
      // A first copy's rows are source INSERTs: one meeting a row the target held is insert_exists.
      const op = path.asInserts ? [`'I'`] : [];
      const out = source.client.query(copyTo(`COPY (SELECT ${[...op, ...columns.map(quoteIdent)].join(', ')} FROM ${quoteQualified(table.source)}${where}) TO STDOUT`));
      await writer.stageCopy(id, path.asInserts ? [OP, ...columns] : columns, out);
      const context = { lsn: snapshot.consistentPoint, commitTime: null };
      if (path.presentRows) await applyMeetingPresentRows(writer, target, shape, new Map(resolved.targetFacts.columns.map((c) => [c.name, c.type])), context);
      else await writer.applyStaged(context);
      rows = out.rowCount;
    }
    // Read while the COPY's lock still holds the file: the rows came from this one. Another file
    // than planned means rows moved between ranges; closing the target session rolls the chunk back.
    if (await sourceFilenode(source, resolved) !== chunk.filenode) return 'rewritten';
    await target.query(`UPDATE syncctl.snapshot_chunks SET rows_copied = $4, done_at = now() WHERE sync_name = $1 AND table_name = $2 AND chunk = $3`,
      [sync.name, table.name, chunk.index, rows]);
    await writer.commitPlain();
    await source.query('COMMIT');
    return rows;
  } finally {
    await source.close();
    await target.close();
  }
}

/**
 * The staging path forgets syncctl.local_changes entries of the keys it writes (conflict
 * tracking restarts there); COPY cannot. A table with entries keeps the staging path.
 */
async function hasLocalChanges(target: Connection, resolved: ResolvedTable): Promise<boolean> {
  const name = `${resolved.table.target.schema}.${resolved.table.target.name}`;
  const { rows } = await target.query<{ any: boolean }>(`SELECT EXISTS (SELECT 1 FROM syncctl.local_changes WHERE target_table = $1) AS any`, [name]);
  return rows[0]!.any;
}

/**
 * One chunk, mapped on the source, COPYed into the target table inside the chunk's transaction
 * (opened by BatchWriter.begin, which marks it as the sync's own write). Under a savepoint: when
 * the target rejects it, the transaction is as before and the caller stages the chunk instead.
 */
async function copyDirect(source: Connection, target: Connection, resolved: ResolvedTable, path: CopyPath, where: string): Promise<number> {
  if (!path.direct) throw new Error('not a direct path');
  const filter = path.filter === undefined ? '' : `${where === '' ? ' WHERE' : ' AND'} ${path.filter}`;
  const select = `SELECT ${path.columns.map((c) => c.select).join(', ')} FROM ${quoteQualified(resolved.table.source)}${where}${filter}`;
  await target.query('SAVEPOINT syncctl_direct');
  try {
    const out = source.client.query(copyTo(`COPY (${select}) TO STDOUT`));
    const sink = target.client.query(copyFrom(
      `COPY ${quoteQualified(resolved.table.target)} (${path.columns.map((c) => quoteIdent(c.target)).join(', ')}) FROM STDIN`));
    await pipeline(out, sink);
    await target.query('RELEASE SAVEPOINT syncctl_direct');
    return out.rowCount;
  } catch (error) {
    await target.query('ROLLBACK TO SAVEPOINT syncctl_direct');
    await target.query('RELEASE SAVEPOINT syncctl_direct');
    throw error;
  }
}
