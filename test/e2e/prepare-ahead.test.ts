/**
 * BatchWriter.prepareAhead on a real target: a large batch sets aside the changes of keys with a
 * local change and reduces its stage while the batch before it, in another session, has not
 * committed yet. Here that earlier batch is the one that forgets a key's local change (its
 * incoming change is newer: last-write-wins applies it). The later batch, prepared before that
 * commit, still saw the local change and set the key aside; after the barrier, source order
 * finds no local change left and applies the key's change as no conflict. The result is what
 * source order gives: the later change's row, one conflict (the earlier batch's), nothing left
 * in local_changes; and a local change recorded after the preparation is still caught.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { BatchWriter, type BatchTable } from '../../src/apply/batch-writer.ts';
import type { ApplyTable } from '../../src/apply/render-apply.ts';
import { connect, type Connection } from '../../src/db/connect.ts';
import { migrateSchema } from '../../src/plan/apply-plan.ts';
import { renderTrackingTrigger } from '../../src/plan/render-ddl.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('prepare_ahead');
const SYNC = 'ahead';
let first: Connection;
let second: Connection;

const items: ApplyTable = {
  id: 'items', target: { schema: 'public', name: 'items' }, key: ['id'],
  columns: [{ target: 'id', expression: 'id', reads: ['id'] }, { target: 'v', expression: 'v', reads: ['v'] },
    { target: 'updated_at', expression: 'updated_at', reads: ['updated_at'] }],
  staged: [{ name: 'id', stagingType: 'integer' }, { name: 'v', stagingType: 'integer' }, { name: 'updated_at', stagingType: 'timestamp with time zone' }],
  tracked: true, keySources: ['id'], keyTypes: ['integer'], exactKeys: true,
};
const table: BatchTable = {
  apply: items, tableName: 'items', onError: 'park', order: 0, strategy: 'last-write-wins', conflict: { strategy: 'last-write-wins', column: 'updated_at' },
};
/** Rows beyond the one-round-trip limit: the batch goes by COPY, and prepareAhead works on it. */
const LARGE = 3_000;

beforeAll(async () => {
  first = await connect('target', dbs().targetUrl, 'test');
  second = await connect('target', dbs().targetUrl, 'test');
  await migrateSchema(first);
  await first.client.query(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, updated_at timestamptz NOT NULL);
    INSERT INTO items SELECT g, 0, '2020-01-01' FROM generate_series(1, ${LARGE + 10}) AS g;
    INSERT INTO syncctl.syncs (name, spec_file) VALUES ('${SYNC}', 'ahead.sync.ts')`);
  await first.query(renderTrackingTrigger(SYNC, items.target, items.key).sql);
});

afterAll(async () => {
  await first?.close();
  await second?.close();
});

const b = (v: string | number) => Buffer.from(String(v));
const write = (id: number, v: number, at: string) => [b(id), b(v), b(at)];

test('a key whose local change the batch before forgets: set aside ahead, applied after the barrier as no conflict', async () => {
  // A local write on key 1 (tracked: the session is no writer), older than both incoming changes.
  await dbs().target.query(`UPDATE items SET v = -1, updated_at = '2021-01-01' WHERE id = 1`);

  const a = new BatchWriter(first.client, SYNC);
  const later = new BatchWriter(second.client, SYNC);
  for (const w of [a, later]) w.register(table);

  // The earlier batch: key 1 with a newer time (it wins over the local change, which it forgets).
  await a.begin();
  a.setContext({ lsn: '0/10', commitTime: '2022-01-01T00:00:00Z' });
  await a.stage('items', 'W', null, write(1, 100, '2022-01-01'), true);

  // The later batch: key 1 again, and enough other keys to be a large batch.
  let release!: () => void;
  const earlierCommitted = new Promise<void>((resolve) => { release = resolve; });
  later.after(earlierCommitted);
  await later.begin({ lazy: true });
  later.setContext({ lsn: '0/20', commitTime: '2022-02-01T00:00:00Z' });
  await later.stage('items', 'W', null, write(1, 200, '2022-02-01'), true);
  for (let id = 2; id <= LARGE; id++) await later.stage('items', 'W', null, write(id, id, '2022-02-01'), true);

  // Prepared while the earlier batch has not committed: key 1 still has its local change.
  await later.prepareAhead();
  const aside = await second.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_temp."syncctl_side_items"`);
  expect(aside.rows[0]!.n).toBe(1);

  const earlier = await a.commit({ lsn: '0/10', commitTime: '2022-01-01T00:00:00Z' });
  expect(earlier.conflicts).toEqual([{ table: 'items', kind: 'locally_modified', outcome: 'applied', count: 1 }]);
  release();
  const position = await later.commit({ lsn: '0/20', commitTime: '2022-02-01T00:00:00Z' });
  expect(position.ahead).toBe(true);
  expect(position.setAside).toBe(1);
  expect(position.conflicts).toEqual([]);

  const { rows } = await first.query<{ v: number }>('SELECT v FROM items WHERE id = 1');
  expect(rows[0]!.v).toBe(200);
  const conflicts = await first.query<{ outcome: string; source_lsn: string }>(`SELECT outcome, source_lsn::text FROM syncctl.sync_conflicts WHERE key = '{"id": 1}'`);
  expect(conflicts.rows).toEqual([{ outcome: 'applied', source_lsn: '0/10' }]);
  expect((await first.query('SELECT 1 FROM syncctl.local_changes')).rowCount).toBe(0);
  const written = await first.query<{ n: number }>(`SELECT count(*)::int AS n FROM items WHERE id BETWEEN 2 AND ${LARGE} AND v = id`);
  expect(written.rows[0]!.n).toBe(LARGE - 1);
});

