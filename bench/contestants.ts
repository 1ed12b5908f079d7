/**
 * The contestants behind one interface: native logical replication (publication + subscription),
 * twice: as in the reference (PG 15 defaults, streaming = off) and as Postgres 18 ships it
 * (streaming = parallel; on PG 15, which has no parallel apply, streaming = on), and syncctl
 * (apply = provisioning + initial copy; the worker as a child process).
 * Each one knows how to reach "streaming, caught up", pause and resume its apply side, report
 * its applied position on the target, and tear itself down leaving no slot behind.
 */
import { destroyAll, applyAll } from '../src/plan/reconcile.ts';
import type { LoadedSync } from '../src/spec/loaded-sync.ts';
import { now, sleep, type Db } from './db.ts';
import { PGBENCH_TABLES } from './specs.ts';
import { WorkerProcess } from './worker-process.ts';

export type ContestantName = 'native' | 'native-parallel' | 'syncctl';

export interface Contestant {
  /** Key of its figures in the results. */
  readonly name: ContestantName;
  /** How logs, CPU notes and the report name it. */
  readonly label: string;
  /** application_name of its walsender on the source. */
  readonly walsenderApp: string;
  /**
   * One row: server time (s), applied LSN (number), xact_start (s) of its apply transaction on
   * the target if one is open, else null.
   */
  readonly progressSql: string;
  /** Appliedness as (server time, LSN) only: what the lag sampler reads. */
  readonly appliedSql: string;
  /** Provision and copy (timed by the caller), ending with the apply side streaming. */
  setup(): Promise<void>;
  /** Stop applying (the slot keeps the WAL). */
  pause(): Promise<void>;
  /** Start applying again; returns the wall-clock start time. */
  resume(): Promise<number>;
  teardown(): Promise<void>;
}

export interface ContestantContext {
  readonly src: Db;
  readonly tgt: Db;
  readonly major: number;
  readonly sourceConnInfo: string;
  /** streaming = … of the reference native subscription (NATIVE_STREAMING, default off). */
  readonly nativeStreaming: string;
  readonly say: (line: string) => void;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 60_000, intervalMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export const NATIVE_PUB = 'bench_native';
/** Every logical replication worker on the target (apply, table sync, parallel apply; not the launcher). */
export const NATIVE_WORKERS = `backend_type LIKE 'logical replication %worker'`;
/** Parallel apply workers (PG 16+): one holds the transaction of a streamed remote transaction. */
const PARALLEL_WORKERS = `backend_type = 'logical replication parallel worker'`;

/** How the second native contestant streams: parallel where it exists (PG 16+), else on. */
export function nativeBestStreaming(major: number): 'parallel' | 'on' {
  return major >= 16 ? 'parallel' : 'on';
}

/** PG 15's launcher starts workers at most once per wal_retrieve_retry_interval (5 s), across subscriptions. */
let lastWorkerStart = 0;

export class NativeContestant implements Contestant {
  readonly name: 'native' | 'native-parallel';
  readonly label: string;
  /** streaming = … of its subscription. */
  readonly streaming: string;
  /** The subscription's name (= its slot's and its walsender's application_name). */
  readonly subscription: string;
  readonly walsenderApp: string;
  readonly appliedSql: string;
  readonly progressSql: string;
  /** One row: xact_start (s) of a parallel apply worker's open transaction (a streamed remote transaction being applied), else null. */
  readonly parallelApplySql = `SELECT (SELECT extract(epoch from min(xact_start))::float8 FROM pg_stat_activity
    WHERE ${PARALLEL_WORKERS} AND xact_start IS NOT NULL)`;
  private readonly ctx: ContestantContext;

  /**
   * `best`: the subscription as Postgres 18 ships it, streaming = parallel (PG 15: on); otherwise
   * the reference's, streaming = ctx.nativeStreaming. Each has its own subscription name, so that
   * its walsender and slot are told apart in the CPU notes.
   */
  constructor(ctx: ContestantContext, best = false) {
    this.ctx = ctx;
    this.name = best ? 'native-parallel' : 'native';
    this.streaming = best ? nativeBestStreaming(ctx.major) : ctx.nativeStreaming;
    this.label = best ? `native, streaming = ${this.streaming}${ctx.major < 16 ? ' (PG 15 has no parallel)' : ''}` : 'native';
    this.subscription = best ? 'bench_sub_parallel' : 'bench_sub';
    this.walsenderApp = this.subscription;
    const originLsn = `coalesce((SELECT remote_lsn - '0/0' FROM pg_replication_origin_status
       WHERE external_id = (SELECT 'pg_' || oid FROM pg_subscription WHERE subname = '${this.subscription}')), 0)::float8`;
    this.appliedSql = `SELECT extract(epoch from clock_timestamp())::float8, ${originLsn}`;
    this.progressSql = `SELECT extract(epoch from clock_timestamp())::float8, ${originLsn},
      (SELECT extract(epoch from min(xact_start))::float8 FROM pg_stat_activity WHERE ${NATIVE_WORKERS} AND xact_start IS NOT NULL)`;
  }

  private async launcherGuard(): Promise<void> {
    if (this.ctx.major >= 16) return; // 16+: per-subscription start times, forgotten on a clean exit
    const wait = lastWorkerStart + 5.5 - now();
    if (wait > 0) await sleep(wait * 1000);
  }

