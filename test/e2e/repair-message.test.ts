/**
 * The worker's side of `syncctl verify --repair`: a `syncctl.repair` logical message written on
 * the source is applied where it stands in the stream, its rows through the table's mapping (and
 * worker-side filter), its deleteKeys by target key; a repair for another sync is ignored.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, waitForStreaming, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('repair_message');
const specs = useSpecDir();
let sync: LoadedSync;
let worker: InProcessWorker;

const TABLES = `    people: {
      from: 'public.people', to: 'public.people_copy', key: ['email'], where: sql\`active\`,
      columns: { email: sql\`email\`, name: sql\`first || ' ' || last\`, since: sql\`since\` },
    },`;

beforeAll(async () => {
  await dbs().source.query(`
    CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL UNIQUE, first text, last text, since date, active boolean NOT NULL);
    INSERT INTO people SELECT g, 'p' || g || '@x', 'F' || g, 'L' || g, date '2020-01-01' + g, g % 10 <> 0 FROM generate_series(1, 100) g`);
  await dbs().target.query(`CREATE TABLE people_copy (email text PRIMARY KEY, name text, since date)`);
  sync = await loadSync(specs.write({ 'r.sync.ts': syncSpec({ name: 'rep', tables: TABLES }) }), { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
  await apply(sync);
  worker = startWorker(sync);
  await waitForStreaming(dbs(), 'rep');
});

afterAll(async () => {
  await worker?.stop();
});

test('a repair message rewrites drifted rows, re-inserts missing ones and deletes extra ones, in stream order', async () => {
  // Drift made by hand, bypassing the change tracking: a wrong value, a missing row, an extra row.
  await dbs().target.query(`SET session_replication_role = replica;
    UPDATE people_copy SET name = 'WRONG' WHERE email = 'p1@x';
    DELETE FROM people_copy WHERE email = 'p2@x';
    INSERT INTO people_copy VALUES ('ghost@x', 'Ghost', NULL);
    RESET session_replication_role`);
  const rowsOf = async (ids: number[]) => (await dbs().source.query<{ r: (string | null)[] }>(
    `SELECT ARRAY[id::text, email, first, last, since::text, active::text] AS r FROM people WHERE id = ANY($1) ORDER BY id`, [ids])).rows.map((x) => x.r);
  const repair = (syncName: string, rows: (string | null)[][], deleteKeys: Record<string, string>[]) => JSON.stringify({
    sync: syncName, table: 'people', columns: ['id', 'email', 'first', 'last', 'since', 'active'], rows, deleteKeys });
  // Another sync's repair is not ours.
  await dbs().source.query(`SELECT pg_logical_emit_message(true, 'syncctl.repair', $1)`, [repair('other', await rowsOf([1, 2]), [{ email: 'ghost@x' }])]);
  // A source change after the repair, in a later transaction, wins over it (stream order).
  await dbs().source.query(`SELECT pg_logical_emit_message(true, 'syncctl.repair', $1)`, [repair('rep', await rowsOf([1, 2]), [{ email: 'ghost@x' }])]);
  await dbs().source.query(`UPDATE people SET last = 'Later' WHERE id = 2`);
  await expectTargetMatches(dbs(), sync.tables, { timeoutMs: 20_000 });
  expect((await dbs().target.query(`SELECT name FROM people_copy WHERE email = 'p2@x'`)).rows).toEqual([{ name: 'F2 Later' }]);
  expect((await dbs().target.query(`SELECT count(*)::int AS n FROM syncctl.sync_conflicts`)).rows).toEqual([{ n: 0 }]);
  // Malformed content is ignored, and the stream goes on.
  await dbs().source.query(`SELECT pg_logical_emit_message(true, 'syncctl.repair', '{"sync": "rep"')`);
  await dbs().source.query(`UPDATE people SET first = 'After' WHERE id = 3`);
  await waitFor('the change after a bad repair', async () => (await dbs().target.query(`SELECT 1 FROM people_copy WHERE name = 'After L3'`)).rowCount === 1);
  expect(worker.finished()).toBe(false);
});
