/**
 * One source table feeding two target tables in one sync (PRODUCT.md scenario 1: `users` also
 * feeds `user_auth`, the password hash). public.users is published once for both: one replica
 * identity (FULL: the email key has no unique NOT NULL index), one publication entry without a
 * row filter (the two tables filter differently), and each table's own filter evaluated by the
 * worker. organizations.user_auth references organizations.user(email) ON UPDATE CASCADE ON
 * DELETE CASCADE: copied after it, written after it. Plan, apply (copy), a second apply with
 * nothing to do, then inserts, updates (an email change: the key; a deactivation the filters
 * drop; a reactivation), deletes, a recopy under a new slot that prunes, and destroy.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { changeLine, expectStatus, loadScenarioOneSchema, planIds, rows, runSyncctl, SCENARIO_ONE_TABLES, syncSpec, useSpecDir } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('fanout');
const specs = useSpecDir();
const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });

const USER_AUTH = `    user_auth: {
      from: 'public.users', to: 'organizations.user_auth', key: ['email'],
      where: sql\`is_active AND email IS NOT NULL AND password_hash IS NOT NULL\`,
      columns: { email: sql\`email\`, password_hash: sql\`password_hash\` },
    },`;

let dir: string;
let sync: LoadedSync;
let worker: InProcessWorker | undefined;

beforeAll(async () => {
  const { source, target } = dbs();
  await loadScenarioOneSchema({ source, target });
  await source.query(`
    ALTER TABLE users ADD COLUMN password_hash text;
    INSERT INTO institutes (name, "imageUrl") SELECT 'Institute ' || g, NULL FROM generate_series(1, 5) g;
    INSERT INTO users (email, first_name, last_name, is_active, password_hash)
    SELECT CASE WHEN g % 50 = 0 THEN NULL ELSE 'user' || g || '@laas.example' END, 'First' || g, 'Last' || g, g % 10 <> 0,
           CASE WHEN g % 7 = 0 THEN NULL ELSE md5('pw' || g) END
      FROM generate_series(1, 500) g;
    INSERT INTO institute_user (institute_id, user_id, user_type, status) SELECT 1 + g % 5, g, 'STUDENT', 'ACTIVE' FROM generate_series(1, 100) g`);
  await target.query(`CREATE TABLE organizations.user_auth (
    email text PRIMARY KEY REFERENCES organizations."user" (email) ON UPDATE CASCADE ON DELETE CASCADE,
    password_hash text NOT NULL)`);
  // user_auth before users in the spec: the copy and the writes still go parents first.
  dir = specs.write({ 'fanout.sync.ts': syncSpec({ name: 'fanout', tables: [USER_AUTH, SCENARIO_ONE_TABLES.institutes, SCENARIO_ONE_TABLES.users, SCENARIO_ONE_TABLES.memberships].join('\n') }) });
  sync = await loadSync(dir, env());
});

afterAll(async () => {
  await worker?.stop().catch(() => {});
});

const src = (sql: string) => dbs().source.query(sql);
const count = async (table: string) => (await rows<{ n: number }>(dbs().target, `SELECT count(*)::int AS n FROM ${table}`))[0]!.n;
const conflicts = () => rows(dbs().target, `SELECT table_name, kind, key, reason FROM syncctl.sync_conflicts`);
async function matches(what: string) {
  await expectTargetMatches(dbs(), sync.tables, { what });
  expect(await conflicts()).toEqual([]);
}

describe('plan', () => {
  test('public.users is published once and its replica identity changed once; each filter runs in the worker, and the plan says why', async () => {
    const plan = expectStatus(await runSyncctl(['plan', dir, '--sql'], env()), 0);
    const ids = planIds(plan.stdout);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.filter((id) => id.includes('public.users'))).toEqual(['replica-identity:public.users', 'publication-table:syncctl_fanout:public.users']);
    expect(ids).toEqual(expect.arrayContaining(['sync-table:fanout:users', 'sync-table:fanout:user_auth', 'trigger:organizations.user', 'trigger:organizations.user_auth']));
    expect(changeLine(plan.stdout, 'replica-identity:public.users')).toBe('~ source replica identity of public.users: default -> full');
    expect(plan.stdout).toContain('one replica identity serves tables.user_auth, tables.users');
    // No row filter and no column list (FULL publishes every column): both tables' filters are the worker's.
    expect(plan.stdout).toContain('| ALTER PUBLICATION "syncctl_fanout" ADD TABLE "public"."users"\n');
    const note = (table: string, other: string) => `note: fanout.${table}: the row filter is evaluated by the worker: public.users also feeds ` +
      `tables.${other} with another row filter, and a publication carries one row filter per table`;
    expect(plan.stdout).toContain(note('users', 'user_auth'));
    expect(plan.stdout).toContain(note('user_auth', 'users'));
    expect(plan.stdout).toContain('initial copy of 4 table(s)');
  });

  test('the same filter on both tables would be the publication row filter of both', async () => {
    // Planned only, on the same databases: another sync with users' filter on both tables.
    const same = specs.write({ 'same.sync.ts': syncSpec({ name: 'fanout_same', tables: [
      SCENARIO_ONE_TABLES.users, USER_AUTH.replace('is_active AND email IS NOT NULL AND password_hash IS NOT NULL', 'is_active AND email IS NOT NULL'),
    ].join('\n') }) });
    const plan = expectStatus(await runSyncctl(['plan', same, '--sql'], env()), 0);
    expect(plan.stdout).toMatch(/\| ALTER PUBLICATION "syncctl_fanout_same" ADD TABLE "public"\."users" WHERE \(+is_active AND \(email IS NOT NULL\)\)+\n/);
    expect(plan.stdout).not.toContain('evaluated by the worker');
  });
});

describe('apply, copy and stream', () => {
  test('apply provisions once and copies both target tables from the one source table, parents first', async () => {
    const applied = await apply(sync);
    expect(applied.filter((id) => id.includes('public.users'))).toEqual(['replica-identity:public.users', 'publication-table:syncctl_fanout:public.users']);
    expect(await rows(dbs().source, `SELECT tablename, rowfilter FROM pg_publication_tables WHERE pubname = 'syncctl_fanout' ORDER BY tablename`))
      .toEqual([{ tablename: 'institute_user', rowfilter: null }, { tablename: 'institutes', rowfilter: null }, { tablename: 'users', rowfilter: null }]);
    expect((await rows(dbs().source, `SELECT relreplident FROM pg_class WHERE oid = 'public.users'::regclass`))[0]).toEqual({ relreplident: 'f' });
    await matches('after the initial copy');
    // 500 users: 50 inactive (g % 10 = 0), among them the 10 without an email -> 450; of those, 64 have no password hash (g % 7 = 0).
    expect(await count('organizations."user"')).toBe(450);
    expect(await count('organizations.user_auth')).toBe(450 - 64);
    expect(await rows(dbs().target, `SELECT table_name, state FROM syncctl.sync_tables WHERE sync_name = 'fanout' ORDER BY table_name COLLATE "C"`)).toEqual([
      { table_name: 'institutes', state: 'streaming' }, { table_name: 'memberships', state: 'streaming' },
      { table_name: 'user_auth', state: 'streaming' }, { table_name: 'users', state: 'streaming' }]);
  });

  test('a second apply has nothing to do, and plan says so', async () => {
    expect(await apply(sync)).toEqual([]);
    const plan = expectStatus(await runSyncctl(['plan', dir], env()), 0);
    expect(plan.stdout).toContain('No changes. The databases match the specs.');
  });

  test('inserts reach both tables, each through its own filter', async () => {
    worker = startWorker(sync);
    await src(`INSERT INTO users (id, email, first_name, last_name, password_hash) VALUES
      (9001, 'ada@laas.example', 'Ada', 'Lovelace', 'hash-ada'),
      (9002, 'alan@laas.example', 'Alan', 'Turing', NULL),
      (9003, NULL, 'No', 'Email', 'hash-none')`);
    await src(`INSERT INTO users (id, email, first_name, last_name, is_active, password_hash) VALUES (9004, 'grace@laas.example', 'Grace', 'Hopper', false, 'hash-grace')`);
    await matches('after inserts');
    expect(await rows(dbs().target, `SELECT u.name, a.password_hash FROM organizations."user" u LEFT JOIN organizations.user_auth a USING (email)
      WHERE email IN ('ada@laas.example', 'alan@laas.example') ORDER BY email`))
      .toEqual([{ name: 'Ada Lovelace', password_hash: 'hash-ada' }, { name: 'Alan Turing', password_hash: null }]);
  });

  test('updates: a password set and changed, a name changed, an email changed (the key of both), in one transaction', async () => {
    await src(`BEGIN;
      UPDATE users SET password_hash = 'hash-alan' WHERE id = 9002;
      UPDATE users SET password_hash = 'hash-ada-2', first_name = 'Augusta Ada' WHERE id = 9001;
      UPDATE users SET email = 'ada.lovelace@laas.example' WHERE id = 9001;
      UPDATE users SET last_name = last_name || '!' WHERE id BETWEEN 1 AND 30;
      UPDATE users SET email = 'renamed' || id || '@laas.example' WHERE id IN (3, 14, 21);
      COMMIT`);
    await matches('after updates');
    expect(await rows(dbs().target, `SELECT email, password_hash FROM organizations.user_auth WHERE email LIKE 'ada%' OR email LIKE 'alan%' ORDER BY email`))
      .toEqual([{ email: 'ada.lovelace@laas.example', password_hash: 'hash-ada-2' }, { email: 'alan@laas.example', password_hash: 'hash-alan' }]);
    // The key changed in place on the parent (the target's own id stays).
    expect(await count(`organizations."user" WHERE email = 'ada@laas.example'`)).toBe(0);
  });

  test('a deactivation leaves both tables (the first table\'s filter drops it, the cascade and the second filter agree); a reactivation brings both back', async () => {
    await src(`UPDATE users SET is_active = false WHERE id IN (9001, 1, 2)`);
    await matches('after deactivations');
    expect(await count(`organizations.user_auth WHERE email = 'ada.lovelace@laas.example'`)).toBe(0);
    await src(`BEGIN; UPDATE users SET is_active = true WHERE id = 9001; UPDATE users SET password_hash = NULL WHERE id = 4; COMMIT`);
    await matches('after a reactivation and a password removed');
    expect(await count(`organizations.user_auth WHERE email = 'ada.lovelace@laas.example'`)).toBe(1);
  });

  test('deletes reach both tables', async () => {
    await src(`BEGIN;
      DELETE FROM institute_user WHERE user_id IN (5, 6);
      DELETE FROM users WHERE id IN (9002, 5, 6, 9004);
      COMMIT`);
    await matches('after deletes');
    expect(await count(`organizations.user_auth WHERE email = 'alan@laas.example'`)).toBe(0);
  });

  test('a new slot copies both tables again and prunes what the source deleted meanwhile', async () => {
    await worker!.stop();
    worker = undefined;
    await src(`SELECT pg_drop_replication_slot('syncctl_fanout')`);
    await src(`BEGIN;
      DELETE FROM institute_user WHERE user_id IN (8, 9);
      DELETE FROM users WHERE id IN (8, 9);
      UPDATE users SET password_hash = NULL WHERE id = 10;
      UPDATE users SET password_hash = 'hash-11' WHERE id = 11;
      COMMIT`);
    expect(await apply(sync)).toContain('slot:syncctl_fanout');
    await matches('after the recopy under the new slot');
    worker = startWorker(sync);
    await src(`UPDATE users SET password_hash = 'hash-12b', first_name = 'Twelve' WHERE id = 12`);
    await matches('streamed from the new slot');
    await worker.stop();
    worker = undefined;
  });
});

describe('destroy', () => {
  test('puts the replica identity back once and removes the publication entry', async () => {
    const destroy = expectStatus(await runSyncctl(['destroy', dir, '--allow-destroy'], env()), 0);
    expect(planIds(destroy.stdout).filter((id) => id.startsWith('replica-identity:'))).toEqual(['replica-identity:public.users']);
    expect((await rows(dbs().source, `SELECT relreplident FROM pg_class WHERE oid = 'public.users'::regclass`))[0]).toEqual({ relreplident: 'd' });
    expect(await rows(dbs().source, `SELECT pubname FROM pg_publication`)).toEqual([]);
  });
});
