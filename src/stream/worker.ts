/**
 * `syncctl run`: reads the sync's slot and applies every change to the target, exactly once.
 *
 * Invariants:
 * - The source commit position is written in the same target transaction as the rows it covers
 *   (syncctl.checkpoints); the slot is confirmed only after that commit. After a restart, a
 *   transaction whose commit record lies before the checkpoint is skipped.
 * - A source transaction is never split visibly: the target transaction commits only at a source
 *   commit; several small source transactions may share one target transaction.
 * - Memory is bounded: rows are staged into the target (COPY) in slices; a 1,000,000-row source
 *   transaction is never held whole in memory.
 */
import { buildApplyTable } from '../apply/apply-table.ts';
import { BatchWriter } from '../apply/batch-writer.ts';
import { foreignKeyOrder } from '../catalog/foreign-key-order.ts';
import { tableKey } from '../catalog/facts.ts';
import { connect, type Connection } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import type { Logger } from '../observe/logger.ts';
import { planSync, type ResolvedTable } from '../plan/plan-sync.ts';
import { publicationName, slotName } from '../plan/render-ddl.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { formatLsn, parseLsn, PgoutputDecoder, UNCHANGED_TOAST, type Lsn, type RelationMessage, type Tuple } from './pgoutput-decoder.ts';
import { ReplicationStream } from './replication-stream.ts';

export interface WorkerOptions {
  readonly sync: LoadedSync;
  readonly logger: Logger;
  readonly signal?: AbortSignal;
  /** Commit the target transaction once this many changes are staged (at a source commit). */
  readonly batchRows?: number;
  /** …or once the oldest transaction in it has waited this long (latency bound). */
  readonly batchMs?: number;
  /** Called after every target commit. */
  readonly onCommit?: (info: CommitInfo) => void;
}

export interface CommitInfo {
  readonly lsn: string;
  readonly transactions: number;
  readonly changes: number;
}

/** Microseconds between the Unix epoch and Postgres's epoch (2000-01-01). */
const PG_EPOCH_MS = 946_684_800_000;

interface Route {
  readonly resolved: ResolvedTable;
  readonly order: number;
  /** Apply-table id for the current shape of the relation. */
  id: string;
  /** Position of each relation column among the staged columns, or -1 when it is not staged. */
  relation: RelationMessage | undefined;
  /** Changes in transactions whose commit record precedes this were in the initial copy. */
  snapshotLsn: Lsn;
  state: string;
}

/** Runs until the signal aborts; reconnects with exponential backoff when a connection drops. */
export async function runWorker(options: WorkerOptions): Promise<void> {
  let delay = 500;
  for (;;) {
    try {
      await runSession(options);
      return;
    } catch (error) {
      if (options.signal?.aborted) return;
      if (!isTransient(error)) throw error;
      options.logger.warn({ err: describe(error), retryInMs: delay }, 'connection lost; reconnecting');
      await sleep(delay, options.signal);
      delay = Math.min(delay * 2, 30_000);
    }
  }
}

