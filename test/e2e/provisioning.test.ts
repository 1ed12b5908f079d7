/**
 * Scenario 1 provisioned from the shipped example spec (specs/laas_to_orgs.sync.ts) on empty
 * databases: plan lists every change, apply creates them in both catalogs, plan again is empty,
 * the tracking trigger records local writes only.
 */
import path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { expectStatus, loadScenarioOneSchema, planIds, REPO_ROOT, rows, runSyncctl } from '../support/cli.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('provisioning');
const SPEC = path.join(REPO_ROOT, 'specs', 'laas_to_orgs.sync.ts');
const env = () => ({ LAAS_DATABASE_URL: dbs().sourceUrl, ORGS_DATABASE_URL: dbs().targetUrl });
const syncctl = (...args: string[]) => runSyncctl(args, env());

const EXPECTED_IDS = [
  'schema:syncctl',
  'sync:laas_to_orgs',
  'sync-table:laas_to_orgs:institutes',
  'sync-table:laas_to_orgs:users',
  'sync-table:laas_to_orgs:memberships',
  'replica-identity:public.users',
  'publication:syncctl_laas_to_orgs',
  'publication-table:syncctl_laas_to_orgs:public.institutes',
  'publication-table:syncctl_laas_to_orgs:public.users',
  'publication-table:syncctl_laas_to_orgs:public.institute_user',
  'slot:syncctl_laas_to_orgs',
  'trigger:organizations.institute',
  'trigger:organizations.user',
  'trigger:organizations.institute_users',
];

beforeAll(async () => {
  await loadScenarioOneSchema(dbs());
});

describe('before apply', () => {
  test('plan on empty databases lists every change, with the reason for the replica identity', async () => {
    const plan = expectStatus(await syncctl('plan', SPEC), 0);
    expect(planIds(plan.stdout)).toEqual(EXPECTED_IDS);
    expect(plan.stdout).toContain('~ source replica identity of public.users: default -> full');
    expect(plan.stdout).toMatch(/why: the target key is computed from email, but the replica identity \(primary key \(id\)\) does not carry email/);
    expect(plan.stdout).toContain('Plan: 13 to create, 1 to change, 0 to destroy.');
    expect(plan.stderr).toBe('');
  });

  test('plan --detailed-exitcode exits 2 while changes are pending', async () => {
    expectStatus(await syncctl('plan', SPEC, '--detailed-exitcode'), 2);
  });

  test('plan --json parses and carries the change ids and the SQL', async () => {
    const plan = expectStatus(await syncctl('plan', SPEC, '--json'), 0);
    const json = JSON.parse(plan.stdout) as {
      syncs: { name: string; changes: { id: string; action: string; side: string; destructive: boolean; sql: string[]; reason?: string }[] }[];
      summary: { create: number; update: number; delete: number; total: number };
    };
    expect(json.syncs.map((s) => s.name)).toEqual(['laas_to_orgs']);
    expect(json.syncs[0]!.changes.map((c) => c.id)).toEqual(EXPECTED_IDS);
    expect(json.summary).toEqual({ create: 13, update: 1, delete: 0, total: 14 });
    const identity = json.syncs[0]!.changes.find((c) => c.id === 'replica-identity:public.users')!;
    expect(identity).toMatchObject({ action: 'update', side: 'source', destructive: false, sql: ['ALTER TABLE "public"."users" REPLICA IDENTITY FULL'] });
    expect(identity.reason).toContain('REPLICA IDENTITY FULL');
  });

  test('plan --sql shows the SQL of every change', async () => {
    const plan = expectStatus(await syncctl('plan', SPEC, '--sql'), 0);
    expect(plan.stdout).toContain(`| CREATE PUBLICATION "syncctl_laas_to_orgs" WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)`);
    expect(plan.stdout).toContain('| ALTER PUBLICATION "syncctl_laas_to_orgs" ADD TABLE "public"."users" WHERE ((is_active AND (email IS NOT NULL)))');
    expect(plan.stdout).toMatch(/^ {6}\| .*syncctl_laas_to_orgs.* pgoutput/m); // the slot's creation (with the snapshot step: CREATE_REPLICATION_SLOT)
    expect(plan.stdout).toContain('| ALTER TABLE "public"."users" REPLICA IDENTITY FULL');
    expect(plan.stdout).toContain('| CREATE TABLE syncctl.local_changes (');
    expect(plan.stdout).toMatch(/\| CREATE OR REPLACE TRIGGER syncctl_track AFTER INSERT OR UPDATE OR DELETE ON "organizations"\."user" .*syncctl\.track_change\('laas_to_orgs', 'organizations\.user', 'email'\)/);
  });

  test('plan changes nothing', async () => {
    expect(await rows(dbs().source, 'SELECT pubname FROM pg_publication')).toEqual([]);
    expect(await rows(dbs().source, 'SELECT slot_name FROM pg_replication_slots WHERE database = current_database()')).toEqual([]);
    expect(await rows(dbs().target, `SELECT nspname FROM pg_namespace WHERE nspname = 'syncctl'`)).toEqual([]);
    expect(await rows(dbs().target, `SELECT tgname FROM pg_trigger WHERE tgname = 'syncctl_track'`)).toEqual([]);
  });
});

