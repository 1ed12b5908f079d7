/**
 * Set-based apply is an optimization of source order: each case here is one where a set form
 * (reduce to the last change per key, all deletes, then all upserts) would lose or corrupt data,
 * and the target must come out as a native subscription leaves it, with nothing parked.
 * - unchanged TOAST values after an insert or an update of the same row in the same slice, and
 *   through a key change of a row whose large value was written earlier in that slice;
 * - foreign keys: re-parenting before a parent delete, ON UPDATE CASCADE key changes, a
 *   self-reference;
 * - a secondary unique constraint: a row deleted and another inserted with its email;
 * - a key change updates the target row in place: a target column the mapping does not write
 *   keeps its value, and a local table referencing the row ON DELETE CASCADE keeps its rows;
 * - an INSERT carrying unchanged TOAST markers (a publication row filter turned an UPDATE into it)
 *   neither crashes the worker nor writes NULLs: it is parked with the reason, the rest arrives.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { syncSpec, useSpecDir } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('apply_source_order');
const specs = useSpecDir();
let sync: LoadedSync;
let worker: InProcessWorker | undefined;

/** About 8 kB of text that compresses poorly: stored out of line, so unchanged in later updates. */
const BIG = (seed: string) => `(SELECT string_agg(md5(${seed} || g::text), '') FROM generate_series(1, 256) g)`;

