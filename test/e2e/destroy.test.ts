/**
 * destroy removes what syncctl created (slot, publications, triggers, subscription,
 * registration), puts back the replica identity it changed and never touches target data; with
 * the source unreachable it still cleans the target and warns about what stays on the source.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../src/embedded/local-cluster.ts';
import { expectStatus, loadScenarioOneSchema, planIds, rows, runSyncctl, SCENARIO_ONE_TABLES, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('destroy');
const specs = useSpecDir();
const COUNTRIES = `CREATE TABLE public.countries (code text PRIMARY KEY, name text NOT NULL)`;
const NATIVE_TABLE = `    countries: { from: 'public.countries', to: 'public.countries', mode: 'native' },`;
let dir: string;
const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** What syncctl creates, on both sides, for sync `name`. */
async function provisioned(source: pg.Client, target: pg.Client, name: string) {
  return {
    slots: (await rows(source, `SELECT slot_name FROM pg_replication_slots WHERE database = current_database() AND slot_name LIKE $1 ORDER BY 1`, [`syncctl_${name}%`])).map((r) => r['slot_name']),
    publications: (await rows(source, `SELECT pubname FROM pg_publication ORDER BY 1`)).map((r) => r['pubname']),
    triggers: (await rows(target, `SELECT tgrelid::regclass::text AS t FROM pg_trigger WHERE tgname = 'syncctl_track' ORDER BY tgrelid::regclass::text COLLATE "C"`)).map((r) => r['t']),
    subscriptions: (await rows(target, `SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`)).map((r) => r['subname']),
    registered: (await rows(target, `SELECT to_regclass('syncctl.syncs') IS NOT NULL AS ok`))[0]?.['ok']
      ? (await rows(target, `SELECT s.name, count(t.*)::int AS tables FROM syncctl.syncs s LEFT JOIN syncctl.sync_tables t ON t.sync_name = s.name GROUP BY s.name`))
      : [],
  };
}

