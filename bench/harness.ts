/**
 * What every scenario works with: the run's servers, connections, contestants and results
 * (Bench), and the steps scenarios share: a marker transaction and waiting for a contestant to
 * apply it, pgbench, the same starting state for every contestant, and (c)'s backlog, written
 * while the apply side is stopped and then drained.
 */
import { spawn } from 'node:child_process';
import type { LocalCluster } from '../src/embedded/local-cluster.ts';
import type { LoadedSync } from '../src/spec/loaded-sync.ts';
import { NATIVE_WORKERS, SyncctlContestant, type Contestant, type NativeContestant } from './contestants.ts';
import { CONFIG } from './config.ts';
import { formatCores, type CpuWindow } from './cpu.ts';
import { now, sleep, type Db } from './db.ts';
import { say } from './log.ts';
import type { Results } from './report.ts';
import type { Tools } from './tools.ts';
import { track } from './worker-process.ts';

export interface Bench {
  readonly tools: Tools;
  readonly source: LocalCluster;
  readonly target: LocalCluster;
  readonly src: Db;
  readonly tgt: Db;
  /** Extra source / target connections for the samplers. */
  readonly srcDense: Db;
  readonly srcReplay: Db;
  readonly tgtPoll: Db;
  readonly tgtPoll2: Db;
  readonly native: NativeContestant;
  /** Native with streaming = parallel (PG 15: on). */
  readonly nativeBest: NativeContestant;
  readonly syncctl: SyncctlContestant;
  /** syncctl on the conflicts spec of (g): last-write-wins on pgbench_accounts.updated_at. */
  readonly syncctlConflicts: SyncctlContestant;
  readonly identSyncs: readonly LoadedSync[];
  readonly mappedSyncs: readonly LoadedSync[];
  readonly results: Results;
  readonly cpuNotes: Map<string, string>;
  readonly waitNotes: Map<string, string[]>;
  /** CPU used outside this benchmark (other processes on the machine) per measured window: [cores, seconds]. */
  readonly outside: [number, number, number][];
  readonly warnings: string[];
  readonly notes: string[];
  rate: number | undefined;
  readonly cpu: () => CpuWindow;
}

export async function checkpointBoth(b: Bench): Promise<void> {
  await Promise.all([b.src.exec('CHECKPOINT'), b.tgt.exec('CHECKPOINT')]);
}

/** A tiny replicated transaction; returns the insert LSN read just before its COMMIT. */
export async function markerTxn(b: Bench): Promise<number> {
  await b.src.exec('BEGIN');
  try {
    await b.src.exec('UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1');
    const x = await b.src.number(`SELECT (pg_current_wal_insert_lsn() - '0/0')::float8`);
    await b.src.exec('COMMIT');
    return x;
  } catch (error) {
    await b.src.exec('ROLLBACK').catch(() => {});
    throw error;
  }
}

export interface Caught {
  /** Server time at the poll that saw the position past X. */
  readonly at: number;
  /** xact_start of the contestant's apply transaction seen last before that (≥ `since`), if any. */
  readonly applyStart: number | undefined;
}

export class CatchUpTimeout extends Error {
  readonly at: number;
  constructor(message: string, at: number) {
    super(message);
    this.at = at;
  }
}

/** Polls (every 10 ms, autocommit: no snapshot held) until the contestant's applied LSN is > x. */
export async function waitApplied(b: Bench, c: Contestant, x: number, opts: { since?: number; timeoutS?: number } = {}): Promise<Caught> {
  const deadline = Date.now() + (opts.timeoutS ?? 1800) * 1000;
  let applyStart: number | undefined;
  for (;;) {
    const r = await b.tgtPoll.client.query({ text: c.progressSql, rowMode: 'array' });
    const [t, lsn, xs] = r.rows[0] as [number, number, number | null];
    if (xs !== null && (opts.since === undefined || xs >= opts.since - 1)) applyStart = Number(xs);
    if (Number(lsn) > x) return { at: Number(t), applyStart };
    if (Date.now() > deadline) throw new CatchUpTimeout(`${c.label} did not catch up with ${x} in ${opts.timeoutS ?? 1800} s (at ${lsn})`, Number(lsn));
    if (c instanceof SyncctlContestant) c.worker?.assertAlive();
    await sleep(CONFIG.pollMs);
  }
}

