/**
 * Row filters and replica identity: syncctl never makes a source UPDATE or DELETE fail. A filter
 * on columns outside the replica identity, or one Postgres rejects as a publication row filter,
 * is evaluated by the worker (and the plan says why); replicaIdentity: 'full' makes it a
 * publication row filter; a natural key backed by a unique NOT NULL index becomes the replica
 * identity through that index.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { changeLine, expectStatus, rows, runSyncctl, syncSpec, useSpecDir, type CliResult } from '../support/cli.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('row_filter');
const specs = useSpecDir();
const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });

const TABLES = `
    members: {
      from: 'public.members', to: 'public.members', key: ['id'], where: sql\`status = 'ACTIVE'\`,
      columns: { id: sql\`id\`, email: sql\`email\`, status: sql\`status\` },
    },
    members_full: {
      from: 'public.members_full', to: 'public.members_full', key: ['id'], where: sql\`status = 'ACTIVE'\`, replicaIdentity: 'full',
      columns: { id: sql\`id\`, email: sql\`email\`, status: sql\`status\` },
    },
    events: {
      from: 'public.events', to: 'public.events', key: ['id'], where: sql\`updated_at < now()\`,
      columns: { id: sql\`id\`, payload: sql\`payload\`, updated_at: sql\`updated_at\` },
    },
    accounts: {
      from: 'public.accounts', to: 'public.accounts', key: ['code'],
      columns: { code: sql\`code\`, name: sql\`name\` },
    },`;

let dir: string;
let plan: CliResult;

beforeAll(async () => {
  const { source, target } = dbs();
  for (const name of ['members', 'members_full']) {
    await source.query(`CREATE TABLE public.${name} (id int PRIMARY KEY, email text, status text NOT NULL, score int)`);
    await source.query(`INSERT INTO public.${name} VALUES (1, 'a@example.org', 'ACTIVE', 1), (2, 'b@example.org', 'INACTIVE', 2)`);
    await target.query(`CREATE TABLE public.${name} (id int PRIMARY KEY, email text, status text)`);
  }
  await source.query(`CREATE TABLE public.events (id int PRIMARY KEY, payload text, updated_at timestamptz NOT NULL DEFAULT now())`);
  await source.query(`INSERT INTO public.events (id, payload) VALUES (1, 'x'), (2, 'y')`);
  await target.query(`CREATE TABLE public.events (id int PRIMARY KEY, payload text, updated_at timestamptz)`);
  await source.query(`CREATE TABLE public.accounts (id int PRIMARY KEY, code text NOT NULL UNIQUE, name text)`);
  await source.query(`INSERT INTO public.accounts VALUES (1, 'A-1', 'one'), (2, 'A-2', 'two')`);
  await target.query(`CREATE TABLE public.accounts (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, code text NOT NULL UNIQUE, name text)`);
  dir = specs.write({ 'rf.sync.ts': syncSpec({ name: 'rf', tables: TABLES }) });
  plan = expectStatus(await runSyncctl(['plan', dir], env()), 0);
  expectStatus(await runSyncctl(['apply', dir], env()), 0);
});

async function publishedTables() {
  return rows(dbs().source, `
    SELECT tablename, rowfilter, attnames::text[] AS attnames FROM pg_publication_tables WHERE pubname = 'syncctl_rf' ORDER BY tablename`);
}

async function identity(table: string) {
  return (await rows(dbs().source, `
    SELECT c.relreplident, (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid AND i.indisreplident) AS index
      FROM pg_class c WHERE c.oid = $1::regclass`, [table]))[0];
}

/** An UPDATE and a DELETE on the source table succeed (a bad row filter would make both fail). */
async function updateAndDeleteSucceed(table: string, where: string) {
  const source = dbs().source;
  const updated = await source.query(`UPDATE public.${table} SET ${where.startsWith('code') ? 'name' : 'id'} = ${where.startsWith('code') ? `'renamed'` : 'id'} WHERE ${where}`);
  expect(updated.rowCount).toBe(1);
  const deleted = await source.query(`DELETE FROM public.${table} WHERE ${where}`);
  expect(deleted.rowCount).toBe(1);
}

describe('a filter on a column outside the replica identity, replicaIdentity auto', () => {
  test('the plan notes that the worker evaluates it, and why', () => {
    expect(plan.stdout).toContain(
      "note: rf.members: the row filter is evaluated by the worker: it reads status, outside the replica identity; as a publication row filter it would make every UPDATE and DELETE of the source table fail (replicaIdentity: 'full' moves it to the source)");
    expect(changeLine(plan.stdout, 'replica-identity:public.members')).toBeUndefined();
  });

  test('the publication has no row filter for the table; the identity is untouched', async () => {
    expect((await publishedTables()).find((t) => t['tablename'] === 'members')).toEqual({ tablename: 'members', rowfilter: null, attnames: ['id', 'email', 'status'] });
    expect(await identity('public.members')).toEqual({ relreplident: 'd', index: null });
  });

  test('UPDATE and DELETE on the source still succeed', async () => {
    await updateAndDeleteSucceed('members', 'id = 2');
  });
});

