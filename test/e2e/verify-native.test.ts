/**
 * `syncctl verify` of native tables (mirrored by the sync's Postgres subscription), beside a mapped
 * table the worker streams, through the command line:
 * - a clean sync verifies (exit 0): the native tables compared through the identity mapping (a
 *   generated column and a publication row filter included);
 * - a key the subscription has not applied yet is not a difference: the re-check waits for the
 *   subscription's slot to confirm the read position, and reports the key unconfirmed when the
 *   apply worker is held up past --timeout;
 * - under a write load on the source, nothing is reported;
 * - drift written into the native tables is found exactly (missing, extra, different with the
 *   columns), on an otherwise idle source (the barrier alone moves the subscription's position),
 *   and with the worker stopped (the subscription is the native tables' applier);
 * - --repair leaves native tables as they are and says so (exit 1), while it repairs the mapped one.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { rows, runSyncctl, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, churn, loadSync, randomInt, sleep, startWorker, waitForStreaming, type Churn, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';
import { runVerify, sortedDifferences, tableReport } from '../support/verify.ts';

const dbs = useTestDatabases('verify_native');
const specs = useSpecDir();

const TABLES = `
    products: { from: 'public.products', to: 'public.products', mode: 'native' },
    categories: { from: 'public.categories', to: 'public.categories', mode: 'native', where: sql\`id % 10 <> 0\` },
    items: { from: 'public.items', to: 'public.item_copies', key: ['id'], columns: { id: sql\`id\`, label: sql\`label\` } },`;
const SUBSCRIPTION = 'syncctl_vn_native';

let sync: LoadedSync;
let dir: string;
let env: Record<string, string>;
let worker: InProcessWorker | undefined;
let load: Churn | undefined;
let locker: pg.Client | undefined;

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  for (const db of [dbs().source, dbs().target]) {
    await db.query(`
      CREATE TABLE public.products (id int PRIMARY KEY, name text NOT NULL, price numeric(10, 2), tags text[],
                                    shout text GENERATED ALWAYS AS (upper(name)) STORED);
      CREATE TABLE public.categories (id int PRIMARY KEY, title text, at timestamptz)`);
  }
  await dbs().source.query(`
    CREATE TABLE public.items (id int PRIMARY KEY, label text);
    INSERT INTO public.products (id, name, price, tags) SELECT g, 'product ' || g, g * 1.5, ARRAY['t' || g, NULL] FROM generate_series(1, 300) g;
    INSERT INTO public.categories SELECT g, 'category ' || g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 hour' FROM generate_series(1, 100) g;
    INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 50) g`);
  await dbs().target.query(`CREATE TABLE public.item_copies (id int PRIMARY KEY, label text)`);
  dir = specs.write({ 'vn.sync.ts': syncSpec({ name: 'vn', tables: TABLES }) });
  sync = await loadSync(dir, env);
  await apply(sync);
  await waitFor('the subscription has copied both native tables', async () =>
    (await rows<{ n: number }>(dbs().target, `SELECT count(*)::int AS n FROM pg_subscription_rel WHERE srsubstate = 'r'`))[0]!.n === 2, 60_000);
  worker = startWorker(sync);
  await waitForStreaming(dbs(), 'vn');
});

afterAll(async () => {
  await locker?.end().catch(() => {});
  await load?.stop().catch(() => {});
  await worker?.stop();
});

const verify = (args: readonly string[] = []) => runVerify(dir, env, args);
const table = tableReport;
const sorted = sortedDifferences;

/** A target session holding product `id` locked: the subscription's apply worker waits on it when it updates that row. */
async function lockProduct(id: number): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: dbs().targetUrl });
  client.on('error', () => {});
  await client.connect();
  await client.query(`BEGIN; SELECT 1 FROM public.products WHERE id = ${id} FOR UPDATE`);
  return client;
}

async function appliedName(id: number): Promise<string> {
  return (await rows<{ name: string }>(dbs().target, `SELECT name FROM public.products WHERE id = $1`, [id]))[0]!.name;
}

test('a clean sync verifies with no differences (exit 0): native tables compared through the identity mapping', async () => {
  const { result, sync: s } = await verify();
  expect(result.status, result.stderr).toBe(0);
  expect(s.ok).toBe(true);
  expect(Object.fromEntries(s.tables.map((t) => [t.table, [t.skipped, t.path, t.rows.source, t.rows.target, t.differences.length, t.unconfirmed.length]]))).toEqual({
    products: [undefined, 'direct', 300, 300, 0, 0], categories: [undefined, 'direct', 90, 90, 0, 0], items: [undefined, 'direct', 50, 50, 0, 0],
  });
  const text = await runSyncctl(['verify', dir, '--table', 'products'], env);
  expect(text.status).toBe(0);
  expect(text.stdout).toMatch(/^ {2}products -> public\.products \(mapped on the source\): 300 source row\(s\), 300 target row\(s\): no differences$/m);
}, 120_000);