export async function runPgbench(b: Bench, args: string[]): Promise<{ output: string; tps: number; ntx: number }> {
  const child = track(spawn(b.tools.pgbench, [...args, '-h', b.source.host, '-p', String(b.source.port), '-U', 'postgres', 'postgres'], {
    env: { ...process.env, PGPASSWORD: b.source.password }, stdio: ['ignore', 'pipe', 'pipe'],
  }));
  let output = '';
  child.stdout!.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { output += d.toString(); });
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  if (code !== 0) throw new Error(`pgbench ${args.join(' ')} failed (${code}):\n${output}`);
  const tps = Number(/^tps = ([\d.]+)/m.exec(output)?.[1] ?? Number.NaN);
  const ntx = Number(/number of transactions actually processed: (\d+)/.exec(output)?.[1] ?? Number.NaN);
  return { output, tps, ntx };
}

export async function sameData(b: Bench, what: string, who: string): Promise<void> {
  const q = `SELECT concat_ws(' ', (SELECT count(*) FROM pgbench_accounts), (SELECT sum(abalance) FROM pgbench_accounts),
    (SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(tbalance) FROM pgbench_tellers))`;
  const [s, t] = await Promise.all([b.src.value(q), b.tgt.value(q)]);
  if (s !== t) {
    const w = `${who} ${what}: target differs from source (count, sum(abalance), sum(bbalance), sum(tbalance)): source ${s}, target ${t}`;
    b.warnings.push(w);
    say(`WARNING ${w}`);
  }
}

export async function cpuNote(b: Bench, key: string, window: CpuWindow): Promise<string> {
  const r = await window.end();
  const text = `${formatCores(r.cores)} (over ${r.seconds.toFixed(1)} s; ${r.machine})`;
  b.cpuNotes.set(key, text);
  b.waitNotes.set(key, r.waits);
  b.outside.push([r.outside, r.seconds, r.steal]);
  say(`    cpu ${key}: ${text}`);
  for (const w of r.waits) say(`      waits ${w}`);
  return text;
}

/**
 * Same starting state for every contestant: empty target tables, packed source table, vacuumed
 * catalogs on both sides (autovacuum is off, so catalog churn of a previous round, e.g. temp
 * tables, would otherwise slow the next one), fresh checkpoints.
 */
export async function resetTarget(b: Bench): Promise<void> {
  await b.tgt.exec('TRUNCATE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history');
  await b.src.exec('TRUNCATE pgbench_history');
  await b.src.exec('VACUUM FULL pgbench_accounts');
  await b.src.exec('VACUUM');
  await b.tgt.exec('VACUUM FULL pgbench_accounts, pgbench_branches, pgbench_tellers');
  await b.tgt.exec('VACUUM');
  await checkpointBoth(b);
}

/** Catalog churn on the target (pg_class updates and dead rows): temp-table churn shows here. */
export async function catalogChurn(b: Bench, what: string): Promise<void> {
  const r = await b.tgt.value(`SELECT format('pg_class: %s updates, %s dead rows, %s live; pg_attribute %s dead; pg_type %s dead',
      c.n_tup_upd, c.n_dead_tup, c.n_live_tup, (SELECT n_dead_tup FROM pg_stat_sys_tables WHERE relname = 'pg_attribute'),
      (SELECT n_dead_tup FROM pg_stat_sys_tables WHERE relname = 'pg_type'))
    FROM pg_stat_sys_tables c WHERE c.relname = 'pg_class'`);
  say(`    target catalogs after ${what}: ${r}`);
}

/**
 * Before (c) stops the apply side: the slot's restart point must be past (b)'s 1M-row transaction.
 * It moves only when the walsender decodes a running-transactions record written after that
 * transaction and the contestant confirms past it; those records come every 15 s or at a
 * checkpoint, so without this, whether the restarted walsender decodes (b)'s 441 MB again before
 * the backlog (about 5 s of its CPU, spilled to disk) was down to timing: measured syncctl drains
 * of 28 k and 13-14 k tx/s in one run. A CHECKPOINT writes such a record; a marker applied after
 * it gets it confirmed.
 */
export async function settleSlot(b: Bench, c: Contestant): Promise<void> {
  const past = await markerTxn(b);
  await b.src.exec('CHECKPOINT');
  const deadline = now() + 30;
  for (;;) {
    await waitApplied(b, c, await markerTxn(b));
    const behind = await b.src.number(`SELECT count(*)::float8 FROM pg_replication_slots WHERE slot_type = 'logical' AND (restart_lsn - '0/0')::float8 < $1`, [past]).catch(() => NaN);
    if (behind === 0) return;
    if (now() > deadline) {
      say(`    c. ${c.label}: the slot's restart point did not pass (b) within 30 s (${behind} slot(s) behind); measuring anyway`);
      return;
    }
    await sleep(200);
  }
}


