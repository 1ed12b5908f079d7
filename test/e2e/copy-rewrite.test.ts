/**
 * The initial copy reads a table in ctid ranges of its file. VACUUM FULL (like CLUSTER or
 * pg_repack) writes a new file with the rows elsewhere: ranges copied before it no longer hold
 * the rows they held. A copy that finds the file changed starts that table over (all chunks, then
 * removing what the source no longer has), both when it resumes after being cut short and when the
 * rewrite happens while it runs. The target then equals the source, and streams on.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { applyAll } from '../../src/plan/reconcile.ts';
import type { CopyProgress } from '../../src/snapshot/initial-copy.ts';
import { REPO_ROOT, rows, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('copy_rewrite');
const specs = useSpecDir();
const ROWS = 120_000;
let env: Record<string, string>;
let worker: InProcessWorker | undefined;
let vacuumer: pg.Client | undefined;

const spec = (name: string, table: string) => syncSpec({ name, tables: `    ${table}: { from: 'public.${table}', to: 'public.${table}_copy', key: ['id'],
      columns: { id: sql\`id\`, kind: sql\`kind\`, payload: sql\`payload\` } },` });

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  // Slows each chunk down (one COPY or INSERT is one statement), so that a copy can be caught mid-way.
  await dbs().target.query(`CREATE FUNCTION slow_statement() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END'`);
  for (const table of ['resumed', 'running']) {
    await dbs().source.query(`CREATE TABLE ${table} (id bigint PRIMARY KEY, kind text NOT NULL, payload text);
      INSERT INTO ${table} SELECT g, 'k' || g % 13, repeat('p', 50) FROM generate_series(1, ${ROWS}) g`);
    await dbs().target.query(`CREATE TABLE ${table}_copy (id bigint PRIMARY KEY, kind text NOT NULL, payload text);
      CREATE TRIGGER slow AFTER INSERT ON ${table}_copy FOR EACH STATEMENT EXECUTE FUNCTION slow_statement()`);
  }
  // About twenty chunks per table; each chunk's statement is slowed down by the trigger.
  process.env['SYNCCTL_COPY_CHUNK_BLOCKS'] = '64';
  vacuumer = new pg.Client({ connectionString: dbs().sourceUrl });
  vacuumer.on('error', () => {});
  await vacuumer.connect();
});

afterAll(async () => {
  delete process.env['SYNCCTL_COPY_CHUNK_BLOCKS'];
  await worker?.stop().catch(() => {});
  await vacuumer?.end().catch(() => {});
});

/** The copy's progress rows (none before the first apply has made syncctl's schema). */
const chunks = async (sync: string) => {
  const schema = await rows<{ ok: boolean }>(dbs().target, `SELECT to_regclass('syncctl.snapshot_chunks') IS NOT NULL AS ok`);
  if (!schema[0]!.ok) return { n: 0, done: 0 };
  return (await dbs().target.query<{ n: number; done: number }>(
    `SELECT count(*)::int AS n, count(done_at)::int AS done FROM syncctl.snapshot_chunks WHERE sync_name = $1 AND chunk >= 0`, [sync])).rows[0]!;
};

/** Streams a round of changes and compares; the worker is stopped afterwards. */
async function expectStreaming(sync: Awaited<ReturnType<typeof loadSync>>, table: string): Promise<void> {
  worker = startWorker(sync);
  await dbs().source.query(`INSERT INTO ${table} SELECT g, 'late', 'x' FROM generate_series(${ROWS + 1}, ${ROWS + 100}) g;
    UPDATE ${table} SET kind = kind || '!' WHERE id % 101 = 0; DELETE FROM ${table} WHERE id % 103 = 0`);
  await expectTargetMatches(dbs(), sync.tables, { what: `${table}: streamed after the copy` });
  await worker.stop();
  worker = undefined;
}

test('a copy cut short, then VACUUM FULL moves rows into chunks already done: the resumed copy starts the table over', async () => {
  const dir = specs.write({ 'resumed.sync.ts': spec('resumed', 'resumed') });
  const sync = await loadSync(dir, env);
  const childEnv: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith('VITEST') && name !== 'NODE_OPTIONS') childEnv[name] = value;
  }
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'syncctl'), 'apply', dir], {
    cwd: REPO_ROOT, env: { ...childEnv, ...env, SYNCCTL_LOG_LEVEL: 'warn' }, stdio: 'ignore',
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  await waitFor('three chunks copied', async () => (await chunks('resumed')).done >= 3, 60_000);
  child.kill('SIGKILL');
  await exited;
  const cut = await chunks('resumed');
  expect(cut.n).toBeGreaterThan(10);
  expect(cut.done).toBeLessThan(cut.n);

  // The front of the table goes; VACUUM FULL packs the rest into the blocks already copied.
  await dbs().source.query(`DELETE FROM resumed WHERE id <= ${ROWS * 0.7}`);
  const before = await rows<{ f: string }>(dbs().source, `SELECT pg_relation_filenode('resumed')::text AS f`);
  await dbs().source.query('VACUUM FULL resumed');
  const after = await rows<{ f: string }>(dbs().source, `SELECT pg_relation_filenode('resumed')::text AS f`);
  expect(after).not.toEqual(before);

  await applyAll([sync]);
  // Rows copied before the cut that the source deleted since are gone too.
  await expectTargetMatches(dbs(), sync.tables, { what: 'right after the resumed copy', timeoutMs: 1000 });
  expect(await rows(dbs().target, `SELECT state FROM syncctl.sync_tables WHERE sync_name = 'resumed'`)).toEqual([{ state: 'streaming' }]);
  const planned = await rows<{ f: string }>(dbs().target,
    `SELECT DISTINCT source_filenode::text AS f FROM syncctl.snapshot_chunks WHERE sync_name = 'resumed' AND chunk >= 0`);
  expect(planned).toEqual(after);
  const resumed = await chunks('resumed');
  expect(resumed.done).toBe(resumed.n);
  await expectStreaming(sync, 'resumed');
});

test('VACUUM FULL while the copy runs: the chunks after it read another file, and the table is copied again under the same snapshot', async () => {
  // Dead rows at the front, still in the file when the chunks are planned.
  await dbs().source.query(`DELETE FROM running WHERE id <= ${ROWS * 0.7}`);
  const sync = await loadSync(specs.write({ 'running.sync.ts': spec('running', 'running') }), env);
  let vacuum: Promise<unknown> | undefined;
  const progress: CopyProgress[] = [];
  await applyAll([sync], {
    onCopyProgress: (p) => {
      progress.push(p);
      // Waits for the chunks being read, then rewrites the file before the next ones.
      vacuum ??= vacuumer!.query('VACUUM FULL running');
    },
  });
  await vacuum;
  // Nothing was written since the copy's snapshot: the target equals the source at once.
  await expectTargetMatches(dbs(), sync.tables, { what: 'right after the copy', timeoutMs: 1000 });
  // More progress than chunks: the chunks of the old file, then all of the new one's.
  expect(progress.length).toBeGreaterThan(progress[progress.length - 1]!.chunks);
  const planned = await rows<{ f: string }>(dbs().target,
    `SELECT DISTINCT source_filenode::text AS f FROM syncctl.snapshot_chunks WHERE sync_name = 'running' AND chunk >= 0`);
  expect(planned).toEqual(await rows(dbs().source, `SELECT pg_relation_filenode('running')::text AS f`));
  await expectStreaming(sync, 'running');
});