async function runSession(options: WorkerOptions): Promise<void> {
  const { sync, logger } = options;
  const source = await connect('source', sync.sourceUrl, 'syncctl run');
  let target: Connection | undefined;
  let stream: ReplicationStream | undefined;
  // SIGTERM inside a source transaction lets it reach its commit (for 10 s at most); outside one,
  // reading stops at once. The connection stays open until the batch held is committed and
  // confirmed, so the slot's confirmed position is the checkpoint.
  let inTransaction = false;
  let stopFlushTimer = () => {};
  const onAbort = () => {
    if (!inTransaction) stream?.interrupt();
    else setTimeout(() => stream?.interrupt(), 10_000).unref();
  };
  try {
    target = await connect('target', sync.targetUrl, 'syncctl run');
    const plan = await planSync(sync, { source, target });
    const blocking = plan.changes.filter((c) => !c.streamSafe);
    if (blocking.length > 0) {
      throw new SyncctlError('PLAN_PENDING', `${sync.name}: the databases do not match the spec (${blocking.length} change(s) pending: ` +
        `${blocking.map((c) => c.id).join(', ')}); run syncctl apply first`);
    }
    if (plan.changes.length > 0) logger.warn({ pending: plan.changes.map((c) => c.id) }, 'streaming with changes pending; syncctl apply makes them');
    await source.close();
    const routes = await buildRoutes(target, sync, [...plan.tables.values()].filter((t) => t.table.mode === 'mapped'));
    const checkpoint = await target.query<{ commit_lsn: string }>('SELECT commit_lsn::text AS commit_lsn FROM syncctl.checkpoints WHERE sync_name = $1', [sync.name]);
    if (!checkpoint.rows[0]) {
      throw new SyncctlError('PLAN_PENDING', `${sync.name}: no checkpoint: the initial copy has not run; run syncctl apply first`);
    }
    let applied = parseLsn(checkpoint.rows[0].commit_lsn);
    stream = await ReplicationStream.open(sync.sourceUrl, {
      slot: slotName(sync.name), publications: [publicationName(sync.name)], startLsn: applied, messages: true,
    });
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) return;
    logger.info({ sync: sync.name, from: formatLsn(applied) }, 'streaming');

    const writer = new BatchWriter(target.client, sync.name);
    const decoder = new PgoutputDecoder();
    const byRelation = new Map<number, Route>();
    const batchRows = options.batchRows ?? 50_000;
    let version = 0;
    let skipping = false;
    let finalLsn: Lsn = 0n;
    let commitTime: string | null = null;
    let staged = 0;
    let transactions = 0;
    let lastCommit: { lsn: Lsn; time: string | null } | undefined;
    let batchStarted: number | undefined;
    const batchMs = options.batchMs ?? 50;

    const context = () => ({ lsn: formatLsn(finalLsn), commitTime });
    // Commits whose target WAL is not flushed yet: their source positions are confirmed only
    // once it is, so a crash of the target cannot lose what the slot has let go of.
    const unflushed: { source: Lsn; target: Lsn }[] = [];
    const confirmDurable = async () => {
      if (unflushed.length === 0) return;
      const { rows } = await target!.query<{ lsn: string }>('SELECT pg_current_wal_flush_lsn()::text AS lsn');
      const flushed = parseLsn(rows[0]!.lsn);
      let upTo: Lsn | undefined;
      while (unflushed.length > 0 && unflushed[0]!.target <= flushed) upTo = unflushed.shift()!.source;
      if (upTo !== undefined) stream!.confirm(upTo);
    };
    const flushTimer = setInterval(() => void confirmDurable().catch(() => {}), 200);
    stopFlushTimer = () => clearInterval(flushTimer);
    const commit = async () => {
      if (!lastCommit) return;
      const targetLsn = await writer.commit({ lsn: formatLsn(lastCommit.lsn), commitTime: lastCommit.time });
      applied = lastCommit.lsn;
      unflushed.push({ source: applied, target: parseLsn(targetLsn) });
      await confirmDurable();
      options.onCommit?.({ lsn: formatLsn(applied), transactions, changes: staged });
      logger.debug({ lsn: formatLsn(applied), transactions, changes: staged }, 'committed');
      staged = 0;
      transactions = 0;
      lastCommit = undefined;
      batchStarted = undefined;
    };
    /** Relations announced that are not in the spec: an error once a change of theirs arrives. */
    const unknown = new Map<number, string>();
    const route = async (relationId: number): Promise<Route | undefined> => {
      const r = byRelation.get(relationId);
      const name = r ? undefined : unknown.get(relationId);
      if (name !== undefined && !skipping) {
        throw new SyncctlError('PLAN_PENDING', `${sync.name}: ${name} is published but not in the loaded spec; ` +
          'restart the worker after syncctl apply so it loads the new spec');
      }
      // A paused table's changes are dropped: it is copied again once its mapping fits (syncctl plan says how).
      if (!r || skipping || r.state === 'paused' || finalLsn < r.snapshotLsn) return undefined;
      if (r.state !== 'streaming') await waitUntilStreaming(target!, sync, r, options.signal);
      return r.state === 'paused' ? undefined : r;
    };

    for await (const { message, walEnd } of stream.messages()) {
      if (message === undefined) {
        // A keepalive (the server sends one after most transactions while we have not confirmed):
        // commit a finished batch only when nothing more is waiting or the batch is old enough,
        // otherwise every source transaction would become its own target transaction.
        if (!inTransaction && lastCommit && (!stream.hasBuffered() || Date.now() - (batchStarted ?? 0) >= batchMs)) await commit();
        // With nothing received left uncommitted or unflushed, every transaction the server
        // committed before walEnd has been sent and applied, or had nothing for this sync:
        // confirming walEnd lets an idle or filtered slot advance instead of retaining WAL.
        if (!inTransaction && !lastCommit && unflushed.length === 0 && !writer.open) stream.confirm(walEnd);
        if (options.signal?.aborted && !inTransaction) break;
        continue;
      }
      const m = decoder.decode(message);
      switch (m.tag) {
        case 'begin':
          finalLsn = m.finalLsn;
          commitTime = new Date(Number(m.commitTime / 1000n) + PG_EPOCH_MS).toISOString();
          // Applied before the last checkpoint: the server may send it again after a restart.
          skipping = m.finalLsn < applied;
          inTransaction = true;
          if (!skipping) {
            await writer.begin();
            writer.setContext(context());
          }
          break;
        case 'relation': {
          const r = routes.get(`${m.schema}.${m.name}`);
          if (!r) {
            // Not necessarily an error: for a partition published through its root, pgoutput sends
            // the root's Relation and then the partition's own, but changes name the root.
            unknown.set(m.relationId, `${m.schema}.${m.name}`);
            break;
          }
          unknown.delete(m.relationId);
          byRelation.set(m.relationId, r);
          const broken = brokenMapping(r.resolved, m);
          if (broken) {
            // Pause this table alone, in the batch's transaction: the other tables go on.
            r.state = 'paused';
            await writer.begin();
            await target.query(`UPDATE syncctl.sync_tables SET state = 'paused', error = $3, updated_at = now() WHERE sync_name = $1 AND table_name = $2`,
              [sync.name, r.resolved.table.name, broken]);
            logger.error({ table: r.resolved.table.name, reason: broken }, 'table paused: the source schema no longer fits the mapping');
            break;
          }
          // pgoutput sends a table's Relation again after any invalidation (ANALYZE, a publication
          // change): with the same columns the table keeps its staging. With other columns, what is
          // staged under the old shape is applied first: the reduction to the last change per key
          // works within one staging table, and a later delete must not run before an earlier write.
          const sameShape = r.relation !== undefined && r.relation.columns.length === m.columns.length &&
            r.relation.columns.every((c, i) => c.name === m.columns[i]!.name && c.typeOid === m.columns[i]!.typeOid);
          r.relation = m;
          if (sameShape) break;
          if (r.id !== '' && writer.open) await writer.applyStaged(context());
          r.id = `${m.relationId}_${++version}`;
          writer.register({
            apply: buildApplyTable(r.id, r.resolved, m.columns.map((c) => c.name)),
            tableName: r.resolved.table.name, onError: r.resolved.table.onError, order: r.order,
          });
          break;
        }
        case 'insert': {
          const r = await route(m.relationId);
          if (!r) break;
          await writer.stage(r.id, 'W', null, m.newTuple as (Buffer | null)[]);
          staged++;
          break;
        }
        case 'update': {
          const r = await route(m.relationId);
          if (!r) break;
          // The old row (key changed, or REPLICA IDENTITY FULL) first: the key it carries is deleted
          // unless the new row, staged after it, writes the same key again.
          const { values, unchanged } = fillUnchanged(m.newTuple, m.oldKind === 'O' ? m.oldTuple : undefined);
          // The key changed and some TOAST values did not: they exist only in the target row under
          // the old key, so that row moves to the new key before the new values are applied.
          if (m.oldKind === 'K' && unchanged) await writer.moveKey(r.id, withoutUnchanged(m.oldTuple!), values);
          if (m.oldTuple) await writer.stage(r.id, 'D', null, withoutUnchanged(m.oldTuple));
          await writer.stage(r.id, 'W', unchanged, values);
          staged++;
          break;
        }
        case 'delete': {
          const r = await route(m.relationId);
          if (!r) break;
          await writer.stage(r.id, 'D', null, withoutUnchanged(m.oldTuple));
          staged++;
          break;
        }
        case 'truncate': {
          if (skipping) break;
          const ids: string[] = [];
          for (const relationId of m.relationIds) {
            const r = await route(relationId);
            if (r && r.resolved.table.truncate === 'apply') ids.push(r.id);
          }
          await writer.truncate(ids, context());
          break;
        }
        case 'commit':
          inTransaction = false;
          if (skipping) break;
          transactions++;
          lastCommit = { lsn: m.endLsn, time: commitTime };
          // Group small transactions while more are already waiting; commit when caught up.
          batchStarted ??= Date.now();
          if (staged >= batchRows || Date.now() - batchStarted >= batchMs || !stream.hasBuffered() || options.signal?.aborted) await commit();
          break;
        default:
          break;
      }
      if (options.signal?.aborted && !inTransaction) break;
    }
    // The stream ended mid-transaction: drop everything uncommitted (the server sends it again
    // from the confirmed position). Otherwise keep what is complete.
    if (inTransaction) await writer.rollback();
    else await commit();
    // Leave with everything committed also confirmed: the WAL writer flushes within a moment.
    for (let i = 0; i < 50 && unflushed.length > 0; i++) {
      await confirmDurable();
      if (unflushed.length > 0) await sleep(20);
    }
    // An idle slot is confirmed past the last commit (keepalives over WAL with nothing for this
    // sync): record that position as the checkpoint too, so that after a stop they are equal.
    if (!inTransaction && unflushed.length === 0 && stream.confirmedLsn > applied) {
      await target.query(`UPDATE syncctl.checkpoints SET commit_lsn = $2::pg_lsn, updated_at = now() WHERE sync_name = $1 AND commit_lsn < $2::pg_lsn`,
        [sync.name, formatLsn(stream.confirmedLsn)]);
    }
  } finally {
    stopFlushTimer();
    options.signal?.removeEventListener('abort', onAbort);
    await stream?.close();
    await target?.close();
    await source.close();
  }
}