test('a local change recorded after the preparation: the set form\'s check catches it, and source order meets it with the rule', async () => {
  const later = new BatchWriter(second.client, SYNC);
  later.register(table);
  await later.begin({ lazy: true });
  later.setContext({ lsn: '0/30', commitTime: '2023-01-01T00:00:00Z' });
  for (let id = 2; id <= LARGE; id++) await later.stage('items', 'W', null, write(id, -id, '2023-01-01'), true);
  await later.prepareAhead();
  // Newer than the incoming change: last-write-wins keeps it.
  await dbs().target.query(`UPDATE items SET v = 7, updated_at = '2024-01-01' WHERE id = 5`);

  const position = await later.commit({ lsn: '0/30', commitTime: '2023-01-01T00:00:00Z' });
  expect(position.conflicts).toEqual([{ table: 'items', kind: 'locally_modified', outcome: 'kept', count: 1 }]);
  const { rows } = await first.query<{ id: number; v: number }>('SELECT id, v FROM items WHERE id IN (4, 5, 6) ORDER BY id');
  expect(rows).toEqual([{ id: 4, v: -4 }, { id: 5, v: 7 }, { id: 6, v: -6 }]);
});

test('conflicts logged set-based in one statement are counted, each of them, in the commit\'s counts', async () => {
  // Newer local writes on 50 keys: the incoming changes below are older, and last-write-wins keeps the rows.
  await dbs().target.query(`UPDATE items SET v = -id, updated_at = '2030-01-01' WHERE id BETWEEN 100 AND 149`);
  const w = new BatchWriter(second.client, SYNC);
  w.register(table);
  await w.begin({ lazy: true });
  w.setContext({ lsn: '0/40', commitTime: '2025-01-01T00:00:00Z' });
  for (let id = 2; id <= LARGE; id++) await w.stage('items', 'W', null, write(id, id, '2025-01-01'), true);
  // A second change of each of those keys: two conflicts per key, both kept.
  for (let id = 100; id < 150; id++) await w.stage('items', 'W', null, write(id, 0, '2025-01-02'), true);
  const position = await w.commit({ lsn: '0/40', commitTime: '2025-01-01T00:00:00Z' });
  expect(position.loggedAside).toBe(100);
  // And key 5's local change, kept by the test before, now meets a newer change: applied.
  expect([...position.conflicts].sort((a, b) => a.outcome.localeCompare(b.outcome))).toEqual([
    { table: 'items', kind: 'locally_modified', outcome: 'applied', count: 1 }, { table: 'items', kind: 'locally_modified', outcome: 'kept', count: 100 }]);
  const logged = await first.query<{ n: number }>(`SELECT count(*)::int AS n FROM syncctl.sync_conflicts WHERE source_lsn = '0/40' AND outcome = 'kept'`);
  expect(logged.rows[0]!.n).toBe(100);
});
