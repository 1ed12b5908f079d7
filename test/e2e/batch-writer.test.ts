/**
 * BatchWriter on a real target, many batches in one session (as a long-running worker has):
 * small batches (one round trip each) and larger ones (COPY) alternate, keys repeat or not; the
 * staging tables are emptied by each batch and vacuumed now and then, so they stay small, and the
 * target holds the last change of every key.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import pg from 'pg';
import { BatchWriter } from '../../src/apply/batch-writer.ts';
import type { ApplyTable } from '../../src/apply/render-apply.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('batch_writer');
let client: pg.Client;

const items: ApplyTable = {
  id: 'items', target: { schema: 'public', name: 'items' }, key: ['id'],
  columns: [{ target: 'id', expression: 'id', reads: ['id'] }, { target: 'v', expression: 'v * 2', reads: ['v'] }],
  staged: [{ name: 'id', stagingType: 'integer' }, { name: 'v', stagingType: 'integer' }], tracked: false, keySources: ['id'], keyTypes: ['integer'],
};

beforeAll(async () => {
  await dbs().target.query(`CREATE SCHEMA syncctl; CREATE TABLE syncctl.checkpoints (sync_name text PRIMARY KEY, commit_lsn pg_lsn NOT NULL, commit_time timestamptz, updated_at timestamptz);
    CREATE TABLE items (id int PRIMARY KEY, v bigint NOT NULL); CREATE TABLE tags (id int PRIMARY KEY, v bigint NOT NULL)`);
  client = new pg.Client({ connectionString: dbs().targetUrl });
  await client.connect();
});

afterAll(async () => {
  await client?.end();
});

test('150 batches, small and large, repeated keys and deletes: the target holds the last change; the staging stays small', async () => {
  const writer = new BatchWriter(client, 'w');
  writer.register({ apply: items, tableName: 'items', onError: 'park', order: 0, strategy: 'source-wins' });
  writer.register({ apply: { ...items, id: 'tags', target: { schema: 'public', name: 'tags' } }, tableName: 'tags', onError: 'park', order: 1, strategy: 'source-wins' });
  const expected = new Map<number, number>();
  const b = (n: number) => Buffer.from(String(n));
  let seq = 0;
  for (let batch = 0; batch < 150; batch++) {
    await writer.begin({ lazy: true });
    // Most batches are small (one round trip); every tenth has 8,000 changes (COPY, TRUNCATE).
    const n = batch % 10 === 9 ? 8_000 : 600;
    for (let i = 0; i < n; i++) {
      const id = (seq++ * 7919) % 5_000;
      if (i % 13 === 0) {
        await writer.stage('items', 'D', null, [b(id), null]);
        expected.delete(id);
      } else {
        await writer.stage('items', 'W', null, [b(id), b(batch * 10_000 + i)]);
        expected.set(id, (batch * 10_000 + i) * 2);
      }
      // A second table whose keys repeat within a batch (the reduction path).
      if (i % 50 === 0) await writer.stage('tags', 'W', null, [b(i % 7), b(batch)]);
    }
    await writer.commit({ lsn: `0/${(batch + 1).toString(16)}`, commitTime: null });
  }
  const { rows } = await dbs().target.query<{ id: number; v: string }>('SELECT id, v FROM items ORDER BY id');
  expect(rows.length).toBe(expected.size);
  for (const r of rows) expect(Number(r.v), `id ${r.id}`).toBe(expected.get(r.id));
  // ~100,000 rows went through the stage; vacuumed, it holds a few pages, not thousands.
  const size = await client.query<{ pages: number }>(`SELECT (pg_relation_size('pg_temp.syncctl_stage_items') / 8192)::int AS pages`);
  expect(size.rows[0]!.pages).toBeLessThan(200);
  const tags = await dbs().target.query(`SELECT count(*)::int AS n, min(v)::int AS lo, max(v)::int AS hi FROM tags`);
  expect(tags.rows).toEqual([{ n: 7, lo: 298, hi: 298 }]);
  const checkpoint = await dbs().target.query(`SELECT commit_lsn::text AS lsn FROM syncctl.checkpoints`);
  expect(checkpoint.rows).toEqual([{ lsn: `0/${(150).toString(16).toUpperCase()}` }]);
});

test('a large slice of source UPDATEs updates the rows that exist and inserts only the missing ones', async () => {
  await dbs().target.query(`
    CREATE TABLE accounts (id int PRIMARY KEY, v bigint NOT NULL CHECK (v >= 0));
    INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 12000) g;
    DELETE FROM accounts WHERE id % 100 = 0;
    CREATE SEQUENCE inserts_seen;
    CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('inserts_seen'); RETURN NEW; END $$;
    CREATE TRIGGER count_insert BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION count_insert()`);
  const accounts: ApplyTable = { ...items, id: 'accounts', target: { schema: 'public', name: 'accounts' }, exactKeys: true };
  const writer = new BatchWriter(client, 'w');
  writer.register({ apply: accounts, tableName: 'accounts', onError: 'park', order: 0, strategy: 'source-wins' });
  const b = (n: number) => Buffer.from(String(n));
  const inserted = async () => (await dbs().target.query<{ n: number }>('SELECT CASE WHEN is_called THEN last_value ELSE 0 END::int AS n FROM inserts_seen')).rows[0]!.n;

  // 12,000 source UPDATEs; 120 of their rows are missing on the target (deleted there).
  await writer.begin();
  for (let id = 1; id <= 12_000; id++) await writer.stage('accounts', 'W', null, [b(id), b(id)], true);
  await writer.commit({ lsn: '0/1000', commitTime: null });
  let { rows } = await dbs().target.query<{ n: number; sum: string }>('SELECT count(*)::int AS n, sum(v)::text AS sum FROM accounts');
  expect(rows).toEqual([{ n: 12_000, sum: String(12_000 * 12_001) }]);
  // The upsert would have fired the BEFORE INSERT trigger for every row, conflicting or not.
  expect(await inserted()).toBe(120);

  // Every row exists now: no insert at all. Mostly inserts (source INSERTs): the upsert, as before.
  await writer.begin();
  for (let id = 1; id <= 12_000; id++) await writer.stage('accounts', 'W', null, [b(id), b(id + 1)], true);
  await writer.commit({ lsn: '0/2000', commitTime: null });
  expect(await inserted()).toBe(120);
  await writer.begin();
  for (let id = 1; id <= 12_000; id++) await writer.stage('accounts', 'W', null, [b(id), b(id + 2)], false);
  await writer.commit({ lsn: '0/3000', commitTime: null });
  expect(await inserted()).toBe(120 + 12_000);

  // A row the target rejects: the batch falls back to the careful path, which parks exactly it.
  await dbs().target.query('CREATE TABLE syncctl.sync_conflicts (id bigint GENERATED ALWAYS AS IDENTITY, sync_name text, table_name text, kind text, key jsonb, incoming jsonb, source_lsn pg_lsn, source_commit_time timestamptz, strategy text, outcome text, reason text, change jsonb, sqlstate text, resolved_by text, resolved_at timestamptz)').catch(() => {});
  await writer.begin();
  for (let id = 1; id <= 12_000; id++) await writer.stage('accounts', 'W', null, [b(id), b(id === 777 ? -1 : id + 3)], true);
  await writer.commit({ lsn: '0/4000', commitTime: null });
  ({ rows } = await dbs().target.query<{ n: number; sum: string }>('SELECT count(*)::int AS n, sum(v)::text AS sum FROM accounts WHERE id <> 777'));
  expect(rows).toEqual([{ n: 11_999, sum: String(12_000 * 12_001 + 3 * 2 * 12_000 - (777 * 2 + 6)) }]);
  const parked = await dbs().target.query(`SELECT key FROM syncctl.sync_conflicts WHERE table_name = 'accounts'`);
  expect(parked.rows).toEqual([{ key: { id: 777 } }]);
});

test('small batches run statements prepared once per session; a rejected row still parks only itself', async () => {
  await dbs().target.query('CREATE TABLE small (id int PRIMARY KEY, v bigint NOT NULL CHECK (v >= 0))');
  await dbs().target.query('CREATE TABLE IF NOT EXISTS syncctl.sync_conflicts (id bigint GENERATED ALWAYS AS IDENTITY, sync_name text, table_name text, kind text, key jsonb, incoming jsonb, source_lsn pg_lsn, source_commit_time timestamptz, strategy text, outcome text, reason text, change jsonb, sqlstate text, resolved_by text, resolved_at timestamptz)');
  const session = new pg.Client({ connectionString: dbs().targetUrl });
  await session.connect();
  try {
    const writer = new BatchWriter(session, 'w');
    writer.register({ apply: { ...items, id: 'small', target: { schema: 'public', name: 'small' } }, tableName: 'small', onError: 'park', order: 0, strategy: 'source-wins' });
    const b = (n: number) => Buffer.from(String(n));
    const preparedCount = async () => (await session.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_prepared_statements')).rows[0]!.n;
    const expected = new Map<number, number>();
    const counts: number[] = [];
    for (let batch = 0; batch < 60; batch++) {
      await writer.begin({ lazy: true });
      // Keys repeat in every third batch (the reduction); every fifth deletes one.
      for (let i = 0; i < 5; i++) {
        const id = batch % 3 === 0 ? i % 2 : batch * 10 + i;
        await writer.stage('small', 'W', null, [b(id), b(batch)]);
        expected.set(id, batch * 2);
      }
      if (batch % 5 === 0) {
        await writer.stage('small', 'D', null, [b((batch - 5) * 10), null]);
        expected.delete((batch - 5) * 10);
      }
      await writer.commit({ lsn: `0/${(batch + 1).toString(16)}`, commitTime: null });
      counts.push(await preparedCount());
    }
    // Prepared on first use, then reused: the same few statements, however many batches run.
    expect(counts[0]).toBeGreaterThan(0);
    expect(counts.at(-1)).toBe(counts[10]);
    expect(counts.at(-1)).toBeLessThanOrEqual(8);
    let { rows } = await dbs().target.query<{ id: number; v: string }>('SELECT id, v FROM small ORDER BY id');
    expect(new Map(rows.map((r) => [r.id, Number(r.v)]))).toEqual(expected);

    // A row the target rejects inside a prepared statement: the careful path parks exactly it.
    await writer.begin({ lazy: true });
    await writer.stage('small', 'W', null, [b(1000), b(5)]);
    await writer.stage('small', 'W', null, [b(1001), b(-1)]);
    await writer.stage('small', 'W', null, [b(1002), b(6)]);
    await writer.commit({ lsn: '0/100', commitTime: null });
    ({ rows } = await dbs().target.query<{ id: number; v: string }>('SELECT id, v FROM small WHERE id >= 1000 ORDER BY id'));
    expect(rows).toEqual([{ id: 1000, v: '10' }, { id: 1002, v: '12' }]);
    const parked = await dbs().target.query(`SELECT key FROM syncctl.sync_conflicts WHERE table_name = 'small'`);
    expect(parked.rows).toEqual([{ key: { id: 1001 } }]);
  } finally {
    await session.end();
  }
});
