/**
 * A paused table drops its changes; once the spec fits the source again, apply copies it afresh.
 * The copy upserts, so it must also remove what the source deleted meanwhile: rows deleted on the
 * source during the pause, and rows the row filter rejects now, are gone after the recopy; a row
 * written locally on the target (tracked in syncctl.local_changes) stays.
 */
import { afterAll, expect, test } from 'vitest';
import { rows, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('recopy_prune');
const specs = useSpecDir();
let worker: InProcessWorker | undefined;
afterAll(async () => { await worker?.stop().catch(() => {}); });

// The filter reads a column outside the replica identity: the worker applies it.
const tables = `
    products: { from: 'public.products', to: 'public.products', key: ['id'], where: sql\`name <> 'hidden'\`,
      columns: { id: sql\`id\`, label: sql\`upper(name)\`, price: sql\`price\` } },`;

test('rows deleted on the source while a table was paused are gone after the recopy; local rows stay', async () => {
  await dbs().source.query(`
    CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2));
    INSERT INTO products SELECT g, 'p' || g, g FROM generate_series(1, 5000) g;`);
  await dbs().target.query(`CREATE TABLE products (id int PRIMARY KEY, label text NOT NULL, price numeric(10,2));`);
  const dir = specs.write({ 'shop.sync.ts': syncSpec({ name: 'shop', tables }) });
  const env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  const sync = await loadSync(dir, env);
  await apply(sync);
  worker = startWorker(sync);
  await dbs().source.query(`UPDATE products SET price = price + 1 WHERE id <= 5`);
  await expectTargetMatches(dbs(), sync.tables, { what: 'before the pause' });

  // A row written on the target by someone else: tracked, never removed by syncctl.
  await dbs().target.query(`INSERT INTO products VALUES (100000, 'LOCAL', 1)`);
  expect(await rows(dbs().target, `SELECT key FROM syncctl.local_changes WHERE target_table = 'public.products'`)).toEqual([{ key: { id: 100000 } }]);

  // The next change carries the new shape, which pauses the table.
  await dbs().source.query(`ALTER TABLE products DROP COLUMN price; UPDATE products SET name = name || '!' WHERE id = 1`);
  await waitFor('products paused', async () => {
    const r = await rows<{ state: string }>(dbs().target, `SELECT state FROM syncctl.sync_tables WHERE sync_name = 'shop' AND table_name = 'products'`);
    return r[0]?.state === 'paused';
  });
  // While paused (the worker drops them): deletes, rows moved out of the filter, new rows.
  await dbs().source.query(`
    DELETE FROM products WHERE id <= 100 OR id % 50 = 0;
    UPDATE products SET name = 'hidden' WHERE id BETWEEN 200 AND 219;
    INSERT INTO products SELECT g, 'new' || g FROM generate_series(6001, 6100) g`);
  // Stopped at once: the restarted worker reads these changes, and their Relation without price,
  // again; they precede the recopy's snapshot, so they neither pause the table nor apply.
  await worker.stop();
  worker = undefined;
  await dbs().source.query(`ALTER TABLE products ADD COLUMN price numeric(10,2) DEFAULT 7`);
  expect(await apply(await loadSync(dir, env))).toContain('copy:shop:products');
  const copied = await rows<{ n: number }>(dbs().target, `SELECT count(*)::int AS n FROM products WHERE id <= 5000 AND (id <= 100 OR id % 50 = 0 OR id BETWEEN 200 AND 219)`);
  expect(copied).toEqual([{ n: 0 }]);
  expect(await rows(dbs().target, `SELECT state FROM syncctl.sync_tables WHERE sync_name = 'shop'`)).toEqual([{ state: 'streaming' }]);
  expect(await rows(dbs().target, `SELECT count(*)::int AS n FROM syncctl.snapshot_chunks WHERE sync_name = 'shop' AND chunk < 0`)).toEqual([{ n: 0 }]);

  // Nothing was written on the source since the recopy's snapshot: the target equals it now, and
  // after the worker has run.
  const compared = sync.tables.map((t) => ({ ...t, targetWhere: 'id <> 100000' }));
  await expectTargetMatches(dbs(), compared, { what: 'after the re-copy', timeoutMs: 1000 });
  worker = startWorker(await loadSync(dir, env));
  await waitFor('the worker streaming', async () => (await rows<{ active: boolean }>(dbs().source,
    `SELECT active FROM pg_replication_slots WHERE slot_name = 'syncctl_shop'`))[0]?.active === true);
  await expectTargetMatches(dbs(), compared, { what: 'after the re-copy and a run' });
  expect(await rows(dbs().target, `SELECT label FROM products WHERE id = 100000`)).toEqual([{ label: 'LOCAL' }]);
  // And it streams again.
  await dbs().source.query(`UPDATE products SET price = 9, name = name || '+' WHERE id BETWEEN 300 AND 320;
    DELETE FROM products WHERE id BETWEEN 400 AND 410; INSERT INTO products SELECT g, 'later' || g, 3 FROM generate_series(7001, 7010) g`);
  await expectTargetMatches(dbs(), compared, { what: 'streaming after the re-copy' });
  expect(await rows(dbs().target, `SELECT state FROM syncctl.sync_tables WHERE sync_name = 'shop'`)).toEqual([{ state: 'streaming' }]);
});