async function buildRoutes(target: Connection, sync: LoadedSync, tables: readonly ResolvedTable[]): Promise<Map<string, Route>> {
  const order = await foreignKeyOrder(target, tables.map((t) => t.table.target));
  const { rows } = await target.query<{ table_name: string; state: string; snapshot_lsn: string | null }>(
    'SELECT table_name, state, snapshot_lsn::text AS snapshot_lsn FROM syncctl.sync_tables WHERE sync_name = $1', [sync.name]);
  const states = new Map(rows.map((r) => [r.table_name, r]));
  return new Map(tables.map((resolved) => {
    const s = states.get(resolved.table.name);
    return [tableKey(resolved.table.source), {
      resolved, order: order.get(tableKey(resolved.table.target)) ?? 0, id: '', relation: undefined,
      snapshotLsn: s?.snapshot_lsn ? parseLsn(s.snapshot_lsn) : 0n, state: s?.state ?? 'pending',
    }];
  }));
}

/** A table being copied: its changes after the copy's snapshot wait until the copy is done. */
async function waitUntilStreaming(target: Connection, sync: LoadedSync, route: Route, signal: AbortSignal | undefined): Promise<void> {
  for (;;) {
    const { rows } = await target.query<{ state: string; snapshot_lsn: string | null }>(
      'SELECT state, snapshot_lsn::text AS snapshot_lsn FROM syncctl.sync_tables WHERE sync_name = $1 AND table_name = $2',
      [sync.name, route.resolved.table.name]);
    route.state = rows[0]?.state ?? 'pending';
    if (rows[0]?.snapshot_lsn) route.snapshotLsn = parseLsn(rows[0].snapshot_lsn);
    if (route.state === 'streaming' || route.state === 'paused') return;
    if (signal?.aborted) throw new SyncctlError('APPLY_FAILED', 'stopped while waiting for a copy');
    await sleep(500, signal);
  }
}

