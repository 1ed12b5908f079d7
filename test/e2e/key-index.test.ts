/**
 * The target key at plan time, against the live target catalog: a unique index on a nullable
 * column (NULL keys never match: every update would insert another row), a deferrable unique
 * constraint or primary key (ON CONFLICT refuses it: every write would fail) and a partial unique
 * index are refused by plan and apply, each with the file, the sync, the table, the column(s) and
 * why. A unique index on NOT NULL columns is accepted and streams.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { expectStatus, rows, runSyncctl, syncSpec, useSpecDir } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('key_index');
const specs = useSpecDir();
let env: Record<string, string>;
let worker: InProcessWorker | undefined;

afterAll(async () => { await worker?.stop().catch(() => {}); });

const mapped = (name: string, key: string) => `    ${name}: { from: 'public.src_${name}', to: 'public.${name}', key: ['${key}'],
      columns: { id: sql\`id\`, email: sql\`email\`, code: sql\`code\` } },`;

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  for (const name of ['nullable', 'deferred', 'deferred_pk', 'partial', 'good']) {
    // Only nullable's source can send a NULL email: a NOT NULL source column is never NULL on the target either.
    await dbs().source.query(`CREATE TABLE src_${name} (id int PRIMARY KEY, email text${name === 'nullable' ? '' : ' NOT NULL'}, code text NOT NULL);
      INSERT INTO src_${name} SELECT g, 'u' || g || '@example.com', 'c' || g FROM generate_series(1, 20) g`);
  }
  await dbs().target.query(`
    CREATE TABLE nullable (id int, email text UNIQUE, code text);
    CREATE TABLE deferred (id int, email text NOT NULL, code text NOT NULL, CONSTRAINT deferred_code UNIQUE (code) DEFERRABLE INITIALLY IMMEDIATE);
    CREATE TABLE deferred_pk (id int, email text, code text, CONSTRAINT deferred_pk_pkey PRIMARY KEY (id) DEFERRABLE);
    CREATE TABLE partial (id int NOT NULL, email text NOT NULL, code text);
    CREATE UNIQUE INDEX partial_email ON partial (email) WHERE id > 0;
    CREATE TABLE good (id int, email text NOT NULL, code text);
    CREATE UNIQUE INDEX good_email ON good (email)`);
});

test('a nullable, deferrable or partial unique index as the key: plan and apply refuse, naming file, sync, table, column and why', async () => {
  const dir = specs.write({ 'keys.sync.ts': syncSpec({ name: 'keys', tables: [
    mapped('nullable', 'email'), mapped('deferred', 'code'), mapped('deferred_pk', 'id'), mapped('partial', 'email'), mapped('good', 'email'),
  ].join('\n') }) });
  const file = `${dir}/keys.sync.ts`;
  const plan = expectStatus(await runSyncctl(['plan', dir], env), 2);
  expect(plan.stderr).toContain('error: keys: the spec does not fit the live databases');
  const line = (table: string) => plan.stderr.split('\n').find((l) => l.includes(`tables.${table}.key`))?.trim();
  expect(line('nullable')).toBe(`${file}: tables.nullable.key: unique index nullable_email_key on public.nullable covers the key (email), ` +
    'but column email is nullable: NULL never equals NULL in a unique index, so every change to a row whose key holds a NULL would insert ' +
    'another row instead of updating it. Make it NOT NULL (ALTER TABLE public.nullable ALTER COLUMN email SET NOT NULL), or keep such rows ' +
    'out with a row filter (where: sql`email IS NOT NULL`, on the source columns the key is computed from)');
  expect(line('deferred')).toContain(`${file}: tables.deferred.key: unique index deferred_code on public.deferred covers the key (code), but it is DEFERRABLE`);
  expect(line('deferred')).toContain('ON CONFLICT cannot use a deferrable unique index, so every write of the table would fail');
  expect(line('deferred_pk')).toContain(`${file}: tables.deferred_pk.key: primary key deferred_pk_pkey on public.deferred_pk covers the key (id), but it is DEFERRABLE`);
  expect(line('partial')).toContain(`${file}: tables.partial.key: unique index partial_email on public.partial covers the key (email), but it is partial`);
  expect(line('good')).toBeUndefined();

  expectStatus(await runSyncctl(['apply', dir], env), 2);
  expect(await rows(dbs().source, `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = 'syncctl_keys'`)).toEqual([{ n: 0 }]);
  expect(await rows(dbs().target, `SELECT count(*)::int AS n FROM good`)).toEqual([{ n: 0 }]);
});

test('a unique index on NOT NULL columns, or on a nullable column the row filter keeps from NULL, backs the key', async () => {
  // The filtered table: the target's email is nullable, the filter keeps rows without one on the source.
  await dbs().source.query(`CREATE TABLE src_filtered (id int PRIMARY KEY, email text, code text NOT NULL);
    INSERT INTO src_filtered SELECT g, CASE WHEN g % 4 <> 0 THEN 'u' || g || '@example.com' END, 'c' || g FROM generate_series(1, 20) g`);
  await dbs().target.query(`CREATE TABLE filtered (id int, email text UNIQUE, code text)`);
  const tables = [mapped('good', 'email'), mapped('filtered', 'email').replace("key: ['email'],", "key: ['email'], where: sql`email IS NOT NULL`,")];
  const sync = await loadSync(specs.write({ 'good.sync.ts': syncSpec({ name: 'good', tables: tables.join('\n') }) }), env);
  await apply(sync);
  worker = startWorker(sync);
  for (const table of ['src_good', 'src_filtered']) {
    await dbs().source.query(`UPDATE ${table} SET code = code || '!' WHERE id <= 5; DELETE FROM ${table} WHERE id = 6;
      INSERT INTO ${table} VALUES (21, 'u21@example.com', 'c21')`);
  }
  // A row losing its key leaves the target; one gaining a key arrives.
  await dbs().source.query(`UPDATE src_filtered SET email = NULL WHERE id = 1; UPDATE src_filtered SET email = 'u4@example.com' WHERE id = 4`);
  await expectTargetMatches(dbs(), sync.tables, { what: 'streamed' });
  expect(await rows(dbs().target, `SELECT count(*)::int AS n FROM good`)).toEqual([{ n: 20 }]);
  expect(await rows(dbs().target, `SELECT count(*)::int AS n FROM filtered WHERE email IS NULL`)).toEqual([{ n: 0 }]);
});
