/**
 * `npm run bench` / `npm run bench:quick`: syncctl against native logical replication, side by
 * side in one run, on two throw-away Postgres servers started here (same version and settings for
 * every contestant). Native runs twice: as in the reference (PG 15 defaults, streaming = off) and
 * as Postgres 18 ships it (streaming = parallel; on PG 15, streaming = on), the latter in (b), (c)
 * and (d) (its initial copy is native's: a copy is not streamed). Each repetition runs the
 * contestants on the same data, in reversed order every other repetition; the table gives
 * medians, min–max and the ratio of syncctl to each native contestant, oriented so that > 1 =
 * syncctl better.
 * The run is recorded in bench/RESULTS.md (its own section per mode); raw samples, CPU accounting
 * and worker logs go to bench/out/<time>-<mode>/.
 *
 * Knobs (env): PG_MAJOR (18), REPS (3), SCALE (10; quick 1), BACKLOG_TX (150000; quick 2000),
 * LIVE_SECONDS (30; quick 3), PGBENCH_RATE (default: 80 % of native's unthrottled tps, measured
 * in the first native round), NATIVE_STREAMING (off: the reference native subscription's),
 * NATIVE_PARALLEL_REPS (in how many repetitions, the first ones, native with streaming = parallel
 * runs; REPS, quick 1; 0 = not at all), ONLY (scenarios to run: "a b c d f v", quick "a b c d f";
 * also e, and g: the conflicts backlog; a run of another set than the default has its own section
 * in RESULTS.md),
 * BENCH_PGBIN (directory of pgbench and pg_recvlogical).
 * Diagnostics (a run with them is not a result to record): BENCH_SERVER_SETTINGS
 * ("log_min_duration_statement=0,..." on both servers), BENCH_WORKER_ARGS ("--batch-ms 5"),
 * BENCH_WORKER_NODE_OPTIONS ("--cpu-prof --cpu-prof-dir=/tmp/prof"), BENCH_WORKER_LOG_LEVEL (info).
 */
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startLocalCluster, type LocalCluster } from '../src/embedded/local-cluster.ts';
import { applyAll, destroyAll } from '../src/plan/reconcile.ts';
import { loadSpecs } from '../src/spec/load-specs.ts';
import { BENCH_DIR, commandLine, CONFIG, DEFAULT_SET, MODE, QUICK, ROWS, ROWS_TEXT, SECTION, SERVER_SETTINGS, want } from './config.ts';
import { METHOD_G, scenarioG, targetsG } from './conflicts-backlog.ts';
import { NATIVE_PUB, nativeBestStreaming, NativeContestant, SyncctlContestant, type Contestant } from './contestants.ts';
import { CpuWindow, postmasterPid } from './cpu.ts';
import { Db, now, sleep } from './db.ts';
import {
  catalogChurn, CatchUpTimeout, checkpointBoth, cpuNote, drainBacklog, markerTxn, noSlotsLeft, resetTarget, runPgbench, sameData, settleSlot,
  waitApplied, writeBacklog, type Bench, type Caught,
} from './harness.ts';
import { LagProbe, timeLags } from './lag.ts';
import { OUT, say, started } from './log.ts';
import { fmt, Results, writeResultsFile } from './report.ts';
import { MAPPED_TARGET_DDL, PGBENCH_TABLES, SOURCE_ENV, TARGET_ENV, writeSpecs } from './specs.ts';
import { percentile } from './stats.ts';
import { ensureTools } from './tools.ts';
import { METHOD_V, scenarioV, targetsV } from './verify-repair.ts';
import { childLabels, killAllChildren, track } from './worker-process.ts';


const MAPPED_ROW = 'a. initial copy, syncctl with mapping (native: identity)';

/**
 * (a) initial copy with identity mapping; leaves the contestant streaming. native-parallel copies
 * too (its own subscription, same starting state) but is not recorded: a subscription's streaming
 * option does not touch the copy, native's figure stands for both.
 */
async function scenarioA(b: Bench, c: Contestant): Promise<void> {
  await resetTarget(b);
  const cpu = c.name === 'native-parallel' ? undefined : b.cpu();
  await cpu?.begin();
  const t0 = now();
  await c.setup();
  const seconds = now() - t0;
  if (cpu) await cpuNote(b, `a. initial copy · ${c.label}`, cpu);
  const copied = await b.tgt.number('SELECT count(*) FROM pgbench_accounts');
  if (copied !== ROWS) throw new Error(`${c.label}: initial copy left ${copied} rows in pgbench_accounts, expected ${ROWS}`);
  say(`    a. ${c.label} initial copy: ${seconds.toFixed(2)} s, ${fmt(ROWS / seconds, 'rows/s')} rows/s${cpu ? '' : ' (not recorded: the copy is native\'s)'}`);
  if (want('a') && c.name !== 'native-parallel') {
    const parallelIsNative = c.name === 'native' && CONFIG.parallelReps > 0;
    b.results.add('a. initial copy, identity', 'rows/s', c.name, ROWS / seconds, 'rows/s', 'higher', { parallelIsNative });
    b.results.add('a. initial copy, identity', 'time', c.name, seconds, 's', 'lower', { parallelIsNative });
    // Native has no mapping: its identity copy is the yardstick for syncctl's mapped copy.
    if (c.name === 'native') {
      b.results.add(MAPPED_ROW, 'rows/s', 'native', ROWS / seconds, 'rows/s', 'higher', { labels: { native: 'identity' }, parallelIsNative });
    }
  }
}

/**
 * For native-parallel's (b): polls (every 10 ms, from before the UPDATE) for a parallel apply
 * worker's open transaction, i.e. the streamed transaction being applied while the source still
 * runs it; keeps the earliest xact_start seen.
 */
function sampleParallelApply(b: Bench, c: NativeContestant, since: number): { stop: () => Promise<{ first: number | undefined; seen: number; polls: number }> } {
  let running = true;
  let first: number | undefined;
  let seen = 0;
  let polls = 0;
  let failure: unknown;
  const loop = (async () => {
    while (running) {
      const v = await b.tgtPoll2.value(c.parallelApplySql);
      polls++;
      if (v !== null && Number(v) >= since - 1) {
        seen++;
        first = first === undefined ? Number(v) : Math.min(first, Number(v));
      }
      await sleep(CONFIG.pollMs);
    }
  })().catch((error: unknown) => { failure = error; });
  return {
    stop: async () => {
      running = false;
      await loop;
      if (failure) throw failure;
      return { first, seen, polls };
    },
  };
}