/**
 * Why a Relation message no longer fits the mapping: a column the mapping reads was dropped, or
 * changed type. An added column the mapping does not read is fine (it is staged and ignored).
 */
function brokenMapping(resolved: ResolvedTable, relation: RelationMessage): string | undefined {
  const read = [...new Set([...resolved.columnsRead.values()].flat())];
  const dropped = read.filter((c) => !relation.columns.some((col) => col.name === c));
  if (dropped.length > 0) return `source column(s) ${dropped.join(', ')} read by the mapping no longer exist`;
  const retyped = read.filter((c) => {
    const now = relation.columns.find((col) => col.name === c)!;
    const before = resolved.sourceFacts.columns.find((col) => col.name === c);
    return before !== undefined && before.typeOid !== now.typeOid;
  });
  if (retyped.length > 0) return `source column(s) ${retyped.join(', ')} read by the mapping changed type`;
  return undefined;
}

function withoutUnchanged(tuple: Tuple): (Buffer | null)[] {
  return tuple.map((v) => (v === UNCHANGED_TOAST ? null : v));
}

/** Unchanged TOAST values come from the old row when it is whole (REPLICA IDENTITY FULL); else their positions are kept. */
function fillUnchanged(tuple: Tuple, old: Tuple | undefined): { values: (Buffer | null)[]; unchanged: number[] | null } {
  let unchanged: number[] | null = null;
  const values = tuple.map((v, i) => {
    if (v !== UNCHANGED_TOAST) return v;
    const o = old?.[i];
    if (o !== undefined && o !== UNCHANGED_TOAST) return o;
    (unchanged ??= []).push(i + 1);
    return null;
  });
  return { values, unchanged };
}

function isTransient(error: unknown): boolean {
  if (error instanceof SyncctlError) return error.code === 'CONNECTION_FAILED';
  const code = (error as { code?: string }).code ?? '';
  const message = error instanceof Error ? error.message : '';
  return ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', '57P01', '57P02', '57P03', '08006', '08003', '08001'].includes(code) ||
    /Connection terminated|terminating connection|server closed the connection/i.test(message);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}
