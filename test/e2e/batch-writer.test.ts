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
  staged: [{ name: 'id', stagingType: 'integer' }, { name: 'v', stagingType: 'integer' }], tracked: false, keySources: ['id'],
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
  writer.register({ apply: items, tableName: 'items', onError: 'park', order: 0 });
  writer.register({ apply: { ...items, id: 'tags', target: { schema: 'public', name: 'tags' } }, tableName: 'tags', onError: 'park', order: 1 });
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
