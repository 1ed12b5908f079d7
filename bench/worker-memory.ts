/**
 * Peak RSS and apply throughput of `syncctl run` during one large UPDATE transaction, the worker
 * started as `node src/cli/main.ts run <spec dir>` (no V8 flag, no NODE_OPTIONS) or with V8 flags
 * of your choice, on two throw-away Postgres servers started here.
 *
 *   node bench/worker-memory.ts [--rows 500000,1000000] [--runs 3] [--variants plain,semi4] [--probe] [--trace-gc]
 *
 * Per row count: a pgbench_accounts-like table (int key, int, int, char(84) filler) of that many
 * rows on the source, copied by `apply`. Per run and variant (alternating): VACUUM FULL and
 * CHECKPOINT of both sides, a fresh worker process streaming, then `UPDATE … SET abalance =
 * abalance + 1` of every row in one transaction. Measured:
 * - peak RSS: VmHWM of the worker once the target has the transaction (its peak since it started);
 * - idle RSS: VmHWM before the UPDATE;
 * - commit → caught up: from the source COMMIT returning until syncctl.checkpoints.commit_lsn
 *   is past the insert LSN read just before that COMMIT (polled every 20 ms, servers' clock);
 * - apply rows/s: rows / (caught up − apply start), apply start = xact_start of the worker's
 *   apply transaction on the target (seen last before caught up, begun after the commit);
 * - end-to-end rows/s: rows / (UPDATE start → caught up);
 * - worker CPU µs/row: user + system CPU of the worker from before the UPDATE to caught up, per
 *   row (steadier than the rates on a machine other work shares).
 * count and sum(abalance) are compared afterwards. Medians of the runs are printed per variant.
 *
 * Variants: plain (no flag), semi4 (--max-semi-space-size=4, what bin/syncctl's shebang passed),
 * custom (the flags of --node-args "…").
 * --probe: the worker also loads bench/memory-probe.ts (samples of heap, external and
 * ArrayBuffer memory, into the run's directory under the OS temp directory; with --alloc-profile
 * also a sampling profile of every allocation, freed or not, with --alloc-survivors of those that
 * outlived a scavenge); --trace-gc adds V8's GC trace to the
 * worker's stderr log there. Neither is a measurement to record.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startLocalCluster, type LocalCluster, type PostgresMajor } from '../src/embedded/local-cluster.ts';
import { applyAll } from '../src/plan/reconcile.ts';
import { loadSpecs } from '../src/spec/load-specs.ts';
import { Db, sleep } from './db.ts';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.dirname(BENCH_DIR);
const MAIN = path.join(REPO, 'src', 'cli', 'main.ts');
const PROBE = path.join(BENCH_DIR, 'memory-probe.ts');

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const ROW_COUNTS = arg('rows', '500000,1000000').split(',').map(Number);
const RUNS = Number(arg('runs', '3'));
const VARIANTS: Record<string, string[]> = {
  plain: [], semi4: ['--max-semi-space-size=4'],
  // Diagnostics: --node-args "--trace-gc-nvp" (a variant named custom).
  custom: arg('node-args', '').split(/\s+/).filter(Boolean),
};
const CHOSEN = arg('variants', 'plain,semi4').split(',');
for (const v of CHOSEN) if (!VARIANTS[v]) throw new Error(`unknown variant ${v}; known: ${Object.keys(VARIANTS).join(', ')}`);
const PROBING = process.argv.includes('--probe');
const TRACE_GC = process.argv.includes('--trace-gc');
const OUT = path.join(os.tmpdir(), `syncctl-worker-memory-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}`);
mkdirSync(OUT, { recursive: true });

function say(line: string): void {
  process.stderr.write(`${line}\n`);
  appendFileSync(path.join(OUT, 'details.log'), `${line}\n`);
}

/** CPU seconds (user + system) the process has used. */
function cpuSeconds(pid: number): number {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function vmHwmMb(pid: number): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

interface Sample { peakMb: number; idleMb: number; commitToCaughtS: number; applyRowsPerS: number; endToEndRowsPerS: number; cpuUsPerRow: number }

const servers: LocalCluster[] = [];
const children = new Set<ChildProcess>();
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });

