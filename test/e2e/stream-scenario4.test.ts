/**
 * PRODUCT.md scenario 4 from examples/natural-keys: two copies of one schema whose surrogate ids
 * differ; rows matched by email (through lower()), by sku, and by a composite of three columns.
 * Every source table starts with REPLICA IDENTITY DEFAULT (the primary key id only), which does
 * not carry the natural key: plan widens it (unique index, or FULL where no index fits) and says
 * why. Updates and deletes then find their target row, also when the natural key changes.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { planAll } from '../../src/plan/reconcile.ts';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { REPO_ROOT } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('stream_scenario4');
const example = (file: string) => path.join(REPO_ROOT, 'examples/natural-keys', file);
let sync: LoadedSync;
let worker: InProcessWorker | undefined;
/** Target ids of rows shop B already had before the first apply. */
let idsBefore: Record<string, string>;

const matches = (what: string) => expectTargetMatches(dbs(), sync.tables, { what });
const src = (sql: string) => dbs().source.query(sql);
const targetIds = async () => Object.fromEntries((await dbs().target.query<{ k: string; id: string }>(
  `SELECT 'c:' || email AS k, id::text AS id FROM customers UNION ALL SELECT 'p:' || sku, id::text FROM products
   UNION ALL SELECT 's:' || warehouse || '/' || sku || '/' || bin, id::text FROM stock`)).rows.map((r) => [r.k, r.id]));

beforeAll(async () => {
  const schema = readFileSync(example('schema.sql'), 'utf8');
  await dbs().source.query(schema + readFileSync(example('seed.sql'), 'utf8'));
  // Shop B: the same schema, its own ids (far from A's), and some of A's rows already there, stale.
  await dbs().target.query(`${schema};
    ALTER TABLE customers ALTER COLUMN id RESTART WITH 70001;
    ALTER TABLE products ALTER COLUMN id RESTART WITH 80001;
    ALTER TABLE stock ALTER COLUMN id RESTART WITH 90001;
    INSERT INTO customers (email, name) SELECT 'customer' || g || '@shop.example', 'stale' FROM generate_series(1, 300, 7) g;
    INSERT INTO products (sku, title) SELECT 'SKU-' || lpad(g::text, 5, '0'), 'stale' FROM generate_series(1, 39, 3) g;
    INSERT INTO stock (warehouse, sku, bin) VALUES ('south', 'SKU-00002', 1), ('east', 'SKU-00003', 2)`);
  idsBefore = await targetIds();
  sync = await loadSync(example('shop.sync.ts'), { SHOP_A_DATABASE_URL: dbs().sourceUrl, SHOP_B_DATABASE_URL: dbs().targetUrl });
});

afterAll(async () => {
  await worker?.stop();
});

test('plan widens each replica identity that does not carry the natural key, and says why', async () => {
  const [plan] = await planAll([sync]);
  const reason = (table: string) => plan!.changes.find((c) => c.id === `replica-identity:public.${table}`);
  expect(reason('customers')?.subject).toBe('replica identity of public.customers: default -> index:customers_email_key');
  expect(reason('customers')?.reason).toBe('the target key is computed from email, but the replica identity (primary key (id)) does not carry ' +
    'email: updates and deletes could not find their target row. Unique index customers_email_key carries them.');
  expect(reason('products')?.subject).toBe('replica identity of public.products: default -> full');
  expect(reason('products')?.reason).toBe('the target key is computed from sku, but the replica identity (primary key (id)) does not carry ' +
    'sku: updates and deletes could not find their target row. No unique NOT NULL index covers them, so the whole old row is logged (REPLICA IDENTITY FULL).');
  expect(reason('stock')?.subject).toBe('replica identity of public.stock: default -> index:stock_warehouse_sku_bin_key');
  expect(reason('stock')?.reason).toMatch(/^the target key is computed from warehouse, sku, bin, but the replica identity \(primary key \(id\)\) does not carry warehouse, sku, bin/);
});

test('apply widens the identities and copies by natural key: rows shop B had keep their own ids', async () => {
  await apply(sync);
  const { rows } = await src(`SELECT relname, relreplident FROM pg_class WHERE relname IN ('customers', 'products', 'stock') AND relkind = 'r' ORDER BY relname`);
  expect(rows).toEqual([{ relname: 'customers', relreplident: 'i' }, { relname: 'products', relreplident: 'f' }, { relname: 'stock', relreplident: 'i' }]);
  worker = startWorker(sync);
  await matches('after the initial copy');
  const after = await targetIds();
  for (const [key, id] of Object.entries(idsBefore)) expect(after[key], key).toBe(id);
  // Rows shop B did not have got ids from B's own sequence, not A's.
  expect(Number(after['c:customer2@shop.example'])).toBeGreaterThan(70000);
});

