/**
 * A table's lifecycle while `syncctl run` streams (a child process leading the sync) and the
 * source keeps writing: `syncctl pause` holds one table's changes while the other streams,
 * `status` shows it held, `resume` waits until the worker has replayed them in order; `resync`
 * copies the table again under a new snapshot, removes rows the source does not have (drift
 * written on the target behind syncctl's back), and hands over to the stream with no gap and no
 * duplicate; a resync cut short leaves the table for a second resync to finish. Every request
 * is in the run history.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { expectStatus, rows, runSyncctl, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, churn, expectTargetMatches, loadSync, sleep, spawnWorker, waitForStreaming, type ChildWorker, type Churn } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';

const dbs = useTestDatabases('table_lifecycle');
const specs = useSpecDir();
const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
let worker: ChildWorker | undefined;
let load: Churn | undefined;
let dir: string;
let sync: LoadedSync;

const TABLES = `
    items: { from: 'public.items', to: 'public.items', key: ['id'], where: sql\`visible\`,
      columns: { id: sql\`id\`, qty: sql\`qty\`, label: sql\`upper(label)\` } },
    notes: { from: 'public.notes', to: 'public.notes', key: ['id'], columns: { id: sql\`id\`, body: sql\`body\` } },`;

const state = async (table = 'items') => (await rows<{ state: string }>(dbs().target,
  `SELECT state FROM syncctl.sync_tables WHERE sync_name = 'lc' AND table_name = $1`, [table]))[0]?.state;
const held = async (table = 'items') => (await rows<{ n: number }>(dbs().target,
  `SELECT count(*)::int AS n FROM syncctl.held_changes WHERE sync_name = 'lc' AND table_name = $1`, [table]))[0]!.n;
const count = async (table: string) => (await rows<{ n: number }>(dbs().target, `SELECT count(*)::int AS n FROM ${table}`))[0]!.n;
const runsOf = (kind: string) => rows<{ table_name: string; outcome: string; counts: Record<string, number>; detail: string | null; ended_at: Date | null }>(
  dbs().target, `SELECT table_name, outcome, counts, detail, ended_at FROM syncctl.runs WHERE sync_name = 'lc' AND kind = $1 ORDER BY id`, [kind]);

/** Updates, inserts and deletes of items (some turning invisible), and inserts of notes. */
let next = 100_000;
function startLoad(): Churn {
  return churn(dbs().source, () => {
    const id = 1 + Math.floor(Math.random() * 3_000);
    return `BEGIN;
      UPDATE items SET qty = qty + 1, label = label || 'x' WHERE id = ${id};
      INSERT INTO items (id, qty, label, visible) VALUES (${next++}, 1, 'new', ${next % 7 !== 0});
      DELETE FROM items WHERE id = ${1 + Math.floor(Math.random() * 3_000)};
      UPDATE items SET visible = NOT visible WHERE id = ${1 + Math.floor(Math.random() * 3_000)};
      INSERT INTO notes (id, body) VALUES (${next++}, 'n');
      COMMIT`;
  }, { pauseMs: 2 });
}

beforeAll(async () => {
  await dbs().source.query(`
    CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, label text NOT NULL, visible boolean NOT NULL);
    INSERT INTO items SELECT g, g, 'item ' || g, g % 10 <> 0 FROM generate_series(1, 3000) g;
    CREATE TABLE notes (id int PRIMARY KEY, body text);
    INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 100) g;`);
  await dbs().target.query(`CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, label text NOT NULL);
    CREATE TABLE notes (id int PRIMARY KEY, body text);`);
  dir = specs.write({ 'lc.sync.ts': syncSpec({ name: 'lc', tables: TABLES }) });
  sync = await loadSync(dir, env());
  await apply(sync);
  worker = spawnWorker(dir, env());
  await waitForStreaming(dbs(), 'lc');
  await expectTargetMatches(dbs(), sync.tables, { what: 'after the initial copy' });
});

afterAll(async () => {
  await load?.stop().catch(() => {});
  if (worker) {
    worker.child.kill('SIGTERM');
    await worker.exited;
  }
});

