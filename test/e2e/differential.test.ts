/**
 * The differential suite for the apply path: seeded random source workloads (test/support/workload.ts)
 * whose oracle is the source itself. For each seed and each case, a fresh database pair is
 * provisioned, the workload runs while the worker streams (killed with SIGKILL and restarted at
 * seeded moments, or in this process without kills), and then the target must equal the mapped
 * source, with no row parked in syncctl.sync_conflicts.
 *
 *   SYNCCTL_DIFF_SEEDS=1,2,3   seeds to run (default 1,2,3)
 *   SYNCCTL_DIFF_TXNS=200      source transactions per case (default 200)
 *   SYNCCTL_TEST_LOG_LEVEL     the in-process worker's log level (default info; its warnings are quoted on failure)
 *
 * Every failure names its seed and the command that runs that case alone. The SQL is the same
 * for a seed on every run; where the worker is when it is killed is not (it is a race with the
 * workload), so a failure that depends on the kill's timing may need a few reruns.
 */
import fc from 'fast-check';
import { Writable } from 'node:stream';
import type pg from 'pg';
import { afterAll, expect, test } from 'vitest';
import { createLogger } from '../../src/observe/logger.ts';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { syncSpec, useSpecDir } from '../support/cli.ts';
import {
  apply, expectTargetMatches, loadSync, sleep, spawnWorker, startWorker, type ChildWorker, type InProcessWorker,
} from '../support/stream.ts';
import { createTestDatabases, type TestDatabases } from '../support/test-databases.ts';
import { Rng, VARIANTS, Workload, type Variant } from '../support/workload.ts';

const SEEDS = (process.env['SYNCCTL_DIFF_SEEDS'] ?? '1,2,3').split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
  const seed = Number(s);
  if (!Number.isSafeInteger(seed) || seed < 0 || seed > 0xffffffff) throw new Error(`SYNCCTL_DIFF_SEEDS: not a seed (0 to 2^32-1): ${s}`);
  return seed;
});
const TXNS = Number(process.env['SYNCCTL_DIFF_TXNS'] ?? 200);
/** How long the worker gets to catch up once the workload is done (it may have 36k rows to stage). */
const CATCH_UP_MS = 120_000;

type Mode = 'worker killed' | 'in-process worker';
const CASES: readonly (readonly [Variant, Mode])[] = [
  ['identity', 'worker killed'], ['mapped', 'worker killed'], ['identity', 'in-process worker'], ['mapped', 'in-process worker'],
];

const specs = useSpecDir();
const children = new Set<ChildWorker>();

afterAll(async () => {
  for (const child of children) if (alive(child)) { child.child.kill('SIGKILL'); await child.exited; }
});

const alive = (w: ChildWorker) => w.child.exitCode === null && w.child.signalCode === null;
const caseName = (seed: number, variant: Variant, mode: Mode) => `seed ${seed}: ${variant} spec, ${mode}`;

function rerun(seed: number, variant: Variant, mode: Mode): string {
  const env = [`SYNCCTL_DIFF_SEEDS=${seed}`];
  if (process.env['SYNCCTL_DIFF_TXNS']) env.push(`SYNCCTL_DIFF_TXNS=${TXNS}`);
  if (process.env['PG_MAJOR']) env.push(`PG_MAJOR=${process.env['PG_MAJOR']}`);
  return `${env.join(' ')} npx vitest run test/e2e/differential.test.ts -t '${caseName(seed, variant, mode)}$'`;
}

test('the generator: one seed gives one SQL sequence, and every op and both bulk transactions occur', () => {
  const ops = new Workload(0, 0).opNames();
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), (seed) => {
    const draw = () => {
      const w = new Workload(seed, 600);
      const sql = [w.setupSql()];
      for (let i = 0; i < w.transactions; i++) sql.push(w.nextTransaction());
      return { sql, w };
    };
    const [a, b] = [draw(), draw()];
    expect(b.sql).toEqual(a.sql);
    expect(ops.filter((op) => !a.w.counts.has(op)), `seed ${seed}: ops never generated`).toEqual([]);
    expect(a.w.bulkAt).toHaveLength(2);
  }), { numRuns: 3, seed: SEEDS[0] ?? 0 });
});

interface Kill {
  readonly at: number;
  /** SIGKILL `delayMs` after transaction `at` is sent (a large one: the worker is mid-stream), not before it. */
  readonly during: boolean;
  readonly delayMs: number;
  /** Restarted before transaction at + downFor. */
  readonly downFor: number;
}

