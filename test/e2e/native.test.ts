/**
 * Native tables (`mode: 'native'`): a publication syncctl_<name>_native on the source and a
 * subscription of the same name on the target, managed declaratively: adding a table alters the
 * publication and refreshes the subscription, removing the last drops the subscription.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { changeLine, expectStatus, planIds, rows, runSyncctl, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { getServers } from '../support/servers.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('native');
const specs = useSpecDir();
const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });

const MAPPED = `    items: { from: 'public.items', to: 'public.item_copies', key: ['id'], columns: { id: sql\`id\`, label: sql\`label\` } },`;
const PRODUCTS = `    products: { from: 'public.products', to: 'public.products', mode: 'native' },`;
const CATEGORIES = `    categories: { from: 'public.categories', to: 'public.categories', mode: 'native' },`;
const spec = (...tables: string[]) => specs.write({ 'shop.sync.ts': syncSpec({ name: 'shop', tables: tables.join('\n') }) });

async function count(table: string): Promise<number> {
  return Number((await rows(dbs().target, `SELECT count(*) AS n FROM ${table}`))[0]?.['n']);
}

async function subscribed(): Promise<{ name: string; enabled: boolean; slot: string; publications: string[]; tables: string[] }[]> {
  return rows(dbs().target, `
    SELECT s.subname AS name, s.subenabled AS enabled, s.subslotname::text AS slot, s.subpublications AS publications,
           array(SELECT sr.srrelid::regclass::text FROM pg_subscription_rel sr WHERE sr.srsubid = s.oid ORDER BY 1) AS tables
      FROM pg_subscription s WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`);
}

async function published(): Promise<string[]> {
  return (await rows(dbs().source, `SELECT tablename FROM pg_publication_tables WHERE pubname = 'syncctl_shop_native' ORDER BY 1`)).map((r) => r['tablename'] as string);
}

beforeAll(async () => {
  const { source, target } = dbs();
  for (const db of [source, target]) {
    await db.query(`CREATE TABLE public.products (id int PRIMARY KEY, name text NOT NULL, price numeric(10, 2))`);
    await db.query(`CREATE TABLE public.categories (id int PRIMARY KEY, title text)`);
  }
  await source.query(`CREATE TABLE public.items (id int PRIMARY KEY, label text)`);
  await target.query(`CREATE TABLE public.item_copies (id int PRIMARY KEY, label text)`);
  await source.query(`INSERT INTO public.products SELECT g, 'product ' || g, g * 1.5 FROM generate_series(1, 50) g`);
  await source.query(`INSERT INTO public.categories VALUES (1, 'tools'), (2, 'toys'), (3, 'food')`);
});

describe('one native table', () => {
  test('plan --sql shows the subscription with its password masked', async () => {
    const plan = expectStatus(await runSyncctl(['plan', spec(MAPPED, PRODUCTS), '--sql'], env()), 0);
    const password = getServers().source.password;
    expect(plan.stdout).not.toContain(password);
    expect(plan.stdout).toMatch(/\| CREATE SUBSCRIPTION "syncctl_shop_native" CONNECTION 'postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/t_native_[0-9a-f]+' PUBLICATION "syncctl_shop_native" WITH \(slot_name = 'syncctl_shop_native', create_slot = true, copy_data = true\)/);
    const json = expectStatus(await runSyncctl(['plan', spec(MAPPED, PRODUCTS), '--json'], env()), 0);
    expect(json.stdout).not.toContain(password);
    expect(json.stdout).toContain('postgres:***@');
  });

  test('apply creates the publication and the subscription, which copies the existing rows', async () => {
    const apply = expectStatus(await runSyncctl(['apply', spec(MAPPED, PRODUCTS)], env()), 0);
    expect(apply.stdout).not.toContain(getServers().source.password);
    expect(await published()).toEqual(['products']);
    expect(await subscribed()).toEqual([{
      name: 'syncctl_shop_native', enabled: true, slot: 'syncctl_shop_native', publications: ['syncctl_shop_native'], tables: ['products'],
    }]);
    expect(await rows(dbs().source, `SELECT slot_name, plugin FROM pg_replication_slots WHERE database = current_database() AND slot_name LIKE 'syncctl%' ORDER BY 1`)).toEqual([
      { slot_name: 'syncctl_shop', plugin: 'pgoutput' },
      { slot_name: 'syncctl_shop_native', plugin: 'pgoutput' },
    ]);
    await waitFor('50 products on the target', async () => (await count('public.products')) === 50);
    expect(await rows(dbs().target, `SELECT id, name, price FROM public.products WHERE id = 7`)).toEqual([{ id: 7, name: 'product 7', price: '10.50' }]);
    // No tracking trigger on a native table: Postgres applies it, not the worker.
    expect(await rows(dbs().target, `SELECT tgrelid::regclass::text AS t FROM pg_trigger WHERE tgname = 'syncctl_track'`)).toEqual([{ t: 'item_copies' }]);
  });

  test('the subscription streams new rows, and plan is empty', async () => {
    await dbs().source.query(`INSERT INTO public.products VALUES (51, 'late', 1)`);
    await waitFor('the late product on the target', async () => (await count('public.products')) === 51);
    expectStatus(await runSyncctl(['plan', spec(MAPPED, PRODUCTS), '--detailed-exitcode'], env()), 0);
  });
});

describe('a second native table', () => {
  test('plan adds it to the publication and refreshes the subscription', async () => {
    const plan = expectStatus(await runSyncctl(['plan', spec(MAPPED, PRODUCTS, CATEGORIES), '--sql', '--detailed-exitcode'], env()), 2);
    expect(planIds(plan.stdout)).toEqual([
      'sync-table:shop:categories',
      'publication-table:syncctl_shop_native:public.categories',
      'subscription:syncctl_shop_native',
    ]);
    expect(changeLine(plan.stdout, 'subscription:syncctl_shop_native')).toBe('~ target subscription syncctl_shop_native');
    expect(plan.stdout).toContain('| ALTER SUBSCRIPTION "syncctl_shop_native" REFRESH PUBLICATION WITH (copy_data = true)');
    expect(plan.stdout).not.toContain(getServers().source.password);
  });

  test('apply alters the publication; the refreshed subscription copies the new table', async () => {
    expectStatus(await runSyncctl(['apply', spec(MAPPED, PRODUCTS, CATEGORIES)], env()), 0);
    expect(await published()).toEqual(['categories', 'products']);
    expect((await subscribed())[0]?.tables).toEqual(['categories', 'products']);
    await waitFor('3 categories on the target', async () => (await count('public.categories')) === 3);
    expect(await rows(dbs().target, 'SELECT id, title FROM public.categories ORDER BY id')).toEqual([
      { id: 1, title: 'tools' }, { id: 2, title: 'toys' }, { id: 3, title: 'food' },
    ]);
    expectStatus(await runSyncctl(['plan', spec(MAPPED, PRODUCTS, CATEGORIES), '--detailed-exitcode'], env()), 0);
  });
});

describe('removing native tables', () => {
  test('removing one of two drops it from the publication and refreshes', async () => {
    const dir = spec(MAPPED, PRODUCTS);
    const plan = expectStatus(await runSyncctl(['plan', dir], env()), 0);
    expect(planIds(plan.stdout)).toEqual([
      'publication-table:syncctl_shop_native:public.categories',
      'subscription:syncctl_shop_native',
      'sync-table:shop:categories',
    ]);
    expectStatus(await runSyncctl(['apply', dir, '--allow-destroy'], env()), 0);
    expect(await published()).toEqual(['products']);
    expect((await subscribed())[0]?.tables).toEqual(['products']);
    expect(await count('public.categories')).toBe(3);
    expectStatus(await runSyncctl(['plan', dir, '--detailed-exitcode'], env()), 0);
  });

  test('removing the last drops the subscription and its slot, only with --allow-destroy', async () => {
    const dir = spec(MAPPED);
    const plan = expectStatus(await runSyncctl(['plan', dir], env()), 0);
    expect(planIds(plan.stdout)).toEqual(['publication:syncctl_shop_native', 'subscription:syncctl_shop_native', 'sync-table:shop:products']);
    expect(changeLine(plan.stdout, 'subscription:syncctl_shop_native')).toBe('- target subscription syncctl_shop_native  [destructive]');
    const refused = expectStatus(await runSyncctl(['apply', dir], env()), 2);
    expect(refused.stderr).toContain('nothing was applied. Re-run with --allow-destroy');
    expect(await subscribed()).toHaveLength(1);

    expectStatus(await runSyncctl(['apply', dir, '--allow-destroy'], env()), 0);
    expect(await subscribed()).toEqual([]);
    expect(await rows(dbs().source, `SELECT pubname FROM pg_publication ORDER BY 1`)).toEqual([{ pubname: 'syncctl_shop' }]);
    expect(await rows(dbs().source, `SELECT slot_name FROM pg_replication_slots WHERE database = current_database() AND slot_name LIKE 'syncctl%'`)).toEqual([{ slot_name: 'syncctl_shop' }]);
    expect(await count('public.products')).toBe(51);
    expectStatus(await runSyncctl(['plan', dir, '--detailed-exitcode'], env()), 0);
  });
});