describe('apply', () => {
  beforeAll(async () => {
    const apply = expectStatus(await syncctl('apply', SPEC), 0);
    expect(apply.stdout).toContain('Apply complete: 14 change(s).');
  });

  test('source: the publication holds the three tables, users with its row filter', async () => {
    const [publication] = await rows(dbs().source, `
      SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot, puballtables FROM pg_publication WHERE pubname = 'syncctl_laas_to_orgs'`);
    expect(publication).toEqual({ pubinsert: true, pubupdate: true, pubdelete: true, pubtruncate: true, pubviaroot: true, puballtables: false });
    const tables = await rows(dbs().source, `
      SELECT schemaname, tablename, rowfilter, attnames::text[] AS attnames FROM pg_publication_tables
       WHERE pubname = 'syncctl_laas_to_orgs' ORDER BY tablename`);
    expect(tables).toEqual([
      { schemaname: 'public', tablename: 'institute_user', rowfilter: null, attnames: ['institute_id', 'user_id', 'user_type', 'status'] },
      { schemaname: 'public', tablename: 'institutes', rowfilter: null, attnames: ['id', 'name', 'imageUrl', 'updated_at'] },
      { schemaname: 'public', tablename: 'users', rowfilter: '(is_active AND (email IS NOT NULL))', attnames: ['id', 'email', 'first_name', 'last_name', 'is_active', 'updated_at'] },
    ]);
  });

  test('source: users has REPLICA IDENTITY FULL (natural key email), the others keep theirs', async () => {
    const identities = await rows(dbs().source, `
      SELECT relname, relreplident FROM pg_class
       WHERE relnamespace = 'public'::regnamespace AND relname IN ('users', 'institutes', 'institute_user') ORDER BY relname`);
    expect(identities).toEqual([
      { relname: 'institute_user', relreplident: 'd' },
      { relname: 'institutes', relreplident: 'd' },
      { relname: 'users', relreplident: 'f' },
    ]);
  });

  test('source: a logical pgoutput slot in the source database', async () => {
    const slots = await rows(dbs().source, `SELECT slot_name, plugin, slot_type, database FROM pg_replication_slots WHERE database = current_database() AND slot_name LIKE 'syncctl%'`);
    expect(slots).toEqual([{ slot_name: 'syncctl_laas_to_orgs', plugin: 'pgoutput', slot_type: 'logical', database: dbs().sourceDatabase }]);
  });

  test('target: the syncctl schema with its migrations and the registration', async () => {
    expect(await rows(dbs().target, 'SELECT id, name FROM syncctl.migrations ORDER BY id')).toEqual([
      { id: 0, name: 'create-migrations-table' },
      { id: 1, name: 'syncctl-schema' },
      { id: 2, name: 'held-changes' },
      { id: 3, name: 'copy-source-filenode' },
      { id: 4, name: 'expect-tables' },
      { id: 5, name: 'conflict-retry' },
      { id: 6, name: 'conflict-rules' },
      { id: 7, name: 'leader-and-counts' },
      { id: 8, name: 'runs-and-held-tables' },
      { id: 9, name: 'conflict-counts' },
      { id: 10, name: 'conflict-counts-per-statement' },
    ]);
    const tables = await rows(dbs().target, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'syncctl' ORDER BY 1`);
    expect(tables.map((t) => t['table_name'])).toEqual(['checkpoints', 'held_changes', 'local_changes', 'migrations', 'runs', 'snapshot_chunks', 'sync_conflicts', 'sync_tables', 'syncs']);
    expect(await rows(dbs().target, 'SELECT name, spec_file FROM syncctl.syncs')).toEqual([{ name: 'laas_to_orgs', spec_file: SPEC }]);
    expect(await rows(dbs().target, `
      SELECT table_name, source_table, target_table, mode, replica_identity_before FROM syncctl.sync_tables ORDER BY table_name`)).toEqual([
      { table_name: 'institutes', source_table: '"public"."institutes"', target_table: '"organizations"."institute"', mode: 'mapped', replica_identity_before: null },
      { table_name: 'memberships', source_table: '"public"."institute_user"', target_table: '"organizations"."institute_users"', mode: 'mapped', replica_identity_before: null },
      { table_name: 'users', source_table: '"public"."users"', target_table: '"organizations"."user"', mode: 'mapped', replica_identity_before: 'default' },
    ]);
  });

  test('target: an enabled row trigger on each of the three tables', async () => {
    const triggers = await rows(dbs().target, `
      SELECT c.relname, t.tgenabled, t.tgfoid::regproc::text AS fn, t.tgnargs
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
       WHERE t.tgname = 'syncctl_track' ORDER BY c.relname`);
    expect(triggers).toEqual([
      { relname: 'institute', tgenabled: 'O', fn: 'syncctl.track_change', tgnargs: 3 },
      { relname: 'institute_users', tgenabled: 'O', fn: 'syncctl.track_change', tgnargs: 4 },
      { relname: 'user', tgenabled: 'O', fn: 'syncctl.track_change', tgnargs: 3 },
    ]);
  });

  test('plan again: no changes, --detailed-exitcode exits 0', async () => {
    const plan = expectStatus(await syncctl('plan', SPEC, '--detailed-exitcode'), 0);
    expect(planIds(plan.stdout)).toEqual([]);
    expect(plan.stdout).toContain('No changes. The databases match the specs.');
    const json = JSON.parse(expectStatus(await syncctl('plan', SPEC, '--json'), 0).stdout) as { summary: { total: number } };
    expect(json.summary.total).toBe(0);
  });

  test('a second apply says "No changes" and changes nothing', async () => {
    const before = await rows(dbs().target, 'SELECT name, updated_at FROM syncctl.syncs');
    const apply = expectStatus(await syncctl('apply', SPEC), 0);
    expect(apply.stdout).toContain('No changes. Nothing to apply.');
    expect(apply.stdout).not.toContain(': done');
    expect(await rows(dbs().target, 'SELECT name, updated_at FROM syncctl.syncs')).toEqual(before);
  });

  test('the tracking trigger records local writes, not those made as syncctl.writer', async () => {
    const target = dbs().target;
    await target.query(`INSERT INTO organizations.institute VALUES (1, 'Local', NULL, now())`);
    await target.query('BEGIN');
    await target.query('SET LOCAL syncctl.writer = on');
    await target.query(`INSERT INTO organizations.institute VALUES (2, 'By syncctl', NULL, now())`);
    await target.query(`INSERT INTO organizations."user" (email, name, updated_at) VALUES ('w@example.org', 'W', now())`);
    await target.query('COMMIT');
    await target.query(`INSERT INTO organizations."user" (email, name, updated_at) VALUES ('a@example.org', 'A', now())`);
    await target.query(`UPDATE organizations."user" SET email = 'b@example.org' WHERE email = 'a@example.org'`);
    await target.query(`INSERT INTO organizations.institute_users VALUES (1, 7, 'ADMIN', true)`);
    await target.query(`DELETE FROM organizations.institute_users`);
    const changes = await rows(target, 'SELECT target_table, key, operation, changed_by FROM syncctl.local_changes ORDER BY target_table, key::text');
    expect(changes).toEqual([
      { target_table: 'organizations.institute', key: { institute_id: 1 }, operation: 'INSERT', changed_by: 'postgres' },
      { target_table: 'organizations.institute_users', key: { institute_id: 1, user_id: 7 }, operation: 'DELETE', changed_by: 'postgres' },
      // A key change is a delete of the old key and an insert of the new one.
      { target_table: 'organizations.user', key: { email: 'a@example.org' }, operation: 'DELETE', changed_by: 'postgres' },
      { target_table: 'organizations.user', key: { email: 'b@example.org' }, operation: 'INSERT', changed_by: 'postgres' },
    ]);
  });
});