  async setup(): Promise<void> {
    await this.launcherGuard();
    lastWorkerStart = now();
    const { tgt } = this.ctx;
    await tgt.exec(`CREATE SUBSCRIPTION ${this.subscription} CONNECTION '${this.ctx.sourceConnInfo}' PUBLICATION ${NATIVE_PUB}
      WITH (copy_data = true, streaming = ${this.streaming}, binary = false, synchronous_commit = off)`);
    await waitFor(`${this.label}: initial sync (all tables ready)`, async () => {
      const r = await tgt.rows<{ n: string; pending: string }>(
        `SELECT count(*) AS n, count(*) FILTER (WHERE srsubstate <> 'r') AS pending FROM pg_subscription_rel
          WHERE srsubid = (SELECT oid FROM pg_subscription WHERE subname = '${this.subscription}')`);
      return Number(r[0]!.n) === PGBENCH_TABLES.length && Number(r[0]!.pending) === 0;
    }, 1_800_000);
  }

  async pause(): Promise<void> {
    const { src, tgt } = this.ctx;
    await tgt.exec(`ALTER SUBSCRIPTION ${this.subscription} DISABLE`);
    await waitFor(`${this.label}: apply workers and walsender to stop`, async () =>
      (await tgt.number(`SELECT count(*) FROM pg_stat_activity WHERE ${NATIVE_WORKERS}`)) === 0 &&
      (await src.number(`SELECT count(*) FROM pg_stat_replication WHERE application_name = '${this.subscription}'`)) === 0);
  }

  async resume(): Promise<number> {
    await this.launcherGuard();
    const t0 = now();
    lastWorkerStart = t0;
    await this.ctx.tgt.exec(`ALTER SUBSCRIPTION ${this.subscription} ENABLE`);
    return t0;
  }

  /**
   * Drops the subscription (and with it its slot on the source), then waits until none of its
   * workers is left on the target: a parallel apply worker exits after its leader, and must not
   * run into the next contestant's round.
   */
  async teardown(): Promise<void> {
    const { src, tgt } = this.ctx;
    await tgt.exec(`DROP SUBSCRIPTION IF EXISTS ${this.subscription}`);
    await waitFor(`${this.label}: logical replication workers and walsender to exit after DROP SUBSCRIPTION`, async () =>
      (await tgt.number(`SELECT count(*) FROM pg_stat_activity WHERE ${NATIVE_WORKERS}`)) === 0 &&
      (await src.number(`SELECT count(*) FROM pg_stat_replication WHERE application_name = '${this.subscription}'`)) === 0);
  }
}

export interface SyncctlContext extends ContestantContext {
  /** The sync(s) of its spec directory; the first names its slot and checkpoint. */
  readonly syncs: readonly LoadedSync[];
  /** What `syncctl run` is given. */
  readonly specDir: string;
  readonly workerEnv: Record<string, string>;
  readonly workerLog: () => string;
}

export class SyncctlContestant implements Contestant {
  readonly name = 'syncctl' as const;
  readonly label = 'syncctl';
  readonly walsenderApp: string;
  readonly appliedSql: string;
  readonly progressSql: string;
  worker: WorkerProcess | undefined;
  private readonly ctx: SyncctlContext;

  constructor(ctx: SyncctlContext) {
    this.ctx = ctx;
    const sync = ctx.syncs[0]!.name;
    this.walsenderApp = `syncctl syncctl_${sync}`;
    const applied = `coalesce((SELECT commit_lsn - '0/0' FROM syncctl.checkpoints WHERE sync_name = '${sync}'), 0)::float8`;
    this.appliedSql = `SELECT extract(epoch from clock_timestamp())::float8, ${applied}`;
    this.progressSql = `SELECT extract(epoch from clock_timestamp())::float8, ${applied},
      (SELECT extract(epoch from min(xact_start))::float8 FROM pg_stat_activity
        WHERE application_name = 'syncctl run' AND backend_type = 'client backend' AND xact_start IS NOT NULL)`;
  }

  /** The initial copy alone (timed by the caller); the worker starts in startWorker(). */
  async setup(): Promise<void> {
    await applyAll(this.ctx.syncs, { allowDestroy: true });
  }

  async startWorker(): Promise<WorkerProcess> {
    this.worker = WorkerProcess.start(this.ctx.specDir, this.ctx.workerEnv, this.ctx.workerLog());
    await this.worker.waitStreaming();
    return this.worker;
  }

  async pause(): Promise<void> {
    await this.worker?.stop();
    this.worker = undefined;
    await waitFor('syncctl walsender to stop', async () =>
      (await this.ctx.src.number(`SELECT count(*) FROM pg_stat_replication WHERE application_name = $1`, [this.walsenderApp])) === 0);
  }

  async resume(): Promise<number> {
    const t0 = now();
    this.worker = WorkerProcess.start(this.ctx.specDir, this.ctx.workerEnv, this.ctx.workerLog());
    return t0;
  }

  async teardown(): Promise<void> {
    await this.worker?.stop();
    this.worker = undefined;
    await destroyAll(this.ctx.syncs, { allowDestroy: true });
  }
}
