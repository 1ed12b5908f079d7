/**
 * Two BatchWriter fixes of defect 11, on a real target:
 * - Retired shapes are cleaned up. A long-lived target session registers a new shape for a table
 *   each time the source table's Relation changes (ALTER TABLE, a publication change): the old
 *   shape is retired, and once the writer is idle its temp staging tables are dropped and the
 *   statements prepared for it are DEALLOCATEd, so that a worker running for weeks does not
 *   collect them. Checked on the writer's own session (both are per session) through
 *   pg_prepared_statements and the session's temp schema, as shapes are registered, used by small
 *   batches (which run prepared statements; keys distinct, so every statement reads the stage)
 *   and retired in turn, one of them while a batch holds rows staged for it. Not covered: a small
 *   batch whose keys repeat also prepares statements that name only the last-change table, and
 *   those outlive the shape today.
 * - Bytes that are not UTF-8 in a small batch are never replaced by U+FFFD: they go by COPY as
 *   they are. A SQL_ASCII target whose session takes any bytes stores them byte-identical; a UTF8
 *   target (the worker's sessions are UTF8) refuses them while staging, and stores nothing.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { BatchWriter } from '../../src/apply/batch-writer.ts';
import type { ApplyTable } from '../../src/apply/render-apply.ts';
import { getServers, serverUrl } from '../support/servers.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('defect_11_batch_writer');
let session: pg.Client;

/** One shape of the source table `items (id, v)`, applied to public.items. */
const shape = (id: string): ApplyTable => ({
  id, target: { schema: 'public', name: 'items' }, key: ['id'],
  columns: [{ target: 'id', expression: 'id', reads: ['id'] }, { target: 'v', expression: 'v * 2', reads: ['v'] }],
  staged: [{ name: 'id', stagingType: 'integer' }, { name: 'v', stagingType: 'integer' }], tracked: false, keySources: ['id'], keyTypes: ['integer'],
});

beforeAll(async () => {
  await dbs().target.query(`CREATE SCHEMA syncctl;
    CREATE TABLE syncctl.checkpoints (sync_name text PRIMARY KEY, commit_lsn pg_lsn NOT NULL, commit_time timestamptz, updated_at timestamptz);
    CREATE TABLE items (id int PRIMARY KEY, v bigint NOT NULL)`);
  session = new pg.Client({ connectionString: dbs().targetUrl });
  await session.connect();
});

afterAll(async () => {
  await session?.end();
});

/** The statements prepared on the writer's session whose text names one of `shapeId`'s staging tables. */
async function preparedFor(shapeId: string): Promise<string[]> {
  const { rows } = await session.query<{ statement: string }>(
    `SELECT statement FROM pg_prepared_statements WHERE strpos(statement, $1) > 0 OR strpos(statement, $2) > 0 ORDER BY name`,
    [`"syncctl_stage_${shapeId}"`, `"syncctl_last_${shapeId}"`]);
  return rows.map((r) => r.statement);
}

/** The writer session's temp tables named after `shapeId`. */
async function tempTablesFor(shapeId: string): Promise<string[]> {
  const { rows } = await session.query<{ relname: string }>(
    `SELECT relname FROM pg_class WHERE relnamespace = pg_my_temp_schema() AND relkind = 'r' AND relname IN ($1, $2) ORDER BY relname`,
    [`syncctl_stage_${shapeId}`, `syncctl_last_${shapeId}`]);
  return rows.map((r) => r.relname);
}

