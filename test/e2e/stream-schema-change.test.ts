/**
 * Source schema changes while streaming: an added, unmapped column is ignored; a dropped mapped
 * column pauses that table alone (the other table goes on), plan explains the fix, and once the
 * source fits again apply copies the table afresh and the stream takes it up.
 */
import { afterAll, expect, test } from 'vitest';
import { runSyncctl, syncSpec, useSpecDir, waitFor, rows } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('schema_change');
const specs = useSpecDir();
let worker: InProcessWorker | undefined;
afterAll(async () => { await worker?.stop().catch(() => {}); });

const tables = `
    products: { from: 'public.products', to: 'public.products', key: ['id'],
      columns: { id: sql\`id\`, label: sql\`upper(name)\`, price: sql\`price\` } },
    notes: { from: 'public.notes', to: 'public.notes', key: ['id'], columns: { id: sql\`id\`, body: sql\`body\` } },`;

test('a broken mapping pauses its table only; after the fix the table is copied again and streams', async () => {
  await dbs().source.query(`
    CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2));
    CREATE TABLE notes (id int PRIMARY KEY, body text);
    INSERT INTO products SELECT g, 'p' || g, g FROM generate_series(1, 50) g;
    INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 10) g;`);
  await dbs().target.query(`
    CREATE TABLE products (id int PRIMARY KEY, label text NOT NULL, price numeric(10,2));
    CREATE TABLE notes (id int PRIMARY KEY, body text);`);
  const dir = specs.write({ 'shop.sync.ts': syncSpec({ name: 'shop', tables }) });
  const env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  const sync = await loadSync(dir, env);
  await apply(sync);
  worker = startWorker(sync);

  // An added column the mapping does not read is ignored.
  await dbs().source.query(`ALTER TABLE products ADD COLUMN colour text; UPDATE products SET colour = 'red', price = price + 1 WHERE id <= 5`);
  await expectTargetMatches(dbs(), sync.tables, { what: 'after an added column' });

  // A dropped mapped column pauses products; notes go on.
  await dbs().source.query(`ALTER TABLE products DROP COLUMN price; UPDATE products SET name = name || '!' WHERE id = 1`);
  await dbs().source.query(`INSERT INTO notes VALUES (11, 'still streaming')`);
  const paused = await waitFor('products paused', async () => {
    const r = await rows<{ state: string; error: string | null }>(dbs().target,
      `SELECT state, error FROM syncctl.sync_tables WHERE sync_name = 'shop' AND table_name = 'products'`);
    return r[0]?.state === 'paused' ? r[0] : undefined;
  });
  expect(paused.error).toContain('price');
  await waitFor('notes streamed', async () => (await rows(dbs().target, `SELECT 1 FROM notes WHERE id = 11`)).length === 1);
  expect(worker.finished()).toBe(false);

  // plan names the column that broke the mapping.
  const plan = await runSyncctl(['plan', dir], env);
  expect(plan.status).toBe(2);
  expect(plan.stderr).toContain('tables.products.columns.price');
  expect(plan.stderr).toContain('"price" does not exist');

  // Fix the source; apply copies products again; a restarted worker streams it.
  await worker.stop();
  await dbs().source.query(`ALTER TABLE products ADD COLUMN price numeric(10,2); UPDATE products SET price = id * 2`);
  const again = await runSyncctl(['plan', dir], env);
  expect(again.stdout).toContain('id: copy:shop:products');
  const applied = await runSyncctl(['apply', dir], env);
  expect(applied.status).toBe(0);
  worker = startWorker(await loadSync(dir, env));
  await dbs().source.query(`UPDATE products SET price = 0 WHERE id = 2; DELETE FROM products WHERE id = 3`);
  await expectTargetMatches(dbs(), sync.tables, { what: 'after the re-copy' });
  expect((await rows<{ state: string }>(dbs().target, `SELECT state FROM syncctl.sync_tables WHERE sync_name = 'shop' ORDER BY table_name`))
    .map((r) => r.state)).toEqual(['streaming', 'streaming']);
});