export async function noSlotsLeft(b: Bench): Promise<void> {
  const subs = await b.tgt.rows<{ subname: string }>('SELECT subname FROM pg_subscription');
  if (subs.length > 0) {
    const w = `subscriptions left on the target after teardown: ${subs.map((s) => s.subname).join(', ')} (dropped)`;
    b.warnings.push(w);
    say(`WARNING ${w}`);
    for (const s of subs) await b.tgt.exec(`DROP SUBSCRIPTION ${s.subname}`);
  }
  const workers = await b.tgt.rows<{ backend_type: string }>(`SELECT backend_type FROM pg_stat_activity WHERE ${NATIVE_WORKERS}`);
  if (workers.length > 0) {
    const w = `logical replication workers left on the target after teardown: ${workers.map((r) => r.backend_type).join(', ')}`;
    b.warnings.push(w);
    say(`WARNING ${w}`);
  }
  const slots = await b.src.rows<{ slot_name: string; active: boolean }>('SELECT slot_name, active FROM pg_replication_slots');
  if (slots.length > 0) {
    const w = `slots left on the source after teardown: ${slots.map((s) => s.slot_name).join(', ')} (dropped)`;
    b.warnings.push(w);
    say(`WARNING ${w}`);
    for (const s of slots) {
      if (!s.active) await b.src.exec('SELECT pg_drop_replication_slot($1)', [s.slot_name]);
    }
  }
}


/** A backlog written while the contestant's apply side was stopped. */
export interface Backlog {
  /** Source transactions pgbench committed. */
  readonly ntx: number;
  /** How fast pgbench wrote them. */
  readonly tps: number;
  /** The marker transaction after them: caught up = applied past this LSN. */
  readonly marker: number;
  /** Source WAL written, in MB. */
  readonly walMb: number;
}

/** Something that runs while pgbench writes a backlog; stop() waits for its last pass. */
export interface Meanwhile {
  stop(): Promise<void>;
}

/**
 * (c)'s backlog: the apply side stopped (the slot keeps the WAL), pgbench tpcb-like
 * -c 4 -j 2 -t N/4 on the source, a marker transaction after it. `meanwhile` starts with
 * pgbench and is stopped before the marker.
 */
export async function writeBacklog(b: Bench, c: Contestant, meanwhile?: () => Meanwhile): Promise<Backlog> {
  await c.pause();
  await b.src.exec('VACUUM pgbench_accounts, pgbench_branches, pgbench_tellers');
  await b.src.exec('TRUNCATE pgbench_history');
  await b.tgt.exec('VACUUM pgbench_accounts, pgbench_branches, pgbench_tellers');
  await checkpointBoth(b);
  const lsn0 = await b.src.number(`SELECT (pg_current_wal_insert_lsn() - '0/0')::float8`);
  const perClient = Math.ceil(CONFIG.backlogTx / CONFIG.clients);
  const running = meanwhile?.();
  let pg: { tps: number; ntx: number };
  try {
    pg = await runPgbench(b, ['-n', '-c', String(CONFIG.clients), '-j', String(CONFIG.threads), '-t', String(perClient)]);
  } finally {
    await running?.stop();
  }
  const marker = await markerTxn(b);
  return { ntx: pg.ntx, tps: pg.tps, marker, walMb: (marker - lsn0) / 1048576 };
}

export interface Drain {
  /** From resuming the apply side (for syncctl: spawning the worker) to the marker applied. */
  readonly seconds: number;
  /** syncctl: from spawning the worker to its "streaming" log line. */
  readonly startup: number | undefined;
}

/** Checkpoints both sides, resumes the apply side and times it until the backlog's marker is applied. */
export async function drainBacklog(b: Bench, c: Contestant, backlog: Backlog, cpuKey: string): Promise<Drain> {
  await checkpointBoth(b);
  const cpu = b.cpu();
  await cpu.begin();
  const t0 = await c.resume();
  const worker = c instanceof SyncctlContestant ? c.worker : undefined;
  const caught = await waitApplied(b, c, backlog.marker);
  const seconds = caught.at - t0;
  await cpuNote(b, cpuKey, cpu);
  const startup = worker?.streamingAt !== undefined ? worker.streamingAt - t0 : undefined;
  if (worker) await worker.waitStreaming();
  return { seconds, startup };
}
