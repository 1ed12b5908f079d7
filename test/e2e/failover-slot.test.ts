/**
 * `failover: true` (PostgreSQL 17 and later): the sync's slot is created as a failover slot, plan
 * and apply turn the flag on and off on an existing slot, and status shows it. Older sources get
 * a preflight error naming the file and the field.
 */
import { expect, test } from 'vitest';
import { expectStatus, runSyncctl, syncSpec, useSpecDir } from '../support/cli.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('failover_slot');
const specs = useSpecDir();
const TABLES = `    items: { from: 'public.items', to: 'public.items', key: ['id'], columns: { id: sql\`id\`, name: sql\`name\` } },`;

const spec = (failover: boolean) => syncSpec({ name: 'fo', tables: TABLES }).replace("tables: {", `failover: ${failover},\n  tables: {`);

test('a failover slot: created with the flag, switched by apply, shown by status (or refused before PostgreSQL 17)', async () => {
  await dbs().source.query(`CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'a')`);
  await dbs().target.query(`CREATE TABLE items (id int PRIMARY KEY, name text)`);
  const env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  const version = Number((await dbs().source.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v);
  const on = specs.write({ 'fo.sync.ts': spec(true) });
  if (version < 170000) {
    const refused = expectStatus(await runSyncctl(['plan', on], env), 2);
    expect(refused.stderr).toContain('fo.sync.ts: failover: failover slots need PostgreSQL 17 or newer on the source');
    return;
  }
  expectStatus(await runSyncctl(['apply', on], env), 0);
  const flag = async () => (await dbs().source.query(`SELECT failover FROM pg_replication_slots WHERE slot_name = 'syncctl_fo'`)).rows[0]?.['failover'];
  expect(await flag()).toBe(true);
  expect(expectStatus(await runSyncctl(['plan', on], env), 0).stdout).toContain('No changes');
  const status = await runSyncctl(['status', on, '--json'], env);
  expect(JSON.parse(status.stdout)[0].slot).toMatchObject({ failover: true, standbySlots: null });

  const off = specs.write({ 'fo.sync.ts': spec(false) });
  const plan = expectStatus(await runSyncctl(['plan', off, '--sql'], env), 0).stdout;
  expect(plan).toContain('ALTER_REPLICATION_SLOT "syncctl_fo" (FAILOVER false)');
  expectStatus(await runSyncctl(['apply', off], env), 0);
  expect(await flag()).toBe(false);
  expectStatus(await runSyncctl(['apply', on], env), 0);
  expect(await flag()).toBe(true);
});