const identity = (name: string, from: string, columns: readonly string[], extra = '') => `    ${name}: {
      from: 'public.${from}', to: 'public.${from}', key: ['id'], ${extra}
      columns: { ${columns.map((c) => `${c}: sql\`${c}\``).join(', ')} },
    },`;

beforeAll(async () => {
  const schema = `
    CREATE TABLE docs (id int PRIMARY KEY, status text NOT NULL, body text);
    CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent, note text);
    CREATE TABLE cparent (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE cchild (id int PRIMARY KEY, parent_id int REFERENCES cparent ON UPDATE CASCADE ON DELETE CASCADE);
    CREATE TABLE node (id int PRIMARY KEY, up int REFERENCES node, label text);
    CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL UNIQUE, name text);
    CREATE TABLE evens (id int PRIMARY KEY, body text);`;
  await dbs().source.query(schema);
  await dbs().target.query(schema);
  await dbs().target.query(`ALTER TABLE people ADD COLUMN local_note text DEFAULT 'none';
    CREATE TABLE badges (id int PRIMARY KEY, person_id int NOT NULL REFERENCES people ON UPDATE CASCADE ON DELETE CASCADE)`);
  await dbs().source.query(`
    INSERT INTO docs VALUES (1, 'old', 'small');
    INSERT INTO parent VALUES (1, 'one');
    INSERT INTO child VALUES (1, 1, 'c1'), (2, 1, 'c2');
    INSERT INTO cparent VALUES (1, 'one');
    INSERT INTO cchild VALUES (1, 1), (2, 1);
    INSERT INTO node VALUES (1, NULL, 'root'), (2, 1, 'leaf');
    INSERT INTO people VALUES (1, 'x@example.com', 'A');
    INSERT INTO evens SELECT 1, ${BIG("'e'")}`);
  sync = await loadSync(specs.write({ 'order.sync.ts': syncSpec({ name: 'order', tables: [
    identity('docs', 'docs', ['id', 'status', 'body']),
    identity('parent', 'parent', ['id', 'name']),
    identity('child', 'child', ['id', 'parent_id', 'note']),
    identity('cparent', 'cparent', ['id', 'name']),
    identity('cchild', 'cchild', ['id', 'parent_id']),
    identity('node', 'node', ['id', 'up', 'label']),
    identity('people', 'people', ['id', 'email', 'name']),
    // A filter on the key only: the publication carries it, and turns an UPDATE into an INSERT.
    identity('evens', 'evens', ['id', 'body'], 'where: sql`id % 2 = 0`,'),
  ].join('\n') }) }), { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
  await apply(sync);
  worker = startWorker(sync);
});

afterAll(async () => {
  await worker?.stop();
});

const conflicts = async () => (await dbs().target.query(
  `SELECT table_name, kind, key, reason, source_lsn IS NOT NULL AS has_lsn, strategy FROM syncctl.sync_conflicts ORDER BY id`)).rows;
const tables = (...names: string[]) => sync.tables.filter((t) => names.includes(t.name));

test('unchanged TOAST after an insert or an update of the same row in one transaction', async () => {
  await dbs().source.query(`BEGIN; INSERT INTO docs SELECT 2, 'new', ${BIG("'a'")}; UPDATE docs SET status = 'done' WHERE id = 2; COMMIT`);
  await dbs().source.query(`BEGIN; UPDATE docs SET body = ${BIG("'b'")} WHERE id = 1; UPDATE docs SET status = 'edited' WHERE id = 1; COMMIT`);
  await dbs().source.query(`BEGIN; UPDATE docs SET body = ${BIG("'c'")} WHERE id = 2; UPDATE docs SET status = 'x' WHERE id = 2;
    UPDATE docs SET status = 'y' WHERE id = 2; COMMIT`);
  await expectTargetMatches(dbs(), tables('docs'), { what: 'docs' });
  expect(await conflicts()).toEqual([]);
});

test('a key change of a row whose large value was written earlier in the same transaction', async () => {
  await dbs().source.query(`BEGIN; INSERT INTO docs SELECT 3, 'three', ${BIG("'d'")}; UPDATE docs SET id = 30 WHERE id = 3;
    UPDATE docs SET body = ${BIG("'f'")} WHERE id = 1; UPDATE docs SET id = 10, status = 'moved' WHERE id = 1; COMMIT`);
  await dbs().source.query(`UPDATE docs SET id = 20 WHERE id = 2`);
  await expectTargetMatches(dbs(), tables('docs'), { what: 'docs after key changes' });
  expect(await conflicts()).toEqual([]);
});

test('re-parenting before a parent delete; ON UPDATE CASCADE key changes; a self-reference', async () => {
  await dbs().source.query(`BEGIN; INSERT INTO parent VALUES (2, 'two'); UPDATE child SET parent_id = 2 WHERE parent_id = 1;
    DELETE FROM parent WHERE id = 1; COMMIT`);
  await dbs().source.query(`UPDATE cparent SET id = 5 WHERE id = 1`);
  await dbs().source.query(`BEGIN; INSERT INTO node VALUES (3, NULL, 'new root'); UPDATE node SET up = 3 WHERE id = 1;
    UPDATE node SET up = 3 WHERE id = 2; DELETE FROM node WHERE id = 1; COMMIT`);
  await dbs().source.query(`BEGIN; INSERT INTO cparent VALUES (6, 'six'); UPDATE cchild SET parent_id = 6 WHERE id = 1; DELETE FROM cparent WHERE id = 5; COMMIT`);
  await expectTargetMatches(dbs(), tables('parent', 'child', 'cparent', 'cchild', 'node'), { what: 'foreign keys' });
  expect(await conflicts()).toEqual([]);
});

test('a secondary unique constraint: delete A with email x, insert B with email x; then a swap', async () => {
  await dbs().source.query(`BEGIN; DELETE FROM people WHERE id = 1; INSERT INTO people VALUES (2, 'x@example.com', 'B'); COMMIT`);
  await dbs().source.query(`INSERT INTO people VALUES (3, 'y@example.com', 'C')`);
  await dbs().source.query(`BEGIN; UPDATE people SET email = 'tmp' WHERE id = 2; UPDATE people SET email = 'x@example.com' WHERE id = 3;
    UPDATE people SET email = 'y@example.com' WHERE id = 2; COMMIT`);
  await expectTargetMatches(dbs(), tables('people'), { what: 'people' });
  expect(await conflicts()).toEqual([]);
});

test('an INSERT with unchanged TOAST values (a row filter turned an UPDATE into it) is parked with its reason, never crashes', async () => {
  // id 1 fails the filter, id 2 passes: the UPDATE reaches the sync as an INSERT of id 2, and its
  // body (unchanged, out of line) is not in the stream; the target has no row to keep it from.
  await dbs().source.query(`BEGIN; UPDATE evens SET id = 2 WHERE id = 1; INSERT INTO evens VALUES (4, 'four'); COMMIT`);
  await expectTargetMatches(dbs(), [{ ...tables('evens')[0]!, where: 'id <> 2', targetWhere: 'id <> 2' }], { what: 'evens' });
  expect(await conflicts()).toEqual([{
    table_name: 'evens', kind: 'apply_error', key: { id: 2 }, has_lsn: true, strategy: 'source-wins',
    reason: 'the update leaves TOAST column(s) body unchanged, which the stream does not carry, and the target has no row with this key to keep them from',
  }]);
  expect(worker!.finished()).toBe(false);
  // The stream goes on.
  await dbs().source.query(`INSERT INTO evens VALUES (6, 'six')`);
  await expectTargetMatches(dbs(), [{ ...tables('evens')[0]!, where: 'id <> 2', targetWhere: 'id <> 2' }], { what: 'evens after' });
});

test('a key change updates the target row in place: unmapped columns and rows referencing it ON DELETE CASCADE stay', async () => {
  await dbs().target.query(`UPDATE people SET local_note = 'kept' WHERE id = 3; INSERT INTO badges VALUES (1, 3)`);
  await dbs().source.query(`UPDATE people SET id = 33, name = 'C2' WHERE id = 3`);
  await expectTargetMatches(dbs(), tables('people'), { what: 'people after a key change' });
  expect((await dbs().target.query(`SELECT id, local_note FROM people WHERE id = 33`)).rows).toEqual([{ id: 33, local_note: 'kept' }]);
  expect((await dbs().target.query(`SELECT id, person_id FROM badges`)).rows).toEqual([{ id: 1, person_id: 33 }]);
  // The evens row parked above, and the local edit of row 3 met by the source's change: a
  // conflict, applied under source-wins (the unmapped column the person wrote stays).
  expect((await conflicts()).slice(1)).toEqual([{ table_name: 'people', kind: 'locally_modified', key: { id: 3 }, reason: null, has_lsn: true, strategy: 'source-wins' }]);
});