/** One or two SIGKILLs at seeded transactions; more than half of the time, one of them while a large transaction runs. */
function killSchedule(seed: number, workload: Workload): Kill[] {
  const rng = new Rng(seed ^ 0x5eed);
  const kills: Kill[] = Array.from({ length: rng.int(1, 2) }, () => ({ at: rng.int(1, Math.max(1, TXNS - 2)), during: false, delayMs: rng.int(0, 200), downFor: rng.int(0, 15) }));
  if (workload.bulkAt.length > 0 && rng.chance(0.6)) kills[0] = { at: rng.pick(workload.bulkAt), during: true, delayMs: rng.int(100, 1_500), downFor: rng.int(1, 10) };
  return kills.sort((a, b) => a.at - b.at);
}

interface WorkloadRun {
  readonly committed: number;
  /** Transactions the source rejected: a model error of the generator; the oracle (the source) is unaffected. */
  readonly rejected: readonly { index: number; error: string }[];
}

/**
 * The workload's transactions one after the other; `before(i)` runs before transaction i. One the
 * source rejects with an integrity or serialization error is rolled back and forgotten by the
 * generator; any other error (a syntax error, a lost connection) ends the run.
 */
async function runWorkload(client: pg.Client, workload: Workload, before: (index: number) => Promise<void>): Promise<WorkloadRun> {
  let committed = 0;
  const rejected: { index: number; error: string }[] = [];
  for (let i = 0; i < workload.transactions; i++) {
    await before(i);
    const sql = workload.nextTransaction();
    try {
      await client.query(sql);
      committed++;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      if (!/^(23|40)/.test(String((error as { code?: unknown }).code ?? ''))) throw new Error(`transaction #${i}: ${(error as Error).message}\n${sql}`);
      workload.rejected();
      rejected.push({ index: i, error: (error as Error).message });
    }
  }
  return { committed, rejected };
}

interface Outcome {
  readonly sync: LoadedSync;
  readonly run: WorkloadRun | undefined;
  readonly events: string[];
  readonly workerProblem: () => string | undefined;
  /** Each worker's log (info level): JSON lines, and for a child its last words. */
  readonly logs: readonly { readonly name: string; readonly text: () => string }[];
}

/** A log destination that keeps the last 64 kB. */
function logTail(): { stream: Writable; text: () => string } {
  let text = '';
  const stream = new Writable({ write(chunk: Buffer, _encoding, done) { text = (text + chunk.toString()).slice(-65_536); done(); } });
  return { stream, text: () => text };
}

