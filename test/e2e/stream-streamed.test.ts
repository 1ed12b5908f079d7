/**
 * Streamed in-progress transactions (pgoutput protocol ≥ 2 with streaming on). The source
 * database's logical_decoding_work_mem is set to its minimum (64 kB), so every transaction of more
 * than a few hundred rows reaches the worker in blocks before it commits:
 * - nothing of it is visible on the target before the source commits, and it is staged in the
 *   target meanwhile (the staging tables exist while the source transaction is open);
 * - inserts, updates of the same rows, deletes, key changes and a TRUNCATE in one streamed
 *   transaction, interleaved with small transactions that commit meanwhile;
 * - a rolled-back subtransaction drops exactly its changes and the ones after it; a rolled-back
 *   transaction leaves nothing (and its staging is dropped);
 * - the worker stopped mid-stream and restarted: the server streams the transaction again.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import pg from 'pg';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { pgoutputProtocol } from '../../src/stream/worker.ts';
import { syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, waitForStreaming, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('stream_streamed');
const specs = useSpecDir();
let sync: LoadedSync;
let worker: InProcessWorker | undefined;
/** A second source session, for the transaction held open while the worker receives it. */
let writer: pg.Client;

beforeAll(async () => {
  const { rows } = await dbs().source.query<{ db: string }>('SELECT current_database() AS db');
  // The walsender of a database connection takes the database's settings.
  await dbs().source.query(`ALTER DATABASE "${rows[0]!.db}" SET logical_decoding_work_mem = '64kB'`);
  await dbs().source.query(`
    CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note text);
    CREATE TABLE parents (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE children (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parents, qty int NOT NULL);
    CREATE TABLE wiped (id int PRIMARY KEY, v int NOT NULL);
    INSERT INTO items SELECT g, g, 'seed ' || g FROM generate_series(1, 1000) g;
    INSERT INTO parents SELECT g, 'p' || g FROM generate_series(1, 100) g;
    INSERT INTO wiped SELECT g, g FROM generate_series(1, 100) g`);
  await dbs().target.query(`
    CREATE TABLE items_copy (id int PRIMARY KEY, v2 bigint NOT NULL, note text);
    CREATE TABLE parents_copy (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE children_copy (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parents_copy, qty int NOT NULL);
    CREATE TABLE wiped_copy (id int PRIMARY KEY, v int NOT NULL)`);
  sync = await loadSync(specs.write({ 's.sync.ts': syncSpec({ name: 'streamed', tables: `    items: {
      from: 'public.items', to: 'public.items_copy', key: ['id'],
      columns: { id: sql\`id\`, v2: sql\`v::bigint * 2\`, note: sql\`upper(note)\` },
    },
    parents: { from: 'public.parents', to: 'public.parents_copy', key: ['id'], columns: { id: sql\`id\`, name: sql\`name\` } },
    children: {
      from: 'public.children', to: 'public.children_copy', key: ['id'],
      columns: { id: sql\`id\`, parent_id: sql\`parent_id\`, qty: sql\`qty\` },
    },
    wiped: { from: 'public.wiped', to: 'public.wiped_copy', key: ['id'], columns: { id: sql\`id\`, v: sql\`v\` }, truncate: 'apply' },` }) }),
  { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
  await apply(sync);
  writer = new pg.Client({ connectionString: dbs().sourceUrl });
  await writer.connect();
  worker = startWorker(sync);
  await waitForStreaming(dbs(), 'streamed');
});

afterAll(async () => {
  await worker?.stop();
  await writer?.end();
});

const tables = () => sync.tables.map((t) => t);

async function stagedTables(): Promise<number> {
  const { rows } = await dbs().target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_class WHERE relname LIKE 'syncctl_stage_x%'`);
  return rows[0]!.n;
}

async function targetCount(table: string): Promise<number> {
  return (await dbs().target.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0]!.n;
}

test('the worker asks for the highest protocol the server speaks, with streaming', () => {
  expect(pgoutputProtocol(180004)).toEqual({ version: 4, streaming: true });
  expect(pgoutputProtocol(150010)).toEqual({ version: 3, streaming: true });
  expect(pgoutputProtocol(140000)).toEqual({ version: 2, streaming: true });
  expect(pgoutputProtocol(130000)).toEqual({ version: 1, streaming: false });
});

test('a streamed transaction is staged while it runs, invisible until it commits, then applied whole', async () => {
  const before = await targetCount('items_copy');
  await writer.query('BEGIN');
  await writer.query(`INSERT INTO items SELECT g, g, 'new ' || g FROM generate_series(1001, 21000) g`);
  await writer.query(`UPDATE items SET v = v + 1, note = note || '!' WHERE id % 3 = 0`);
  await writer.query(`DELETE FROM items WHERE id % 7 = 0`);
  await writer.query(`INSERT INTO parents SELECT g, 'p' || g FROM generate_series(101, 3000) g`);
  await writer.query(`INSERT INTO children SELECT g, 101 + g % 2000, g FROM generate_series(1, 5000) g`);
  // Key changes: ids 2, 4, … move to 100002, 100004, …
  await writer.query(`UPDATE items SET id = id + 100000 WHERE id % 2 = 0 AND id <= 2000`);
  await waitFor('the open transaction to be staged in the target', async () => (await stagedTables()) > 0, 30_000);
  // Small transactions commit while the big one is open: they arrive first and apply at once.
  for (let i = 0; i < 5; i++) await dbs().source.query(`UPDATE wiped SET v = v + 1 WHERE id = ${i + 1}`);
  await expectTargetMatches(dbs(), [sync.tables.find((t) => t.name === 'wiped')!]);
  expect(await targetCount('items_copy')).toBe(before);
  expect(await targetCount('children_copy')).toBe(0);
  await writer.query('COMMIT');
  await expectTargetMatches(dbs(), tables(), { timeoutMs: 60_000 });
  await waitFor('the staging to be dropped', async () => (await stagedTables()) === 0, 10_000);
});

test('a rolled-back subtransaction drops exactly its changes; a TRUNCATE in the stream applies in order', async () => {
  await writer.query('BEGIN');
  await writer.query(`INSERT INTO items SELECT g, g, 'kept ' || g FROM generate_series(30001, 35000) g`);
  await writer.query('SAVEPOINT a');
  await writer.query(`INSERT INTO items SELECT g, g, 'gone ' || g FROM generate_series(40001, 45000) g`);
  await writer.query(`UPDATE items SET note = 'gone too' WHERE id BETWEEN 30001 AND 31000`);
  await writer.query(`DELETE FROM items WHERE id BETWEEN 31001 AND 32000`);
  await writer.query('SAVEPOINT b');
  await writer.query(`INSERT INTO items SELECT g, g, 'nested gone ' || g FROM generate_series(46001, 47000) g`);
  await writer.query('RELEASE SAVEPOINT b');
  await writer.query('ROLLBACK TO SAVEPOINT a');
  await writer.query(`UPDATE items SET note = 'after rollback' WHERE id BETWEEN 32001 AND 33000`);
  await writer.query('SAVEPOINT c');
  await writer.query(`INSERT INTO wiped SELECT g, g FROM generate_series(1001, 3000) g`);
  await writer.query('TRUNCATE wiped');
  await writer.query(`INSERT INTO wiped SELECT g, -g FROM generate_series(5001, 6000) g`);
  await writer.query('RELEASE SAVEPOINT c');
  await writer.query('SAVEPOINT d');
  await writer.query(`INSERT INTO items SELECT g, g, 'd ' || g FROM generate_series(50001, 52000) g`);
  await writer.query('ROLLBACK TO SAVEPOINT d');
  await writer.query('COMMIT');
  await expectTargetMatches(dbs(), tables(), { timeoutMs: 60_000 });
  const { rows } = await dbs().target.query<{ n: number }>(`SELECT count(*)::int AS n FROM items_copy WHERE note LIKE '%GONE%' OR id BETWEEN 40001 AND 60000`);
  expect(rows[0]!.n).toBe(0);
});

test('a rolled-back streamed transaction leaves nothing on the target and drops its staging', async () => {
  const before = await targetCount('items_copy');
  await writer.query('BEGIN');
  await writer.query(`INSERT INTO items SELECT g, g, 'never' FROM generate_series(60001, 80000) g`);
  await waitFor('the open transaction to be staged', async () => (await stagedTables()) > 0, 30_000);
  await writer.query('ROLLBACK');
  await waitFor('the staging to be dropped', async () => (await stagedTables()) === 0, 30_000);
  await dbs().source.query(`UPDATE items SET v = v + 1 WHERE id = 1`);
  await expectTargetMatches(dbs(), tables());
  expect(await targetCount('items_copy')).toBe(before);
});

test('a worker stopped in the middle of a streamed transaction gets it again after a restart', async () => {
  await writer.query('BEGIN');
  await writer.query(`INSERT INTO items SELECT g, g, 'restart ' || g FROM generate_series(200001, 220000) g`);
  await waitFor('the open transaction to be staged', async () => (await stagedTables()) > 0, 30_000);
  await worker!.stop();
  expect(worker!.error()).toBeUndefined();
  await writer.query(`UPDATE items SET v = -v WHERE id BETWEEN 200001 AND 205000`);
  await writer.query('COMMIT');
  worker = startWorker(sync);
  await expectTargetMatches(dbs(), tables(), { timeoutMs: 60_000 });
});
