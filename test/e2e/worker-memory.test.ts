/**
 * The worker's memory bound holds however it is started: `node src/cli/main.ts run <specs>` with
 * no V8 flag and no NODE_OPTIONS (as npx, a container's `node …` or a process manager start it),
 * through a 500,000-row UPDATE in one source transaction of a pgbench_accounts-like table (int
 * key, int, int, char(84)): its peak RSS (VmHWM) stays under 200 MB, and the target equals the
 * source afterwards.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { expect, test } from 'vitest';
import { REPO_ROOT, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, peakRssKb } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('worker_memory');
const specs = useSpecDir();
const ROWS = 500_000;
const BOUND_MB = 200;

test(`a ${ROWS}-row UPDATE through a worker started without V8 flags: peak RSS under ${BOUND_MB} MB`, async () => {
  const ddl = 'CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84))';
  await dbs().source.query(`${ddl}; INSERT INTO accounts SELECT g, (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, ${ROWS}) g`);
  await dbs().target.query(ddl);
  const env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  const dir = specs.write({ 'memory.sync.ts': syncSpec({ name: 'memory', tables: `    accounts: {
      from: 'public.accounts', to: 'public.accounts', key: ['aid'],
      columns: { aid: sql\`aid\`, bid: sql\`bid\`, abalance: sql\`abalance\`, filler: sql\`filler\` },
    },` }) });
  const sync = await loadSync(dir, env);
  await apply(sync);

  // The environment of a plain start: no NODE_OPTIONS, nothing of vitest's; no flag before the script.
  const childEnv: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith('VITEST') && name !== 'NODE_OPTIONS') childEnv[name] = value;
  }
  Object.assign(childEnv, { SYNCCTL_LOG_LEVEL: 'warn', SYNCCTL_LOG_FORMAT: 'json' }, env);
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'src', 'cli', 'main.ts'), 'run', dir], {
    cwd: REPO_ROOT, env: childEnv, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await waitFor('the worker to stream', async () => {
      if (child.exitCode !== null) throw new Error(`the worker exited:\n${stderr}`);
      return (await dbs().source.query(`SELECT active FROM pg_replication_slots WHERE slot_name = 'syncctl_memory'`)).rows[0]?.active === true;
    }, 30_000);
    const started = Date.now();
    // One transaction; X is read before its COMMIT, so a checkpoint past X holds all of it.
    await dbs().source.query('BEGIN');
    await dbs().source.query('UPDATE accounts SET abalance = abalance + 1');
    const x = (await dbs().source.query<{ x: string }>('SELECT pg_current_wal_insert_lsn()::text AS x')).rows[0]!.x;
    await dbs().source.query('COMMIT');
    const committed = Date.now();
    let peakKb = 0;
    await waitFor('the UPDATE to be applied', async () => {
      peakKb = Math.max(peakKb, peakRssKb(child.pid!) ?? 0);
      if (child.exitCode !== null) throw new Error(`the worker exited:\n${stderr}`);
      const { rows } = await dbs().target.query<{ done: boolean }>(
        `SELECT commit_lsn > $1::pg_lsn AS done FROM syncctl.checkpoints WHERE sync_name = 'memory'`, [x]);
      return rows[0]?.done === true;
    }, 120_000);
    peakKb = Math.max(peakKb, peakRssKb(child.pid!) ?? 0);
    const seconds = (Date.now() - started) / 1000;
    console.log(`${ROWS}-row UPDATE: update ${((committed - started) / 1000).toFixed(1)} s, on the target after ${seconds.toFixed(1)} s ` +
      `(${Math.round(ROWS / seconds / 1000)} k rows/s end to end); worker peak RSS ${Math.round(peakKb / 1024)} MB`);
    await expectTargetMatches(dbs(), sync.tables, { timeoutMs: 60_000, what: `after the ${ROWS}-row UPDATE` });
    expect(peakKb).toBeGreaterThan(0);
    expect(peakKb / 1024).toBeLessThan(BOUND_MB);
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}, 180_000);
