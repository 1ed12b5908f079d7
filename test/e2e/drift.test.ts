/**
 * Drift: objects changed or dropped by hand after apply show up in plan, each as the change that
 * repairs it, and apply repairs them. Removing a table from the spec is destructive and needs
 * --allow-destroy.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { changeLine, expectStatus, loadScenarioOneSchema, planIds, rows, runSyncctl, scenarioOneSpec, useSpecDir } from '../support/cli.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('drift');
const specs = useSpecDir();
const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
let full: string;

beforeAll(async () => {
  await loadScenarioOneSchema(dbs());
  full = specs.write({ 'laas.sync.ts': scenarioOneSpec('laas_to_orgs') });
  expectStatus(await runSyncctl(['apply', full], env()), 0);
  expectStatus(await runSyncctl(['plan', full, '--detailed-exitcode'], env()), 0);
});

/** What the drift touches, read from both catalogs. */
async function observed() {
  const source = dbs().source;
  const target = dbs().target;
  return {
    publication: await rows(source, `SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = 'syncctl_laas_to_orgs'`),
    tables: await rows(source, `SELECT tablename, rowfilter FROM pg_publication_tables WHERE pubname = 'syncctl_laas_to_orgs' ORDER BY tablename`),
    usersIdentity: (await rows(source, `SELECT relreplident FROM pg_class WHERE oid = 'public.users'::regclass`))[0]?.['relreplident'],
    slots: await rows(source, `SELECT slot_name, plugin FROM pg_replication_slots WHERE database = current_database()`),
    triggers: await rows(target, `
      SELECT c.relname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname = 'syncctl_track' ORDER BY c.relname`),
  };
}

describe('hand-made drift', () => {
  let inSync: Awaited<ReturnType<typeof observed>>;

  beforeAll(async () => {
    inSync = await observed();
    const { source, target } = dbs();
    await target.query('DROP TRIGGER syncctl_track ON organizations.institute');
    await target.query('ALTER TABLE organizations."user" DISABLE TRIGGER syncctl_track');
    await source.query('ALTER PUBLICATION syncctl_laas_to_orgs DROP TABLE public.institute_user');
    await source.query('ALTER PUBLICATION syncctl_laas_to_orgs SET TABLE public.institutes, public.users WHERE (is_active)');
    await source.query('ALTER TABLE public.users REPLICA IDENTITY DEFAULT');
    await source.query(`ALTER PUBLICATION syncctl_laas_to_orgs SET (publish = 'insert, update', publish_via_partition_root = false)`);
    await source.query(`SELECT pg_drop_replication_slot('syncctl_laas_to_orgs')`);
  });

  test('plan shows each drift as the change that repairs it', async () => {
    const plan = expectStatus(await runSyncctl(['plan', full, '--detailed-exitcode'], env()), 2);
    expect(planIds(plan.stdout)).toEqual([
      'replica-identity:public.users',
      'publication:syncctl_laas_to_orgs',
      'publication-table:syncctl_laas_to_orgs:public.users',
      'publication-table:syncctl_laas_to_orgs:public.institute_user',
      'slot:syncctl_laas_to_orgs',
      'trigger:organizations.institute',
      'trigger:organizations.user',
    ]);
    const line = (id: string) => changeLine(plan.stdout, id);
    expect(line('replica-identity:public.users')).toBe('~ source replica identity of public.users: default -> full');
    expect(line('publication:syncctl_laas_to_orgs')).toBe('~ source publication syncctl_laas_to_orgs options');
    expect(line('publication-table:syncctl_laas_to_orgs:public.users')).toBe('~ source public.users in publication syncctl_laas_to_orgs');
    expect(line('publication-table:syncctl_laas_to_orgs:public.institute_user')).toBe('+ source public.institute_user in publication syncctl_laas_to_orgs');
    expect(line('slot:syncctl_laas_to_orgs')).toMatch(/^\+ source replication slot syncctl_laas_to_orgs \(pgoutput\)/);
    expect(line('trigger:organizations.institute')).toBe('+ target change tracking on organizations.institute');
    expect(line('trigger:organizations.user')).toBe('~ target change tracking on organizations.user (disabled by hand)');
    expect(plan.stdout).toContain('Plan: 3 to create, 4 to change, 0 to destroy.');
  });

  test('apply repairs it all without --allow-destroy; plan is empty again', async () => {
    const apply = expectStatus(await runSyncctl(['apply', full], env()), 0);
    expect(apply.stdout).toContain('Apply complete: 7 change(s).');
    expect(await observed()).toEqual(inSync);
    const plan = expectStatus(await runSyncctl(['plan', full, '--detailed-exitcode'], env()), 0);
    expect(planIds(plan.stdout)).toEqual([]);
  });

  test('a trigger replaced by hand with different arguments is recreated', async () => {
    await dbs().target.query(`CREATE OR REPLACE TRIGGER syncctl_track AFTER INSERT ON organizations.institute
      FOR EACH ROW EXECUTE FUNCTION syncctl.track_change('laas_to_orgs', 'organizations.institute', 'name')`);
    const plan = expectStatus(await runSyncctl(['plan', full, '--detailed-exitcode'], env()), 2);
    expect(planIds(plan.stdout)).toEqual(['trigger:organizations.institute']);
    expect(changeLine(plan.stdout, 'trigger:organizations.institute')).toBe('~ target change tracking on organizations.institute');
    expectStatus(await runSyncctl(['apply', full], env()), 0);
    const [trigger] = await rows(dbs().target, `
      SELECT t.tgtype, t.tgqual IS NOT NULL AS has_when, encode(t.tgargs, 'escape') AS args
        FROM pg_trigger t WHERE t.tgrelid = 'organizations.institute'::regclass AND t.tgname = 'syncctl_track'`);
    expect(trigger).toEqual({ tgtype: 1 | 4 | 8 | 16, has_when: true, args: 'laas_to_orgs\\000organizations.institute\\000institute_id\\000' });
    expectStatus(await runSyncctl(['plan', full, '--detailed-exitcode'], env()), 0);
  });
});

