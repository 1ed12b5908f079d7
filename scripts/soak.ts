/**
 * Soak: runs the differential suite (test/e2e/differential.test.ts) again and again with fresh
 * random seeds for as long as asked, prints each seed and its outcome, and at the end the seeds
 * that failed with the command that reproduces each.
 *
 *   npm run soak -- --minutes 30 [--txns 300] [--logs DIR]
 *
 * One seed per vitest run (each run starts its own Postgres servers), so a run that hangs or
 * crashes costs one seed, not the soak. The output of every run is kept in its own log file.
 * PG_MAJOR in the environment picks the Postgres major as for the tests. Exit status 1 if any
 * seed failed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const VITEST = path.join(ROOT, 'node_modules', 'vitest', 'vitest.mjs');
const TEST = 'test/e2e/differential.test.ts';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    txns: { type: 'string' },
    logs: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log('usage: npm run soak -- [--minutes 10] [--txns N] [--logs DIR]');
  process.exit(0);
}
const minutes = Number(values.minutes);
if (!(minutes > 0)) throw new Error(`--minutes: expected a positive number, got ${values.minutes}`);
const logs = values.logs ?? path.join(tmpdir(), `syncctl-soak-${new Date().toISOString().replace(/[:.]/g, '-')}`);
mkdirSync(logs, { recursive: true });

/** The command that reruns one seed, with the settings this soak ran it with. */
function reproduce(seed: number): string {
  const env = [`SYNCCTL_DIFF_SEEDS=${seed}`];
  if (values.txns) env.push(`SYNCCTL_DIFF_TXNS=${values.txns}`);
  if (process.env['PG_MAJOR']) env.push(`PG_MAJOR=${process.env['PG_MAJOR']}`);
  return `${env.join(' ')} npx vitest run ${TEST}`;
}

// ANSI colours would clutter the log files and the failure lines quoted from them.
const strip = (text: string) => text.replace(/\x1b\[[0-9;]*m/g, '');

let current: ChildProcess | undefined;
let stopping = false;
process.on('SIGINT', () => {
  if (stopping) { current?.kill('SIGKILL'); process.exit(130); }
  stopping = true;
  console.log('\nstopping after the current run (Ctrl-C again to abandon it)');
});

function runSeed(seed: number): Promise<{ status: number | null; output: string }> {
  const env: Record<string, string | undefined> = { ...process.env, SYNCCTL_DIFF_SEEDS: String(seed), FORCE_COLOR: '0' };
  if (values.txns) env['SYNCCTL_DIFF_TXNS'] = values.txns;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [VITEST, 'run', TEST], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    current = child;
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { output += chunk; });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { output += chunk; });
    child.on('error', reject);
    child.on('close', (status) => { current = undefined; resolve({ status, output: strip(output) }); });
  });
}

const deadline = Date.now() + minutes * 60_000;
const failures: { seed: number; log: string; what: string[] }[] = [];
let runs = 0;
console.log(`soak: ${TEST} with fresh seeds for ${minutes} min${values.txns ? `, ${values.txns} transactions per case` : ''}; logs in ${logs}`);
while (!stopping && Date.now() < deadline) {
  const seed = randomInt(0, 2 ** 32);
  const started = Date.now();
  const { status, output } = await runSeed(seed);
  const log = path.join(logs, `seed-${seed}.log`);
  writeFileSync(log, output);
  const seconds = Math.round((Date.now() - started) / 1000);
  if (stopping && status !== 0) { console.log(`seed ${seed}: interrupted (${seconds} s)`); break; }
  runs++;
  if (status === 0) {
    console.log(`seed ${seed}: passed (${seconds} s)`);
    continue;
  }
  // The first line of each failed case: what failed, and how.
  const what = [...new Set([...output.matchAll(/DIFFERENTIAL (.*)/g)].map((m) => m[1]!.trim()))];
  failures.push({ seed, log, what });
  console.log(`seed ${seed}: FAILED (exit ${status}, ${seconds} s), log ${log}`);
  for (const line of what.length > 0 ? what : ['(no DIFFERENTIAL line: see the log)']) console.log(`    ${line}`);
}

console.log(`\nsoak: ${runs} seed(s) run, ${failures.length} failed`);
for (const f of failures) {
  console.log(`  seed ${f.seed}: ${reproduce(f.seed)}\n    log ${f.log}`);
}
process.exitCode = failures.length > 0 ? 1 : 0;