async function main(): Promise<void> {
  const major = Number(process.env['PG_MAJOR'] ?? 18) as PostgresMajor;
  const settings = { autovacuum: 'off', max_wal_size: '4GB' };
  servers.push(...await Promise.all([startLocalCluster({ major, settings }), startLocalCluster({ major, settings })]));
  const [source, target] = servers as [LocalCluster, LocalCluster];
  say(`Node ${process.version}; PostgreSQL ${major}; rows ${ROW_COUNTS.join(', ')}; ${RUNS} run(s) of ${CHOSEN.join(', ')}; out ${OUT}`);
  const results = new Map<string, Sample[]>();
  for (const rows of ROW_COUNTS) {
    const db = `mem_${rows}`;
    for (const s of [source, target]) {
      const admin = await Db.open(s.url(), 'admin');
      await admin.exec(`CREATE DATABASE ${db}`);
      await admin.close();
    }
    const src = await Db.open(source.url(db), 'source');
    const tgt = await Db.open(target.url(db), 'target');
    const ddl = 'CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84))';
    await src.exec(ddl);
    await tgt.exec(ddl);
    await src.exec(`INSERT INTO pgbench_accounts SELECT g, (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, ${rows}) g`);
    const specDir = path.join(OUT, `spec_${rows}`);
    mkdirSync(specDir, { recursive: true });
    writeFileSync(path.join(specDir, 'mem.sync.ts'), `import { defineSync, sql, env } from 'syncctl';
export default defineSync({
  name: 'mem_${rows}', source: env('MEM_SRC'), target: env('MEM_DST'),
  tables: {
    accounts: {
      from: 'public.pgbench_accounts', to: 'public.pgbench_accounts', key: ['aid'],
      columns: { aid: sql\`aid\`, bid: sql\`bid\`, abalance: sql\`abalance\`, filler: sql\`filler\` },
    },
  },
});
`);
    const env = { MEM_SRC: source.url(db), MEM_DST: target.url(db) };
    await applyAll(await loadSpecs(specDir, env));
    say(`${rows} rows copied`);
    for (let run = 1; run <= RUNS; run++) {
      const order = run % 2 === 1 ? CHOSEN : [...CHOSEN].reverse();
      for (const variant of order) {
        const sample = await measure(rows, variant, run, src, tgt, specDir, env);
        const key = `${rows} ${variant}`;
        results.set(key, [...(results.get(key) ?? []), sample]);
        say(`  ${key} run ${run}: peak ${sample.peakMb.toFixed(0)} MB (idle ${sample.idleMb.toFixed(0)}), commit → caught up ${sample.commitToCaughtS.toFixed(2)} s, ` +
          `apply ${Math.round(sample.applyRowsPerS / 1000)} k rows/s, end to end ${Math.round(sample.endToEndRowsPerS / 1000)} k rows/s, ` +
          `worker CPU ${sample.cpuUsPerRow.toFixed(1)} µs/row`);
      }
    }
    await src.close();
    await tgt.close();
  }
  say('\nmedians (min–max):');
  for (const [key, samples] of results) {
    const f = (pick: (s: Sample) => number, digits = 0, scale = 1) => {
      const xs = samples.map(pick).map((x) => x / scale);
      return `${median(xs).toFixed(digits)} [${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}]`;
    };
    say(`  ${key.padEnd(16)} peak RSS ${f((s) => s.peakMb)} MB; idle ${f((s) => s.idleMb)} MB; commit → caught up ${f((s) => s.commitToCaughtS, 2)} s; ` +
      `apply ${f((s) => s.applyRowsPerS, 0, 1000)} k rows/s; end to end ${f((s) => s.endToEndRowsPerS, 0, 1000)} k rows/s; ` +
      `worker CPU ${f((s) => s.cpuUsPerRow, 1)} µs/row`);
  }
}

