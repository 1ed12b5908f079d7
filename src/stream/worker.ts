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
import { sleep } from '../sleep.ts';
import type pg from 'pg';
import { buildBatchTable } from '../apply/apply-table.ts';
import { analyzeLocalChanges, BatchWriter, type StageOp, type TruncateRefusal } from '../apply/batch-writer.ts';
import { loadParkedTables } from '../apply/parked.ts';
import { foreignKeyOrder } from '../catalog/foreign-key-order.ts';
import { tableKey } from '../catalog/facts.ts';
import { checkSlotStreamable } from '../catalog/slot-health.ts';
import { connect, type Connection } from '../db/connect.ts';
import { SyncctlError } from '../errors.ts';
import type { ChangeOp, SyncEvents } from '../observe/events.ts';
import type { Logger } from '../observe/logger.ts';
import { planSync, type ResolvedTable } from '../plan/plan-sync.ts';
import { publicationName, slotName } from '../plan/render-ddl.ts';
import { quoteIdent, quoteLiteral, quoteQualified } from '../sql/quote.ts';
import type { LoadedSync } from '../spec/loaded-sync.ts';
import { formatLsn, parseLsn, PgoutputDecoder, type Lsn, type PgoutputMessage, type RelationMessage } from './pgoutput-decoder.ts';
import { ReplicationStream } from './replication-stream.ts';
import { StreamedTransactions, type StreamedTable } from './streamed-transactions.ts';
import { HeldChanges } from './held-changes.ts';
import { ParkedRetry } from './parked-retry.ts';
import { tagWrites } from './origins.ts';
import { parseRepair, REPAIR_PREFIX, type Repair } from './repair-message.ts';
import { isTransient } from './transient.ts';
import { fillUnchanged, withoutUnchanged } from './tuples.ts';

export interface WorkerOptions {
  readonly sync: LoadedSync;
  readonly logger: Logger;
  readonly signal?: AbortSignal;
  /** Commit the target transaction once this many changes are staged (at a source commit). */
  readonly batchRows?: number;
  /**
   * …or once the oldest transaction in it has waited this long, while the worker is caught up
   * (latency bound; default 5 ms: the bench's live lag p99 was 28.5 ms at 5, 34-54 ms at 10,
   * 69-131 ms at 20, 34 ms at 2). While it is behind, batches stay open up to 250 ms.
   */
  readonly batchMs?: number;
  /**
   * logical_decoding_work_mem (kB) for the worker's own walsender, when the server's is higher
   * (default 8192): a large source transaction is then streamed in small blocks while it runs,
   * so little is left to send and stage after its commit.
   */
  readonly decodingWorkMemKb?: number;
  /** Called after every target commit. */
  readonly onCommit?: (info: CommitInfo) => void;
  /**
   * Loads the sync's spec again (`syncctl run` reads the spec files afresh): a table added to the
   * running sync by `syncctl apply` is taken over when its first change arrives.
   */
  readonly reload?: () => Promise<LoadedSync | undefined>;
  /** Where the worker reports its commits and progress (the metrics listen). */
  readonly events?: SyncEvents;
  /**
   * The leader epoch this process took the sync over with (see leader.ts): every commit fences
   * on it, so a process that lost the lead cannot commit beside the new leader.
   */
  readonly leaderEpoch?: string;
}

export interface CommitInfo {
  readonly lsn: string;
  readonly transactions: number;
  readonly changes: number;
}

/**
 * The walsender's reorder buffer cap for syncctl's slot. With the server default (64MB), a 1M-row
 * UPDATE left about a quarter of its rows to send and stage after the commit (2.7-3.7 s of the
 * bench's commit -> caught up); at 8MB, 0.4 s (2MB and 16MB measured no better).
 */
const DECODING_WORK_MEM_KB = 8192;

/** A held change's operation, as counted. */
const HELD_OPS = { I: 'insert', W: 'update', D: 'delete', T: 'truncate' } as const;

/** How long a batch may stay open while the worker is behind the source. */
const BEHIND_BATCH_MS = 250;
/**
 * While no batch is committing, one of this many changes commits at its next source commit: the
 * target would otherwise sit idle until a full batch is staged (a backlog's first batch). While
 * one commits, the next grows to the full size, so a backlog settles on full batches.
 */
const IDLE_BATCH_ROWS = 10_000;

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
  /**
   * Streamed transactions whose DDL broke this table's mapping: their changes of it are not
   * staged (at their commit the table is paused and a recopy brings the rows; at their abort
   * the changes never happened), nor is a staging table built for the broken shape.
   */
  brokenIn?: Set<number>;
}

/**
 * Runs until the signal aborts. A transient error (a connection lost, a deadlock, a lock or
 * statement timeout, resources) ends the session: its uncommitted batch is rolled back and the
 * next session starts again from the checkpoint, after a backoff that starts over once a session
 * has committed something. Nothing is parked for a transient error.
 */
export async function runWorker(options: WorkerOptions): Promise<void> {
  let delay = RETRY_FIRST_MS;
  let sync = options.sync;
  // Tables the target rejected a staged value of: staged as text from then on (see STAGING_REJECTED).
  const asText = new Set<string>();
  // The target backends of the session that ended (see runSession).
  const previousBackends: number[] = [];
  for (;;) {
    let committed = false;
    try {
      await runSession({ ...options, sync, onCommit: (info) => { committed = true; options.onCommit?.(info); } }, asText, previousBackends);
      return;
    } catch (error) {
      if (options.signal?.aborted) return;
      const tablesChanged = (error as { code?: string }).code === 'SYTAB';
      if (tablesChanged || (error instanceof SyncctlError && error.code === 'TABLE_STATE_CHANGED')) {
        // A table was added, or a paused one is being copied again: start over from the
        // checkpoint with the spec as it is now, holding that table's changes for its copy.
        options.logger.info({ err: describe(error) }, 'the sync\'s tables changed; the session starts over');
        sync = (await options.reload?.()) ?? sync;
        continue;
      }
      if (error instanceof SyncctlError && error.code === 'STAGING_REJECTED') {
        const tables = (error.details['tables'] as string[]).filter((t) => !asText.has(t));
        // Already staged as text: the value is not text the target can store at all (bytes invalid in its encoding).
        if (tables.length === 0) throw new SyncctlError('APPLY_FAILED', `${error.message} (even as text)`, { cause: error });
        for (const t of tables) asText.add(t);
        options.logger.warn({ tables, err: describe(error) }, 'the target rejected a staged value: staging these tables as text, each row cast where it is applied');
        continue;
      }
      if (!isTransient(error)) throw error;
      if (committed) delay = RETRY_FIRST_MS;
      options.logger.warn({ err: describe(error), code: (error as { code?: string }).code, retryInMs: delay }, 'transient error; the batch is rolled back and retried');
      await sleep(delay, options.signal);
      delay = Math.min(delay * 2, 30_000);
    }
  }
}