describe('a table removed from the spec', () => {
  let reduced: string;

  beforeAll(() => {
    reduced = specs.write({ 'laas.sync.ts': scenarioOneSpec('laas_to_orgs', ['institutes', 'memberships']) });
  });

  test('plan shows destructive deletes and puts back the replica identity syncctl changed', async () => {
    const plan = expectStatus(await runSyncctl(['plan', reduced, '--detailed-exitcode'], env()), 2);
    // Out of the publication first, so no row filter needs the wider identity when it is put back.
    expect(planIds(plan.stdout)).toEqual([
      'publication-table:syncctl_laas_to_orgs:public.users',
      'trigger:organizations.user',
      'replica-identity:public.users',
      'sync-table:laas_to_orgs:users',
    ]);
    expect(changeLine(plan.stdout, 'sync-table:laas_to_orgs:users')).toMatch(/^- target table users in syncctl\.sync_tables .*\[destructive\]$/);
    expect(changeLine(plan.stdout, 'publication-table:syncctl_laas_to_orgs:public.users')).toBe('- source public.users in publication syncctl_laas_to_orgs  [destructive]');
    expect(changeLine(plan.stdout, 'trigger:organizations.user')).toBe('- target change tracking on organizations.user');
    expect(changeLine(plan.stdout, 'replica-identity:public.users')).toBe('~ source replica identity of public.users: full -> default');
  });

  test('apply without --allow-destroy refuses (exit 2) and changes nothing', async () => {
    const before = await observed();
    const apply = expectStatus(await runSyncctl(['apply', reduced], env()), 2);
    expect(apply.stderr).toContain('error: the plan has 2 destructive change(s) (publication-table:syncctl_laas_to_orgs:public.users, sync-table:laas_to_orgs:users); nothing was applied. Re-run with --allow-destroy to apply them');
    expect(apply.stdout).not.toContain(': done');
    expect(await observed()).toEqual(before);
    expect(await rows(dbs().target, 'SELECT table_name FROM syncctl.sync_tables ORDER BY 1')).toEqual([
      { table_name: 'institutes' }, { table_name: 'memberships' }, { table_name: 'users' },
    ]);
  });

  test('apply --allow-destroy removes the table from the sync; its target rows stay', async () => {
    await dbs().target.query(`INSERT INTO organizations."user" (email, name, updated_at) VALUES ('kept@example.org', 'Kept', now())`);
    const apply = expectStatus(await runSyncctl(['apply', reduced, '--allow-destroy'], env()), 0);
    expect(apply.stdout).toContain('Apply complete: 4 change(s).');
    const after = await observed();
    expect(after.tables).toEqual([{ tablename: 'institute_user', rowfilter: null }, { tablename: 'institutes', rowfilter: null }]);
    expect(after.triggers).toEqual([{ relname: 'institute', tgenabled: 'O' }, { relname: 'institute_users', tgenabled: 'O' }]);
    expect(after.usersIdentity).toBe('d');
    expect(await rows(dbs().target, 'SELECT table_name FROM syncctl.sync_tables ORDER BY 1')).toEqual([{ table_name: 'institutes' }, { table_name: 'memberships' }]);
    expect(await rows(dbs().target, 'SELECT email FROM organizations."user"')).toEqual([{ email: 'kept@example.org' }]);
    expectStatus(await runSyncctl(['plan', reduced, '--detailed-exitcode'], env()), 0);
  });
});