test('pause holds one table while the other streams; status shows it; resume replays the held changes in order', async () => {
  load = startLoad();
  await sleep(500);
  const paused = expectStatus(await runSyncctl(['pause', dir, 'lc.items', '--by', 'alice'], env()), 0);
  expect(paused.stdout).toContain('paused lc.items');
  expect(await state()).toBe('held');

  // The worker starts its session over, then holds items' changes while notes stream on.
  await waitFor('items changes held', async () => (await held()) > 0, 30_000);
  const itemsBefore = await rows(dbs().target, `SELECT * FROM items ORDER BY id`);
  const notesBefore = await count('notes');
  await sleep(1_500);
  expect(await rows(dbs().target, `SELECT * FROM items ORDER BY id`)).toEqual(itemsBefore);
  expect(await count('notes')).toBeGreaterThan(notesBefore);

  const status = expectStatus(await runSyncctl(['status', dir], env()), 0);
  expect(status.stdout).toMatch(/^\s*items\s+held\b/m);
  const json = JSON.parse(expectStatus(await runSyncctl(['status', dir, '--json'], env()), 0).stdout) as { tables: { name: string; state: string }[] }[];
  expect(json[0]!.tables.find((t) => t.name === 'items')?.state).toBe('held');

  // Pausing again, or resuming a table that streams, names sync, table and state.
  const again = expectStatus(await runSyncctl(['pause', dir, 'lc.items'], env()), 2);
  expect(again.stderr).toContain('cannot pause lc.items: it is held, not streaming');
  const notHeld = expectStatus(await runSyncctl(['resume', dir, 'notes'], env()), 2);
  expect(notHeld.stderr).toContain('cannot resume lc.notes: it is streaming, not held');
  const unknown = expectStatus(await runSyncctl(['pause', dir, 'lc.nope'], env()), 2);
  expect(unknown.stderr).toContain('no table lc.nope in the specs; the tables are: lc.items, lc.notes');

  const resumed = expectStatus(await runSyncctl(['resume', dir, 'lc.items', '--by', 'bob'], env()), 0);
  expect(resumed.stdout).toMatch(/resumed lc\.items: the worker replayed \d+ held change\(s\)/);
  // Waited for: the worker has replayed them and streams the table.
  expect(await held()).toBe(0);
  expect(await state()).toBe('streaming');

  await load.stop();
  load = undefined;
  await expectTargetMatches(dbs(), sync.tables, { what: 'after resume', timeoutMs: 60_000 });
  expect(await held()).toBe(0);
  expect(await rows(dbs().target, `SELECT count(*)::int AS n FROM syncctl.sync_conflicts`)).toEqual([{ n: 0 }]);

  const pauses = await runsOf('pause');
  expect(pauses.map((r) => [r.table_name, r.outcome])).toEqual([['items', 'ok'], ['items', 'failed']]);
  expect(pauses[0]!.detail).toBe('paused by alice');
  expect(pauses.every((r) => r.ended_at !== null)).toBe(true);
  const resumes = await runsOf('resume');
  expect(resumes.map((r) => [r.table_name, r.outcome])).toEqual([['notes', 'failed'], ['items', 'ok']]);
  expect(resumes[1]!.counts['heldChanges']).toBeGreaterThan(0);
  expect(resumes[1]!.detail).toBe('resumed by bob');
});

test('resync under writes: recopied under a new snapshot, drift pruned and repaired, handed back to the stream with no gap or duplicate', async () => {
  // Drift behind syncctl's back (no tracking trigger fires): rows the source never had, rows
  // missing, rows changed.
  await dbs().target.query(`
    SET session_replication_role = replica;
    INSERT INTO items SELECT g, 0, 'stray' FROM generate_series(900001, 900050) g;
    DELETE FROM items WHERE id BETWEEN 100 AND 120;
    UPDATE items SET qty = -1 WHERE id BETWEEN 200 AND 230;
    RESET session_replication_role;`);
  load = startLoad();
  await sleep(500);
  const resynced = expectStatus(await runSyncctl(['resync', dir, 'lc.items', '--json', '--by', 'carol'], env(), { timeoutMs: 120_000 }), 0);
  const result = JSON.parse(resynced.stdout) as { rows: number; pruned: number; previousState: string; state: string };
  expect(result.previousState).toBe('streaming');
  expect(result.state).toBe('streaming');
  expect(result.rows).toBeGreaterThan(2_000);
  // The strays, and rows the source deleted while the worker held the table's changes.
  expect(result.pruned).toBeGreaterThanOrEqual(50);
  await sleep(1_000);
  await load.stop();
  load = undefined;

  await expectTargetMatches(dbs(), sync.tables, { what: 'after resync under writes', timeoutMs: 60_000 });
  expect(await count('items WHERE id > 900000')).toBe(0);
  expect(await state()).toBe('streaming');
  expect(await held()).toBe(0);
  expect(await rows(dbs().target, `SELECT count(*)::int AS n FROM syncctl.sync_conflicts`)).toEqual([{ n: 0 }]);
  const resyncs = await runsOf('resync');
  expect(resyncs).toHaveLength(1);
  expect(resyncs[0]).toMatchObject({ table_name: 'items', outcome: 'ok', counts: { rows: result.rows, pruned: result.pruned } });
  expect(resyncs[0]!.detail).toContain('requested by carol');
  expect(worker!.child.exitCode).toBeNull();
});