const RETRY_FIRST_MS = 500;

async function runSession(options: WorkerOptions, asText: ReadonlySet<string>, previousBackends: number[]): Promise<void> {
  const { sync, logger } = options;
  // The three connections open at once: each costs round trips (and a SCRAM exchange) that
  // would otherwise add up before the first change is read.
  const [source, target, second] = await openAll([
    () => connect('source', sync.sourceUrl, 'syncctl run'),
    () => connect('target', sync.targetUrl, 'syncctl run'),
    () => connect('target', sync.targetUrl, 'syncctl run'),
  ]);
  let stream: ReplicationStream | undefined;
  let opening: Promise<ReplicationStream> | undefined;
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
    // A dropped or lost slot says so, before the plan reports it only as a pending change.
    await checkSlotStreamable(source, slotName(sync.name));
    // Statistics of the local changes for the batches' plans, taken on the second session while
    // the first checks the plan (the writers take them again as they meet local changes).
    const analyzed = analyzeLocalChanges(second.client);
    const protocol = pgoutputProtocol(Number((await source.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v));
    // The last session's target backends may still be finishing a COMMIT the connection lost
    // sight of: they are ended (and waited for) before the checkpoint is read, or this session
    // would apply that batch a second time after it lands.
    if (previousBackends.length > 0) {
      await target.query(`SELECT pg_terminate_backend(a.pid, 10000) FROM pg_stat_activity AS a WHERE a.pid = ANY($1::int[])`, [previousBackends]);
      previousBackends.length = 0;
    }
    const checkpoint = await target.query<{ commit_lsn: string }>('SELECT commit_lsn::text AS commit_lsn FROM syncctl.checkpoints WHERE sync_name = $1', [sync.name]);
    if (!checkpoint.rows[0]) {
      throw new SyncctlError('PLAN_PENDING', `${sync.name}: no checkpoint: the initial copy has not run; run syncctl apply first`);
    }
    let applied = parseLsn(checkpoint.rows[0].commit_lsn);
    // While a table is held (`syncctl pause`), transactions arrive whole at their commit, so its
    // changes go to held_changes like any other: a streamed transaction's blocks could only wait.
    const mapped = sync.tables.filter((t) => t.mode === 'mapped').map((t) => t.name);
    const holding = (await target.query('SELECT 1 FROM syncctl.sync_tables WHERE sync_name = $1 AND state = \'held\' AND table_name = ANY($2::text[]) LIMIT 1',
      [sync.name, mapped])).rows.length > 0;
    // The replication connection opens while the plan is checked: nothing is read from it, nor
    // confirmed, before the plan passes (closed when it does not).
    opening = ReplicationStream.open(sync.sourceUrl, {
      slot: slotName(sync.name), publications: [publicationName(sync.name)], startLsn: applied, messages: true,
      protoVersion: protocol.version, streaming: protocol.streaming && !holding,
      // Changes another replication wrote on the source (the reverse sync's worker) stay there:
      // filtered by the walsender from PostgreSQL 16 on, before that skipped here (case 'origin').
      ...(sync.origin === 'none' && protocol.version >= 4 ? { origin: 'none' as const } : {}), decodingWorkMemKb: options.decodingWorkMemKb ?? DECODING_WORK_MEM_KB,
    });
    opening.catch(() => {});
    const plan = await planSync(sync, { source, target });
    const blocking = plan.changes.filter((c) => !c.streamSafe);
    if (blocking.length > 0) {
      throw new SyncctlError('PLAN_PENDING', `${sync.name}: the databases do not match the spec (${blocking.length} change(s) pending: ` +
        `${blocking.map((c) => c.id).join(', ')}); run syncctl apply first`);
    }
    if (plan.changes.length > 0) logger.warn({ pending: plan.changes.map((c) => c.id) }, 'streaming with changes pending; syncctl apply makes them');
    await source.close();
    // A source table may feed several target tables: its routes, parents first.
    const routes = new Map<string, Route[]>();
    const addRoutes = (added: readonly Route[]) => {
      for (const r of added) {
        const key = tableKey(r.resolved.table.source);
        routes.set(key, [...(routes.get(key) ?? []), r].sort((a, b) => a.order - b.order));
      }
    };
    const allRoutes = () => [...routes.values()].flat();
    addRoutes(await buildRoutes(target, sync, [...plan.tables.values()].filter((t) => t.table.mode === 'mapped')));
    stream = await opening;
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) return;
    logger.info({ sync: sync.name, from: formatLsn(applied), protoVersion: protocol.version, streaming: protocol.streaming }, 'streaming');
    options.events?.emit('streaming', true);
    if (options.events && options.events.progress.appliedLsn < applied) options.events.progress.appliedLsn = applied;

    // Two target sessions: the next batch is staged on one while the last one commits on the
    // other (their commits stay in order; what a batch does in its own temp tables runs beside
    // the other's commit, BatchWriter.prepareAhead). Streamed transactions stage on the primary
    // and are applied there.
    for (const session of [target, second]) previousBackends.push((await session.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid);
    const tagged = sync.origin === 'none' && await tagWrites([target, second], sync.name, logger);
    const analyzedAt = await analyzed;
    const primary = new BatchWriter(target.client, sync.name, { origin: tagged, analyzeLocalChanges: true, analyzedAt });
    const secondary = new BatchWriter(second.client, sync.name, { origin: tagged, analyzeLocalChanges: true, analyzedAt });
    await primary.prepare();
    await secondary.prepare();
    const parkedRetry = new ParkedRetry(sync.name, await loadParkedTables(target.client, sync.name), logger);
    const retryForeignKeys = (client: pg.Client) => parkedRetry.run(client, allRoutes().filter((r) => r.state === 'streaming')
      .map((r) => ({ resolved: r.resolved, order: r.order })));
    const writers = [primary, secondary];
    // Every commit checks that the sync has no mapped table these routes lack (see sql/4_expect-tables.sql).
    const fence = options.leaderEpoch === undefined ? '' : `, syncctl.fence(${quoteLiteral(sync.name)}, ${quoteLiteral(options.leaderEpoch)}::bigint)`;
    // …and that the tables it applies as streaming still are: `syncctl pause` or `resync` changed
    // that, and the session starts over with the states read again (sql/8_runs-and-held-tables.sql).
    // Called again whenever a route's state changes.
    const guardTables = () => {
      const names = allRoutes().map((r) => quoteLiteral(r.resolved.table.name));
      const streaming = allRoutes().filter((r) => r.state === 'streaming');
      const tables = streaming.map((r) => quoteLiteral(r.resolved.table.name));
      const snapshots = streaming.map((r) => (r.snapshotLsn === 0n ? 'NULL' : quoteLiteral(formatLsn(r.snapshotLsn))));
      for (const w of writers) {
        w.setGuard(`SELECT syncctl.expect_tables(${quoteLiteral(sync.name)}, ARRAY[${names.join(', ')}]::text[], ` +
          `ARRAY[${tables.join(', ')}]::text[], ARRAY[${snapshots.join(', ')}]::pg_lsn[])${fence}`);
      }
    };
    guardTables();
    let writer = primary;
    // Held changes are written inside the batch's transaction: its deferred BEGIN goes first.
    const held = new HeldChanges(() => writer.session, sync.name, () => writer.ensureBegun());
    let heldCheckedAt = 0;
    const streamed = new StreamedTransactions(target.client, sync.name);
    /** The transaction whose stream block is being read, if any. */
    let streamXid: number | undefined;
    /** Streamed transactions with a replication origin, under origin 'none': read, never applied. */
    const foreign = new Set<number>();
    const decoder = new PgoutputDecoder();
    const byRelation = new Map<number, readonly Route[]>();
    const batchRows = options.batchRows ?? 50_000;
    let version = 0;
    let skipping = false;
    let finalLsn: Lsn = 0n;
    /** Commit time (Unix ms) of the source transaction being read; null before the first. */
    let txCommitMs: number | null = null;
    let staged = 0;
    let transactions = 0;
    const events = options.events;
    const progress = events?.progress;
    /** Changes of the batch being staged, per spec table and operation (the events, and sync_tables.changes_applied). */
    let counts = new Map<string, Record<ChangeOp, number>>();
    const tally = (into: Map<string, Record<ChangeOp, number>>, table: string, op: ChangeOp) => {
      let c = into.get(table);
      if (c === undefined) into.set(table, c = { insert: 0, update: 0, delete: 0, truncate: 0 });
      c[op]++;
    };
    /** Changes of streamed transactions not committed yet, by xid (a subtransaction rolled back inside one is still counted). */
    const streamedCounts = new Map<number, Map<string, Record<ChangeOp, number>>>();
    /** Source commit times (Unix ms) of the first transaction of each batch read but not committed, oldest first. */
    const unapplied: number[] = [];
    let batchReadAt: number | undefined;
    /** A source transaction of the batch being staged was read: the batch's first one marks how old what is unapplied is. */
    const noteRead = (commitTimeMs: number) => {
      if (batchReadAt !== undefined) return;
      batchReadAt = Date.now();
      unapplied.push(commitTimeMs);
      if (progress) progress.oldestUnappliedMs = unapplied[0]!;
    };
    let lastCommit: { lsn: Lsn; time: number | null } | undefined;
    let batchStarted: number | undefined;
    const batchMs = options.batchMs ?? 5;
    let commitMs = 0;
    // Caught up (the last source commit is recent): a batch stays open for batchMs at most, so lag
    // stays low. Behind (draining a backlog): up to BEHIND_BATCH_MS, so fewer, larger target
    // transactions drain it faster. The source's clock is compared with ours: a skew of more than
    // a second only picks the throughput side.
    const window = () => (Date.now() - commitMs > 1_000 ? Math.max(batchMs, BEHIND_BATCH_MS) : batchMs);

    const context = () => new SourceContext(finalLsn, txCommitMs);
    // Commits whose target WAL is not flushed yet: their source positions are confirmed only
    // once it is, so a crash of the target cannot lose what the slot has let go of.
    const unflushed: { source: Lsn; target: Lsn }[] = [];
    const confirmDurable = async (known?: Lsn) => {
      if (unflushed.length === 0) return;
      const flushed = known ?? parseLsn((await target!.query<{ lsn: string }>('SELECT pg_current_wal_flush_lsn()::text AS lsn')).rows[0]!.lsn);
      let upTo: Lsn | undefined;
      while (unflushed.length > 0 && unflushed[0]!.target <= flushed) upTo = unflushed.shift()!.source;
      if (upTo !== undefined) stream!.confirm(upTo);
    };
    // Between commits, the target's flush position is asked for on the primary session now and
    // then. Not while a commit is in flight (it confirms what the target flushed when it is done),
    // nor while the last ask is unanswered: behind a long batch statement each tick would queue
    // one more query on the session.
    let asking = false;
    const flushTimer = setInterval(() => {
      if (asking || committing > 0) return;
      asking = true;
      confirmDurable().catch(() => {}).finally(() => { asking = false; });
    }, 200);
    stopFlushTimer = () => clearInterval(flushTimer);
    // The commit in flight (at most one), and the first commit that failed: nothing commits after it.
    let inflight: Promise<void> = Promise.resolve();
    let committing = 0;
    let failed: unknown;
    /** Waits until every batch handed to commit() has committed; throws if one failed. */
    const drain = async () => {
      await inflight;
      if (failed !== undefined) throw failed;
    };
    /**
     * Commits the batch: its commit runs on its session while the next batch is staged on the
     * other one. Returns once that other session is free (its previous commit is done).
     */
    const commit = async () => {
      if (!lastCommit) return;
      await held.flush();
      const w = writer;
      await checkPaused(w);
      const batch = { lsn: lastCommit.lsn, time: lastCommit.time, transactions, changes: staged, counts, readAt: batchReadAt };
      const retry = parkedRetry.due() ? retryForeignKeys : undefined;
      if (retry) parkedRetry.claim();
      staged = 0;
      transactions = 0;
      counts = new Map();
      batchReadAt = undefined;
      lastCommit = undefined;
      batchStarted = undefined;
      const previous = inflight;
      // The part of this batch that writes only its own session's temp tables runs now, beside
      // the commit in flight in the other session (BatchWriter.prepareAhead).
      const ahead = committing > 0 ? w.prepareAhead() : undefined;
      ahead?.catch(() => {});
      committing++;
      inflight = (async () => {
        await previous;
        if (failed !== undefined) return;
        await ahead;
        const totals = new Map([...batch.counts].map(([table, c]) => [table, c.insert + c.update + c.delete + c.truncate]));
        const position = await w.commit({ lsn: formatLsn(batch.lsn), commitTime: batch.time === null ? null : new Date(batch.time).toISOString() }, retry, totals);
        applied = batch.lsn;
        if (batch.readAt !== undefined) unapplied.shift();
        if (progress) {
          if (progress.appliedLsn < batch.lsn) progress.appliedLsn = batch.lsn;
          if (batch.time !== null) progress.lastAppliedCommitMs = batch.time;
          progress.oldestUnappliedMs = unapplied[0] ?? null;
        }
        events?.emit('committed', { transactions: batch.transactions, changes: batch.counts, conflicts: position.conflicts,
          seconds: batch.readAt === undefined ? 0 : (Date.now() - batch.readAt) / 1000 });
        unflushed.push({ source: batch.lsn, target: parseLsn(position.lsn) });
        await confirmDurable(parseLsn(position.flushed));
        options.onCommit?.({ lsn: formatLsn(batch.lsn), transactions: batch.transactions, changes: batch.changes });
        logger.debug({ lsn: formatLsn(batch.lsn), transactions: batch.transactions, changes: batch.changes,
          ...(position.setAside > 0 ? { setAside: position.setAside, loggedAside: position.loggedAside } : {}), ...(position.ahead ? { ahead: true } : {}) }, 'committed');
      })().catch((error: unknown) => {
        failed ??= error;
        stream?.interrupt();
      }).finally(() => {
        committing--;
      });
      await previous;
      if (failed !== undefined) throw failed;
      writer = w === primary ? secondary : primary;
      writer.after(inflight);
    };
    /** Everything committed, and the primary session current (streamed transactions are staged there). */
    const toPrimary = async () => {
      await settleAll();
      writer = primary;
    };
    /** Every batch committed (an open one too, at the last checkpoint): no session has a transaction. */
    const settleAll = async () => {
      await commit();
      await drain();
      if (writer.open) {
        lastCommit = { lsn: applied, time: null };
        await commit();
        await drain();
      }
    };
    /**
     * Before a batch that dropped paused tables' changes commits: those tables are still paused.
     * `syncctl apply` marks a paused table for its copy before it takes the copy's snapshot, so a
     * change this batch dropped is older than that snapshot, or the batch sees the mark here and
     * the session starts over from the checkpoint, holding the table's changes for its copy.
     */
    const checkPaused = async (w: BatchWriter) => {
      if (droppedPaused.size === 0) return;
      const tables = [...droppedPaused];
      droppedPaused.clear();
      await w.ensureBegun();
      const { rows } = await w.session.query<{ table_name: string }>(
        `SELECT table_name FROM syncctl.sync_tables WHERE sync_name = $1 AND table_name = ANY($2::text[]) AND state <> 'paused'`, [sync.name, tables]);
      if (rows.length > 0) {
        throw new SyncctlError('TABLE_STATE_CHANGED', `${sync.name}: ${rows.map((r) => r.table_name).join(', ')} no longer paused (a copy began): starting over from the checkpoint`);
      }
    };
    /** Pauses one table, in the batch's transaction: the other tables go on; `syncctl apply` copies it again. */
    const pause = async (r: Route, reason: string) => {
      r.state = 'paused';
      guardTables();
      await writer.begin();
      await writer.session.query(`UPDATE syncctl.sync_tables SET state = 'paused', error = $3, updated_at = now() WHERE sync_name = $1 AND table_name = $2`,
        [sync.name, r.resolved.table.name, reason]);
    };
    /** Tables a source TRUNCATE could not empty on the target are paused with the reason and what to do. */
    const pauseRefused = async (refused: readonly TruncateRefusal[]) => {
      for (const { target: t, reason } of refused) {
        const r = allRoutes().find((x) => tableKey(x.resolved.table.target) === tableKey(t))!;
        const why = `a source TRUNCATE could not be applied to ${tableKey(t)}: ${reason}. Remove or re-point the rows that reference it ` +
          `(or set truncate: 'ignore' on this table), then run syncctl apply to copy the table again`;
        await pause(r, why);
        logger.error({ table: r.resolved.table.name, reason: why }, 'table paused: a source TRUNCATE cannot be applied');
      }
    };
    /** Pauses decided by a Relation inside a streamed transaction, due when it commits. */
    const pendingPauses = new Map<number, { route: Route; reason: string }[]>();
    const onRelation = async (m: RelationMessage) => {
      const rs = routes.get(`${m.schema}.${m.name}`);
      if (!rs) {
        // Not necessarily an error: for a partition published through its root, pgoutput sends
        // the root's Relation and then the partition's own, but changes name the root.
        unknown.set(m.relationId, m);
        return;
      }
      unknown.delete(m.relationId);
      byRelation.set(m.relationId, rs);
      for (const r of rs) await relate(r, m);
    };
    /** One route of a source table takes the relation's shape (or is paused by it). */
    const relate = async (r: Route, m: RelationMessage) => {
      const broken = brokenMapping(r.resolved, m);
      if (broken && streamXid === undefined && finalLsn < r.snapshotLsn) {
        // The shape of a transaction the table's copy already holds (a worker restarted after the
        // paused table was fixed and copied again reads the old shapes once more): its changes are
        // skipped, and a later Relation brings the shape the copy was made with.
        r.relation = undefined;
        return;
      }
      if (broken && streamXid !== undefined) {
        // DDL inside a transaction still in progress: it pauses the table only if that
        // transaction commits (once, however many blocks resend the shape).
        const pending = pendingPauses.get(streamXid) ?? [];
        if (!pending.some((p) => p.route === r)) pendingPauses.set(streamXid, [...pending, { route: r, reason: broken }]);
        (r.brokenIn ??= new Set()).add(streamXid);
        return;
      }
      if (broken) {
        await pause(r, broken);
        logger.error({ table: r.resolved.table.name, reason: broken }, 'table paused: the source schema no longer fits the mapping');
        return;
      }
      // pgoutput sends a table's Relation again after any invalidation (ANALYZE, a publication
      // change): with the same columns the table keeps its staging. With other columns, what is
      // staged under the old shape is applied first: the reduction to the last change per key
      // works within one staging table, and a later delete must not run before an earlier write.
      const sameShape = r.relation !== undefined && r.relation.columns.length === m.columns.length &&
        r.relation.columns.every((c, i) => c.name === m.columns[i]!.name && c.typeOid === m.columns[i]!.typeOid);
      r.relation = m;
      if (sameShape) return;
      if (r.id !== '' && writer.open) await writer.applyStaged(context());
      for (const w of writers) if (r.id !== '') w.retire(r.id);
      r.id = `${m.relationId}_${++version}`;
      for (const w of writers) {
        w.register(buildBatchTable(r.id, r.resolved, m.columns.map((c) => c.name), r.order, { asText: asText.has(r.resolved.table.name) }));
      }
    };

    /** Relations announced that are not in the loaded spec: a change of theirs makes the worker read the spec again. */
    const unknown = new Map<number, RelationMessage>();

    /**
     * A change of a table the loaded spec does not have: `syncctl apply` added it to the running
     * sync (it published the table and copies it, or has copied it). The spec is read again and
     * the table planned and routed here; until its copy is done its changes are held.
     */
    const adopt = async (relationId: number): Promise<readonly Route[]> => {
      const relation = unknown.get(relationId)!;
      const name = `${relation.schema}.${relation.name}`;
      const fresh = await options.reload?.();
      const tables = fresh?.tables.filter((t) => tableKey(t.source) === name && t.mode === 'mapped') ?? [];
      if (!fresh || tables.length === 0) {
        throw new SyncctlError('PLAN_PENDING', `${sync.name}: ${name} is published but not in the spec; run syncctl apply`);
      }
      // Planned on connections of its own: the batch's transaction may be open on the target.
      const planSource = await connect('source', fresh.sourceUrl, 'syncctl run');
      const planTarget = await connect('target', fresh.targetUrl, 'syncctl run');
      const resolved: ResolvedTable[] = [];
      let order: Map<string, number>;
      try {
        const planned = (await planSync(fresh, { source: planSource, target: planTarget })).tables;
        for (const table of tables) {
          const r = planned.get(table.name);
          if (!r) throw new SyncctlError('PLAN_PENDING', `${sync.name}: ${name} (${table.name}) cannot be planned; run syncctl plan`);
          resolved.push(r);
        }
        order = await foreignKeyOrder(planTarget, [...allRoutes().map((r) => r.resolved.table.target), ...tables.map((t) => t.target)]);
      } finally {
        await planSource.close();
        await planTarget.close();
      }
      const added = (await buildRoutes(target!, fresh, resolved)).map((r) => ({ ...r, order: order.get(tableKey(r.resolved.table.target)) ?? 0 }));
      addRoutes(added);
      guardTables();
      unknown.delete(relationId);
      for (const r of added) logger.info({ table: r.resolved.table.name, state: r.state }, 'table added to the running sync');
      await onRelation(relation);
      return routes.get(name)!;
    };

    const notPaused = (r: Route) => r.state !== 'paused';
    /** Every route streaming and past its copy: the change goes to them as they are. */
    const streamingNow = (rs: readonly Route[]) => {
      for (const r of rs) if (r.state !== 'streaming' || finalLsn < r.snapshotLsn) return false;
      return true;
    };
    /** The routes a change of a source transaction goes to: those streaming or holding, whose copy does not hold it already. */
    const route = async (relationId: number): Promise<readonly Route[]> => {
      if (skipping) return [];
      const rs = byRelation.get(relationId) ?? (unknown.has(relationId) ? await adopt(relationId) : []);
      if (rs.some((r) => r.state !== 'streaming' && r.state !== 'paused' && finalLsn >= r.snapshotLsn)) await refreshHeld();
      return rs.filter((r) => {
        if (finalLsn < r.snapshotLsn) return false;
        if (r.state === 'paused') return dropPaused(r);
        return true;
      });
    };
    /**
     * A paused table's changes are dropped: `syncctl apply` copies it again. The batch that drops
     * them commits only if the table is still paused then (see checkPaused), so a copy that began
     * meanwhile cannot miss them.
     */
    const dropPaused = (r: Route): false => {
      droppedPaused.add(r.resolved.table.name);
      return false;
    };
    const droppedPaused = new Set<string>();

    /** Replays a table's held changes into the open batch, then applies the batch so far (before the table's next change is staged). */
    const replayHeld = async (r: Route) => {
      // Changes held by the batch committing in the other session must be visible here first.
      await drain();
      await writer.begin();
      await held.flush();
      let current: { columns: string; id: string } | undefined;
      let lsn: string | undefined;
      const count = await held.replay(r.resolved.table.name, r.snapshotLsn, async (c) => {
        // What is parked of a held change carries its own transaction's position.
        if (c.commitLsn !== lsn) writer.setContext({ lsn: lsn = c.commitLsn, commitTime: null });
        const columns = c.columns.join('\u0000');
        if (current?.columns !== columns) {
          if (current) await writer.applyStaged(context());
          current = { columns, id: `held_${++version}` };
          writer.register(buildBatchTable(current.id, r.resolved, c.columns, r.order, { asText: asText.has(r.resolved.table.name) }));
        }
        if (c.op !== 'K') tally(counts, r.resolved.table.name, HELD_OPS[c.op]);
        if (c.op === 'T') await pauseRefused(await writer.truncate([current.id], context()));
        else await writer.stage(current.id, c.op, c.unchanged, c.values);
      });
      await writer.applyStaged(context());
      // The source transaction being read, if any, goes on under its own position.
      if (lsn !== undefined) writer.setContext(context());
      if (count > 0) logger.info({ table: r.resolved.table.name, changes: count }, 'applied the changes held during the copy');
    };

    /**
     * A repair `syncctl verify --repair` wrote on the source (see REPAIR_PREFIX): applied where it
     * stands in the stream, after the changes before it and before those after it. Its rows are
     * whole source rows, written through the table's mapping and filter like any change; its
     * deleteKeys are target keys the filtered source no longer has.
     */
    const applyRepair = async (content: Buffer) => {
      let repair: Repair;
      try {
        repair = parseRepair(content);
      } catch (error) {
        logger.warn({ err: describe(error) }, 'ignored a repair message that is not valid');
        return;
      }
      if (repair.sync !== sync.name) return;
      const r = allRoutes().find((x) => x.resolved.table.name === repair.table);
      if (r === undefined || r.state !== 'streaming' || finalLsn < r.snapshotLsn) {
        // Not applied: verify's re-check reports the keys as still different.
        logger.warn({ table: repair.table, state: r?.state }, 'a repair for a table that is not streaming here was not applied');
        return;
      }
      await writer.ensureBegun();
      await writer.applyStaged(context());
      if (repair.rows.length > 0) {
        const id = `repair_${++version}`;
        writer.register(buildBatchTable(id, r.resolved, repair.columns, r.order, { asText: asText.has(r.resolved.table.name) }));
        for (const row of repair.rows) {
          const p = writer.stage(id, 'W', null, row.map((v) => (v === null ? null : Buffer.from(v, 'utf8'))), true);
          if (p) await p;
          tally(counts, r.resolved.table.name, 'update');
        }
        await writer.applyStaged(context());
        writer.retire(id);
      }
      if (repair.deleteKeys.length > 0) {
        const target = quoteQualified(r.resolved.table.target);
        const key = r.resolved.table.key.map(quoteIdent);
        await writer.session.query(`DELETE FROM ${target} AS t WHERE (${key.map((k) => `t.${k}`).join(', ')}) IN
          (SELECT ${key.map((k) => `k.${k}`).join(', ')} FROM jsonb_populate_recordset(NULL::${target}, $1::jsonb) AS k)`, [JSON.stringify(repair.deleteKeys)]);
        for (let i = 0; i < repair.deleteKeys.length; i++) tally(counts, r.resolved.table.name, 'delete');
      }
      logger.info({ table: repair.table, rows: repair.rows.length, deletes: repair.deleteKeys.length }, 'applied a repair');
    };

    /** Tables waiting for their copy: once it is done, their held changes are replayed and they stream. */
    const refreshHeld = async (force = false) => {
      const waiting = allRoutes().filter((r) => r.state !== 'streaming' && r.state !== 'paused');
      if (waiting.length === 0 || (!force && Date.now() - heldCheckedAt < 500)) return;
      heldCheckedAt = Date.now();
      const { rows } = await target!.query<{ table_name: string; state: string; snapshot_lsn: string | null }>(
        'SELECT table_name, state, snapshot_lsn::text AS snapshot_lsn FROM syncctl.sync_tables WHERE sync_name = $1 AND table_name = ANY($2::text[])',
        [sync.name, waiting.map((r) => r.resolved.table.name)]);
      for (const r of waiting) {
        const row = rows.find((x) => x.table_name === r.resolved.table.name);
        if (row?.snapshot_lsn) r.snapshotLsn = parseLsn(row.snapshot_lsn);
        if (row?.state === 'streaming') {
          await replayHeld(r);
          r.state = 'streaming';
          guardTables();
        } else if (row?.state === 'paused') {
          r.state = 'paused';
          guardTables();
        } else if (row?.state !== undefined) {
          r.state = row.state;
        }
      }
    };

    // A streamed transaction's commit position is unknown until it commits: whether a table's copy
    // already holds its changes (snapshotLsn) is decided then, when they are applied.
    const streamedRoute = async (relationId: number): Promise<readonly Route[]> => {
      const rs = byRelation.get(relationId) ?? (unknown.has(relationId) ? await adopt(relationId) : []);
      return rs.filter((r) => (r.state !== 'paused' || dropPaused(r)) && !r.brokenIn?.has(streamXid!));
    };
    const shapes = new Map<Route, StreamedTable>();
    const streamedTable = (r: Route): StreamedTable => {
      let t = shapes.get(r);
      if (!t || t.shapeId !== r.id) {
        const relation = r.relation!;
        t = {
          key: r.resolved.table.name, shapeId: r.id,
          define: (id) => buildBatchTable(id, r.resolved, relation.columns.map((c) => c.name), r.order, { asText: asText.has(r.resolved.table.name) }),
        };
        shapes.set(r, t);
      }
      return t;
    };
    /** A route by its spec table name (the key of streamed and held changes). */
    const routeByKey = (key: string) => allRoutes().find((r) => r.resolved.table.name === key)!;

    // Changes held for a table whose copy finished while no worker ran (or before a crash) are
    // applied before anything else.
    const leftovers = await target.query<{ table_name: string }>('SELECT DISTINCT table_name FROM syncctl.held_changes WHERE sync_name = $1', [sync.name]);
    for (const { table_name } of leftovers.rows) {
      const r = allRoutes().find((x) => x.resolved.table.name === table_name);
      if (r?.state === 'streaming') await replayHeld(r);
    }
    const commitReplayed = async () => {
      if (!writer.open || lastCommit) return;
      // The checkpoint stays where the last commit put it: wait until that one is done.
      await drain();
      lastCommit = { lsn: applied, time: null };
      await commit();
    };
    await commitReplayed();

    /** A keepalive: commits, held changes and retries that wait for a pause in the stream, and the confirmation of an idle slot. */
    const onKeepalive = async (stream: ReplicationStream, walEnd: Lsn): Promise<void> => {
      // A keepalive (the server sends one after most transactions while we have not confirmed):
      // commit a finished batch only when nothing more is waiting or the batch is old enough,
      // otherwise every source transaction would become its own target transaction.
      if (!inTransaction && lastCommit && (!stream.hasBuffered() || Date.now() - (batchStarted ?? 0) >= window())) await commit();
      // A table whose copy finished gets its held changes now, even if no change of its own follows.
      if (!inTransaction && !lastCommit) {
        await refreshHeld();
        await commitReplayed();
      }
      // Idle: parked changes a foreign key refused are retried in a transaction of their own, at the same checkpoint.
      if (!inTransaction && !lastCommit && parkedRetry.due()) {
        await drain();
        await writer.begin();
        lastCommit = { lsn: applied, time: null };
        await commit();
      }
      // With nothing received left uncommitted or unflushed, every transaction the server
      // committed before walEnd has been sent and applied, or had nothing for this sync:
      // confirming walEnd lets an idle or filtered slot advance instead of retaining WAL.
      if (!inTransaction && !lastCommit && committing === 0 && unflushed.length === 0 && !writer.open) {
        stream.confirm(walEnd);
        if (progress && progress.appliedLsn < walEnd) progress.appliedLsn = walEnd;
      }
    };
    /** Every message but a transaction's begin, changes and commit (the hot path, in consume). */
    const onRare = async (m: PgoutputMessage): Promise<void> => {
      switch (m.tag) {
        case 'relation':
          await onRelation(m);
          break;
        case 'truncate': {
          if (streamXid !== undefined && foreign.has(streamXid)) break;
          if (streamXid !== undefined) {
            const routed: Route[] = [];
            for (const relationId of m.relationIds) routed.push(...await streamedRoute(relationId));
            const tables = routed.filter((r) => r.resolved.table.truncate === 'apply')
              .map((r) => ({ key: r.resolved.table.name, target: r.resolved.table.target }));
            streamed.truncate(streamXid, m.xid, tables);
            break;
          }
          if (skipping) break;
          const ids: string[] = [];
          for (const relationId of m.relationIds) {
            for (const r of await route(relationId)) {
              if (r.resolved.table.truncate !== 'apply') continue;
              if (r.state === 'streaming') {
                ids.push(r.id);
                tally(counts, r.resolved.table.name, 'truncate');
              }
              else await held.hold(r.resolved.table.name, finalLsn, { op: 'T', unchanged: null, columns: r.relation!.columns.map((c) => c.name), values: null });
            }
          }
          await pauseRefused(await writer.truncate(ids, context()));
          break;
        }
        case 'origin':
          // A transaction another replication wrote (pgoutput names its origin first); with
          // origin 'none' it is not ours to apply. From PostgreSQL 16 on the walsender filters them.
          if (sync.origin === 'none') {
            if (streamXid !== undefined) foreign.add(streamXid);
            else skipping = true;
          }
          break;
        case 'message':
          // A repair rides in a source transaction of its own; in a streamed one it is left to verify's re-check.
          if (m.prefix === REPAIR_PREFIX && m.transactional && !skipping && streamXid === undefined) await applyRepair(m.content);
          break;
        case 'stream-start':
          // A streamed block stages on the primary session: no batch may be open or committing
          // there meanwhile, or its failure would leave the block's COPY in an aborted
          // transaction (and the block's COPY in the batch's). The finished transactions go first.
          if (!inTransaction) await settleAll();
          streamXid = m.xid;
          await streamed.start(m.xid, m.first);
          break;
        case 'stream-stop':
          if (streamXid !== undefined) await streamed.flush(streamXid);
          streamXid = undefined;
          break;
        case 'stream-abort':
          if (m.subXid === m.xid) {
            foreign.delete(m.xid);
            streamedCounts.delete(m.xid);
            pendingPauses.delete(m.xid);
            for (const r of allRoutes()) r.brokenIn?.delete(m.xid);
          }
          await streamed.abort(m.xid, m.subXid);
          break;
        case 'stream-commit': {
          // Applied before the last checkpoint: the server may send it again after a restart.
          if (m.commitLsn < applied || foreign.has(m.xid)) {
            foreign.delete(m.xid);
            streamedCounts.delete(m.xid);
            pendingPauses.delete(m.xid);
            for (const r of allRoutes()) r.brokenIn?.delete(m.xid);
            await streamed.discard(m.xid);
            break;
          }
          finalLsn = m.commitLsn;
          txCommitMs = Number(m.commitTime / 1000n) + PG_EPOCH_MS;
          // Everything before it is committed (so nothing is held open while it waits below), and
          // its staging lives in the primary session, where it is applied.
          await toPrimary();
          for (const { route: r, reason } of pendingPauses.get(m.xid) ?? []) {
            await pause(r, reason);
            logger.error({ table: r.resolved.table.name, reason }, 'table paused: the source schema no longer fits the mapping');
          }
          pendingPauses.delete(m.xid);
          for (const r of allRoutes()) r.brokenIn?.delete(m.xid);
          // A table still being copied: a streamed transaction is not held, it waits for the copy
          // (its held changes are replayed first).
          const keys = [...streamed.tables(m.xid)];
          const copying = () => keys.map(routeByKey).filter((r) => r.state !== 'streaming' && r.state !== 'paused');
          if (copying().length > 0) {
            logger.info({ tables: copying().map((r) => r.resolved.table.name) }, 'a streamed transaction waits for the copy of tables it changed');
            for (;;) {
              await refreshHeld(true);
              if (copying().length === 0) break;
              if (options.signal?.aborted) throw new SyncctlError('APPLY_FAILED', 'stopped while waiting for a copy');
              await sleep(500, options.signal);
            }
          }
          staged += streamed.changes(m.xid);
          noteRead(txCommitMs);
          for (const [table, c] of streamedCounts.get(m.xid) ?? []) {
            const r = routeByKey(table);
            if (r.state === 'paused' || m.commitLsn < r.snapshotLsn) continue;
            const into = counts.get(table);
            if (into === undefined) counts.set(table, c);
            else for (const op of ['insert', 'update', 'delete', 'truncate'] as const) into[op] += c[op];
          }
          streamedCounts.delete(m.xid);
          await writer.begin();
          writer.setContext(context());
          // Transactions that committed earlier and are staged in the batch come first.
          await writer.applyStaged(context());
          // A table paused meanwhile drops its changes; one whose copy began after this commit has them already.
          const refused = await streamed.apply(m.xid, writer, (key) => {
            const r = routeByKey(key);
            if (r.state === 'paused') dropPaused(r);
            return r.state !== 'paused' && m.commitLsn >= r.snapshotLsn;
          }, context());
          await pauseRefused(refused);
          transactions++;
          lastCommit = { lsn: m.endLsn, time: txCommitMs };
          batchStarted ??= Date.now();
          await commit();
          break;
        }
        default:
          break;
      }
    };
    // The stream, message by message, in a function of its own: V8 optimizes the whole function
    // a hot loop runs in, and again after each deoptimization (a path first taken after the last
    // compile is one). Apart from runSession's setup and closures, and with keepalives and the
    // rarer messages in functions of their own, what it compiles is the path every change takes,
    // on a helper thread that shares the cores with the walsender and the target.
    const consume = async (stream: ReplicationStream): Promise<void> => {
      for (;;) {
        const frame = stream.read();
        if (frame === null) {
          if (await stream.readable()) continue;
          break;
        }
        const { message, walEnd } = frame;
        if (message === undefined) {
          await onKeepalive(stream, walEnd);
          if (options.signal?.aborted && !inTransaction) break;
          continue;
        }
        const m = decoder.decode(message);
        switch (m.tag) {
          case 'begin':
            finalLsn = m.finalLsn;
            commitMs = Number(m.commitTime / 1000n) + PG_EPOCH_MS;
            txCommitMs = commitMs;
            // Applied before the last checkpoint: the server may send it again after a restart.
            skipping = m.finalLsn < applied;
            inTransaction = true;
            if (!skipping) {
              if (!writer.open) await writer.begin({ lazy: true });
              writer.setContext(context());
              noteRead(commitMs);
            }
            break;
          case 'insert':
          case 'update':
          case 'delete': {
            const xid = streamXid;
            if (xid !== undefined && foreign.has(xid)) break;
            // The usual case without a promise: streaming tables, in a transaction not skipped.
            const known = byRelation.get(m.relationId);
            const rs = known !== undefined && (xid === undefined ? !skipping && streamingNow(known) : known.every((r) => notPaused(r) && !r.brokenIn?.has(xid))) ? known
              : xid === undefined ? await route(m.relationId) : await streamedRoute(m.relationId);
            if (rs.length === 0) break;
            const stage = (r: Route, op: StageOp, unchanged: readonly number[] | null, values: readonly (Buffer | null)[]) => {
              // A table still being copied: its changes are held until the copy is done.
              if (xid === undefined && r.state !== 'streaming') {
                return held.hold(r.resolved.table.name, finalLsn, { op, unchanged, columns: r.relation!.columns.map((c) => c.name), values });
              }
              const fromUpdate = m.tag === 'update';
              if (op !== 'K') {
                if (xid === undefined) tally(counts, r.resolved.table.name, m.tag);
                else {
                  let c = streamedCounts.get(xid);
                  if (c === undefined) streamedCounts.set(xid, c = new Map());
                  tally(c, r.resolved.table.name, m.tag);
                }
              }
              return xid === undefined ? writer.stage(r.id, op, unchanged, values, fromUpdate)
                : streamed.stage(xid, m.xid, streamedTable(r), op, unchanged, values, fromUpdate);
            };
            // One source change, several target tables: written parents first, deleted children first
            // (rs is in foreign-key order). stage() returns a promise only when it had to write:
            // awaiting undefined costs a tick per change.
            if (m.tag === 'insert') {
              // An INSERT can carry unchanged TOAST values: an UPDATE that a publication row filter
              // turned into an INSERT (the old row did not pass the filter, the new one does).
              const { values, unchanged } = fillUnchanged(m.newTuple, undefined);
              for (const r of rs) {
                const p = stage(r, 'I', unchanged, values);
                if (p) await p;
              }
            } else if (m.tag === 'update') {
              // The old row (key changed, or REPLICA IDENTITY FULL) first, as K: source order applies
              // the pair as one UPDATE of the row with the old key; the set form deletes the old key
              // unless the new row, staged right after it, writes the same key again.
              const { values, unchanged } = fillUnchanged(m.newTuple, m.oldKind === 'O' ? m.oldTuple : undefined);
              const old = m.oldTuple ? withoutUnchanged(m.oldTuple) : undefined;
              for (const r of rs) {
                if (old) {
                  const p = stage(r, 'K', null, old);
                  if (p) await p;
                }
                const p = stage(r, 'W', unchanged, values);
                if (p) await p;
              }
            } else {
              const old = withoutUnchanged(m.oldTuple);
              for (let i = rs.length - 1; i >= 0; i--) {
                const p = stage(rs[i]!, 'D', null, old);
                if (p) await p;
              }
            }
            if (xid === undefined) staged++;
            break;
          }
          case 'commit':
            inTransaction = false;
            if (skipping) break;
            transactions++;
            lastCommit = { lsn: m.endLsn, time: txCommitMs };
            // Group small transactions while more are already waiting; commit when caught up.
            batchStarted ??= Date.now();
            if (staged >= batchRows || (committing === 0 && staged >= IDLE_BATCH_ROWS) || Date.now() - batchStarted >= window() ||
              !stream.hasBuffered() || options.signal?.aborted) await commit();
            break;
          default:
            await onRare(m);
            break;
        }
        if (options.signal?.aborted && !inTransaction) break;
      }
    };
    await consume(stream);
    // The stream ended mid-transaction: drop everything uncommitted (the server sends it again
    // from the confirmed position). Otherwise keep what is complete.
    if (inTransaction) {
      held.discard();
      await writer.rollback();
    } else {
      await commit();
    }
    await drain();
    // Leave with everything committed also confirmed: the WAL writer flushes within a moment.
    for (let i = 0; i < 50 && unflushed.length > 0; i++) {
      await confirmDurable();
      if (unflushed.length > 0) await sleep(20);
    }
    // An idle slot is confirmed past the last commit (keepalives over WAL with nothing for this
    // sync): record that position as the checkpoint too, so that after a stop they are equal.
    if (!inTransaction && unflushed.length === 0 && stream.confirmedLsn > applied) {
      await target.query(`UPDATE syncctl.checkpoints SET commit_lsn = $2::pg_lsn, updated_at = now()
        WHERE sync_name = $1 AND commit_lsn < $2::pg_lsn AND ($3::bigint IS NULL OR leader_epoch = $3::bigint)`,
        [sync.name, formatLsn(stream.confirmedLsn), options.leaderEpoch ?? null]);
    }
  } finally {
    if (stream !== undefined) options.events?.emit('streaming', false);
    stopFlushTimer();
    options.signal?.removeEventListener('abort', onAbort);
    // Opened while the plan was checked, and not taken: the plan failed.
    if (stream === undefined) await opening?.then((s) => s.close(), () => {});
    await stream?.close();
    await target.close();
    await second.close();
    await source.close();
  }
}

