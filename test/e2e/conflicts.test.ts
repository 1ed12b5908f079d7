/**
 * The conflict engine, rule by kind, on real servers. One source table feeds five target tables,
 * one per rule (source-wins, target-wins, last-write-wins on updated_at, fields with email owned
 * by the target, manual). A person writes the target tables, then the source changes the same
 * rows: every kind (locally_modified, insert_exists, update_missing, delete_missing) meets every
 * rule, and each leaves the target row the rule says and one sync_conflicts row (kind, incoming,
 * current, result, outcome, source position). Rows nobody wrote locally log nothing. Pending
 * conflicts of the manual table are decided with `syncctl conflicts resolve`.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { rows, runSyncctl, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('conflicts');
const specs = useSpecDir();
let sync: LoadedSync;
let worker: InProcessWorker | undefined;

const RULES = {
  sw: `{ strategy: 'source-wins' }`,
  tw: `{ strategy: 'target-wins' }`,
  lww: `{ strategy: 'last-write-wins', column: 'updated_at' }`,
  fields: `{ strategy: 'fields', owners: { email: 'target' } }`,
  manual: `{ strategy: 'manual' }`,
} as const;
type Rule = keyof typeof RULES;
const TABLES = Object.keys(RULES) as Rule[];

beforeAll(async () => {
  await dbs().source.query(`
    CREATE TABLE members (id int PRIMARY KEY, email text, status text, updated_at timestamptz NOT NULL);
    INSERT INTO members SELECT g, 'm' || g || '@src', 'new', '2026-01-01' FROM generate_series(1, 20) g`);
  await dbs().target.query(TABLES.map((t) => `CREATE TABLE m_${t} (id int PRIMARY KEY, email text, status text, updated_at timestamptz NOT NULL);`).join('\n'));
  sync = await loadSync(specs.write({ 'conflicts.sync.ts': syncSpec({ name: 'conflicts', tables: TABLES.map((t) => `
    m_${t}: { from: 'public.members', to: 'public.m_${t}', key: ['id'],
      columns: { id: sql\`id\`, email: sql\`email\`, status: sql\`status\`, updated_at: sql\`updated_at\` }, conflict: ${RULES[t]} },`).join('') }) }),
  { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
  await apply(sync);
  worker = startWorker(sync);
});

afterAll(async () => {
  await worker?.stop();
});

interface Row { id: number; email: string | null; status: string | null; updated_at: string }
const row = async (t: Rule, id: number) => (await rows<Row>(dbs().target,
  `SELECT id, email, status, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS updated_at FROM m_${t} WHERE id = $1`, [id]))[0];
const conflictsOf = async (id: number) => rows<{ table_name: string; kind: string; outcome: string; incoming: Record<string, unknown> | null;
  current: Record<string, unknown> | null; result: Record<string, unknown> | null; strategy: string; source_lsn: string | null }>(dbs().target,
  `SELECT table_name, kind, outcome, incoming, current, result, strategy, source_lsn::text FROM syncctl.sync_conflicts
    WHERE sync_name = 'conflicts' AND key = jsonb_build_object('id', $1::int) ORDER BY table_name, id`, [id]);
const localEntries = async (id: number) => (await rows<{ target_table: string }>(dbs().target,
  `SELECT target_table FROM syncctl.local_changes WHERE key = jsonb_build_object('id', $1::int) ORDER BY 1`, [id])).map((r) => r.target_table);
/** Waits until every table's conflict for `id` is logged (`count` per table). */
const logged = (id: number, count = 1) => waitFor(`the conflicts of row ${id}`, async () => (await conflictsOf(id)).length === TABLES.length * count, 30_000);
const byTable = async (id: number) => Object.fromEntries((await conflictsOf(id)).map((c) => [c.table_name.slice(2), c]));