describe('destroy on reachable databases', () => {
  beforeAll(async () => {
    const { source, target } = dbs();
    await loadScenarioOneSchema(dbs());
    await source.query(COUNTRIES);
    await source.query(`INSERT INTO public.countries VALUES ('DE', 'Germany'), ('FR', 'France')`);
    await target.query(COUNTRIES);
    await target.query(`INSERT INTO organizations.institute VALUES (1, 'Kept', NULL, now())`);
    dir = specs.write({ 'laas.sync.ts': syncSpec({ name: 'laas', tables: [SCENARIO_ONE_TABLES.institutes, SCENARIO_ONE_TABLES.users, SCENARIO_ONE_TABLES.memberships, NATIVE_TABLE].join('\n') }) });
    expectStatus(await runSyncctl(['apply', dir], env()), 0);
    await waitFor('the subscription to copy the countries', async () =>
      Number((await rows(target, 'SELECT count(*) AS n FROM public.countries'))[0]?.['n']) === 2);
  });

  test('apply provisioned both sides', async () => {
    expect(await provisioned(dbs().source, dbs().target, 'laas')).toEqual({
      slots: ['syncctl_laas', 'syncctl_laas_native'],
      publications: ['syncctl_laas', 'syncctl_laas_native'],
      triggers: ['organizations."user"', 'organizations.institute', 'organizations.institute_users'],
      subscriptions: ['syncctl_laas_native'],
      registered: [{ name: 'laas', tables: 4 }],
    });
  });

  test('destroy without --allow-destroy exits 2 and removes nothing', async () => {
    const before = await provisioned(dbs().source, dbs().target, 'laas');
    const destroy = expectStatus(await runSyncctl(['destroy', dir], env()), 2);
    expect(destroy.stderr).toMatch(/^error: the plan has 5 destructive change\(s\) \(subscription:syncctl_laas_native, slot:syncctl_laas, publication:syncctl_laas, publication:syncctl_laas_native, sync:laas\); nothing was applied\. Re-run with --allow-destroy/);
    expect(await provisioned(dbs().source, dbs().target, 'laas')).toEqual(before);
  });

  test('destroy --allow-destroy removes it all, restores the replica identity, keeps target data', async () => {
    await dbs().target.query(`INSERT INTO syncctl.sync_conflicts (sync_name, table_name, kind, key, strategy, outcome) VALUES ('laas', 'users', 'insert_exists', '{}', 'manual', 'pending')`);
    const destroy = expectStatus(await runSyncctl(['destroy', dir, '--allow-destroy'], env()), 0);
    expect(planIds(destroy.stdout)).toEqual([
      'subscription:syncctl_laas_native',
      'trigger:organizations.institute',
      'trigger:organizations.user',
      'trigger:organizations.institute_users',
      'slot:syncctl_laas',
      'publication:syncctl_laas',
      'publication:syncctl_laas_native',
      'replica-identity:public.users',
      'sync:laas',
    ]);
    expect(destroy.stdout).toContain('Destroy complete: 9 change(s).');
    expect(await provisioned(dbs().source, dbs().target, 'laas')).toEqual({ slots: [], publications: [], triggers: [], subscriptions: [], registered: [] });
    expect((await rows(dbs().source, `SELECT relreplident FROM pg_class WHERE oid = 'public.users'::regclass`))[0]).toEqual({ relreplident: 'd' });
    // Target data stays, the mirrored rows too; the conflict log is kept for audit.
    expect(await rows(dbs().target, 'SELECT institute_id, name FROM organizations.institute')).toEqual([{ institute_id: '1', name: 'Kept' }]);
    expect(await rows(dbs().target, 'SELECT code FROM public.countries ORDER BY code')).toEqual([{ code: 'DE' }, { code: 'FR' }]);
    expect(await rows(dbs().target, 'SELECT sync_name, outcome FROM syncctl.sync_conflicts')).toEqual([{ sync_name: 'laas', outcome: 'pending' }]);
  });

  test('destroy again has nothing to do', async () => {
    const destroy = expectStatus(await runSyncctl(['destroy', dir, '--allow-destroy'], env()), 0);
    expect(destroy.stdout).toContain('No changes. Nothing to destroy.');
  });

  test('with the source unreachable destroy cleans the target and warns about the slot left behind', async () => {
    expectStatus(await runSyncctl(['apply', dir], env()), 0);
    const port = await closedPort();
    const unreachable = new URL(dbs().sourceUrl);
    unreachable.port = String(port);
    const destroy = expectStatus(await runSyncctl(['destroy', dir, '--allow-destroy'], { ...env(), SRC_URL: unreachable.href }), 0);
    const warning = 'the source database could not be reached: replication slots syncctl_laas, syncctl_laas_native and publications syncctl_laas, syncctl_laas_native may be left behind there';
    expect(destroy.stdout).toContain(`! ${warning}`);
    expect(destroy.stderr).toContain(`warning: ${warning}`);
    expect(destroy.stderr).toContain(`SELECT pg_drop_replication_slot('syncctl_laas'); SELECT pg_drop_replication_slot('syncctl_laas_native')`);
    expect(destroy.stdout).toContain('- target subscription syncctl_laas_native (its slot stays on the unreachable source)  [destructive]');
    const left = await provisioned(dbs().source, dbs().target, 'laas');
    expect(left.triggers).toEqual([]);
    expect(left.subscriptions).toEqual([]);
    expect(left.slots).toEqual(['syncctl_laas', 'syncctl_laas_native']);
    expect(left.publications).toEqual(['syncctl_laas', 'syncctl_laas_native']);
    // The registration stays: it remembers the replica identity to put back on the source.
    expect(left.registered).toEqual([{ name: 'laas', tables: 4 }]);
    expect((await rows(dbs().source, `SELECT relreplident FROM pg_class WHERE oid = 'public.users'::regclass`))[0]).toEqual({ relreplident: 'f' });

    // The source is back: a second destroy finishes the job.
    const again = expectStatus(await runSyncctl(['destroy', dir, '--allow-destroy'], env()), 0);
    expect(again.stderr).toBe('');
    expect(await provisioned(dbs().source, dbs().target, 'laas')).toEqual({ slots: [], publications: [], triggers: [], subscriptions: [], registered: [] });
    expect((await rows(dbs().source, `SELECT relreplident FROM pg_class WHERE oid = 'public.users'::regclass`))[0]).toEqual({ relreplident: 'd' });
  });
});