/**
 * Where the changes being applied come from, for conflicts parked while applying them: set for
 * every source transaction, formatted only when a conflict reads it.
 */
class SourceContext {
  private readonly finalLsn: Lsn;
  private readonly commitMs: number | null;
  /** Made on first use, kept: a batch's marks are read once per statement that carries them. */
  private lsnText: string | undefined;
  private commitText: string | null | undefined;

  constructor(finalLsn: Lsn, commitMs: number | null) {
    this.finalLsn = finalLsn;
    this.commitMs = commitMs;
  }

  get lsn(): string {
    return this.lsnText ??= formatLsn(this.finalLsn);
  }

  get commitTime(): string | null {
    if (this.commitText === undefined) this.commitText = this.commitMs === null ? null : new Date(this.commitMs).toISOString();
    return this.commitText;
  }
}

/**
 * The highest pgoutput protocol the source speaks, with streaming of in-progress transactions
 * where it exists: 2 (PostgreSQL 14: streaming), 3 (15: two-phase, not requested), 4 (16:
 * parallel streaming; requested as plain 'on', the stream abort then carries no position).
 */
export function pgoutputProtocol(serverVersionNum: number): { version: number; streaming: boolean } {
  if (serverVersionNum >= 160000) return { version: 4, streaming: true };
  if (serverVersionNum >= 150000) return { version: 3, streaming: true };
  if (serverVersionNum >= 140000) return { version: 2, streaming: true };
  return { version: 1, streaming: false };
}

