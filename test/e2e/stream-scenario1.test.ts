/**
 * PRODUCT.md scenario 1 end to end, from the spec kept in the repo (specs/laas_to_orgs.sync.ts):
 * seed, apply (initial copy), stream; inserts, updates and deletes on all three tables, a user
 * deactivated (leaves the target) and reactivated (comes back), an email changed (the natural
 * key), a TRUNCATE of the join table. After every step the target equals the mapped source.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { REPO_ROOT } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('stream_scenario1');
const schema = (file: string) => readFileSync(path.join(REPO_ROOT, 'specs/schema', file), 'utf8');
let sync: LoadedSync;
let worker: InProcessWorker | undefined;

beforeAll(async () => {
  await dbs().source.query(schema('laas-source.sql') + schema('laas-seed.sql'));
  await dbs().target.query(schema('orgs-target.sql'));
  sync = await loadSync(path.join(REPO_ROOT, 'specs/laas_to_orgs.sync.ts'), {
    LAAS_DATABASE_URL: dbs().sourceUrl, ORGS_DATABASE_URL: dbs().targetUrl,
  });
});

afterAll(async () => {
  await worker?.stop();
});

const matches = (what: string) => expectTargetMatches(dbs(), sync.tables, { what });
const src = (sql: string) => dbs().source.query(sql);
const targetRows = async (sql: string) => (await dbs().target.query(sql)).rows;

test('apply copies the seed: the target equals the mapped source', async () => {
  const applied = await apply(sync);
  expect(applied).toContain('slot:syncctl_laas_to_orgs');
  worker = startWorker(sync);
  await matches('after the initial copy');
  // The mapping itself, spelled out once: names concatenated, roles mapped with a default,
  // status to a boolean, inactive users and users without an email filtered out.
  expect(await targetRows(`SELECT name FROM organizations."user" WHERE email = 'user7@laas.example'`)).toEqual([{ name: 'First7 Last7' }]);
  expect(await targetRows(`SELECT count(*)::int AS n FROM organizations."user"`)).toEqual([{ n: 450 }]);
  expect(await targetRows(`SELECT role, is_active FROM organizations.institute_users WHERE user_id IN (3, 4, 6, 7) ORDER BY user_id`))
    .toEqual([ // ADMIN, GUEST (the default), TEACHER, INSTRUCTOR suspended
      { role: 'ADMIN', is_active: true }, { role: 'STUDENT', is_active: true }, { role: 'FACULTY', is_active: true }, { role: 'FACULTY', is_active: false }]);
});

test('inserts on all three tables arrive', async () => {
  await src(`INSERT INTO institutes (id, name, "imageUrl") VALUES (1001, 'Institute of Streams', NULL), (1002, 'Tab\tand ''quote''', 'x')`);
  await src(`INSERT INTO users (id, email, first_name, last_name) VALUES (9001, 'ada@laas.example', 'Ada', 'Lovelace'),
             (9002, 'alan@laas.example', 'Alan', 'Turing'), (9003, NULL, 'No', 'Email')`);
  await src(`INSERT INTO institute_user VALUES (1001, 9001, 'ADMIN', 'ACTIVE'), (1001, 9002, 'GUEST', 'ACTIVE'), (1002, 9001, 'INSTRUCTOR', 'LEFT')`);
  await matches('after inserts');
  expect(await targetRows(`SELECT name FROM organizations."user" WHERE email = 'ada@laas.example'`)).toEqual([{ name: 'Ada Lovelace' }]);
});

test('updates on all three tables arrive, in one transaction', async () => {
  await src(`BEGIN;
    UPDATE institutes SET name = 'Institute of Rivers', updated_at = now() WHERE id = 1001;
    UPDATE users SET first_name = 'Augusta Ada', updated_at = now() WHERE id = 9001;
    UPDATE users SET last_name = last_name || '!' WHERE id BETWEEN 1 AND 30;
    UPDATE institute_user SET user_type = 'TEACHER', status = 'SUSPENDED' WHERE user_id = 9002;
    UPDATE institute_user SET status = 'ACTIVE' WHERE user_id BETWEEN 1 AND 50;
    COMMIT`);
  await matches('after updates');
  expect(await targetRows(`SELECT name FROM organizations."user" WHERE email = 'ada@laas.example'`)).toEqual([{ name: 'Augusta Ada Lovelace' }]);
});

test('deletes on all three tables arrive (children before parents)', async () => {
  await src(`BEGIN;
    DELETE FROM institute_user WHERE institute_id = 1002 OR user_id IN (9002, 11, 12);
    DELETE FROM users WHERE id IN (9002, 11);
    DELETE FROM institute_user WHERE institute_id = 5;
    DELETE FROM institutes WHERE id = 5;
    COMMIT`);
  await matches('after deletes');
  expect(await targetRows(`SELECT count(*)::int AS n FROM organizations.institute WHERE institute_id = 5`)).toEqual([{ n: 0 }]);
});

test('a deactivated user leaves the target, a reactivated one comes back', async () => {
  await src(`UPDATE users SET is_active = false, updated_at = now() WHERE id = 9001`);
  await matches('after deactivating');
  expect(await targetRows(`SELECT email FROM organizations."user" WHERE email = 'ada@laas.example'`)).toEqual([]);

  await src(`UPDATE users SET is_active = true, last_name = 'King', updated_at = now() WHERE id = 9001`);
  await matches('after reactivating');
  expect(await targetRows(`SELECT name FROM organizations."user" WHERE email = 'ada@laas.example'`)).toEqual([{ name: 'Augusta Ada King' }]);

  // A user that had no email gets one: it enters the target.
  await src(`UPDATE users SET email = 'noemail@laas.example' WHERE id = 9003`);
  await matches('after giving a user an email');
});

test('an email change (the natural key) moves the target row', async () => {
  await src(`UPDATE users SET email = 'countess@laas.example', updated_at = now() WHERE id = 9001`);
  await matches('after the email change');
  expect(await targetRows(`SELECT email, name FROM organizations."user" WHERE email IN ('ada@laas.example', 'countess@laas.example')`))
    .toEqual([{ email: 'countess@laas.example', name: 'Augusta Ada King' }]);

  // Two users swap emails in one transaction: both rows end up right.
  await src(`BEGIN;
    UPDATE users SET email = 'swap@laas.example' WHERE id = 20;
    UPDATE users SET email = 'user20@laas.example' WHERE id = 21;
    UPDATE users SET email = 'user21@laas.example' WHERE id = 20;
    COMMIT`);
  await matches('after swapping two emails');
});

test('TRUNCATE of institute_user is applied, later inserts arrive', async () => {
  await src(`TRUNCATE institute_user`);
  await matches('after TRUNCATE');
  expect(await targetRows(`SELECT count(*)::int AS n FROM organizations.institute_users`)).toEqual([{ n: 0 }]);

  await src(`INSERT INTO institute_user VALUES (1, 1, 'TEACHER', 'ACTIVE'), (2, 2, 'GUEST', 'ACTIVE')`);
  await matches('after inserts following the TRUNCATE');
  expect(worker!.finished()).toBe(false);
  expect(await targetRows(`SELECT count(*)::int AS n FROM syncctl.sync_conflicts`)).toEqual([{ n: 0 }]);
});