/** (b) one UPDATE of every pgbench_accounts row in one transaction; (e) worker peak RSS. */
async function scenarioB(b: Bench, c: Contestant): Promise<void> {
  await waitApplied(b, c, await markerTxn(b));
  await b.src.exec('VACUUM FULL pgbench_accounts');
  await b.tgt.exec('VACUUM FULL pgbench_accounts');
  await checkpointBoth(b);
  const cpu = b.cpu();
  await cpu.begin();
  const lsn0 = await b.src.number(`SELECT (pg_current_wal_insert_lsn() - '0/0')::float8`);
  const ts = await b.src.number('SELECT extract(epoch from clock_timestamp())::float8');
  // streaming = parallel: the apply starts while the source transaction runs (once its decoded
  // changes pass logical_decoding_work_mem), in a parallel apply worker; watched from here.
  const parallel = c instanceof NativeContestant && c.streaming === 'parallel' ? sampleParallelApply(b, c, ts) : undefined;
  let par: { first: number | undefined; seen: number; polls: number } | undefined;
  let x: number;
  let tc: number;
  let caught: Caught;
  try {
    await b.src.exec('BEGIN');
    await b.src.exec('UPDATE pgbench_accounts SET abalance = abalance + 1');
    x = await b.src.number(`SELECT (pg_current_wal_insert_lsn() - '0/0')::float8`);
    await b.src.exec('COMMIT');
    tc = await b.src.number('SELECT extract(epoch from clock_timestamp())::float8');
    caught = await waitApplied(b, c, x, { since: tc });
  } finally {
    par = await parallel?.stop();
  }
  const worker = c instanceof SyncctlContestant ? c.worker : undefined;
  await cpuNote(b, `b. ${ROWS_TEXT}-row UPDATE · ${c.label}`, cpu);
  if (par && par.first === undefined) {
    const w = `${c.label} (b): no parallel apply worker transaction seen in ${par.polls} polls: the UPDATE was not applied in parallel ` +
      '(not streamed, or serialized to a file by the leader); its apply start is the leader\'s';
    b.warnings.push(w);
    say(`WARNING ${w}`);
  }
  const applyStart = par?.first ?? caught.applyStart ?? tc;
  const commitToCaught = caught.at - tc;
  say(`    b. ${c.label}: update ${(tc - ts).toFixed(2)} s (${((x - lsn0) / 1048576).toFixed(0)} MB WAL); commit→apply start ` +
    `${(applyStart - tc).toFixed(2)} s${par?.first !== undefined ? ` (parallel apply worker's transaction, in ${par.seen} of ${par.polls} polls)` : ''}` +
    `${par?.first === undefined && caught.applyStart === undefined ? ' (not seen: commit time used)' : ''}; commit→caught up ` +
    `${commitToCaught.toFixed(2)} s; apply ${fmt(ROWS / (caught.at - applyStart), 'rows/s')} rows/s`);
  b.results.add(`b. ${ROWS_TEXT}-row UPDATE, one txn`, 'commit → caught up', c.name, commitToCaught, 's', 'lower');
  b.results.add(`b. ${ROWS_TEXT}-row UPDATE, one txn`, 'apply rows/s (apply start → caught up)', c.name, ROWS / (caught.at - applyStart), 'rows/s', 'higher');
  b.results.add(`b. ${ROWS_TEXT}-row UPDATE, one txn`, 'rows/s (commit → caught up)', c.name, ROWS / commitToCaught, 'rows/s', 'higher');
  b.results.add(`b. ${ROWS_TEXT}-row UPDATE, one txn`, 'commit → apply start', c.name, applyStart - tc, 's', 'lower');
  if (worker) {
    const rss = worker.peakRssMb();
    say(`    e. syncctl worker VmHWM after (b): ${rss.toFixed(0)} MB`);
    b.results.add('e. worker peak RSS during (b)', 'VmHWM (target ≤ 256 MB)', 'syncctl', rss, 'MB', 'none');
    b.results.add('e. worker peak RSS during (b)', 'VmHWM before (b), streaming idle (info)', 'syncctl', idleRss, 'MB', 'none');
  }
  await sameData(b, '(b)', c.label);
}

/** (c) backlog of small pgbench transactions written while the apply side is stopped, then drained. */
async function scenarioC(b: Bench, c: Contestant): Promise<void> {
  await waitApplied(b, c, await markerTxn(b));
  await settleSlot(b, c);
  const backlog = await writeBacklog(b, c);
  const { seconds, startup } = await drainBacklog(b, c, backlog, `c. backlog drain · ${c.label}`);
  const { ntx } = backlog;
  say(`    c. ${c.label}: backlog ${ntx} tx (${backlog.walMb.toFixed(0)} MB WAL, written at ${backlog.tps.toFixed(0)} tx/s); ` +
    `drained in ${seconds.toFixed(2)} s = ${fmt(ntx / seconds, 'tx/s')} tx/s` +
    (startup !== undefined ? ` (worker startup to "streaming" ${startup.toFixed(2)} s; ${fmt(ntx / (seconds - startup), 'tx/s')} tx/s after it)` : ''));
  b.results.add('c. backlog drain (pgbench tpcb-like)', 'tx/s (start → caught up)', c.name, ntx / seconds, 'tx/s', 'higher');
  b.results.add('c. backlog drain (pgbench tpcb-like)', 'row changes/s (3 per tx)', c.name, (3 * ntx) / seconds, 'rows/s', 'higher');
  b.results.add('c. backlog drain (pgbench tpcb-like)', 'backlog size', c.name, ntx, 'tx', 'none');
  if (startup !== undefined) {
    b.results.add('c. backlog drain (pgbench tpcb-like)', 'tx/s after worker startup (info)', c.name, ntx / (seconds - startup), 'tx/s', 'none');
  }
  await sameData(b, '(c)', c.label);
}

let lagFiles = 0;

/** (d) live pgbench at a fixed rate: time lag sampled every 100 ms. */
async function scenarioD(b: Bench, c: Contestant): Promise<void> {
  await waitApplied(b, c, await markerTxn(b));
  if (b.rate === undefined) {
    if (c.name !== 'native') throw new Error('the pgbench rate is calibrated in a native round');
    say(`    d. calibrating: unthrottled pgbench ${CONFIG.calibrateSeconds} s with the native subscription streaming`);
    await b.src.exec('VACUUM pgbench_accounts, pgbench_branches, pgbench_tellers');
    const cal = await runPgbench(b, ['-n', '-c', String(CONFIG.clients), '-j', String(CONFIG.threads), '-T', String(CONFIG.calibrateSeconds)]);
    b.rate = Math.max(100, Math.round((cal.tps * CONFIG.rateFraction) / 50) * 50);
    b.notes.push(`(d) rate: native's unthrottled pgbench run (${CONFIG.calibrateSeconds} s, ${CONFIG.clients} clients, subscription streaming) ` +
      `gave ${cal.tps.toFixed(0)} tx/s; every contestant runs at ${CONFIG.rateFraction * 100} % of it: --rate ${b.rate}.`);
    say(`    d. unthrottled ${cal.tps.toFixed(0)} tx/s -> --rate ${b.rate}`);
    await waitApplied(b, c, await markerTxn(b));
  }
  await b.src.exec('VACUUM pgbench_accounts, pgbench_branches, pgbench_tellers');
  await b.src.exec('TRUNCATE pgbench_history');
  await waitApplied(b, c, await markerTxn(b));
  await b.tgt.exec('VACUUM pgbench_accounts, pgbench_branches, pgbench_tellers');
  await checkpointBoth(b);
  const probe = new LagProbe(b.srcDense, b.srcReplay, b.tgtPoll2, c.appliedSql, c.walsenderApp);
  let tStart: number;
  let tEnd: number;
  let pg: { tps: number };
  let caught: Caught;
  let commitsBefore: number;
  try {
    await sleep(100);
    const cpu = b.cpu();
    await cpu.begin();
    commitsBefore = await targetCommits(b);
    tStart = now();
    pg = await runPgbench(b, ['-n', '-c', String(CONFIG.clients), '-j', String(CONFIG.threads), '-T', String(CONFIG.liveSeconds), '-R', String(b.rate)]);
    tEnd = now();
    await cpuNote(b, `d. live pgbench · ${c.label}`, cpu);
    const marker = await markerTxn(b);
    caught = await waitApplied(b, c, marker, { timeoutS: CONFIG.catchUpTimeoutS }).catch((error: unknown) => {
      if (!(error instanceof CatchUpTimeout)) throw error;
      const w = `${c.label} (d): not caught up ${CONFIG.catchUpTimeoutS} s after pgbench ended (${((marker - error.at) / 1048576).toFixed(1)} MB of WAL behind); ` +
        'lag figures cover the load window only';
      b.warnings.push(w);
      say(`WARNING ${w}`);
      return { at: Number.NaN, applyStart: undefined };
    });
  } finally {
    await probe.stop();
  }
  if (Number.isFinite(caught.at)) await sameData(b, '(d)', c.label);
  // Backends report their counters at most once a second: the last second's commits of a
  // session may not be counted yet (a few % of the 30 s). The comparison's own are counted.
  const commits = await targetCommits(b) - commitsBefore;
  const samples = probe.samples;
  writeFileSync(path.join(OUT, `lag-${c.name}-${++lagFiles}.json`), JSON.stringify({ tStart, tEnd, samples }));
  // Skip the first second (pgbench connecting, rate ramp-up).
  const lags = timeLags(samples, tStart + 1, tEnd).map((s) => s * 1000);
  const replay = samples.replay.filter(([t, v]) => t >= tStart + 1 && t <= tEnd && v !== null).map(([, v]) => v! * 1000);
  const p = (q: number) => percentile(lags, q);
  say(`    d. ${c.label}: ${pg.tps.toFixed(0)} tx/s for ${CONFIG.liveSeconds} s; time lag ms p50 ${p(50).toFixed(1)} p95 ${p(95).toFixed(1)} ` +
    `p99 ${p(99).toFixed(1)} max ${p(100).toFixed(1)} (${lags.length} samples, ${samples.source.length} source samples); ` +
    `replay_lag p99 ${percentile(replay, 99).toFixed(1)} ms; caught up ${(caught.at - tEnd).toFixed(2)} s after pgbench ended; ` +
    `${commits} target commits (${(pg.tps * CONFIG.liveSeconds / commits).toFixed(1)} source tx each, harness queries included)`);
  const s = 'd. live pgbench tpcb-like, 4 clients, fixed rate';
  b.results.add(s, 'time lag p50', c.name, p(50), 'ms', 'lower');
  b.results.add(s, 'time lag p95', c.name, p(95), 'ms', 'lower');
  b.results.add(s, 'time lag p99', c.name, p(99), 'ms', 'lower');
  b.results.add(s, 'time lag max', c.name, p(100), 'ms', 'lower');
  b.results.add(s, 'caught up after pgbench ended', c.name, caught.at - tEnd, 's', 'lower');
  b.results.add(s, 'walsender replay_lag p99 (info)', c.name, percentile(replay, 99), 'ms', 'none');
  b.results.add(s, 'source tx/s achieved (info)', c.name, pg.tps, 'tx/s', 'none');
  b.results.add(s, 'target commits/s, harness included (info)', c.name, commits / CONFIG.liveSeconds, 'tx/s', 'none');
}

/** Transactions committed in the target database so far (every session: the contestant's and the harness's). */
async function targetCommits(b: Bench): Promise<number> {
  const rows = await b.tgt.rows<{ n: string }>('SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = current_database()');
  return Number(rows[0]!.n);
}

/** VmHWM of the syncctl worker once streaming, before (b). */
let idleRss = Number.NaN;

/**
 * One contestant through (a)–(d), then torn down with no slot left on the source and no
 * subscription or logical replication worker left on the target. native-parallel's (a) is its
 * copy only (not recorded); it has no (e).
 */
async function contestantRound(b: Bench, c: Contestant, rep: number): Promise<void> {
  say(`rep ${rep} · ${c.label}`);
  await scenarioA(b, c);
  if (c instanceof SyncctlContestant) {
    const worker = await c.startWorker();
    idleRss = worker.peakRssMb();
  }
  if (want('b') || (want('e') && c.name === 'syncctl')) await scenarioB(b, c);
  await catalogChurn(b, `(b) ${c.label}`);
  if (want('c')) await scenarioC(b, c);
  await catalogChurn(b, `(c) ${c.label}`);
  if (want('d')) await scenarioD(b, c);
  await catalogChurn(b, `(d) ${c.label}`);
  await c.teardown();
  await noSlotsLeft(b);
  await checkpointBoth(b);
}

/** Contestants of one repetition: the order reverses every other repetition (native first in odd ones, for (d)'s calibration). */
function roundOrder(b: Bench, rep: number): Contestant[] {
  const order: Contestant[] = [b.native, ...(rep <= CONFIG.parallelReps ? [b.nativeBest] : []), b.syncctl];
  return rep % 2 === 1 ? order : order.reverse();
}

/** (a) with a mapping: syncctl into accounts_mapped (concat + CASE); compared with native's identity copy. */
async function scenarioMapped(b: Bench, rep: number): Promise<void> {
  say(`rep ${rep} · syncctl, initial copy with a mapping`);
  await b.tgt.exec('TRUNCATE accounts_mapped');
  await b.src.exec('VACUUM FULL pgbench_accounts');
  await b.tgt.exec('VACUUM FULL accounts_mapped');
  await checkpointBoth(b);
  const cpu = b.cpu();
  await cpu.begin();
  const t0 = now();
  await applyAll(b.mappedSyncs, { allowDestroy: true });
  const seconds = now() - t0;
  await cpuNote(b, 'a. initial copy with mapping · syncctl', cpu);
  const copied = await b.tgt.number('SELECT count(*) FROM accounts_mapped');
  if (copied !== ROWS) throw new Error(`syncctl mapped copy left ${copied} rows, expected ${ROWS}`);
  const bad = await b.tgt.number(`SELECT count(*) FROM accounts_mapped WHERE label <> concat('branch ', branch_id, ' / account ', account_id)`);
  if (bad > 0) b.warnings.push(`mapped copy: ${bad} rows with a wrong label`);
  say(`    a. syncctl mapped copy: ${seconds.toFixed(2)} s, ${fmt(ROWS / seconds, 'rows/s')} rows/s`);
  b.results.add(MAPPED_ROW, 'rows/s', 'syncctl', ROWS / seconds, 'rows/s', 'higher', { labels: { native: 'identity' } });
  await destroyAll(b.mappedSyncs, { allowDestroy: true });
  await b.tgt.exec('TRUNCATE accounts_mapped');
  await noSlotsLeft(b);
}

/** (f) decode only: syncctl's slot reader vs pg_recvlogical on the same 1M-row UPDATE, each on its own slot. */
async function scenarioF(b: Bench, rep: number): Promise<void> {
  say(`rep ${rep} · decode only`);
  await b.src.exec('VACUUM FULL pgbench_accounts');
  await b.src.exec('CHECKPOINT');
  await b.src.exec(`SELECT pg_create_logical_replication_slot('bench_dec_recvlogical', 'pgoutput')`);
  await b.src.exec(`SELECT pg_create_logical_replication_slot('bench_dec_syncctl', 'pgoutput')`);
  await b.src.exec('BEGIN');
  await b.src.exec('UPDATE pgbench_accounts SET abalance = abalance - 1');
  await b.src.exec('COMMIT');
  const end = (await b.src.value('SELECT pg_current_wal_lsn()::text'))!;
  await b.src.exec('CHECKPOINT');
  const order = rep % 2 === 1 ? ['recvlogical', 'syncctl'] : ['syncctl', 'recvlogical'];
  for (const who of order) {
    const cpu = b.cpu();
    await cpu.begin();
    if (who === 'recvlogical') {
      const t0 = now();
      const child = track(spawn(b.tools.pgRecvlogical, [
        '-d', `host=${b.source.host} port=${b.source.port} user=postgres dbname=postgres`, '--slot', 'bench_dec_recvlogical', '--start',
        '-o', 'proto_version=1', '-o', `publication_names=${NATIVE_PUB}`, '-E', end, '-F', '0', '-f', '-',
      ], { env: { ...process.env, PGPASSWORD: b.source.password }, stdio: ['ignore', 'ignore', 'pipe'] }));
      let err = '';
      child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      const seconds = now() - t0;
      if (code !== 0) throw new Error(`pg_recvlogical failed (${code}): ${err}`);
      await cpuNote(b, 'f. decode only · pg_recvlogical', cpu);
      say(`    f. pg_recvlogical: ${seconds.toFixed(2)} s = ${fmt(ROWS / seconds, 'rows/s')} rows/s (process start to exit)`);
      b.results.add(`f. decode only (${ROWS_TEXT}-row UPDATE)`, 'rows/s', 'native', ROWS / seconds, 'rows/s', 'higher', { labels: { native: 'pg_recvlogical' } });
    } else {
      const t0 = now();
      const child = track(spawn(process.execPath, [path.join(BENCH_DIR, 'decode-reader.ts'), 'bench_dec_syncctl', NATIVE_PUB, end], {
        env: { ...process.env, [SOURCE_ENV]: b.source.url() }, stdio: ['ignore', 'pipe', 'pipe'],
      }));
      let out = '';
      let err = '';
      child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
      child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      const wall = now() - t0;
      if (code !== 0) throw new Error(`decode-reader failed (${code}): ${err}`);
      const r = JSON.parse(out) as { seconds: number; messages: number; changes: number; commits: number; cpuSeconds: number };
      await cpuNote(b, 'f. decode only · syncctl reader', cpu);
      if (r.changes !== ROWS) b.warnings.push(`(f) syncctl reader decoded ${r.changes} changes, expected ${ROWS}`);
      say(`    f. syncctl reader: ${r.seconds.toFixed(2)} s = ${fmt(ROWS / r.seconds, 'rows/s')} rows/s (open to end LSN; ` +
        `process start to exit ${wall.toFixed(2)} s); ${r.messages} messages, ${r.changes} changes, reader CPU ${r.cpuSeconds.toFixed(2)} s`);
      b.results.add(`f. decode only (${ROWS_TEXT}-row UPDATE)`, 'rows/s', 'syncctl', ROWS / r.seconds, 'rows/s', 'higher', { labels: { native: 'pg_recvlogical' } });
    }
  }
  await b.src.exec(`SELECT pg_drop_replication_slot('bench_dec_recvlogical')`);
  await b.src.exec(`SELECT pg_drop_replication_slot('bench_dec_syncctl')`);
}

// ------------------------------------------------------------------------------------------
// Setup, run, report

async function setupData(b: Bench): Promise<void> {
  say(`pgbench -i -s ${CONFIG.scale} on the source (${ROWS} accounts)`);
  const init = (cluster: LocalCluster, args: string[]) => new Promise<void>((resolve, reject) => {
    const child = track(spawn(b.tools.pgbench, [...args, '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', 'postgres'], {
      env: { ...process.env, PGPASSWORD: cluster.password }, stdio: ['ignore', 'pipe', 'pipe'],
    }));
    let out = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`pgbench ${args.join(' ')} failed:\n${out}`))));
  });
  await init(b.source, ['-i', '-s', String(CONFIG.scale), '-q']);
  await init(b.target, ['-i', '-s', String(CONFIG.scale), '-I', 'dtp']);
  await b.tgt.exec(MAPPED_TARGET_DDL);
  for (const db of [b.src, b.tgt]) await db.exec('CREATE TABLE bench_warmup (id integer PRIMARY KEY, v text)');
  await b.src.exec(`INSERT INTO bench_warmup SELECT g, 'v' || g FROM generate_series(1, 100) g`);
  await b.src.exec(`CREATE PUBLICATION ${NATIVE_PUB} FOR TABLE ${PGBENCH_TABLES.map((t) => t.name).join(', ')}`);
  const n = await b.src.number('SELECT count(*) FROM pgbench_accounts');
  if (n !== ROWS) throw new Error(`source has ${n} accounts, expected ${ROWS}`);
}