test('updates find their row by natural key; the target keeps its surrogate id', async () => {
  const before = await targetIds();
  await src(`BEGIN;
    UPDATE customers SET name = name || ' (updated)', tier = 'platinum' WHERE id % 5 = 0;
    UPDATE products SET price = price * 2, title = 'Renamed ' || id WHERE id % 3 = 0;
    UPDATE stock SET qty = qty + 1000 WHERE warehouse = 'north';
    COMMIT`);
  await matches('after updates');
  const after = await targetIds();
  for (const key of Object.keys(before)) expect(after[key], key).toBe(before[key]);
  expect((await dbs().target.query(`SELECT name, tier FROM customers WHERE email = 'customer5@shop.example'`)).rows)
    .toEqual([{ name: 'Customer 5 (updated)', tier: 'platinum' }]);
});

test('natural key changes: email, sku, one column of the composite key, and swaps inside a transaction', async () => {
  await src(`UPDATE customers SET email = 'renamed-' || email WHERE id IN (1, 2, 3)`);
  await src(`UPDATE customers SET email = upper(email) WHERE id = 4`);  // same key after lower(): an update
  await src(`UPDATE products SET sku = sku || '-B' WHERE id IN (1, 2)`);
  await src(`UPDATE stock SET bin = bin + 100 WHERE id IN (2, 3, 4)`);
  await src(`UPDATE stock SET warehouse = 'west', qty = 7 WHERE id = 5`);
  await src(`BEGIN;
    UPDATE products SET sku = 'tmp' WHERE id = 10;
    UPDATE products SET sku = 'SKU-00010' WHERE id = 11;
    UPDATE products SET sku = 'SKU-00011' WHERE id = 10;
    UPDATE customers SET email = 'x@tmp' WHERE id = 20;
    UPDATE customers SET email = 'customer20@shop.example' WHERE id = 21;
    UPDATE customers SET email = 'customer21@shop.example' WHERE id = 20;
    COMMIT`);
  await matches('after key changes');
  expect((await dbs().target.query(`SELECT count(*)::int AS n FROM customers WHERE email LIKE 'customer1@%' OR email LIKE 'customer2@%'`)).rows)
    .toEqual([{ n: 0 }]);
  expect((await dbs().target.query(`SELECT title FROM products WHERE sku IN ('SKU-00010', 'SKU-00011') ORDER BY sku`)).rows)
    .toEqual([{ title: 'Product 11' }, { title: 'Product 10' }]);
});

test('deletes find their row by natural key (index identity and FULL identity)', async () => {
  await src(`BEGIN;
    DELETE FROM customers WHERE id IN (1, 6, 7, 8);
    DELETE FROM stock WHERE sku IN ('SKU-00002', 'SKU-00050') OR id = 3;
    DELETE FROM products WHERE id IN (2, 50, 51);
    COMMIT`);
  await matches('after deletes');
});

test('a product losing its sku leaves the target and comes back with a new one; an insert reuses a deleted key', async () => {
  await src(`UPDATE products SET sku = NULL WHERE id = 60`);
  await matches('after a sku set to NULL');
  await src(`UPDATE products SET sku = 'SKU-NEW-60', price = NULL WHERE id = 60`);
  await src(`INSERT INTO customers (email, name) VALUES ('customer6@shop.example', 'Customer 6, again')`);
  await src(`INSERT INTO stock (warehouse, sku, bin, qty) VALUES ('south', 'SKU-00002', 1, 99)`);
  await matches('after re-inserts');
  expect(worker!.finished()).toBe(false);
  // Shop B's stale rows were there before the first copy: each met the copy as insert_exists
  // under the default rule (source-wins: applied, logged). The stream itself met no conflict.
  expect((await dbs().target.query(`SELECT kind, outcome, source_lsn IS NULL AS from_copy, count(*)::int AS n
    FROM syncctl.sync_conflicts GROUP BY 1, 2, 3`)).rows).toEqual([{ kind: 'insert_exists', outcome: 'applied', from_copy: false, n: 43 + 13 + 2 }]);
});