async function preparedCount(): Promise<number> {
  return (await session.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_prepared_statements')).rows[0]!.n;
}

const b = (n: number) => Buffer.from(String(n));
let lsn = 0;
const nextLsn = () => `0/${(++lsn).toString(16)}`;

test('a retired shape\'s staging tables are dropped and its prepared statements deallocated once the writer is idle', async () => {
  const writer = new BatchWriter(session, 'w');
  const expected = new Map<number, number>();
  /**
   * A small batch (one round trip, prepared statements) on `shapeId`, its keys distinct (the
   * statements read the stage directly); with `withDelete`, one of them a delete; with `repeat`,
   * a key written twice (the reduction through the last-change table, whose statements name
   * only that table).
   */
  const smallBatch = async (shapeId: string, batch: number, withDelete = false, repeat = false) => {
    await writer.begin({ lazy: true });
    for (let i = 0; i < 5; i++) {
      const id = batch * 10 + i;
      await writer.stage(shapeId, 'W', null, [b(id), b(batch)]);
      expected.set(id, batch * 2);
    }
    if (withDelete) {
      await writer.stage(shapeId, 'D', null, [b(batch * 10 - 6), null]);
      expected.delete(batch * 10 - 6);
    }
    if (repeat) {
      await writer.stage(shapeId, 'W', null, [b(batch * 10), b(batch + 1)]);
      expected.set(batch * 10, (batch + 1) * 2);
    }
    await writer.commit({ lsn: nextLsn(), commitTime: null });
  };
  const register = (shapeId: string) => writer.register({ apply: shape(shapeId), tableName: 'items', onError: 'park', order: 0, strategy: 'source-wins' });

  register('shape_0');
  for (let batch = 0; batch < 4; batch++) await smallBatch('shape_0', batch, batch % 2 === 1);
  await smallBatch('shape_0', 5, true, true);
  // The shape in use has its staging tables and statements prepared for them.
  expect(await tempTablesFor('shape_0')).toEqual(['syncctl_last_shape_0', 'syncctl_stage_shape_0']);
  const perShape = (await preparedFor('shape_0')).length;
  expect(perShape).toBeGreaterThan(0);
  const baseline = await preparedCount();

  // The shape is retired while a batch holds rows staged for it (the worker retires a shape in
  // both its sessions, one of which may be committing): they are applied with the batch, then
  // its staging goes.
  await writer.begin({ lazy: true });
  await writer.stage('shape_0', 'W', null, [b(1000), b(7)]);
  expected.set(1000, 14);
  writer.retire('shape_0');
  register('shape_1');
  await writer.stage('shape_1', 'W', null, [b(1001), b(8)]);
  expected.set(1001, 16);
  await writer.commit({ lsn: nextLsn(), commitTime: null });
  expect(await tempTablesFor('shape_0')).toEqual([]);
  expect(await preparedFor('shape_0')).toEqual([]);

  // Shape after shape, each used by a few small batches and then retired: what the session
  // holds stays that of one shape.
  let current = 'shape_1';
  for (let n = 2; n <= 6; n++) {
    await smallBatch(current, n * 100);
    await smallBatch(current, n * 100 + 1, true);
    await smallBatch(current, n * 100 + 4, true, true);
    const next = `shape_${n}`;
    writer.retire(current);
    register(next);
    await smallBatch(next, n * 100 + 2);
    await smallBatch(next, n * 100 + 3, true);
    await smallBatch(next, n * 100 + 5, true, true);
    expect(await tempTablesFor(current), current).toEqual([]);
    expect(await preparedFor(current), current).toEqual([]);
    expect(await tempTablesFor(next)).toEqual([`syncctl_last_${next}`, `syncctl_stage_${next}`]);
    expect((await preparedFor(next)).length).toBe(perShape);
    expect(await preparedCount()).toBe(baseline);
    current = next;
  }

  // The statements kept are the live shape's, and still run: the target holds every change.
  await smallBatch(current, 900);
  const { rows } = await dbs().target.query<{ id: number; v: string }>('SELECT id, v FROM items ORDER BY id');
  expect(new Map(rows.map((r) => [r.id, Number(r.v)]))).toEqual(expected);
});

/** `notes (id, body text)`, applied to public.notes as it is. */
const notes: ApplyTable = {
  id: 'notes', target: { schema: 'public', name: 'notes' }, key: ['id'],
  columns: [{ target: 'id', expression: 'id', reads: ['id'] }, { target: 'body', expression: 'body', reads: ['body'] }],
  staged: [{ name: 'id', stagingType: 'integer' }, { name: 'body', stagingType: 'text' }], tracked: false, keySources: ['id'], keyTypes: ['integer'],
};

const CHECKPOINTS = `CREATE SCHEMA IF NOT EXISTS syncctl;
  CREATE TABLE IF NOT EXISTS syncctl.checkpoints (sync_name text PRIMARY KEY, commit_lsn pg_lsn NOT NULL, commit_time timestamptz, updated_at timestamptz)`;

test('bytes that are not UTF-8 in a small batch are never replaced: stored byte-identical where the session takes them, refused where it does not', async () => {
  const latin1 = Buffer.from([0x63, 0x61, 0x66, 0xe9]); // 'café' in Latin-1
  const invalid = Buffer.from([0xff, 0xfe, 0x80, 0x20, 0x72, 0x61, 0x77]); // bytes invalid anywhere in UTF-8, then ' raw'
  const utf8 = Buffer.from('café', 'utf8');
  const register = (writer: BatchWriter) => writer.register({ apply: notes, tableName: 'notes', onError: 'park', order: 0, strategy: 'source-wins' });
  const hex = (client: pg.Client, encoding: string) => client.query<{ id: number; hex: string }>(
    `SELECT id, encode(convert_to(body, '${encoding}'), 'hex') AS hex FROM notes ORDER BY id`).then((r) => r.rows);

  // A SQL_ASCII database, whose session takes any bytes (client_encoding SQL_ASCII): what the
  // source sent is what the target stores, in one small batch with plain UTF-8 beside it.
  const server = getServers().target;
  const name = `t_defect_11_ascii_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl(server, 'postgres') });
  await admin.connect();
  const ascii = new pg.Client({ connectionString: serverUrl(server, name) });
  try {
    await admin.query(`CREATE DATABASE "${name}" TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'`);
    await ascii.connect();
    await ascii.query(`SET client_encoding = 'SQL_ASCII'; ${CHECKPOINTS}; CREATE TABLE notes (id int PRIMARY KEY, body text)`);
    const writer = new BatchWriter(ascii, 'w');
    register(writer);
    await writer.begin({ lazy: true });
    await writer.stage('notes', 'W', null, [b(1), latin1]);
    await writer.stage('notes', 'W', null, [b(2), invalid]);
    await writer.stage('notes', 'W', null, [b(3), utf8]);
    await writer.commit({ lsn: '0/1', commitTime: null });
    expect(await hex(ascii, 'SQL_ASCII')).toEqual([
      { id: 1, hex: latin1.toString('hex') }, { id: 2, hex: invalid.toString('hex') }, { id: 3, hex: utf8.toString('hex') }]);
  } finally {
    await ascii.end().catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await admin.end();
  }

  // A UTF8 database (the worker's sessions are UTF8): the target refuses the bytes while staging,
  // and nothing of the batch is stored, in particular no U+FFFD in their place.
  await dbs().target.query(`${CHECKPOINTS}; CREATE TABLE notes (id int PRIMARY KEY, body text)`);
  const utf8Session = new pg.Client({ connectionString: dbs().targetUrl });
  await utf8Session.connect();
  try {
    const writer = new BatchWriter(utf8Session, 'w');
    register(writer);
    await writer.begin({ lazy: true });
    await writer.stage('notes', 'W', null, [b(1), utf8]);
    await writer.commit({ lsn: '0/1', commitTime: null });
    await writer.begin({ lazy: true });
    await writer.stage('notes', 'W', null, [b(2), latin1]);
    await writer.stage('notes', 'W', null, [b(3), utf8]);
    await expect(writer.commit({ lsn: '0/2', commitTime: null })).rejects.toMatchObject({
      code: 'STAGING_REJECTED', message: expect.stringMatching(/invalid byte sequence for encoding "UTF8": 0xe9/),
    });
    await writer.rollback();
    expect(await hex(utf8Session, 'UTF8')).toEqual([{ id: 1, hex: utf8.toString('hex') }]);
  } finally {
    await utf8Session.end();
  }
});
