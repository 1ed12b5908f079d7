/**
 * Parked changes applied again. A child row whose parent has not reached the target is parked as
 * an apply_error (23503); once the parent arrives (here written on the target, as another sync
 * would write it), the worker applies the child again on its own, and the conflict row says
 * `retried`. A parked change is never applied after a later change of its key: the later change
 * supersedes it (a delete of the child, while the parent is still missing, must not be undone by
 * the retry). `syncctl conflicts retry` applies other parked changes again once the target
 * accepts them, and leaves those it still rejects pending with the new error.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { expectStatus, rows, runSyncctl, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('parked_retry');
const specs = useSpecDir();
let sync: LoadedSync;
let dir: string;
let env: Record<string, string>;
let worker: InProcessWorker | undefined;

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  await dbs().source.query(`
    CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, total int NOT NULL);
    CREATE TABLE notes (id int PRIMARY KEY, body text)`);
  // customers is not part of this sync: another sync (or a person) fills it.
  await dbs().target.query(`
    CREATE TABLE customers (id int PRIMARY KEY);
    INSERT INTO customers VALUES (1);
    CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, total int NOT NULL CHECK (total < 1000));
    CREATE TABLE notes (id int PRIMARY KEY, body text)`);
  dir = specs.write({ 'retry.sync.ts': syncSpec({ name: 'retry', tables: `
    orders: { from: 'public.orders', to: 'public.orders', key: ['id'], columns: { id: sql\`id\`, customer_id: sql\`customer_id\`, total: sql\`total\` } },
    notes: { from: 'public.notes', to: 'public.notes', key: ['id'], columns: { id: sql\`id\`, body: sql\`body\` } },` }) });
  sync = await loadSync(dir, env);
  await apply(sync);
  worker = startWorker(sync);
});

afterAll(async () => {
  await worker?.stop();
});

const conflicts = async () => rows<{ id: string; key: { id: number }; outcome: string; sqlstate: string | null; resolved_by: string | null }>(dbs().target,
  `SELECT s.id::text, s.key, s.outcome, s.sqlstate, s.resolved_by FROM syncctl.sync_conflicts AS s WHERE s.sync_name = 'retry' ORDER BY s.id`);

test('a child parked for its missing parent is applied once the parent arrives; a later change of its key supersedes it', async () => {
  await dbs().source.query(`
    INSERT INTO orders VALUES (1, 1, 10);
    INSERT INTO orders VALUES (2, 2, 20);
    INSERT INTO orders VALUES (3, 2, 30);
    INSERT INTO orders VALUES (4, 3, 40);
    INSERT INTO notes VALUES (1, 'the stream goes on')`);
  await waitFor('the orders of customers 2 and 3 to be parked', async () => (await conflicts()).length === 3);
  expect(await rows(dbs().target, 'SELECT id FROM orders ORDER BY id')).toEqual([{ id: 1 }]);
  expect((await conflicts()).map((c) => [c.key.id, c.outcome, c.sqlstate])).toEqual([[2, 'pending', '23503'], [3, 'pending', '23503'], [4, 'pending', '23503']]);
  // While customer 2 is still missing: order 3 is deleted at the source and order 4 moves to customer 1.
  await dbs().source.query(`DELETE FROM orders WHERE id = 3; UPDATE orders SET customer_id = 1 WHERE id = 4`);
  await waitFor('order 4 to arrive', async () => (await rows(dbs().target, 'SELECT 1 FROM orders WHERE id = 4')).length === 1);
  // Both later changes applied: they superseded the parked inserts of their keys.
  await waitFor('orders 3 and 4 superseded', async () => (await conflicts()).filter((c) => c.outcome === 'resolved').length === 2);
  // The parent arrives: order 2 follows without anyone asking; order 3 stays deleted.
  await dbs().target.query(`INSERT INTO customers VALUES (2), (3)`);
  await waitFor('order 2 retried', async () => (await conflicts()).find((c) => c.key.id === 2)?.outcome === 'retried', 30_000);
  expect((await conflicts()).map((c) => [c.key.id, c.outcome, c.resolved_by])).toEqual([[2, 'retried', 'syncctl run'], [3, 'resolved', 'syncctl'], [4, 'resolved', 'syncctl']]);
  await expectTargetMatches(dbs(), sync.tables, { what: 'after the parent arrived' });
}, 90_000);

test('syncctl conflicts retry: applies what the target accepts now, leaves the rest pending with the new error', async () => {
  await dbs().source.query(`INSERT INTO orders VALUES (10, 1, 5000); INSERT INTO orders VALUES (11, 1, 6000); UPDATE orders SET total = 7000 WHERE id = 1`);
  await waitFor('three changes parked for the CHECK', async () => (await conflicts()).filter((c) => c.outcome === 'pending').length === 3);
  const listed = expectStatus(await runSyncctl(['conflicts', 'list', dir, '--json'], env), 0);
  const pending = JSON.parse(listed.stdout) as { id: number; table: string; kind: string; key: Record<string, unknown>; outcome: string }[];
  expect(pending.map((c) => [c.table, c.kind, c.key, c.outcome])).toEqual([
    ['orders', 'apply_error', { id: 10 }, 'pending'], ['orders', 'apply_error', { id: 11 }, 'pending'], ['orders', 'apply_error', { id: 1 }, 'pending']]);
  const shown = expectStatus(await runSyncctl(['conflicts', 'show', String(pending[0]!.id), '--specs', dir], env), 0);
  expect(shown.stdout).toContain('total');
  expect(shown.stdout).toContain('5000');
  // Bulk without --yes and without a terminal: refused, nothing done.
  const refused = await runSyncctl(['conflicts', 'retry', '--specs', dir, '--table', 'orders'], env);
  expect(refused.status).toBe(2);
  expect(refused.stderr).toContain('--yes');
  // The target now takes totals under 6500: orders 10 and 11 go in, order 1's 7000 stays refused.
  await dbs().target.query(`ALTER TABLE orders DROP CONSTRAINT orders_total_check, ADD CHECK (total < 6500)`);
  const retried = expectStatus(await runSyncctl(['conflicts', 'retry', '--specs', dir, '--table', 'orders', '--yes', '--by', 'alice'], env), 0);
  expect(retried.stdout).toMatch(/2 applied.*1 still failing/s);
  const after = await conflicts();
  expect(after.filter((c) => [10, 11].includes(c.key.id)).map((c) => [c.outcome, c.resolved_by])).toEqual([['retried', 'alice'], ['retried', 'alice']]);
  const still = await rows<{ outcome: string; reason: string }>(dbs().target, `SELECT outcome, reason FROM syncctl.sync_conflicts WHERE key = '{"id": 1}' AND sqlstate = '23514'`);
  expect(still).toEqual([{ outcome: 'pending', reason: expect.stringContaining('orders_total_check') }]);
  expect(await rows(dbs().target, 'SELECT id, total FROM orders WHERE id IN (1, 10, 11) ORDER BY id')).toEqual([{ id: 1, total: 10 }, { id: 10, total: 5000 }, { id: 11, total: 6000 }]);
  // Nothing the worker wrote later is undone: a new change of order 10 wins over its retried insert.
  await dbs().source.query(`UPDATE orders SET total = 50 WHERE id = 10`);
  await waitFor('order 10 updated', async () => (await rows<{ total: number }>(dbs().target, 'SELECT total FROM orders WHERE id = 10'))[0]?.total === 50);
}, 90_000);

test('a source TRUNCATE supersedes what was parked of the table: the parent arriving later brings nothing back', async () => {
  await dbs().source.query(`INSERT INTO orders VALUES (20, 9, 1)`);
  await waitFor('order 20 parked for its missing customer', async () => (await conflicts()).some((c) => c.key.id === 20 && c.outcome === 'pending'));
  await dbs().source.query(`TRUNCATE orders`);
  await waitFor('the target emptied', async () => (await rows(dbs().target, 'SELECT 1 FROM orders')).length === 0);
  // Order 20, and order 1's update the CHECK still refuses (from the test before), both superseded.
  expect((await conflicts()).filter((c) => c.outcome === 'pending')).toEqual([]);
  expect((await conflicts()).find((c) => c.key.id === 20)!.outcome).toBe('resolved');
  await dbs().target.query(`INSERT INTO customers VALUES (9)`);
  await dbs().source.query(`INSERT INTO notes VALUES (2, 'a later batch')`);
  await expectTargetMatches(dbs(), sync.tables, { what: 'after the truncate and the parent' });
}, 60_000);
