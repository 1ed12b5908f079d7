/**
 * The run history (syncctl.runs) and `syncctl history`: apply records one 'apply' run per sync
 * (a no-op apply too) and one 'copy' run per table copied, with its rows; an apply that fails
 * midway records the failure and what it applied before it; the recorder's API (start, finish,
 * runs closed as lost, a wrapped run) as the worker and verify use it; the command's filters,
 * order (newest first), limit, text and JSON.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { beforeAll, expect, test } from 'vitest';
import { closeLostRuns, finishRun, recordRun, startRun } from '../../src/history/record-run.ts';
import { connect } from '../../src/db/connect.ts';
import { expectStatus, rows, runSyncctl, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('history');
const specs = useSpecDir();
const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });

const A = `    a: { from: 'public.a', to: 'public.a', key: ['id'], columns: { id: sql\`id\`, v: sql\`v * 2\` } },`;
const B = `    b: { from: 'public.b', to: 'public.b', key: ['id'], columns: { id: sql\`id\` } },`;
const C = `    c: { from: 'public.c', to: 'public.c', key: ['id'], columns: { id: sql\`id\` } },`;
let dir: string;
const spec = (tables: string) => writeFileSync(path.join(dir, 'h.sync.ts'), syncSpec({ name: 'h', tables }));

interface Run { id: number; sync: string; kind: string; table: string | null; startedAt: string; endedAt: string | null; durationMs: number;
  outcome: string; counts: Record<string, number>; detail: string | null; host: string | null; pid: number | null }
const history = async (...args: string[]) => JSON.parse(expectStatus(await runSyncctl(['history', dir, '--json', ...args], env()), 0).stdout) as Run[];

beforeAll(async () => {
  await dbs().source.query(`
    CREATE TABLE a (id int PRIMARY KEY, v int); INSERT INTO a SELECT g, g FROM generate_series(1, 500) g;
    CREATE TABLE b (id int PRIMARY KEY);
    CREATE TABLE c (id int PRIMARY KEY); INSERT INTO c SELECT generate_series(1, 20);`);
  await dbs().target.query(`CREATE TABLE a (id int PRIMARY KEY, v int); CREATE TABLE b (id int PRIMARY KEY); CREATE TABLE c (id int PRIMARY KEY);`);
  dir = specs.write({ 'h.sync.ts': syncSpec({ name: 'h', tables: `${A}\n${B}` }) });
});

test('before the first apply there is no history; apply records an apply run and a copy run per table, a second apply one more apply run', async () => {
  expect(expectStatus(await runSyncctl(['history', dir], env()), 0).stdout.trim()).toBe('no runs recorded');

  expectStatus(await runSyncctl(['apply', dir], env()), 0);
  const first = await history();
  expect(first.map((r) => [r.kind, r.table, r.outcome])).toEqual([['copy', 'b', 'ok'], ['copy', 'a', 'ok'], ['apply', null, 'ok']]);
  const [copyB, copyA, apply] = first as [Run, Run, Run];
  expect(copyA.counts).toEqual({ rows: 500 });
  expect(copyB.counts).toEqual({ rows: 0 });
  expect(apply.counts).toMatchObject({ tablesCopied: 2, rowsCopied: 500 });
  expect(apply.counts['changes']).toBeGreaterThan(3);
  expect(apply.detail).toContain('schema:syncctl');
  // The apply run began before the migration that created syncctl.runs, and spans its copies.
  expect(apply.startedAt <= copyA.startedAt && copyA.endedAt! <= apply.endedAt!).toBe(true);
  expect(first.every((r) => r.sync === 'h' && r.endedAt !== null && r.host !== null && r.pid !== null)).toBe(true);

  expectStatus(await runSyncctl(['apply', dir], env()), 0);
  const [noop] = await history('--kind', 'apply', '--limit', '1');
  expect(noop).toMatchObject({ kind: 'apply', outcome: 'ok', counts: { changes: 0, tablesCopied: 0, rowsCopied: 0 }, detail: 'no changes' });
  expect(noop!.id).toBeGreaterThan(apply.id);

  expect((await history('--kind', 'copy')).map((r) => r.table)).toEqual(['b', 'a']);
  expect((await history('--table', 'a')).map((r) => [r.kind, r.counts['rows']])).toEqual([['copy', 500]]);
  expect(await history('--outcome', 'failed')).toEqual([]);

  const text = expectStatus(await runSyncctl(['history', dir], env()), 0).stdout.split('\n');
  expect(text[0]).toMatch(/^ID\s+SYNC\s+KIND\s+TABLE\s+STARTED \(UTC\)\s+DURATION\s+OUTCOME\s+COUNTS\s+DETAIL$/);
  expect(text[1]).toMatch(/^\d+\s+h\s+apply\s+-\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d+ ms\s+ok\s+changes=0 rowsCopied=0 tablesCopied=0\s+no changes$/);
  expect(text.some((l) => /\bcopy\s+a\b.*\bok\s+rows=500\b/.test(l))).toBe(true);
  const unknown = expectStatus(await runSyncctl(['history', dir, '--sync', 'nope'], env()), 2);
  expect(unknown.stderr).toContain('no sync named nope');
});

test('an apply that fails in a copy records the failure and what it applied before it; the next apply finishes the copy', async () => {
  spec(`${A}\n${B}\n${C}`);
  // The copy of c waits to write its chunk plan; its sessions are then cut.
  const gate = new pg.Client({ connectionString: dbs().targetUrl });
  const watcher = new pg.Client({ connectionString: dbs().targetUrl });
  await gate.connect();
  await watcher.connect();
  let failed: Awaited<ReturnType<typeof runSyncctl>>;
  try {
    await gate.query('BEGIN; LOCK TABLE syncctl.snapshot_chunks IN SHARE MODE');
    const applying = runSyncctl(['apply', dir], env());
    await waitFor('the copy of c waiting', async () => (await rows(watcher,
      `SELECT 1 FROM pg_stat_activity WHERE application_name = 'syncctl copy' AND wait_event_type = 'Lock'`)).length > 0, 60_000);
    await watcher.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'syncctl copy'`);
    await gate.query('ROLLBACK');
    failed = expectStatus(await applying, 1);
  } finally {
    await gate.end();
    await watcher.end();
  }
  const [run] = await history('--kind', 'apply', '--limit', '1');
  expect(run).toMatchObject({ outcome: 'failed' });
  expect(run!.detail).toContain('applied before it:');
  expect(run!.detail).toContain('publication-table:');
  expect(failed.stderr.length).toBeGreaterThan(0);

  expectStatus(await runSyncctl(['apply', dir], env()), 0);
  // Newest first by start: the apply began before its copy.
  const after = await history('--limit', '2');
  expect(after.map((r) => [r.kind, r.table, r.outcome])).toEqual([['copy', 'c', 'ok'], ['apply', null, 'ok']]);
  expect(after[0]!.counts).toEqual({ rows: 20 });
  expect(after[1]!.counts).toMatchObject({ tablesCopied: 1, rowsCopied: 20 });
});

test('the recorder: runs started and finished through a pg.Client or a Connection, runs closed as lost, a wrapped run', async () => {
  const client = new pg.Client({ connectionString: dbs().targetUrl });
  await client.connect();
  const connection = await connect('target', dbs().targetUrl);
  try {
    const lost = await startRun(client, { sync: 'h', kind: 'worker', detail: 'session 1' });
    const current = await startRun(connection, { sync: 'h', kind: 'worker' });
    expect((await history('--kind', 'worker')).map((r) => r.outcome)).toEqual(['running', 'running']);
    expect(await closeLostRuns(connection, 'h', 'worker', current)).toBe(1);
    await finishRun(client, current, { outcome: 'stopped', counts: { transactions: 12 }, detail: 'SIGTERM' });
    const workers = await history('--kind', 'worker');
    expect(workers.map((r) => [r.id, r.outcome, r.detail])).toEqual([
      [current, 'stopped', 'SIGTERM'], [lost, 'lost', 'session 1; ended without recording an outcome']]);
    expect(workers[0]!.counts).toEqual({ transactions: 12 });

    expect(await recordRun(client, { sync: 'h', kind: 'verify', table: 'a' }, async () => ({ result: 'same', counts: { differences: 0 } }))).toBe('same');
    const failing = recordRun(client, { sync: 'h', kind: 'repair', table: 'a' }, async () => {
      throw new Error('boom at postgres://u:secret@host/db\nsecond line');
    });
    await expect(failing).rejects.toThrow('boom');
    const [repair, verify] = await history('--limit', '2');
    expect(verify).toMatchObject({ kind: 'verify', table: 'a', outcome: 'ok', counts: { differences: 0 } });
    expect(repair).toMatchObject({ kind: 'repair', outcome: 'failed', detail: 'boom at postgres://u:***@host/db' });
  } finally {
    await client.end();
    await connection.close();
  }
});