async function differential(seed: number, variant: Variant, mode: Mode): Promise<void> {
  const started = Date.now();
  const dbs = await createTestDatabases(`diff_${variant}_${seed}`);
  const workload = new Workload(seed, TXNS);
  const events: string[] = [];
  let child: ChildWorker | undefined;
  let inProcess: InProcessWorker | undefined;
  const logs: { name: string; text: () => string }[] = [];
  let run: WorkloadRun | undefined;
  try {
    const env = { SRC_URL: dbs.sourceUrl, DST_URL: dbs.targetUrl };
    await dbs.source.query(workload.setupSql());
    await dbs.target.query(VARIANTS[variant].targetDdl);
    const dir = specs.write({ 'diff.sync.ts': syncSpec({ name: `diff_${variant}_${seed}`, tables: VARIANTS[variant].tables }) });
    const sync = await loadSync(dir, env);
    await apply(sync);

    const spawn = (when: string) => {
      // Odd seeds: every batch by COPY, as a large batch is (see SYNCCTL_APPLY=copy in batch-writer.ts).
      const worker = spawnWorker(dir, { ...env, SYNCCTL_LOG_LEVEL: 'info', ...(seed % 2 === 1 ? { SYNCCTL_APPLY: 'copy' } : {}) });
      children.add(worker);
      logs.push({ name: `worker ${logs.length + 1} (pid ${worker.pid})`, text: worker.stderr });
      child = worker;
      if (when) events.push(`restarted ${when}`);
    };
    const kill = async (what: string) => {
      if (!child || !alive(child)) { events.push(`${what}: the worker had exited on its own (${child?.child.exitCode})`); return; }
      child.child.kill('SIGKILL');
      await child.exited;
      events.push(what);
    };
    const kills = mode === 'worker killed' ? killSchedule(seed, workload) : [];
    let [restartAt, killing] = [-1, Promise.resolve()];
    if (mode === 'worker killed') spawn('');
    else {
      const tail = logTail();
      inProcess = startWorker(sync, { logger: createLogger({ level: process.env['SYNCCTL_TEST_LOG_LEVEL'] ?? 'info', pretty: false, destination: tail.stream }) });
      logs.push({ name: 'in-process worker', text: tail.text });
    }
    const phases = [Date.now()];
    run = await runWorkload(dbs.source, workload, async (i) => {
      if (i === restartAt) { await killing; spawn(`before #${i}`); restartAt = -1; }
      for (const k of kills.filter((k) => k.at === i)) {
        if (restartAt !== -1) { events.push(`no SIGKILL before #${i}: the worker is down`); continue; }
        restartAt = i + k.downFor;
        if (k.during) killing = sleep(k.delayMs).then(() => kill(`SIGKILL ${k.delayMs} ms into #${i}`));
        else { await sleep(k.delayMs); await kill(`SIGKILL before #${i}`); }
        if (restartAt === i) { spawn(`before #${i}`); restartAt = -1; }
      }
    });
    await killing;
    if (restartAt !== -1) spawn('after the workload');

    const workerProblem = (): string | undefined => {
      if (child && !alive(child)) return `the worker exited on its own (code ${child.child.exitCode}); its log:\n${child.stderr().slice(-4000)}`;
      if (inProcess?.finished()) return `the in-process worker stopped: ${String(inProcess.error() ?? 'returned')}`;
      return undefined;
    };
    phases.push(Date.now());
    await verify(dbs, seed, variant, mode, workload, { sync, run, events, workerProblem, logs });
    phases.push(Date.now());
    const s = (from: number, to: number) => `${((to - from) / 1000).toFixed(1)} s`;
    const stats = await dbs.source.query(`SELECT stream_txns, stream_bytes FROM pg_stat_replication_slots WHERE slot_name = $1`, [`syncctl_${sync.name}`]);
    console.log(`${caseName(seed, variant, mode)}: equal, nothing parked; ${summary(workload, run, events)}; ` +
      `slot stats: ${JSON.stringify(stats.rows[0] ?? {})}; ${s(started, Date.now())} (provisioning ${s(started, phases[0]!)}, ` +
      `workload ${s(phases[0]!, phases[1]!)}, catching up and comparing ${s(phases[1]!, phases[2]!)})`);
  } catch (error) {
    if ((error as Error).message.startsWith('DIFFERENTIAL')) throw error;
    throw new Error(`DIFFERENTIAL ${caseName(seed, variant, mode)} failed before the comparison: ${(error as Error).message}\n` +
      `  rerun: ${rerun(seed, variant, mode)}\n  ${summary(workload, run, events)}${child ? `\n  worker log:\n${child.stderr().slice(-4000)}` : ''}`, { cause: error });
  } finally {
    if (child && alive(child)) { child.child.kill('SIGKILL'); await child.exited; }
    await inProcess?.stop().catch(() => {});
    await dbs.drop();
  }
}

function summary(workload: Workload, run: WorkloadRun | undefined, events: readonly string[]): string {
  const counts = (name: string) => workload.counts.get(name) ?? 0;
  const bulk = ['bulk insert', 'bulk update', 'bulk delete', 'bulk rolled back'].map((n) => `${n} ${counts(n)}`).join(', ');
  const rejected = run && run.rejected.length > 0
    ? `; the source rejected ${run.rejected.length}: ${run.rejected.slice(0, 3).map((r) => `#${r.index} ${r.error}`).join('; ')}` : '';
  return `${workload.transactions} transactions (${run?.committed ?? '?'} ran, ${counts('rolled back')} of them ROLLBACK, ` +
    `${counts('savepoint rolled back')} savepoints rolled back), large ones at #${workload.bulkAt.join(', #')} (${bulk}); ` +
    `worker: ${events.join(', ') || 'not killed'}${rejected}`;
}

/**
 * Waits until the target equals the mapped source, twice a second apart, then reads sync_conflicts
 * and throws one error with everything. Stops waiting early once waiting cannot help: the worker
 * stopped, or it confirmed the slot past the workload's last commit (it has applied all it will),
 * or its checkpoint has not moved for 30 s.
 */