async function measure(rows: number, variant: string, run: number, src: Db, tgt: Db, specDir: string, env: Record<string, string>): Promise<Sample> {
  await src.exec('VACUUM FULL pgbench_accounts');
  await tgt.exec('VACUUM FULL pgbench_accounts');
  await src.exec('CHECKPOINT');
  await tgt.exec('CHECKPOINT');
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && k !== 'NODE_OPTIONS') childEnv[k] = v;
  Object.assign(childEnv, env, { SYNCCTL_LOG_FORMAT: 'json', SYNCCTL_LOG_LEVEL: 'info' });
  const tag = `${rows}-${variant}-${run}`;
  const nodeArgs = [...VARIANTS[variant]!, ...(TRACE_GC ? ['--trace-gc'] : [])];
  if (PROBING) {
    nodeArgs.push('--import', PROBE);
    childEnv['MEMORY_PROBE_OUT'] = path.join(OUT, `probe-${tag}.jsonl`);
    if (process.argv.includes('--alloc-profile')) childEnv['MEMORY_PROBE_ALLOC_PROFILE'] = path.join(OUT, `alloc-${tag}.heapprofile`);
    if (process.argv.includes('--alloc-survivors')) {
      childEnv['MEMORY_PROBE_ALLOC_PROFILE'] = path.join(OUT, `survivors-${tag}.heapprofile`);
      childEnv['MEMORY_PROBE_ALLOC_SURVIVORS'] = '1';
    }
  }
  const child = spawn(process.execPath, [...nodeArgs, MAIN, 'run', specDir], { cwd: REPO, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const log = path.join(OUT, `worker-${tag}.log`);
  child.stdout.on('data', (d: Buffer) => appendFileSync(log, d));
  child.stderr.on('data', (d: Buffer) => appendFileSync(log, d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => { children.delete(child); resolve(code); }));
  try {
    for (let i = 0; ; i++) {
      const active = await src.value(`SELECT active FROM pg_replication_slots WHERE slot_name = 'syncctl_mem_${rows}'`);
      if (active === 'true') break;
      if (child.exitCode !== null || i > 600) throw new Error(`worker not streaming; see ${log}`);
      await sleep(50);
    }
    await sleep(1000);
    const idleMb = vmHwmMb(child.pid!);
    const cpu0 = cpuSeconds(child.pid!);
    const started = await src.number('SELECT extract(epoch from clock_timestamp())::float8');
    // Diagnostics: --signal-at "3,6" sends SIGUSR2 that many seconds after the UPDATE starts (with
    // --node-args "--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=…", a heap snapshot each time).
    const signals = arg('signal-at', '').split(',').filter(Boolean).map((s) => setTimeout(() => child.kill('SIGUSR2'), Number(s) * 1000));
    await src.exec('BEGIN');
    await src.exec('UPDATE pgbench_accounts SET abalance = abalance + 1');
    const x = await src.value('SELECT pg_current_wal_insert_lsn()::text');
    await src.exec('COMMIT');
    const committed = await src.number('SELECT extract(epoch from clock_timestamp())::float8');
    let applyStart: number | undefined;
    let caughtAt: number;
    for (;;) {
      const r = await tgt.client.query({
        text: `SELECT extract(epoch from clock_timestamp())::float8,
          (SELECT commit_lsn > $1::pg_lsn FROM syncctl.checkpoints WHERE sync_name = 'mem_${rows}'),
          (SELECT extract(epoch from min(xact_start))::float8 FROM pg_stat_activity
            WHERE application_name = 'syncctl run' AND backend_type = 'client backend' AND xact_start IS NOT NULL)`,
        values: [x], rowMode: 'array',
      });
      const [t, done, xs] = r.rows[0] as [number, boolean, number | null];
      if (xs !== null && xs >= committed - 0.001) applyStart = xs;
      if (done) { caughtAt = t; break; }
      if (child.exitCode !== null) throw new Error(`worker exited (${child.exitCode}); see ${log}`);
      await sleep(20);
    }
    for (const timer of signals) clearTimeout(timer);
    const peakMb = vmHwmMb(child.pid!);
    const cpuUsPerRow = ((cpuSeconds(child.pid!) - cpu0) * 1e6) / rows;
    const q = 'SELECT count(*)::text || \' \' || sum(abalance)::text FROM pgbench_accounts';
    const [a, b] = [await src.value(q), await tgt.value(q)];
    if (a !== b) throw new Error(`target differs from source (count, sum): ${a} vs ${b}`);
    return {
      peakMb, idleMb, commitToCaughtS: caughtAt - committed,
      applyRowsPerS: rows / (caughtAt - (applyStart ?? committed)), endToEndRowsPerS: rows / (caughtAt - started), cpuUsPerRow,
    };
  } finally {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  }
}

try {
  await main();
} finally {
  await Promise.allSettled(servers.map((s) => s.stop()));
}
