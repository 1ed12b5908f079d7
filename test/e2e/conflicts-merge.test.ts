/**
 * The `merge` rule on real servers. One source table of licenses feeds four target tables, each
 * merging `status` with "active beats inactive, else the newer" (scenario 2) and leaving the other
 * columns to a different `otherwise`: last-write-wins on updated_at (the exact rule of the product
 * brief), source-wins (the default), target-wins, and fields with email owned by the target. A
 * person writes the target tables, then the source changes the same rows: a change that meets a
 * row (locally_modified, insert_exists) is merged column by column; one that meets no row
 * (update_missing, delete_missing) or deletes one falls back to `otherwise`. Each leaves the
 * target row and one sync_conflicts row. Plan refuses merge SQL that Postgres does not accept,
 * naming the file, the sync, the table and the column.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { expectStatus, rows, runSyncctl, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('conflicts_merge');
const specs = useSpecDir();
let sync: LoadedSync;
let worker: InProcessWorker | undefined;

// Scenario 2, exactly as the product brief writes it.
const ACTIVE_WINS = `CASE WHEN 'active' IN (incoming.status, current.status) THEN 'active'
                          WHEN incoming.updated_at >= current.updated_at THEN incoming.status
                          ELSE current.status END`;
const OTHERWISE = {
  lww: `otherwise: { strategy: 'last-write-wins', column: 'updated_at' }`,
  sw: '',
  tw: `otherwise: { strategy: 'target-wins' }`,
  fields: `otherwise: { strategy: 'fields', owners: { email: 'target' } }`,
} as const;
type Rule = keyof typeof OTHERWISE;
const TABLES = Object.keys(OTHERWISE) as Rule[];

beforeAll(async () => {
  await dbs().source.query(`
    CREATE TABLE licenses (id int PRIMARY KEY, email text, status text, updated_at timestamptz NOT NULL);
    INSERT INTO licenses SELECT g, 'l' || g || '@src', 'inactive', '2026-01-01' FROM generate_series(1, 20) g`);
  // A target column the mapping does not write keeps its value through a merge.
  await dbs().target.query(TABLES.map((t) => `CREATE TABLE l_${t} (id int PRIMARY KEY, email text, status text, updated_at timestamptz NOT NULL, seat text DEFAULT 'none');`).join('\n'));
  sync = await loadSync(specs.write({ 'licenses.sync.ts': syncSpec({ name: 'licenses', tables: TABLES.map((t) => `
    l_${t}: { from: 'public.licenses', to: 'public.l_${t}', key: ['id'],
      columns: { id: sql\`id\`, email: sql\`email\`, status: sql\`status\`, updated_at: sql\`updated_at\` },
      conflict: { strategy: 'merge', columns: { status: sql\`${ACTIVE_WINS}\` }, ${OTHERWISE[t]} } },`).join('') }) }),
  { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
  await apply(sync);
  worker = startWorker(sync);
});

afterAll(async () => {
  await worker?.stop();
});

interface Row { id: number; email: string | null; status: string | null; updated_at: string; seat: string }
const row = async (t: Rule, id: number) => (await rows<Row>(dbs().target,
  `SELECT id, email, status, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS updated_at, seat FROM l_${t} WHERE id = $1`, [id]))[0];
interface ConflictRow {
  table_name: string; kind: string; outcome: string; strategy: string; source_lsn: string | null; has_time: boolean;
  incoming: Record<string, unknown> | null; current: Record<string, unknown> | null; result: Record<string, unknown> | null;
}
const conflictsOf = async (id: number) => rows<ConflictRow>(dbs().target,
  `SELECT table_name, kind, outcome, strategy, source_lsn::text, source_commit_time IS NOT NULL AS has_time, incoming, current, result
     FROM syncctl.sync_conflicts WHERE sync_name = 'licenses' AND key = jsonb_build_object('id', $1::int) ORDER BY table_name, id`, [id]);
const logged = (id: number) => waitFor(`the conflicts of row ${id}`, async () => (await conflictsOf(id)).length === TABLES.length, 30_000);
const byTable = async (id: number) => Object.fromEntries((await conflictsOf(id)).map((c) => [c.table_name.slice(2), c])) as Record<Rule, ConflictRow>;
const outcomes = async (id: number) => Object.fromEntries(Object.entries(await byTable(id)).map(([t, c]) => [t, `${c.kind} ${c.outcome}`]));
const day = (value: unknown) => String(value).slice(0, 10);
const localWrite = (sql: string) => dbs().target.query(TABLES.map((t) => sql.replaceAll('$T', `l_${t}`)).join(';\n'));

test('scenario 2: active beats inactive whichever side is newer; the other columns follow otherwise', async () => {
  // Row 1: the source sets inactive with a newer updated_at; a local writer had set active.
  // Row 2, the reverse: the source sets active with an older updated_at; a local writer had set inactive, newer.
  // Row 3: no active on either side: the newer status wins.
  await localWrite(`UPDATE $T SET email = 'local@tgt', status = 'active', updated_at = '2026-03-01', seat = 'A1' WHERE id = 1;
    UPDATE $T SET email = 'local@tgt', status = 'inactive', updated_at = '2026-06-01' WHERE id = 2;
    UPDATE $T SET email = 'local@tgt', status = 'suspended', updated_at = '2026-03-01' WHERE id = 3`);
  await dbs().source.query(`UPDATE licenses SET status = 'inactive', email = 'new1@src', updated_at = '2026-06-01' WHERE id = 1;
    UPDATE licenses SET status = 'active', email = 'new2@src', updated_at = '2026-02-01' WHERE id = 2;
    UPDATE licenses SET status = 'expired', email = 'new3@src', updated_at = '2026-06-01' WHERE id = 3`);
  await logged(1);
  await logged(2);
  await logged(3);

  // The exact rule of the brief: status merged, the rest last-write-wins on updated_at.
  expect(await row('lww', 1)).toEqual({ id: 1, email: 'new1@src', status: 'active', updated_at: '2026-06-01', seat: 'A1' });
  expect(await row('lww', 2)).toEqual({ id: 2, email: 'local@tgt', status: 'active', updated_at: '2026-06-01', seat: 'none' });
  expect(await row('lww', 3)).toEqual({ id: 3, email: 'new3@src', status: 'expired', updated_at: '2026-06-01', seat: 'none' });
  // The same status rule, the other columns by each otherwise.
  expect(await row('sw', 1)).toEqual({ id: 1, email: 'new1@src', status: 'active', updated_at: '2026-06-01', seat: 'A1' });
  expect(await row('sw', 2)).toEqual({ id: 2, email: 'new2@src', status: 'active', updated_at: '2026-02-01', seat: 'none' });
  expect(await row('tw', 1)).toEqual({ id: 1, email: 'local@tgt', status: 'active', updated_at: '2026-03-01', seat: 'A1' });
  expect(await row('tw', 3)).toEqual({ id: 3, email: 'local@tgt', status: 'expired', updated_at: '2026-03-01', seat: 'none' });
  expect(await row('fields', 1)).toEqual({ id: 1, email: 'local@tgt', status: 'active', updated_at: '2026-06-01', seat: 'A1' });
  expect(await row('fields', 2)).toEqual({ id: 2, email: 'local@tgt', status: 'active', updated_at: '2026-02-01', seat: 'none' });

  for (const id of [1, 2, 3]) {
    expect(await outcomes(id)).toEqual(Object.fromEntries(TABLES.map((t) => [t, 'locally_modified merged'])));
  }
  // Every overridden change is auditable: what came in, what it met, what was written, and where it came from.
  const one = (await byTable(1))['lww'];
  expect(one).toMatchObject({
    strategy: 'merge', has_time: true,
    incoming: { id: 1, email: 'new1@src', status: 'inactive' },
    current: { id: 1, email: 'local@tgt', status: 'active', seat: 'A1' },
    result: { id: 1, email: 'new1@src', status: 'active', seat: 'A1' },
  });
  expect(day(one.incoming!['updated_at'])).toBe('2026-06-01');
  expect(day(one.current!['updated_at'])).toBe('2026-03-01');
  expect(day(one.result!['updated_at'])).toBe('2026-06-01');
  expect(one.source_lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
  const two = (await byTable(2))['lww'];
  expect([two.incoming!['status'], two.current!['status'], two.result!['status'], two.result!['email']]).toEqual(['active', 'inactive', 'active', 'local@tgt']);
  // The audit of scenario 2 is one query: the changes whose status the rule overrode.
  const overridden = await rows<{ id: number }>(dbs().target, `SELECT (key->>'id')::int AS id FROM syncctl.sync_conflicts
    WHERE table_name = 'l_lww' AND outcome = 'merged' AND incoming->>'status' IS DISTINCT FROM result->>'status' ORDER BY 1`);
  expect(overridden.map((r) => r.id)).toEqual([1]);
  // A merged row replaced the local change: it is forgotten, and the next source change applies plainly.
  expect((await rows(dbs().target, `SELECT 1 FROM syncctl.local_changes WHERE key = jsonb_build_object('id', 1)`)).length).toBe(0);
  await dbs().source.query(`UPDATE licenses SET status = 'inactive', updated_at = '2026-07-01' WHERE id = 1`);
  await waitFor('row 1 streaming again', async () => (await row('tw', 1))?.status === 'inactive');
  expect(await row('lww', 1)).toMatchObject({ status: 'inactive', updated_at: '2026-07-01' });
  expect((await conflictsOf(1)).length).toBe(TABLES.length);
});

test('insert_exists: the incoming row merged into the local one', async () => {
  await localWrite(`INSERT INTO $T VALUES (100, 'local@tgt', 'active', '2026-03-01', 'B2')`);
  await dbs().source.query(`INSERT INTO licenses VALUES (100, 'l100@src', 'inactive', '2026-06-01')`);
  await logged(100);
  expect(await outcomes(100)).toEqual(Object.fromEntries(TABLES.map((t) => [t, 'insert_exists merged'])));
  expect(await row('lww', 100)).toEqual({ id: 100, email: 'l100@src', status: 'active', updated_at: '2026-06-01', seat: 'B2' });
  expect(await row('sw', 100)).toEqual({ id: 100, email: 'l100@src', status: 'active', updated_at: '2026-06-01', seat: 'B2' });
  expect(await row('tw', 100)).toEqual({ id: 100, email: 'local@tgt', status: 'active', updated_at: '2026-03-01', seat: 'B2' });
  expect(await row('fields', 100)).toEqual({ id: 100, email: 'local@tgt', status: 'active', updated_at: '2026-06-01', seat: 'B2' });
  expect((await byTable(100))['fields']).toMatchObject({
    incoming: { email: 'l100@src', status: 'inactive' }, current: { email: 'local@tgt', status: 'active' }, result: { email: 'local@tgt', status: 'active' },
  });
});

test('update_missing, delete_missing and a delete meeting a local change fall back to otherwise', async () => {
  await localWrite(`DELETE FROM $T WHERE id IN (4, 5); UPDATE $T SET status = 'active', updated_at = '2026-03-01' WHERE id = 6`);
  await dbs().source.query(`UPDATE licenses SET status = 'inactive', updated_at = '2026-06-01' WHERE id = 4`);
  await dbs().source.query(`DELETE FROM licenses WHERE id = 5`);
  await dbs().source.query(`DELETE FROM licenses WHERE id = 6`);
  await logged(4);
  await logged(5);
  await logged(6);
  // No row to merge into: last-write-wins compares the source commit time with the local change's (the source's is later).
  expect(await outcomes(4)).toEqual({ lww: 'update_missing applied', sw: 'update_missing applied', tw: 'update_missing kept', fields: 'update_missing applied' });
  expect(await row('lww', 4)).toEqual({ id: 4, email: 'l4@src', status: 'inactive', updated_at: '2026-06-01', seat: 'none' });
  expect(await row('tw', 4)).toBeUndefined();
  expect((await byTable(4))['sw']).toMatchObject({ current: null, result: { id: 4, status: 'inactive' } });
  expect(await outcomes(5)).toEqual({ lww: 'delete_missing applied', sw: 'delete_missing applied', tw: 'delete_missing kept', fields: 'delete_missing applied' });
  for (const t of TABLES) expect(await row(t, 5)).toBeUndefined();
  // A delete is never merged: the row goes, or stays as the local writer left it.
  expect(await outcomes(6)).toEqual({ lww: 'locally_modified applied', sw: 'locally_modified applied', tw: 'locally_modified kept', fields: 'locally_modified applied' });
  expect(await row('tw', 6)).toEqual({ id: 6, email: 'l6@src', status: 'active', updated_at: '2026-03-01', seat: 'none' });
  for (const t of ['lww', 'sw', 'fields'] as const) expect(await row(t, 6)).toBeUndefined();
  expect((await byTable(6))['tw']).toMatchObject({ incoming: null, current: { id: 6, status: 'active' }, result: { id: 6, status: 'active' } });
});

test('a key change meeting a local change: the merged row takes the new key', async () => {
  await localWrite(`UPDATE $T SET status = 'active', email = 'local@tgt', updated_at = '2026-03-01' WHERE id = 7`);
  await dbs().source.query(`UPDATE licenses SET id = 70, status = 'inactive', updated_at = '2026-06-01' WHERE id = 7`);
  await waitFor('the key change merged', async () => (await conflictsOf(7)).length === TABLES.length);
  expect(await outcomes(7)).toEqual(Object.fromEntries(TABLES.map((t) => [t, 'locally_modified merged'])));
  expect(await row('lww', 7)).toBeUndefined();
  expect(await row('lww', 70)).toEqual({ id: 70, email: 'l7@src', status: 'active', updated_at: '2026-06-01', seat: 'none' });
  expect(await row('tw', 70)).toEqual({ id: 70, email: 'local@tgt', status: 'active', updated_at: '2026-03-01', seat: 'none' });
});

test('no local writes, no conflicts: merge tables stream plainly', async () => {
  const before = (await rows<{ n: number }>(dbs().target, `SELECT count(*)::int AS n FROM syncctl.sync_conflicts`))[0]!.n;
  await dbs().source.query(`UPDATE licenses SET status = 'bulk' WHERE id BETWEEN 10 AND 20; INSERT INTO licenses VALUES (200, 'x', 'y', '2026-01-01'); DELETE FROM licenses WHERE id = 9`);
  await waitFor('the bulk change applied', async () => (await row('tw', 200)) !== undefined && (await row('lww', 9)) === undefined);
  expect((await rows<{ n: number }>(dbs().target, `SELECT count(*)::int AS n FROM syncctl.sync_conflicts`))[0]!.n).toBe(before);
  for (const t of TABLES) expect((await row(t, 12))?.status).toBe('bulk');
});

test('plan refuses merge SQL Postgres does not accept, naming the file, the sync, the table and the column', async () => {
  const env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  const mergeOn = (table: Rule, columns: string) => `
    l_${table}: { from: 'public.licenses', to: 'public.l_${table}', key: ['id'],
      columns: { id: sql\`id\`, email: sql\`email\`, status: sql\`status\`, updated_at: sql\`updated_at\` },
      conflict: { strategy: 'merge', columns: { ${columns} } } },`;
  const dir = specs.write({ 'bad.sync.ts': syncSpec({ name: 'merge_bad', tables: [
    mergeOn('lww', 'status: sql`coalesce(incoming.plan, current.status)`'),
    mergeOn('sw', 'updated_at: sql`incoming.status`'),
    mergeOn('tw', 'status: sql`status`'),
    mergeOn('fields', 'email: sql`greatest(incoming.email, current.email)`'),
  ].join('') }) });
  const file = `${dir}/bad.sync.ts`;
  const plan = expectStatus(await runSyncctl(['plan', dir], env), 2);
  const lines = plan.stderr.trim().split('\n');
  expect(lines[0]).toBe('error: merge_bad: the spec does not fit the live databases');
  const intro = 'merge SQL over incoming and current (rows of public.l_';
  expect(lines.slice(1).map((l) => l.trim())).toEqual([
    `${file}: tables.l_lww.conflict.columns.status: ${intro}lww): column incoming.plan does not exist`,
    `${file}: tables.l_sw.conflict.columns.updated_at: ${intro}sw): column "updated_at" is of type timestamp with time zone but expression is of type text ` +
      '(hint: You will need to rewrite or cast the expression.)',
    `${file}: tables.l_tw.conflict.columns.status: ${intro}tw): column reference "status" is ambiguous`,
  ]);
  // A merge column that is not mapped is a spec error, before any database is read.
  const unmapped = specs.write({ 'unmapped.sync.ts': syncSpec({ name: 'merge_unmapped', tables: mergeOn('lww', 'seat: sql`current.seat`') }) });
  const refused = expectStatus(await runSyncctl(['plan', unmapped], env), 2);
  expect(refused.stderr).toContain(`${unmapped}/unmapped.sync.ts: tables.l_lww.conflict.columns.seat: column "seat" is not mapped in columns`);
});