test('a change the subscription has not applied yet is no difference: the re-check waits for the subscription, and reports it unconfirmed past --timeout', async () => {
  locker = await lockProduct(5);
  try {
    await heldBack();
  } finally {
    await locker?.end().catch(() => {});
    locker = undefined;
  }
}, 180_000);

/** With product 5 locked on the target (`locker`): its source change cannot be applied until the lock is released. */
async function heldBack(): Promise<void> {
  await dbs().source.query(`UPDATE public.products SET name = 'held back' WHERE id = 5`);
  const held = await verify(['--table', 'products', '--timeout', '2']);
  expect(held.result.status).toBe(1);
  expect(table(held.sync, 'products').differences).toEqual([]);
  expect(table(held.sync, 'products').unconfirmed).toEqual([{ key: { id: '5' }, kind: 'different', columns: ['name'],
    reason: expect.stringMatching(new RegExp(`^the subscription ${SUBSCRIPTION} is not running or is behind: its slot's confirmed position \\([0-9A-F/]+\\) ` +
      'did not reach the source position [0-9A-F/]+ within 2 s$')) }]);
  const runs = await rows<{ outcome: string; detail: string }>(dbs().target, `SELECT outcome, detail FROM syncctl.runs WHERE kind = 'verify' ORDER BY id DESC LIMIT 1`);
  expect(runs[0]).toMatchObject({ outcome: 'failed', detail: expect.stringMatching(/^the subscription syncctl_vn_native is not running or is behind/) });
  expect(await appliedName(5)).toBe('product 5');

  // Released while verify waits: the key is then applied, and equal.
  await dbs().source.query(`UPDATE public.products SET name = 'held back again' WHERE id = 5`);
  const waiting = verify(['--table', 'products', '--timeout', '60']);
  // Its first pass follows the run's row within milliseconds; the key is then a candidate the re-check waits on.
  await waitFor('verify has started', async () => (await rows(dbs().target, `SELECT 1 FROM syncctl.runs WHERE kind = 'verify' AND outcome = 'running'`)).length > 0, 60_000);
  await sleep(2_000);
  expect(await appliedName(5)).toBe('product 5');
  await locker!.query('COMMIT');
  const { result, sync: s } = await waiting;
  expect(result.status, result.stdout).toBe(0);
  expect(table(s, 'products')).toMatchObject({ rechecked: 1, differences: [], unconfirmed: [] });
  expect(await appliedName(5)).toBe('held back again');
}

test('under a write load on the source, with a subscription that lags behind on purpose, nothing is reported', async () => {
  // Each row the apply worker writes into products takes 5 ms: the target is always a little behind the source.
  await dbs().target.query(`
    CREATE FUNCTION slow_apply() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$;
    CREATE TRIGGER slow_apply BEFORE INSERT OR UPDATE ON public.products FOR EACH ROW EXECUTE FUNCTION slow_apply();
    ALTER TABLE public.products ENABLE ALWAYS TRIGGER slow_apply`);
  let n = 1_000;
  load = churn(dbs().source, () => {
    const id = n++;
    return `BEGIN;
      UPDATE public.products SET price = price + 1, tags = tags || '${id}'::text WHERE id = ${randomInt(51, 300)};
      INSERT INTO public.products (id, name) VALUES (${id}, 'new ${id}');
      DELETE FROM public.products WHERE id = ${id - 3} AND id > 1000;
      UPDATE public.categories SET at = now(), id = id + 1000 WHERE id = ${randomInt(31, 100)};
      UPDATE public.items SET label = 'l${id}' WHERE id = ${randomInt(11, 50)};
      COMMIT`;
  }, { pauseMs: 20 });
  try {
    let rechecked = 0;
    for (let i = 0; i < 2; i++) {
      const { result, sync: s } = await verify(['--timeout', '30']);
      expect(s.tables.flatMap((t) => [...t.differences, ...t.unconfirmed]), result.stderr).toEqual([]);
      expect(result.status).toBe(0);
      rechecked += table(s, 'products').rechecked;
    }
    // The lag made candidates, and every one of them was cleared by the re-check.
    expect(rechecked).toBeGreaterThan(0);
  } finally {
    expect(await load.stop()).toBeGreaterThan(0);
    load = undefined;
    await dbs().target.query(`DROP TRIGGER slow_apply ON public.products`);
  }
}, 240_000);