describe('destroy while the source server is down', () => {
  let cluster: LocalCluster | undefined;
  let home: string;
  let source: pg.Client;
  const password = 'down-source-pw';

  beforeAll(async () => {
    home = mkdtempSync(path.join(tmpdir(), 'syncctl-down-'));
    chmodSync(home, 0o755); // the server may run as the postgres OS user
    cluster = await startLocalCluster({ dataDir: path.join(home, 'data'), password });
    source = new pg.Client({ connectionString: cluster.url() });
    await source.connect();
    for (const db of [source, dbs().target]) {
      await db.query(`CREATE TABLE public.regions (code text PRIMARY KEY, name text NOT NULL)`);
      await db.query(`CREATE TABLE public.items (id int PRIMARY KEY, label text)`);
    }
    await source.query(`INSERT INTO public.regions VALUES ('EU', 'Europe')`);
  });

  afterAll(async () => {
    await source?.end().catch(() => {});
    await cluster?.stop();
    rmSync(home, { recursive: true, force: true });
  });

  test('the subscription is dropped without its publisher; the next destroy removes both slots', async () => {
    const spec = specs.write({ 'down.sync.ts': syncSpec({ name: 'down', tables: `    regions: { from: 'public.regions', to: 'public.regions', mode: 'native' },
    items: { from: 'public.items', to: 'public.items', key: ['id'], columns: { id: sql\`id\`, label: sql\`label\` } },` }) });
    const target = dbs().target;
    const up = { SRC_URL: cluster!.url(), DST_URL: dbs().targetUrl };
    expectStatus(await runSyncctl(['apply', spec], up), 0);
    await waitFor('the subscription to copy the regions', async () =>
      Number((await rows(target, 'SELECT count(*) AS n FROM public.regions'))[0]?.['n']) === 1);

    await source.end();
    await cluster!.stop();
    const destroy = expectStatus(await runSyncctl(['destroy', spec, '--allow-destroy'], up), 0);
    expect(destroy.stderr).toContain('warning: the source database could not be reached');
    expect(destroy.stderr).toContain('syncctl_down_native');
    const left = await provisioned(target, target, 'down');
    expect(left.triggers).toEqual([]);
    expect(left.subscriptions).toEqual([]);
    expect(left.registered).toEqual([{ name: 'down', tables: 2 }]);

    cluster = await startLocalCluster({ dataDir: path.join(home, 'data'), password });
    source = new pg.Client({ connectionString: cluster.url() });
    await source.connect();
    expect((await rows(source, `SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'syncctl%' ORDER BY 1`)).map((r) => r['slot_name'])).toEqual(['syncctl_down', 'syncctl_down_native']);
    const back = { SRC_URL: cluster.url(), DST_URL: dbs().targetUrl };
    const again = expectStatus(await runSyncctl(['destroy', spec, '--allow-destroy'], back), 0);
    expect(planIds(again.stdout)).toEqual(['slot:syncctl_down', 'slot:syncctl_down_native', 'publication:syncctl_down', 'publication:syncctl_down_native', 'sync:down']);
    expect(await rows(source, `SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'syncctl%'`)).toEqual([]);
    expect(await rows(source, 'SELECT pubname FROM pg_publication')).toEqual([]);
    expect((await provisioned(target, target, 'down')).registered).toEqual([]);
  });
});