async function verify(dbs: TestDatabases, seed: number, variant: Variant, mode: Mode, workload: Workload, o: Outcome): Promise<void> {
  const started = Date.now();
  const { rows: [end] } = await dbs.source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  const idle = async () => (await dbs.source.query<{ done: boolean }>(`SELECT confirmed_flush_lsn >= $1::pg_lsn AS done FROM pg_replication_slots WHERE slot_name = $2`,
    [end!.lsn, `syncctl_${o.sync.name}`])).rows[0]?.done === true;
  const checkpoint = async () => (await dbs.target.query<{ lsn: string }>('SELECT commit_lsn::text AS lsn FROM syncctl.checkpoints')).rows.map((r) => r.lsn).join();
  let [mismatch, stopped, idleMisses] = [undefined as string | undefined, '', 0];
  let progress = { lsn: await checkpoint(), at: Date.now() };
  for (let matched = 0; matched < 2;) {
    const gone = o.workerProblem() !== undefined;
    const done = !gone && await idle();
    try {
      // Short rounds: a worker that is gone or done is noticed within seconds, not after the whole wait.
      await expectTargetMatches(dbs, o.sync.tables, { timeoutMs: gone || done ? 0 : 5_000 });
      [mismatch, matched] = [undefined, matched + 1];
      if (matched < 2) await sleep(1_000);
    } catch (error) {
      [mismatch, matched] = [(error as Error).message, 0];
      const lsn = await checkpoint();
      if (lsn !== progress.lsn) progress = { lsn, at: Date.now() };
      if (gone) stopped = 'the worker is gone';
      else if (done && ++idleMisses >= 2) stopped = 'the worker confirmed the slot past the end of the workload';
      else if (Date.now() - progress.at > 30_000) stopped = `the checkpoint stayed at ${lsn} for 30 s`;
      else if (Date.now() - started > CATCH_UP_MS) stopped = `${CATCH_UP_MS / 1000} s passed`;
      if (stopped) break;
      if (done) await sleep(1_000);
    }
  }
  const { rows: parked } = await dbs.target.query<{ table_name: string; kind: string; key: string; outcome: string; reason: string | null }>(
    `SELECT table_name, kind, key::text AS key, outcome, reason FROM syncctl.sync_conflicts ORDER BY id`);
  const worker = o.workerProblem();
  if (mismatch === undefined && parked.length === 0 && worker === undefined) return;
  const lines = [
    `DIFFERENTIAL ${caseName(seed, variant, mode)}: ` +
      [mismatch !== undefined ? 'the target does not equal the mapped source' : '', parked.length > 0 ? `${parked.length} row(s) parked in syncctl.sync_conflicts` : '',
        worker !== undefined ? 'the worker stopped' : ''].filter(Boolean).join('; '),
    `rerun: ${rerun(seed, variant, mode)}`,
    summary(workload, o.run, o.events),
  ];
  if (mismatch !== undefined) lines.push(`(stopped waiting after ${Math.round((Date.now() - started) / 1000)} s: ${stopped})`, mismatch);
  if (parked.length > 0) {
    const reasons = new Map<string, number>();
    for (const p of parked) reasons.set(`${p.table_name} ${p.kind} (${p.outcome}): ${p.reason ?? ''}`, (reasons.get(`${p.table_name} ${p.kind} (${p.outcome}): ${p.reason ?? ''}`) ?? 0) + 1);
    lines.push(`parked rows by reason:`, ...[...reasons].map(([reason, n]) => `  ${n} x ${reason}`),
      `parked rows (the first 20 of ${parked.length}):`, ...parked.slice(0, 20).map((p) => `  ${p.table_name} ${p.kind} ${p.key} ${p.outcome}: ${p.reason ?? ''}`));
  }
  if (worker !== undefined) lines.push(worker);
  for (const log of o.logs) {
    // Warnings and errors (pino levels 40-60): a retried batch, a paused table, the cause of a stop.
    const loud = log.text().split('\n').filter((line) => /"level":[456]0/.test(line)).slice(-10);
    if (loud.length > 0) lines.push(`${log.name}, its last warnings and errors:`, ...loud.map((line) => `  ${line.length > 600 ? `${line.slice(0, 600)}…` : line}`));
  }
  throw new Error(lines.join('\n  '));
}

for (const seed of SEEDS) {
  for (const [variant, mode] of CASES) {
    test(caseName(seed, variant, mode), () => differential(seed, variant, mode), CATCH_UP_MS + 180_000);
  }
}