async function machine(): Promise<string[]> {
  const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
  return [
    `${os.cpus().length} cores (${cpuModel.trim()}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${os.release()}`,
    `load average at start: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`,
  ];
}

async function main(): Promise<void> {
  const clusters: LocalCluster[] = [];
  const dbs: Db[] = [];
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'syncctl-bench-'));
  let syncctl: SyncctlContestant | undefined;
  let syncctlConflicts: SyncctlContestant | undefined;
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    say(`${signal}: stopping child processes and servers`);
    killAllChildren();
    void Promise.allSettled(clusters.map((c) => c.stop())).then(() => {
      rmSync(tmp, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const tools = ensureTools(say);
    const machineLines = await machine();
    // Read at the start: the run measures the code as it was then.
    const code = codeVersion();
    say(`syncctl bench (${MODE}): PG ${CONFIG.major}, REPS ${CONFIG.reps}, SCALE ${CONFIG.scale} (${ROWS} rows), backlog ${CONFIG.backlogTx} tx, ` +
      `live ${CONFIG.liveSeconds} s; scenarios ${[...CONFIG.only].join(' ')}; native with streaming = ${nativeBestStreaming(CONFIG.major)} ` +
      `in ${Math.min(CONFIG.parallelReps, CONFIG.reps)} of ${CONFIG.reps} repetitions; details in ${path.relative(process.cwd(), OUT)}`);
    for (const l of machineLines) say(l);
    const [source, target] = await Promise.all([
      startLocalCluster({ major: CONFIG.major, settings: SERVER_SETTINGS, log: (l) => appendFileSync(path.join(OUT, 'source-server.log'), `${l}\n`) }),
      startLocalCluster({ major: CONFIG.major, settings: SERVER_SETTINGS, log: (l) => appendFileSync(path.join(OUT, 'target-server.log'), `${l}\n`) }),
    ]);
    clusters.push(source, target);
    const open = async (url: string, label: string) => { const d = await Db.open(url, label); dbs.push(d); return d; };
    const src = await open(source.url(), 'source');
    const tgt = await open(target.url(), 'target');
    const srcDense = await open(source.url(), 'source sampler');
    const srcReplay = await open(source.url(), 'source replay_lag sampler');
    const tgtPoll = await open(target.url(), 'target poller');
    const tgtPoll2 = await open(target.url(), 'target lag sampler');
    const srcWait = await open(source.url(), 'source wait sampler');
    const tgtWait = await open(target.url(), 'target wait sampler');
    const serverVersion = (await src.value('SELECT version()'))!;
    const settingNames = [...new Set([...Object.keys(SERVER_SETTINGS), 'wal_level', 'max_worker_processes', 'max_logical_replication_workers',
      'logical_decoding_work_mem', 'wal_compression'])];
    const settingsShown: string[] = [];
    for (const name of settingNames) {
      const [s, t] = await Promise.all([src.value(`SELECT current_setting($1)`, [name]), tgt.value(`SELECT current_setting($1)`, [name])]);
      if (s !== t) throw new Error(`setting ${name} differs between the servers: ${s} / ${t}`);
      settingsShown.push(`${name}=${s}`);
    }
    say(`servers: ${serverVersion}; ${settingsShown.join(', ')}`);

    const specDirs = writeSpecs(path.join(tmp, 'specs'));
    const env = { ...process.env, [SOURCE_ENV]: source.url(), [TARGET_ENV]: target.url() };
    const identSyncs = await loadSpecs(specDirs.ident, env);
    const mappedSyncs = await loadSpecs(specDirs.mapped, env);
    const warmupSyncs = await loadSpecs(specDirs.warmup, env);
    const conflictSyncs = await loadSpecs(specDirs.conflicts, env);
    const ctxBase = {
      src, tgt, major: CONFIG.major, nativeStreaming: CONFIG.nativeStreaming, say,
      sourceConnInfo: `host=${source.host} port=${source.port} user=postgres password=${source.password} dbname=postgres`,
    };
    let workerCount = 0;
    const workerCtx = {
      ...ctxBase, workerEnv: { [SOURCE_ENV]: source.url(), [TARGET_ENV]: target.url() }, workerLog: () => path.join(OUT, `worker-${++workerCount}.log`),
    };
    syncctl = new SyncctlContestant({ ...workerCtx, syncs: identSyncs, specDir: specDirs.ident });
    syncctlConflicts = new SyncctlContestant({ ...workerCtx, syncs: conflictSyncs, specDir: specDirs.conflicts });
    const sc = syncctl;
    const nativeBest = new NativeContestant(ctxBase, true);
    const b: Bench = {
      tools, source, target, src, tgt, srcDense, srcReplay, tgtPoll, tgtPoll2,
      native: new NativeContestant(ctxBase), nativeBest, syncctl: sc, syncctlConflicts, identSyncs, mappedSyncs,
      results: new Results(nativeBest.label), cpuNotes: new Map(), waitNotes: new Map(), outside: [], warnings: [], notes: [], rate: CONFIG.fixedRate,
      cpu: () => new CpuWindow({
        servers: [
          { label: 'src', postmaster: postmasterPid(source.dataDir), db: srcWait },
          { label: 'tgt', postmaster: postmasterPid(target.dataDir), db: tgtWait },
        ],
        extra: childLabels,
      }),
    };
    if (CONFIG.fixedRate !== undefined) b.notes.push(`(d) rate: fixed by PGBENCH_RATE = ${CONFIG.fixedRate} tx/s for both contestants.`);

    /** RESULTS.md (and results.json) after every repetition, so an interrupted run leaves what it measured. */
    const writeReport = (repsDone: number) => {
      writeFileSync(path.join(OUT, 'results.json'), JSON.stringify({
        config: { ...CONFIG, only: [...CONFIG.only] }, repsDone, results: b.results.toJSON(), cpu: Object.fromEntries(b.cpuNotes),
      }, null, 2));
      writeResultsFile(path.join(BENCH_DIR, 'RESULTS.md'), SECTION, renderSection({
        b, repsDone, total: now() - started, machineLines, serverVersion, settingsShown, nodeVersion: process.version, pgbench: tools.version, code,
      }));
    };

    await setupData(b);
    // syncctl's own schema on the target is created once, outside every measurement.
    say('warm-up: syncctl apply + destroy on a 100-row table');
    await applyAll(warmupSyncs, { allowDestroy: true });
    await destroyAll(warmupSyncs, { allowDestroy: true });
    await noSlotsLeft(b);
    await checkpointBoth(b);

    for (let rep = 1; rep <= CONFIG.reps; rep++) {
      // The rate for (d) is calibrated in a native round: native goes first in rep 1.
      if (ROUNDS) for (const c of roundOrder(b, rep)) await contestantRound(b, c, rep);
      if (want('a')) await scenarioMapped(b, rep);
      if (want('f')) await scenarioF(b, rep);
      if (want('g')) await scenarioG(b, rep);
      if (want('v')) await scenarioV(b, rep);
      if (rep < CONFIG.reps) writeReport(rep);
    }

    const total = now() - started;
    say(`done in ${total.toFixed(0)} s`);
    const q = quietness(b);
    say(q.text);
    if (q.warning) say(`WARNING ${q.warning}`);
    process.stdout.write(`\n${b.results.table()}\n\n`);
    for (const t of targetLines(b)) process.stdout.write(`${t}\n`);
    for (const w of [...b.warnings, ...(q.warning ? [q.warning] : [])]) process.stdout.write(`WARNING: ${w}\n`);
    writeReport(CONFIG.reps);
    say(`bench/RESULTS.md updated (section "${SECTION}")`);
  } finally {
    // Interrupted: the signal handler stops everything and exits; keep it installed until then.
    if (interrupted) await new Promise(() => {});
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await syncctl?.worker?.stop(5_000).catch(() => {});
    await syncctlConflicts?.worker?.stop(5_000).catch(() => {});
    killAllChildren();
    await Promise.all(dbs.map((d) => d.close()));
    await Promise.allSettled(clusters.map((c) => c.stop()));
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The contestant rounds run: scenarios (a)–(e) each contestant runs in turn on its own copy. */
const ROUNDS = ['a', 'b', 'c', 'd', 'e'].some(want);

function quietness(b: Bench): { text: string; warning: string | undefined } {
  const windowSeconds = b.outside.reduce((a, [, s]) => a + s, 0);
  const avg = (pick: (w: [number, number, number]) => number) =>
    windowSeconds > 0 ? b.outside.reduce((a, w) => a + pick(w) * w[1], 0) / windowSeconds : 0;
  const outsideAvg = avg((w) => w[0]);
  const stealAvg = avg((w) => w[2]);
  const outsideMax = Math.max(0, ...b.outside.map(([c]) => c));
  const text = `During the measured windows, other processes on this machine used ${outsideAvg.toFixed(2)} cores on average ` +
    `(${outsideMax.toFixed(2)} at most) and the hypervisor stole ${stealAvg.toFixed(2)} cores on average (/proc/stat steal), of ${os.cpus().length}.`;
  const warning = outsideAvg + stealAvg > 0.25
    ? `the machine was not quiet (${outsideAvg.toFixed(2)} cores used by other processes and ${stealAvg.toFixed(2)} stolen by the hypervisor on average): ` +
      'absolute figures and ratios are unreliable; re-run on an idle machine'
    : undefined;
  return { text, warning };
}

/** The targets of the scenarios that set one (the issues' acceptance figures), each met or not, from the medians. */
function targetLines(b: Bench): string[] {
  return [...(want('g') ? targetsG(b.results) : []), ...(want('v') ? targetsV(b.results) : [])].map((t) => `- ${t}`);
}

/** The commit the run measured, and whether the working tree differed from it (other sessions' edits outside bench/ count). */
function codeVersion(): { head: string; dirty: string | undefined } | undefined {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const changed = execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', 'src', 'sql', 'bin'], { encoding: 'utf8' })
      .split('\n').filter(Boolean).map((l) => l.slice(3));
    return { head, dirty: changed.length > 0 ? `uncommitted changes in ${changed.join(', ')}` : undefined };
  } catch {
    return undefined;
  }
}

function renderSection(r: {
  b: Bench; repsDone: number; total: number; machineLines: string[]; serverVersion: string; settingsShown: string[]; nodeVersion: string; pgbench: string;
  code: { head: string; dirty: string | undefined } | undefined;
}): string {
  const { b } = r;
  const q = quietness(b);
  const warnings = [...(q.warning ? [q.warning] : []), ...b.warnings];
  const date = new Date().toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
  const lines = [
    `## ${DEFAULT_SET ? (MODE === 'full' ? 'Full run (`npm run bench`)' : 'Quick run (`npm run bench:quick`)')
      : `Scenarios ${[...CONFIG.only].join(' ')}${QUICK ? ', quick' : ''}`} — ${date}${r.code ? `, on ${r.code.head}` : ''}`,
    '',
    `- command: \`${commandLine()}\`${r.code?.dirty ? ` (${r.code.dirty})` : ''}`,
    `- machine: ${r.machineLines.join('; ')}`,
    `- Postgres: ${r.serverVersion} (embedded package), source and target on this machine; client tools: ${r.pgbench}`,
    `- Node ${r.nodeVersion}; syncctl worker run as \`bin/syncctl run <spec dir>\` (child process; the executable's shebang caps V8's young generation at 4 MB a semi-space), initial copy through the library (applyAll) in the harness process`,
    `- server settings, identical on both servers: ${r.settingsShown.join(', ')}`,
    ...(ROUNDS || want('g') ? [`- native subscription ("native"): copy_data = true, streaming = ${CONFIG.nativeStreaming}, binary = false, synchronous_commit = off (PG 15 defaults, as in the reference)`] : []),
    ...(parallelReps(r.repsDone) > 0 ? [
      `- native subscription at its best ("${b.nativeBest.label}"): the same with streaming = ${b.nativeBest.streaming}` +
        (b.nativeBest.streaming === 'parallel'
          ? ' (as Postgres 18 ships it: its default), max_parallel_apply_workers_per_subscription = 2'
          : ' (PG 15 has no parallel apply: a streamed transaction is spooled to a file on the target and applied at its commit)') +
        `; in (b), (c) and (d) of ${parallelReps(r.repsDone)} of ${r.repsDone} repetitions` +
        (parallelReps(r.repsDone) < r.repsDone ? ` (the first; NATIVE_PARALLEL_REPS, ${QUICK ? 'quick mode: 1, to keep it short' : 'set for this run'})` : ''),
    ] : []),
    `- data: pgbench scale ${CONFIG.scale} (${ROWS} accounts); ${CONFIG.reps} repetitions` +
      (ROUNDS || want('g') ? `, contestants in the order ${[b.native, ...(parallelReps(r.repsDone) > 0 ? [b.nativeBest] : []), b.syncctl]
        .map((c) => `"${c.label}"`).join(' → ')} in odd repetitions, reversed in even ones` : '') +
      (want('c') || want('g') ? `; backlog ${CONFIG.backlogTx} tx` : '') +
      (want('d') ? `; live load ${CONFIG.liveSeconds} s, ${CONFIG.clients} clients, ${CONFIG.threads} threads, --rate ${b.rate ?? 'n/a'}` : ''),
    `- total run time ${r.total.toFixed(0)} s${r.repsDone < CONFIG.reps ? ` — PARTIAL: ${r.repsDone} of ${CONFIG.reps} repetitions done so far` : ''}`,
    `- ${q.text}`,
    '',
    ratiosText(b, r.repsDone),
    '',
    b.results.table(),
    '',
  ];
  const targets = targetLines(b);
  if (targets.length > 0) lines.push('**Targets**', '', ...targets, '');
  if (warnings.length > 0) lines.push('**Warnings**', '', ...warnings.map((w) => `- ${w}`), '');
  lines.push('### How each number is measured', '', ...method(b, r.repsDone).map((m) => `- ${m}`), ...b.notes.map((n) => `- ${n}`), '');
  lines.push('### CPU per process (cores busy over the measured window, the last repetition each contestant ran in)', '',
    'Labels: src./tgt. = Postgres processes of the source / target (backend(<application_name>), walsender(<application_name>), background workers); ' +
    'syncctl-worker = the `syncctl run` child; harness = this process (the initial copy runs in it); native\'s walsender is walsender(bench_sub), ' +
    'native-parallel\'s walsender(bench_sub_parallel), its parallel apply worker tgt.logical replication parallel worker. 1.00 = one full core; the machine has ' +
    `${os.cpus().length}.`, '');
  for (const [k, v] of b.cpuNotes) {
    lines.push(`- ${k}: ${v}`);
    for (const w of b.waitNotes.get(k) ?? []) {
      lines.push(`  - ${w}`);
    }
  }
  lines.push('', 'Sub-items: what the replication processes were doing, sampled every 50 ms from pg_stat_activity ' +
    '(CPU = active without a wait event; Client:ClientRead = a backend waiting for its client).');
  return lines.join('\n');
}

/** How to read the table's ratios, for the scenarios run. */
function ratiosText(b: Bench, repsDone: number): string {
  const native = ROUNDS || want('g') ? 'Ratios: syncctl against each native contestant: higher-is-better metrics (↑) syncctl / native, ' +
    'lower-is-better metrics (↓) native / syncctl, so **> 1 means syncctl is better**; rows without an arrow are information. ' +
    (parallelReps(repsDone) > 0 ? `The last column compares syncctl with native at its best (${b.nativeBest.label}). ` : '') +
    'pgbench_history has no primary key and is left out of every contestant\'s tables: a tpcb-like transaction replicates 3 row changes (accounts, tellers, branches).' : '';
  const verify = want('v') ? '(v) has no native counterpart: its rows are syncctl\'s times, and its ratios are between them (per repetition; median [min–max]).' : '';
  return [native, verify].filter(Boolean).join(' ');
}

/** Repetitions (of those done) in which native-parallel ran: in the contestant rounds ((a)–(e)) only. */
function parallelReps(repsDone: number): number {
  return ROUNDS ? Math.min(CONFIG.parallelReps, repsDone) : 0;
}

/** "How each number is measured", for the scenarios this run measured. */
function method(b: Bench, repsDone: number): string[] {
  const shown: Record<string, boolean> = {
    a: want('a'), b: want('b'), c: want('c') || want('g'), d: want('d'), e: want('b') || want('e'), f: want('f'), g: want('g'), v: want('v'),
  };
  return [...everyMethod(b, repsDone), METHOD_G, METHOD_V].filter((line) => {
    const scenario = /^\((\w)\) /.exec(line)?.[1];
    if (scenario !== undefined) return shown[scenario] === true;
    return ROUNDS || !line.startsWith('Reset between contestants');
  });
}

function everyMethod(b: Bench, repsDone: number): string[] {
  const best = b.nativeBest;
  const n = parallelReps(repsDone);
  const workMem = 'logical_decoding_work_mem (setting above)';
  return [
    'Reset between contestants: drop the subscription and wait until no logical replication worker (parallel apply workers included) is left ' +
      'on the target / `syncctl destroy` (no slot left on the source and no subscription left on the target, checked), TRUNCATE the target tables, ' +
      'VACUUM FULL pgbench_accounts on both sides, a database-wide VACUUM on both (so catalog churn of one round, e.g. temp tables, does not slow the next), ' +
      'CHECKPOINT on both. autovacuum is off on both servers (as in the reference). Each contestant then runs (a) → (b) → (c) → (d) on the data its own copy produced; ' +
      'before (b) VACUUM FULL + CHECKPOINT, before (c) and (d) VACUUM + CHECKPOINT of both sides.',
    ...(n === 0 ? [] : [
      `Native at its best ("${best.label}", its own subscription bench_sub_parallel on the same publication): syncctl compared with native as ` +
        `Postgres 18 ships it, beside the reference's streaming = ${CONFIG.nativeStreaming}. ` +
        (best.streaming === 'parallel'
          ? `With streaming = parallel a transaction whose decoded changes exceed ${workMem} is sent to the target while it runs on the source ` +
            'and applied meanwhile by a parallel apply worker, committed when its COMMIT arrives; smaller transactions go as with streaming = off. '
          : `PG 15 has no parallel apply; with streaming = on a transaction whose decoded changes exceed ${workMem} is sent while it runs ` +
            'and spooled to a file on the target, applied from there at its COMMIT. ') +
        'It is measured in (b), (c) and (d) exactly as native (same rate in (d)). Its (a) is not measured separately: it copies with its own ' +
        'subscription (same starting state for its (b)) but a subscription\'s streaming option does not touch the initial copy, so native\'s (a) figure ' +
        `stands for it ("= native"), with the same ratio. It ran in ${n} of ${repsDone} repetitions` +
        (n < repsDone ? ` (the first; NATIVE_PARALLEL_REPS${QUICK ? ', 1 in quick mode to keep it under about 2.5 minutes' : ''}), so its median and min–max are over ${n} value${n === 1 ? '' : 's'}.` : '.'),
    ]),
    ...(QUICK && (want('b') || want('f')) ? ['Quick mode: logical_decoding_work_mem is 8MB on both servers (full run: 64MB, the default). The 100k-row transaction of (b) and (f) ' +
      'stays under 64MB of decoded changes (at 64MB native, streaming = parallel did not stream it); at 8MB it is decoded as the full run\'s 1M-row one is: streamed while it runs (native, streaming = parallel; ' +
      'syncctl) or spilled to disk by the walsender until its commit (native, streaming = off; both readers of (f)). syncctl\'s worker lowers ' +
      'logical_decoding_work_mem to 8MB for its own walsender in both modes, so its (b) is not affected.'] : []),
    '"Caught up" is exact, as in the reference: before COMMIT of the measured source transaction (or of a one-row marker transaction) the harness ' +
      'reads pg_current_wal_insert_lsn() = X; the target has applied it when the contestant\'s position is > X: native = ' +
      'pg_replication_origin_status.remote_lsn of the subscription\'s origin, syncctl = syncctl.checkpoints.commit_lsn (end LSN of the last applied source commit). ' +
      'Polled every 10 ms with autocommit statements (no snapshot held open on the target); times are the servers\' clock_timestamp().',
    '(a) identity: time from CREATE SUBSCRIPTION (copy_data) until every pg_subscription_rel row is \'r\', vs. `applyAll()` (plan, provisioning, slot with ' +
      'exported snapshot, copy) of a spec mapping pgbench_accounts/branches/tellers onto the same tables with `sql`col`` per column. ' +
      'With mapping: syncctl into accounts_mapped (account_id, branch_id, balance, label = concat(...), tier = CASE ...; filler dropped), ' +
      'compared with native\'s identity copy of the same rows. rows/s = pgbench_accounts rows / time.',
    '(b) after VACUUM FULL + CHECKPOINT of both sides: `UPDATE pgbench_accounts SET abalance = abalance + 1` in one transaction. "commit → caught up" = from ' +
      'the COMMIT returning on the source to the target position > X. "apply rows/s" = rows / (caught up − apply start), apply start = xact_start of ' +
      'the contestant\'s apply transaction on the target (native: the logical replication apply worker; syncctl: its `syncctl run` target connection), ' +
      'sampled by the 10 ms poller. sum(abalance) is compared afterwards.' +
      (n > 0 && best.streaming === 'parallel'
        ? ` ${best.label}: the UPDATE is streamed and applied while it runs, so its apply start = xact_start of the parallel apply worker's ` +
          'transaction, watched by a second 10 ms poller from before the UPDATE (a warning is printed if none is seen): "commit → apply start" is ' +
          'then negative (the apply began before the COMMIT; no ratio) and "apply rows/s" spans apply work done while the source was still updating. ' +
          '"commit → caught up" is the figure that compares like with like: how long after the COMMIT the target has the change.'
        : n > 0 ? ` ${best.label}: its apply start is the apply worker's transaction replaying the spooled changes after the COMMIT, as for native.` : ''),
    '(c) first the slot\'s restart point is moved past (b)\'s big transaction (a CHECKPOINT logs running transactions, a marker applied after it gets that confirmed; ' +
      'otherwise whether the restarted walsender decodes (b) again depends on when the server last logged them), then ' +
      'the apply side is stopped (ALTER SUBSCRIPTION DISABLE / SIGTERM to the worker; the slot keeps the WAL), pgbench tpcb-like writes the backlog ' +
      '(-c 4 -j 2 -t N/4), a marker transaction follows, CHECKPOINT both; then ENABLE / spawn the worker process and time until the marker is applied. ' +
      'tx/s = backlog transactions / that time (syncctl includes its process start, spec loading and plan check; the info row excludes them).' +
      (n > 0 ? ` ${best.label}: as native; each backlog transaction is far below ${workMem}, so none is streamed.` : ''),
    '(d) pgbench tpcb-like -c 4 -j 2 -T <live> --rate R for every contestant (same R). Lag = time lag computed exactly: the source\'s ' +
      '(clock_timestamp(), pg_current_wal_flush_lsn()) is sampled every ~5 ms, the contestant\'s applied LSN A every 100 ms on the target; ' +
      'lag(t) = t − the moment the source\'s flush position first passed A(t) (0 when the source had flushed nothing beyond A), interpolated between ' +
      'source samples (±5 ms). This is the age of the oldest change the target does not have yet (conservative: counted from the first flushed ' +
      'WAL byte after the applied commit). First second skipped. pg_stat_replication.replay_lag of the walsender is shown for information ' +
      '(native reports "applied" = received, so it is not comparable). Target commits/s = pg_stat_database.xact_commit of the target database from ' +
      'the start of the load until after the catch-up, every session included (the harness\'s own are about 10 a second: native comes out at 1.0 source tx per commit), over the load\'s seconds.' +
      (n > 0 ? ` ${best.label}: as native, at the same rate; its transactions are not streamed either.` : ''),
    '(e) VmHWM from /proc/<pid>/status of the `syncctl run` child right after (b) caught up (its peak RSS since it started, before (b)).',
    '(f) two pgoutput slots are created before an UPDATE of every pgbench_accounts row (one transaction); pg_recvlogical (proto_version 1, publication bench_native, -E <end LSN>, -F 0, to /dev/null) ' +
      'reads one, syncctl\'s ReplicationStream + PgoutputDecoder (bench/decode-reader.ts, own process, decodes every message, confirms nothing, same stop rule) ' +
      'reads the other; order alternates. pg_recvlogical is timed from process start to exit, the reader from opening the connection to the end LSN.',
  ];
}

await main().catch((error: unknown) => {
  say(`FAILED: ${error instanceof Error ? error.stack ?? error.message : String(error)}`);
  killAllChildren();
  process.exitCode = 1;
});
