/**
 * Unchanged TOAST values and mappings that read them. An UPDATE that leaves a large (out-of-line)
 * value unchanged does not carry it in the stream (unless the table logs the whole old row):
 * - a target column whose mapping reads only unchanged columns keeps its value;
 * - a column whose mapping reads an unchanged column together with others cannot be computed: the
 *   row is parked as apply_error with a reason naming the fix (replicaIdentity: 'full'), never
 *   written with NULL, and the other rows of the batch arrive;
 * - with replicaIdentity: 'full' the old row fills the unchanged values and everything arrives;
 * - a write whose target row is missing (nothing to keep the unchanged values from) is parked too.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { syncSpec, useSpecDir } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('stream_toast');
const specs = useSpecDir();
let sync: LoadedSync;
let worker: InProcessWorker | undefined;

const mapping = `key: ['id'], columns: {
        id: sql\`id\`, title: sql\`title\`, body_length: sql\`length(body)\`, body_md5: sql\`md5(body)\`,
        headline: sql\`title || ': ' || left(body, 12)\`,
      },`;
/** About 1 MB of text that compresses poorly: stored out of line, so unchanged in updates. */
const BIG = `(SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 32768) g)`;

beforeAll(async () => {
  for (const table of ['docs', 'docs_full']) {
    await dbs().source.query(`CREATE TABLE ${table} (id int PRIMARY KEY, title text NOT NULL, body text, tags text[])`);
    await dbs().target.query(`CREATE TABLE ${table}_summary (id int PRIMARY KEY, title text NOT NULL, body_length int, body_md5 text, headline text)`);
    await dbs().source.query(`INSERT INTO ${table} SELECT g, 'title ' || g, CASE WHEN g <= 3 THEN ${BIG} ELSE 'small body ' || g END, '{a}'
      FROM generate_series(1, 6) g`);
  }
  sync = await loadSync(specs.write({ 'toast.sync.ts': syncSpec({ name: 'toast', tables: `    docs: {
      from: 'public.docs', to: 'public.docs_summary', ${mapping}
    },
    docs_full: {
      from: 'public.docs_full', to: 'public.docs_full_summary', replicaIdentity: 'full', ${mapping}
    },` }) }), { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
  await apply(sync);
  worker = startWorker(sync);
});

afterAll(async () => {
  await worker?.stop();
});

const [docs, full] = [() => sync.tables[0]!, () => sync.tables[1]!];
const conflicts = async () => (await dbs().target.query(
  `SELECT table_name, kind, key, outcome, reason FROM syncctl.sync_conflicts WHERE sync_name = 'toast' ORDER BY id`)).rows;

test('the copy carries the big values; the stream too', async () => {
  const stored = await dbs().source.query(`SELECT pg_column_size(body) AS size FROM docs WHERE id = 1`);
  expect(stored.rows[0].size).toBeGreaterThan(100_000);
  await expectTargetMatches(dbs(), sync.tables, { what: 'after the copy' });
  await dbs().source.query(`INSERT INTO docs SELECT 7, 'seven', ${BIG}, NULL; INSERT INTO docs_full SELECT 7, 'seven', ${BIG}, NULL`);
  await expectTargetMatches(dbs(), sync.tables, { what: 'after streaming big rows' });
});

test('an update leaving the big value unchanged: columns reading only it keep their value', async () => {
  // Only the tags change; title and body are the same. headline reads title and body: the title
  // is in the stream, the body is not, so headline is not computable without the old row.
  await dbs().source.query(`BEGIN; UPDATE docs SET tags = '{b}' WHERE id = 1; UPDATE docs SET title = 'renamed 5' WHERE id = 5; COMMIT`);
  await expectTargetMatches(dbs(), [{ ...docs(), where: 'id <> 1', targetWhere: 'id <> 1' }], { what: 'the rest of the batch' });
  expect(await conflicts()).toEqual([{
    table_name: 'docs', kind: 'apply_error', key: { id: 1 }, outcome: 'pending',
    reason: 'the mapping or row filter reads TOAST column(s) body that the update left unchanged, together with changed columns; ' +
      "the stream does not carry unchanged TOAST values: set replicaIdentity: 'full' on this table so that updates log the whole old row",
  }]);
  // Parked, not written with NULLs: the target row of id 1 is as it was.
  const kept = await dbs().target.query(`SELECT title, body_length > 30000 AS long, headline LIKE 'title 1: %' AS headline FROM docs_summary WHERE id = 1`);
  expect(kept.rows).toEqual([{ title: 'title 1', long: true, headline: true }]);
});

test("with replicaIdentity: 'full' the same updates arrive whole", async () => {
  await dbs().source.query(`BEGIN; UPDATE docs_full SET tags = '{b}' WHERE id = 1; UPDATE docs_full SET title = 'renamed 2' WHERE id = 2;
    UPDATE docs_full SET title = 'renamed 7', tags = NULL WHERE id = 7; COMMIT`);
  await expectTargetMatches(dbs(), [full()], { what: 'the full-identity table' });
  expect((await conflicts()).filter((c) => c.table_name === 'docs_full')).toEqual([]);
  expect((await dbs().target.query(`SELECT headline FROM docs_full_summary WHERE id = 2`)).rows[0].headline).toMatch(/^renamed 2: [0-9a-f]{12}$/);
});

test('a mapping reading only unchanged columns keeps the target value through a key change', async () => {
  // body_length and body_md5 read only body; the key moves with the unchanged value.
  await dbs().source.query(`UPDATE docs SET id = 30 WHERE id = 3`);
  await dbs().source.query(`UPDATE docs_full SET id = 30 WHERE id = 3`);
  await expectTargetMatches(dbs(), [full()], { what: 'full identity, after a key change' });
  const moved = await dbs().target.query(`SELECT id, body_length, body_md5 IS NOT NULL AS md5 FROM docs_summary WHERE id IN (3, 30)`);
  // Under the default identity headline cannot be recomputed: the change is parked whole, so the
  // row stays as it was under its old key (nothing half-applied), with its big value.
  expect(moved.rows).toEqual([{ id: 3, body_length: 1048576, md5: true }]);
  expect((await conflicts()).map((c) => c.key)).toEqual([{ id: 1 }, { id: 30 }]);
});

test('a write whose target row is missing is parked: there is nothing to keep the unchanged value from', async () => {
  await dbs().target.query(`DELETE FROM docs_summary WHERE id = 2`);   // a local writer removed it
  await dbs().source.query(`UPDATE docs SET tags = '{c}' WHERE id = 2; UPDATE docs SET title = 'renamed 6' WHERE id = 6`);
  await expectTargetMatches(dbs(), [{ ...docs(), where: 'id NOT IN (1, 2, 3, 30)', targetWhere: 'id NOT IN (1, 2, 3, 30)' }], { what: 'the rest after a missing row' });
  const parked = (await conflicts()).at(-1);
  expect(parked).toMatchObject({ table_name: 'docs', key: { id: 2 }, kind: 'apply_error' });
  expect(parked!.reason).toBe('the update leaves TOAST column(s) body unchanged, which the stream does not carry, ' +
    'and the target has no row with this key to keep them from');
  expect(worker!.finished()).toBe(false);
});
