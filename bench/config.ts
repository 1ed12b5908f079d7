/**
 * The run's configuration, from the command line and the environment (knobs listed in run.ts's
 * header), and the server settings both servers start with.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PostgresMajor } from '../src/embedded/local-cluster.ts';

export const QUICK = process.argv.includes('--quick') || process.env['BENCH_QUICK'] === '1';
export const MODE = QUICK ? 'quick' : 'full';

/**
 * Scenarios of a plain run. (g) runs only when ONLY names it: two more backlogs and a drain
 * through the conflict path make about 10 minutes a repetition. (v) adds under a minute to a full
 * run's repetition, but would take `bench:quick` past its two minutes.
 */
export const DEFAULT_ONLY = QUICK ? 'a b c d f' : 'a b c d f v';
/** Every scenario ONLY may name. */
export const SCENARIOS = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'v'] as const;

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));

function envNumber(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${v}`);
  return n;
}

export const CONFIG = {
  major: envNumber('PG_MAJOR', 18) as PostgresMajor,
  reps: envNumber('REPS', 3),
  scale: envNumber('SCALE', QUICK ? 1 : 10),
  backlogTx: envNumber('BACKLOG_TX', QUICK ? 2_000 : 150_000),
  liveSeconds: envNumber('LIVE_SECONDS', QUICK ? 3 : 30),
  fixedRate: process.env['PGBENCH_RATE'] ? envNumber('PGBENCH_RATE', 0) : undefined,
  rateFraction: 0.8,
  calibrateSeconds: QUICK ? 1 : 10,
  clients: 4,
  threads: 2,
  nativeStreaming: process.env['NATIVE_STREAMING'] ?? 'off',
  /** Repetitions (the first ones) with the native streaming = parallel contestant; quick: one, to stay under 2.5 minutes. */
  parallelReps: process.env['NATIVE_PARALLEL_REPS'] === '0' ? 0 : envNumber('NATIVE_PARALLEL_REPS', QUICK ? 1 : envNumber('REPS', 3)),
  only: new Set((process.env['ONLY'] ?? DEFAULT_ONLY).split(/[\s,]+/).filter(Boolean)),
  pollMs: 10,
  /** (d): how long to wait for catch-up after the load before giving up on that repetition. */
  catchUpTimeoutS: envNumber('CATCH_UP_TIMEOUT', QUICK ? 3 : 60),
};
export const ROWS = CONFIG.scale * 100_000;
export const ROWS_TEXT = ROWS >= 1e6 ? `${ROWS / 1e6}M` : `${ROWS / 1e3}k`;
export const want = (s: string) => CONFIG.only.has(s);

/** Server settings, the same for both servers and both contestants (the reference's, durable defaults restored). */
export const SERVER_SETTINGS: Record<string, string | number> = {
  fsync: 'on',
  synchronous_commit: 'on',
  full_page_writes: 'on',
  shared_buffers: '512MB',
  max_wal_size: '4GB',
  autovacuum: 'off',
  max_replication_slots: 10,
  max_wal_senders: 10,
  // Logical replication workers (one subscription at a time: 1 apply worker + up to 2 table sync
  // workers during the copy + up to 2 parallel apply workers on 16+), taken from max_worker_processes.
  // Set here, not left to the embedded cluster's defaults, so that they are the same on both servers
  // and shown in the report.
  max_worker_processes: 32,
  max_logical_replication_workers: 16,
  max_sync_workers_per_subscription: 2,
  ...(CONFIG.major >= 16 ? { max_parallel_apply_workers_per_subscription: 2 } : {}),
  // Full: the default. Quick: (b)'s transaction (100k rows) stays under 64 MB decoded (seen: not
  // streamed), so streaming = parallel would not stream it (the full run's 1M rows are streamed, and
  // spilled by streaming = off); 8 MB makes quick decode it as the full run does. syncctl's worker
  // sets 8 MB for its own walsender either way (--decoding-work-mem), so it is not affected.
  logical_decoding_work_mem: QUICK ? '8MB' : '64MB',
  // Diagnostics only (e.g. log_min_duration_statement=200): BENCH_SERVER_SETTINGS="name=value,name=value",
  // applied to both servers and printed with the others.
  ...Object.fromEntries((process.env['BENCH_SERVER_SETTINGS'] ?? '').split(',').filter((kv) => kv.includes('='))
    .map((kv) => [kv.slice(0, kv.indexOf('=')).trim(), kv.slice(kv.indexOf('=') + 1).trim()])),
};

const unknown = [...CONFIG.only].filter((s) => !(SCENARIOS as readonly string[]).includes(s));
if (unknown.length > 0) throw new Error(`ONLY names unknown scenarios: ${unknown.join(' ')} (known: ${SCENARIOS.join(' ')})`);

/** The scenarios of a plain run (ONLY unset, or naming exactly those). */
export const DEFAULT_SET = [...CONFIG.only].sort().join(' ') === DEFAULT_ONLY.split(' ').sort().join(' ');

/**
 * The run's section in RESULTS.md: one per mode for the default scenarios, and one per mode and
 * scenario set for an ONLY run, so that `ONLY=g` does not replace the full run's section.
 */
export const SECTION = DEFAULT_SET ? MODE : `${MODE}-${[...CONFIG.only].sort().join('')}`;

/** Knobs that shape a result, as the command line that reproduces the run shows them. */
const KNOBS = ['ONLY', 'PG_MAJOR', 'REPS', 'SCALE', 'BACKLOG_TX', 'LIVE_SECONDS', 'PGBENCH_RATE', 'NATIVE_STREAMING', 'NATIVE_PARALLEL_REPS',
  'CATCH_UP_TIMEOUT', 'BENCH_SERVER_SETTINGS', 'BENCH_WORKER_ARGS', 'BENCH_WORKER_NODE_OPTIONS'];

/** `ONLY="g" REPS=3 node bench/run.ts`: the command as it was run, with the knobs it set. */
export function commandLine(): string {
  const set = KNOBS.filter((k) => process.env[k] !== undefined && process.env[k] !== '').map((k) => `${k}=${shellWord(process.env[k]!)}`);
  return [...set, 'node bench/run.ts', ...(QUICK ? ['--quick'] : [])].join(' ');
}

function shellWord(v: string): string {
  return /^[\w.,:/=+-]+$/.test(v) ? v : `"${v.replace(/(["\\$`])/g, '\\$1')}"`;
}