describe("replicaIdentity: 'full'", () => {
  test('the filter becomes a publication row filter, explained in the plan', async () => {
    expect(changeLine(plan.stdout, 'replica-identity:public.members_full')).toBe('~ source replica identity of public.members_full: default -> full');
    expect(plan.stdout).toContain("why: the spec asks for replicaIdentity: 'full' (was primary key (id))");
    expect(plan.stdout).not.toContain('note: rf.members_full');
    expect((await publishedTables()).find((t) => t['tablename'] === 'members_full')).toEqual({
      tablename: 'members_full', rowfilter: "(status = 'ACTIVE'::text)", attnames: ['id', 'email', 'status', 'score'],
    });
    expect(await identity('public.members_full')).toEqual({ relreplident: 'f', index: null });
  });

  test('UPDATE and DELETE on the source still succeed', async () => {
    await updateAndDeleteSucceed('members_full', 'id = 2');
  });
});

describe('a filter with a mutable function', () => {
  test("stays in the worker, with Postgres's reason in the note", async () => {
    const note = plan.stdout.split('\n').find((line) => line.includes('note: rf.events:'));
    expect(note).toMatch(/the row filter is evaluated by the worker: Postgres rejects it as a publication row filter \(invalid publication WHERE expression.*User-defined or built-in mutable functions are not allowed/);
    expect((await publishedTables()).find((t) => t['tablename'] === 'events')).toEqual({ tablename: 'events', rowfilter: null, attnames: ['id', 'payload', 'updated_at'] });
  });

  test('UPDATE and DELETE on the source still succeed', async () => {
    await updateAndDeleteSucceed('events', 'id = 2');
  });
});

describe('a natural key covered by a unique NOT NULL index', () => {
  test('becomes REPLICA IDENTITY USING INDEX, explained in the plan', async () => {
    expect(changeLine(plan.stdout, 'replica-identity:public.accounts')).toBe('~ source replica identity of public.accounts: default -> index:accounts_code_key');
    expect(plan.stdout).toContain('why: the target key is computed from code, but the replica identity (primary key (id)) does not carry code: updates and deletes could not find their target row. Unique index accounts_code_key carries them.');
    expect(await identity('public.accounts')).toEqual({ relreplident: 'i', index: 'accounts_code_key' });
    expect((await publishedTables()).find((t) => t['tablename'] === 'accounts')).toEqual({ tablename: 'accounts', rowfilter: null, attnames: ['code', 'name'] });
  });

  test('UPDATE and DELETE on the source still succeed', async () => {
    await updateAndDeleteSucceed('accounts', "code = 'A-2'");
  });
});

test('plan after apply: no changes, the notes stay', async () => {
  const again = expectStatus(await runSyncctl(['plan', dir, '--detailed-exitcode'], env()), 0);
  expect(again.stdout).toContain('note: rf.members: the row filter is evaluated by the worker');
  expect(again.stdout).toContain('note: rf.events: the row filter is evaluated by the worker');
  const json = JSON.parse(expectStatus(await runSyncctl(['plan', dir, '--json'], env()), 0).stdout) as { syncs: { notes: string[] }[] };
  expect(json.syncs[0]!.notes).toHaveLength(2);
});

test('a native table filtered on a column outside its replica identity is an error that says how to fix it', async () => {
  const { source, target } = dbs();
  await source.query(`CREATE TABLE public.mirror (id int PRIMARY KEY, status text)`);
  await target.query(`CREATE TABLE public.mirror (id int PRIMARY KEY, status text)`);
  const file = `${specs.write({ 'bad.sync.ts': syncSpec({ name: 'rf_bad', tables: `    mirror: { from: 'public.mirror', to: 'public.mirror', mode: 'native', where: sql\`status = 'x'\` },` }) })}/bad.sync.ts`;
  const result = expectStatus(await runSyncctl(['plan', file], env()), 2);
  expect(result.stderr).toBe(
    'error: rf_bad: the spec does not fit the live databases\n' +
    `  ${file}: tables.mirror.where: the row filter reads status, which the replica identity does not carry; as a publication row filter it would make every UPDATE and DELETE of the source table fail. Set replicaIdentity: 'full' or use mode: 'mapped'\n`);
});