test('a held table resynced, and a resync cut short: the table waits for its copy, a second resync finishes it', async () => {
  expectStatus(await runSyncctl(['pause', dir, 'lc.items'], env()), 0);
  load = startLoad();
  await waitFor('items changes held', async () => (await held()) > 0, 30_000);

  // The copy's writes wait on a lock on items, taken once the resync has planned (planning
  // needs items itself) and before it restarts the copy; then its sessions are cut.
  // pg_stat_activity is watched from a session outside these transactions (it is a snapshot inside one).
  const [gate, blocker, watcher] = [0, 1, 2].map(() => new pg.Client({ connectionString: dbs().targetUrl }));
  for (const c of [gate!, blocker!, watcher!]) await c.connect();
  const waiting = (app: string) => waitFor(`${app} waiting on a lock`, async () => (await rows(watcher!,
    `SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, [app])).length > 0, 60_000);
  let first: ReturnType<typeof runSyncctl>;
  try {
    await gate!.query('BEGIN; LOCK TABLE syncctl.snapshot_chunks IN SHARE MODE');
    first = runSyncctl(['resync', dir, 'lc.items'], env(), { timeoutMs: 120_000 });
    await waiting('syncctl resync');
    await blocker!.query('BEGIN; LOCK TABLE items IN SHARE MODE');
    await gate!.query('ROLLBACK');
    await waiting('syncctl copy');
    await watcher!.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'syncctl copy'`);
    await blocker!.query('ROLLBACK');
  } finally {
    for (const c of [gate!, blocker!, watcher!]) await c.end();
  }
  const failed = expectStatus(await first, 1);
  expect(failed.stderr).toContain('resync of lc.items failed');
  expect(failed.stderr).toContain('The table is left waiting for its copy (state copying');
  expect(failed.stderr).toContain('run syncctl resync again (it starts the copy over) or syncctl apply (it resumes the copy)');
  expect(await state()).toBe('copying');
  const status = await runSyncctl(['status', dir], env());
  expect(status.stdout).toMatch(/^\s*items\s+copying\b/m);

  const second = expectStatus(await runSyncctl(['resync', dir, 'lc.items', '--json'], env(), { timeoutMs: 120_000 }), 0);
  expect(JSON.parse(second.stdout)).toMatchObject({ previousState: 'copying', state: 'streaming' });
  await sleep(500);
  await load.stop();
  load = undefined;
  await expectTargetMatches(dbs(), sync.tables, { what: 'after the second resync', timeoutMs: 60_000 });
  expect(await held()).toBe(0);
  const resyncs = await runsOf('resync');
  expect(resyncs.map((r) => r.outcome)).toEqual(['ok', 'failed', 'ok']);
  expect(resyncs[1]!.detail).toContain('left waiting for its copy');
  expect(resyncs[1]!.ended_at).not.toBeNull();
  expect(worker!.child.exitCode).toBeNull();
});

test('resume with no worker running: the table streams again and the next worker replays what was held', async () => {
  expectStatus(await runSyncctl(['pause', dir, 'lc.items'], env()), 0);
  load = startLoad();
  await waitFor('items changes held', async () => (await held()) > 0, 30_000);
  await load.stop();
  load = undefined;
  // Everything the source wrote is read and held (or applied, for notes) before the worker stops.
  await expectTargetMatches(dbs(), sync.tables.filter((t) => t.name === 'notes'), { what: 'notes before the worker stops', timeoutMs: 60_000 });
  worker!.child.kill('SIGTERM');
  await worker!.exited;
  const n = await held();

  const resumed = expectStatus(await runSyncctl(['resume', dir, 'items', '--json'], env()), 0);
  expect(JSON.parse(resumed.stdout)).toMatchObject({ sync: 'lc', table: 'items', heldChanges: n, state: 'streaming', replay: { kind: 'no-worker', heldChanges: n } });
  expect(await held()).toBe(n);

  worker = spawnWorker(dir, env());
  await waitForStreaming(dbs(), 'lc');
  await expectTargetMatches(dbs(), sync.tables, { what: 'after the next worker replayed the held changes', timeoutMs: 60_000 });
  expect(await held()).toBe(0);
});