async function buildRoutes(target: Connection, sync: LoadedSync, tables: readonly ResolvedTable[]): Promise<Route[]> {
  const order = await foreignKeyOrder(target, tables.map((t) => t.table.target));
  const { rows } = await target.query<{ table_name: string; state: string; snapshot_lsn: string | null }>(
    'SELECT table_name, state, snapshot_lsn::text AS snapshot_lsn FROM syncctl.sync_tables WHERE sync_name = $1', [sync.name]);
  const states = new Map(rows.map((r) => [r.table_name, r]));
  return tables.map((resolved) => {
    const s = states.get(resolved.table.name);
    return {
      resolved, order: order.get(tableKey(resolved.table.target)) ?? 0, id: '', relation: undefined,
      snapshotLsn: s?.snapshot_lsn ? parseLsn(s.snapshot_lsn) : 0n, state: s?.state ?? 'pending',
    };
  });
}

/**
 * Why a Relation message no longer fits the mapping: a column the mapping reads was dropped, or
 * changed type. An added column the mapping does not read is fine (it is staged and ignored).
 */
function brokenMapping(resolved: ResolvedTable, relation: RelationMessage): string | undefined {
  // The worker-side row filter reads source columns too (a publication filter is the source's own business).
  const read = [...new Set([...resolved.columnsRead.values()].flat().concat(resolved.decision.filterAt === 'worker' ? resolved.whereColumnsRead : []))];
  const dropped = read.filter((c) => !relation.columns.some((col) => col.name === c));
  if (dropped.length > 0) return `source column(s) ${dropped.join(', ')} read by the mapping or row filter no longer exist`;
  const retyped = read.filter((c) => {
    const now = relation.columns.find((col) => col.name === c)!;
    const before = resolved.sourceFacts.columns.find((col) => col.name === c);
    return before !== undefined && before.typeOid !== now.typeOid;
  });
  if (retyped.length > 0) return `source column(s) ${retyped.join(', ')} read by the mapping or row filter changed type`;
  return undefined;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Opens every connection at once; when one fails, closes those that opened and throws the first
 * failure in list order (the source's before the target's, as when they open one by one).
 */
async function openAll<const T extends readonly (() => Promise<Connection>)[]>(openers: T): Promise<{ -readonly [K in keyof T]: Connection }> {
  const settled = await Promise.allSettled(openers.map((open) => open()));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed === undefined) return settled.map((s) => (s as PromiseFulfilledResult<Connection>).value) as { -readonly [K in keyof T]: Connection };
  await Promise.all(settled.map((s) => (s.status === 'fulfilled' ? s.value.close() : undefined)));
  throw failed.reason;
}
