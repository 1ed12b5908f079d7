/**
 * `manual` with the worker killed -9 in between: a local edit parks the first incoming change of
 * its key; later changes of that key queue behind it across worker restarts (none lost, none
 * queued twice, other keys stream on); `syncctl conflicts resolve` decides the first and replays
 * the queue in order, while a restarted worker streams.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { expectStatus, rows, runSyncctl, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, loadSync, sleep, spawnWorker, waitForStreaming, type ChildWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('manual_crash');
const specs = useSpecDir();
let worker: ChildWorker | undefined;
let dir: string;
let env: Record<string, string>;

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  await dbs().source.query(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL);
    INSERT INTO items SELECT g, 0 FROM generate_series(1, 50) g`);
  await dbs().target.query(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)`);
  dir = specs.write({ 'm.sync.ts': syncSpec({ name: 'mc', tables: `    items: { from: 'public.items', to: 'public.items', key: ['id'],
      columns: { id: sql\`id\`, v: sql\`v\` }, conflict: { strategy: 'manual' } },` }) });
  await apply(await loadSync(dir, env));
});

afterAll(async () => {
  if (worker && worker.child.exitCode === null && worker.child.signalCode === null) {
    worker.child.kill('SIGKILL');
    await worker.exited;
  }
});

const pending = async () => rows<{ id: string; v: number; outcome: string }>(dbs().target,
  `SELECT c.id::text AS id, (c.incoming->>'v')::int AS v, c.outcome FROM syncctl.sync_conflicts AS c WHERE c.key = '{"id": 7}' ORDER BY c.id`);

test('manual queue across kill -9: every later change of the key queued once, in order; resolve replays them', async () => {
  worker = spawnWorker(dir, env);
  await waitForStreaming(dbs(), 'mc');
  await dbs().target.query(`UPDATE items SET v = -1 WHERE id = 7`);
  // Ten rounds: a change of key 7 and of key 8, then kill -9 at a random moment, restart.
  for (let round = 1; round <= 10; round++) {
    await dbs().source.query(`UPDATE items SET v = ${round} WHERE id IN (7, 8)`);
    await sleep(Math.floor(Math.random() * 150));
    worker.child.kill('SIGKILL');
    await worker.exited;
    worker = spawnWorker(dir, env);
  }
  await waitFor('every change of key 7 parked or queued', async () => (await pending()).length === 10, 60_000);
  await waitFor('key 8 streamed on', async () => (await rows(dbs().target, `SELECT 1 FROM items WHERE id = 8 AND v = 10`)).length === 1);
  const queue = await pending();
  expect(queue.map((c) => [c.v, c.outcome])).toEqual(Array.from({ length: 10 }, (_, i) => [i + 1, 'pending']));
  expect(await rows(dbs().target, `SELECT v FROM items WHERE id = 7`)).toEqual([{ v: -1 }]);

  // Resolve while the worker streams: the first change applied, then the nine behind it, in order.
  const resolved = expectStatus(await runSyncctl(['conflicts', 'resolve', queue[0]!.id, '--use', 'incoming', '--specs', dir, '--yes'], env), 0);
  expect(resolved.stdout).toContain('9 queued change(s) behind them applied');
  expect(await rows(dbs().target, `SELECT v FROM items WHERE id = 7`)).toEqual([{ v: 10 }]);
  expect((await pending()).every((c) => c.outcome === 'resolved')).toBe(true);
  await dbs().source.query(`UPDATE items SET v = 99 WHERE id = 7`);
  await waitFor('key 7 streaming again', async () => (await rows(dbs().target, `SELECT 1 FROM items WHERE id = 7 AND v = 99`)).length === 1);
  expect((await pending()).length).toBe(10);
}, 180_000);