test('locally_modified: each rule decides between the local edit and the incoming one', async () => {
  // Row 1: the source's change is newer than the local edit; row 2: older.
  for (const t of TABLES) {
    await dbs().target.query(`UPDATE m_${t} SET email = 'local@tgt', status = 'local', updated_at = '2026-03-01' WHERE id IN (1, 2)`);
  }
  await dbs().source.query(`UPDATE members SET status = 'src', updated_at = '2026-06-01' WHERE id = 1`);
  await dbs().source.query(`UPDATE members SET status = 'src', updated_at = '2026-02-01' WHERE id = 2`);
  await logged(1);
  await logged(2);
  expect(await row('sw', 1)).toEqual({ id: 1, email: 'm1@src', status: 'src', updated_at: '2026-06-01' });
  expect(await row('tw', 1)).toEqual({ id: 1, email: 'local@tgt', status: 'local', updated_at: '2026-03-01' });
  expect(await row('lww', 1)).toEqual({ id: 1, email: 'm1@src', status: 'src', updated_at: '2026-06-01' });
  expect(await row('lww', 2)).toEqual({ id: 2, email: 'local@tgt', status: 'local', updated_at: '2026-03-01' });
  expect(await row('fields', 1)).toEqual({ id: 1, email: 'local@tgt', status: 'src', updated_at: '2026-06-01' });
  expect(await row('manual', 1)).toEqual({ id: 1, email: 'local@tgt', status: 'local', updated_at: '2026-03-01' });
  const one = await byTable(1);
  expect(Object.fromEntries(TABLES.map((t) => [t, [one[t]!.kind, one[t]!.outcome]]))).toEqual({
    sw: ['locally_modified', 'applied'], tw: ['locally_modified', 'kept'], lww: ['locally_modified', 'applied'],
    fields: ['locally_modified', 'merged'], manual: ['locally_modified', 'pending'],
  });
  expect((await byTable(2))['lww']!.outcome).toBe('kept');
  // What each row records: the incoming row, the row it met, the row that resulted, where it came from.
  expect(one['fields']).toMatchObject({
    strategy: 'fields',
    incoming: { id: 1, email: 'm1@src', status: 'src' }, current: { id: 1, email: 'local@tgt', status: 'local' },
    result: { id: 1, email: 'local@tgt', status: 'src' },
  });
  expect(one['sw']!.source_lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
  // A local change the rule let stand stays recorded; one the incoming change replaced is gone.
  expect(await localEntries(1)).toEqual(['public.m_manual', 'public.m_tw']);
});

test('manual: later changes of a pending key queue behind it; other keys go on', async () => {
  await dbs().source.query(`UPDATE members SET status = 'src again' WHERE id = 1`);
  await dbs().source.query(`UPDATE members SET status = 'other' WHERE id = 5`);
  await waitFor('row 5 applied', async () => (await row('manual', 5))?.status === 'other');
  await waitFor('the second change of row 1 queued', async () => (await conflictsOf(1)).filter((c) => c.table_name === 'm_manual').length === 2);
  const manual = (await conflictsOf(1)).filter((c) => c.table_name === 'm_manual');
  expect(manual.map((c) => [c.outcome, c.incoming?.['status']])).toEqual([['pending', 'src'], ['pending', 'src again']]);
  expect(await row('manual', 1)).toEqual({ id: 1, email: 'local@tgt', status: 'local', updated_at: '2026-03-01' });
  expect(await conflictsOf(5)).toEqual([]);
});

test('insert_exists, update_missing, delete_missing under every rule', async () => {
  for (const t of TABLES) {
    await dbs().target.query(`INSERT INTO m_${t} VALUES (100, 'local@tgt', 'local', '2026-03-01'); DELETE FROM m_${t} WHERE id IN (3, 4)`);
  }
  await dbs().source.query(`INSERT INTO members VALUES (100, 'm100@src', 'src', '2026-06-01')`);
  await dbs().source.query(`UPDATE members SET status = 'src', updated_at = '2026-06-01' WHERE id = 3`);
  await dbs().source.query(`DELETE FROM members WHERE id = 4`);
  await logged(100);
  await logged(3);
  await logged(4);
  const kinds = async (id: number) => Object.fromEntries(Object.entries(await byTable(id)).map(([t, c]) => [t, `${c.kind} ${c.outcome}`]));
  expect(await kinds(100)).toEqual({
    sw: 'insert_exists applied', tw: 'insert_exists kept', lww: 'insert_exists applied', fields: 'insert_exists merged', manual: 'insert_exists pending',
  });
  expect(await row('fields', 100)).toEqual({ id: 100, email: 'local@tgt', status: 'src', updated_at: '2026-06-01' });
  expect(await row('tw', 100)).toEqual({ id: 100, email: 'local@tgt', status: 'local', updated_at: '2026-03-01' });
  // The row was deleted here: source-wins and the source's newer change bring it back; target-wins keeps it deleted.
  expect(await kinds(3)).toEqual({
    sw: 'update_missing applied', tw: 'update_missing kept', lww: 'update_missing applied', fields: 'update_missing applied', manual: 'update_missing pending',
  });
  expect(await row('sw', 3)).toEqual({ id: 3, email: 'm3@src', status: 'src', updated_at: '2026-06-01' });
  expect(await row('tw', 3)).toBeUndefined();
  expect(await kinds(4)).toEqual({
    sw: 'delete_missing applied', tw: 'delete_missing kept', lww: 'delete_missing applied', fields: 'delete_missing applied', manual: 'delete_missing pending',
  });
  for (const t of TABLES) expect(await row(t, 4)).toBeUndefined();
});

test('no local writes, no conflicts: a run of source changes logs nothing', async () => {
  const before = (await rows(dbs().target, `SELECT count(*)::int AS n FROM syncctl.sync_conflicts`))[0]!['n'];
  await dbs().source.query(`UPDATE members SET status = 'bulk' WHERE id BETWEEN 6 AND 20; INSERT INTO members VALUES (200, 'x', 'y', '2026-01-01'); DELETE FROM members WHERE id = 7`);
  await waitFor('the bulk change applied', async () => (await row('tw', 200)) !== undefined && (await row('lww', 7)) === undefined);
  expect((await rows(dbs().target, `SELECT count(*)::int AS n FROM syncctl.sync_conflicts`))[0]!['n']).toBe(before);
  for (const t of TABLES) expect((await row(t, 8))?.status).toBe('bulk');
});

test('conflicts resolve: incoming applies the parked change and then the ones queued behind it; current keeps the row; the key streams again', async () => {
  const env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  const dir = sync.file;
  const pendingOf = async (id: number) => (await rows<{ id: string; outcome: string }>(dbs().target,
    `SELECT s.id::text, s.outcome FROM syncctl.sync_conflicts AS s WHERE s.table_name = 'm_manual' AND s.key = jsonb_build_object('id', $1::int) ORDER BY s.id`, [id]));
  // Row 1 of m_manual: two changes pending ('src', then 'src again'). Deciding the first applies both, in order.
  const [first, second] = await pendingOf(1);
  // The second waits for the first's decision.
  const early = await runSyncctl(['conflicts', 'resolve', second!.id, '--use', 'incoming', '--specs', dir], env);
  expect(early.status).toBe(2);
  expect(early.stderr).toContain(`conflict ${second!.id} is queued behind conflict ${first!.id}`);
  const resolved = await runSyncctl(['conflicts', 'resolve', first!.id, '--use', 'incoming', '--specs', dir, '--by', 'alice'], env);
  expect(resolved.stderr).toBe('');
  expect(resolved.stdout).toContain('1 resolved (the incoming change applied), 1 queued change(s) behind them applied');
  expect(await row('manual', 1)).toEqual({ id: 1, email: 'm1@src', status: 'src again', updated_at: '2026-06-01' });
  expect((await pendingOf(1)).map((c) => c.outcome)).toEqual(['resolved', 'resolved']);
  // Row 100 (insert_exists): keep the target's row; the local change is forgotten, so the next source change applies plainly.
  const hundred = (await pendingOf(100))[0]!;
  expect((await runSyncctl(['conflicts', 'resolve', hundred.id, '--use', 'current', '--specs', dir], env)).stdout).toContain('1 resolved (the target row kept)');
  expect(await row('manual', 100)).toEqual({ id: 100, email: 'local@tgt', status: 'local', updated_at: '2026-03-01' });
  expect(await localEntries(1)).not.toContain('public.m_manual');
  expect(await localEntries(100)).not.toContain('public.m_manual');
  await dbs().source.query(`UPDATE members SET status = 'after' WHERE id IN (1, 100)`);
  await waitFor('rows 1 and 100 streaming again', async () => (await row('manual', 1))?.status === 'after' && (await row('manual', 100))?.status === 'after');
  expect((await pendingOf(1)).length + (await pendingOf(100)).length).toBe(3);
  // Bulk without --yes and no terminal: refused.
  const bulk = await runSyncctl(['conflicts', 'resolve', '--specs', dir, '--table', 'm_manual', '--use', 'current'], env);
  expect(bulk.status).toBe(2);
  expect(bulk.stderr).toContain('--yes');
});