test('drift in native tables is found exactly, on an idle source', async () => {
  // A subscription's target table can be written directly; no syncctl trigger watches it.
  await dbs().target.query(`
    DELETE FROM public.products WHERE id = 1;
    INSERT INTO public.products (id, name, price) VALUES (900000, 'ghost', 1);
    UPDATE public.products SET name = 'Wrong' WHERE id = 2;
    UPDATE public.products SET name = 'Wrong', price = 0 WHERE id = 3;
    UPDATE public.products SET tags = NULL WHERE id = 4;
    INSERT INTO public.categories VALUES (20, 'filtered out on the source', NULL);
    UPDATE public.categories SET at = at + interval '1 second' WHERE id = 21`);
  await dbs().target.query(`BEGIN; SET LOCAL session_replication_role = replica; UPDATE public.item_copies SET label = 'drift' WHERE id = 1; COMMIT`);
  const started = Date.now();
  const { result, sync: s } = await verify(['--timeout', '30']);
  expect(result.status).toBe(1);
  expect(s.ok).toBe(false);
  expect(sorted(table(s, 'products').differences)).toEqual([
    { key: { id: '1' }, kind: 'missing', columns: [] },
    { key: { id: '2' }, kind: 'different', columns: ['name'] },
    { key: { id: '3' }, kind: 'different', columns: ['name', 'price'] },
    { key: { id: '4' }, kind: 'different', columns: ['tags'] },
    { key: { id: '900000' }, kind: 'extra', columns: [] },
  ]);
  expect(sorted(table(s, 'categories').differences)).toEqual([
    { key: { id: '20' }, kind: 'extra', columns: [] },
    { key: { id: '21' }, kind: 'different', columns: ['at'] },
  ]);
  expect(table(s, 'items').differences).toEqual([{ key: { id: '1' }, kind: 'different', columns: ['label'] }]);
  for (const t of s.tables) expect([t.excluded, t.unconfirmed]).toEqual([[], []]);
  // The barrier alone moves the subscription's confirmed position: no waiting for --timeout.
  expect(Date.now() - started).toBeLessThan(25_000);

  const text = await runSyncctl(['verify', dir, '--table', 'products'], env);
  expect(text.status).toBe(1);
  expect(text.stdout).toMatch(/^ {4}missing {4}id=1$/m);
  expect(text.stdout).toMatch(/^ {4}extra {6}id=900000$/m);
  expect(text.stdout).toMatch(/^ {4}different {2}id=3 \(name, price\)$/m);
}, 120_000);

test('--repair repairs the mapped table and leaves native ones as they are, saying so (exit 1)', async () => {
  const { result, sync: s } = await verify(['--repair', '--timeout', '30']);
  expect(result.status).toBe(1);
  expect(s.ok).toBe(false);
  expect(table(s, 'items').repair).toMatchObject({ keys: 1, repaired: 1, remaining: [] });
  for (const name of ['products', 'categories']) {
    expect(table(s, name).repair).toBeUndefined();
    expect(table(s, name).notRepaired).toBe(`--repair does not write native tables: subscription ${SUBSCRIPTION} writes this table, and a write by syncctl would race its apply worker`);
  }
  expect(table(s, 'products').differences).toHaveLength(5);
  expect(await appliedName(2)).toBe('Wrong');
  const text = await runSyncctl(['verify', dir, '--repair', '--table', 'categories'], env);
  expect(text.status).toBe(1);
  expect(text.stdout).toMatch(/^ {4}not repaired: --repair does not write native tables: subscription syncctl_vn_native writes this table/m);
  expect(text.stdout).toMatch(/^verify: 2 key\(s\) differ in 1 table\(s\); 1 table\(s\) and \d+ row\(s\) compared$/m);
}, 120_000);

test('with the worker stopped, native differences are still confirmed (their subscription applies them); the mapped one is unconfirmed', async () => {
  await worker!.stop();
  worker = undefined;
  await dbs().target.query(`BEGIN; SET LOCAL session_replication_role = replica; UPDATE public.item_copies SET label = 'stale' WHERE id = 2; COMMIT`);
  const { result, sync: s } = await verify(['--timeout', '2']);
  expect(result.status).toBe(1);
  expect(table(s, 'products').differences).toHaveLength(5);
  expect(table(s, 'categories').differences).toHaveLength(2);
  expect(table(s, 'products').unconfirmed).toEqual([]);
  expect(table(s, 'items').unconfirmed).toEqual([{ key: { id: '2' }, kind: 'different', columns: ['label'],
    reason: expect.stringMatching(/^the worker is not running or is behind/) }]);
}, 120_000);
