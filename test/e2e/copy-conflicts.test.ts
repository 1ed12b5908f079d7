/**
 * The initial copy applies the conflict rules to rows the target held before it: a target row
 * with the key of a copied row, written by someone else than syncctl, is an `insert_exists`
 * conflict, decided by the table's rule and recorded in sync_conflicts, as the stream would
 * decide a source INSERT meeting it. One source table feeds one target table per rule
 * (source-wins, target-wins, last-write-wins on updated_at, fields with email owned by the target,
 * manual, merge with "active beats inactive"); each target held, before `apply`:
 *   row 1: different from the source row, older (updated_at) than it;
 *   row 2: different, newer than it;
 *   row 3: the same as the mapped source row: no conflict, nothing to decide;
 *   row 900: a key the source does not have: kept, and when the source inserts it later, the stream meets it (insert_exists).
 * An empty target table still goes the direct path, with no conflict.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import type { CopyProgress } from '../../src/snapshot/initial-copy.ts';
import { applyAll } from '../../src/plan/reconcile.ts';
import { rows, runSyncctl, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { compareTable, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('copy_conflicts');
const specs = useSpecDir();
let sync: LoadedSync;
let worker: InProcessWorker | undefined;
const progress = new Map<string, CopyProgress>();

const ACTIVE_WINS = `CASE WHEN 'active' IN (incoming.status, current.status) THEN 'active' ELSE incoming.status END`;
const RULES = {
  sw: `{ strategy: 'source-wins' }`,
  tw: `{ strategy: 'target-wins' }`,
  lww: `{ strategy: 'last-write-wins', column: 'updated_at' }`,
  fields: `{ strategy: 'fields', owners: { email: 'target' } }`,
  manual: `{ strategy: 'manual' }`,
  merge: `{ strategy: 'merge', columns: { status: sql\`${ACTIVE_WINS}\` }, otherwise: { strategy: 'last-write-wins', column: 'updated_at' } }`,
} as const;
type Rule = keyof typeof RULES;
const TABLES = Object.keys(RULES) as Rule[];
const COLUMNS = `id int PRIMARY KEY, email text, status text, updated_at timestamptz NOT NULL`;

beforeAll(async () => {
  await dbs().source.query(`
    CREATE TABLE members (${COLUMNS});
    INSERT INTO members SELECT g, 'm' || g || '@src', 'inactive', '2026-06-01' FROM generate_series(1, 5000) g;
    CREATE TABLE others (${COLUMNS});
    INSERT INTO others SELECT g, 'o' || g, 'x', '2026-06-01' FROM generate_series(1, 5000) g`);
  await dbs().target.query(TABLES.map((t) => `CREATE TABLE m_${t} (${COLUMNS});
    INSERT INTO m_${t} VALUES (1, 'pre1@tgt', 'active', '2026-03-01'), (2, 'pre2@tgt', 'active', '2026-09-01'),
      (3, 'm3@src', 'inactive', '2026-06-01'), (900000, 'pre@tgt', 'active', '2026-03-01');`).join('\n') +
    `CREATE TABLE o_empty (${COLUMNS});`);
  sync = await loadSync(specs.write({ 'copy.sync.ts': syncSpec({ name: 'copy_conflicts', tables: TABLES.map((t) => `
    m_${t}: { from: 'public.members', to: 'public.m_${t}', key: ['id'],
      columns: { id: sql\`id\`, email: sql\`email\`, status: sql\`status\`, updated_at: sql\`updated_at\` }, conflict: ${RULES[t]} },`).join('') + `
    o_empty: { from: 'public.others', to: 'public.o_empty', key: ['id'],
      columns: { id: sql\`id\`, email: sql\`email\`, status: sql\`status\`, updated_at: sql\`updated_at\` }, conflict: { strategy: 'manual' } },` }) }),
  { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
  await applyAll([sync], { onCopyProgress: (p) => progress.set(p.table, p) });
});

afterAll(async () => {
  await worker?.stop();
});

interface Row { id: number; email: string; status: string; updated_at: string }
const row = async (t: Rule, id: number) => (await rows<Row>(dbs().target,
  `SELECT id, email, status, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS updated_at FROM m_${t} WHERE id = $1`, [id]))[0];
interface Conflict { table_name: string; kind: string; outcome: string; strategy: string; source_lsn: string | null;
  incoming: Record<string, unknown> | null; current: Record<string, unknown> | null; result: Record<string, unknown> | null }
const conflicts = async (where = 'true') => rows<Conflict & { key: number }>(dbs().target,
  `SELECT (key->>'id')::int AS key, table_name, kind, outcome, strategy, source_lsn::text, incoming, current, result FROM syncctl.sync_conflicts
    WHERE sync_name = 'copy_conflicts' AND ${where} ORDER BY table_name, id`);
const byTable = async (id: number) => Object.fromEntries((await conflicts(`key = jsonb_build_object('id', ${id})`)).map((c) => [c.table_name.slice(2), c]));
const outcomes = async (id: number) => Object.fromEntries(Object.entries(await byTable(id)).map(([t, c]) => [t, `${c.kind} ${c.outcome}`]));
const localEntries = async (id: number) => (await rows<{ target_table: string }>(dbs().target,
  `SELECT target_table FROM syncctl.local_changes WHERE key = jsonb_build_object('id', $1::int) ORDER BY 1`, [id])).map((r) => r.target_table.slice('public.'.length));

test('a row the target held with a copied key meets the table\'s rule: insert_exists, decided and recorded', async () => {
  // Row 1 is older than the source's, row 2 newer (last-write-wins keeps it); both were 'active' (merge keeps that).
  expect(await outcomes(1)).toEqual({
    sw: 'insert_exists applied', tw: 'insert_exists kept', lww: 'insert_exists applied', fields: 'insert_exists merged',
    manual: 'insert_exists pending', merge: 'insert_exists merged',
  });
  expect(await outcomes(2)).toEqual({
    sw: 'insert_exists applied', tw: 'insert_exists kept', lww: 'insert_exists kept', fields: 'insert_exists merged',
    manual: 'insert_exists pending', merge: 'insert_exists merged',
  });
  const source = { email: 'm1@src', status: 'inactive', updated_at: '2026-06-01' };
  expect(await row('sw', 1)).toEqual({ id: 1, ...source });
  expect(await row('tw', 1)).toEqual({ id: 1, email: 'pre1@tgt', status: 'active', updated_at: '2026-03-01' });
  expect(await row('lww', 1)).toEqual({ id: 1, ...source });
  expect(await row('lww', 2)).toEqual({ id: 2, email: 'pre2@tgt', status: 'active', updated_at: '2026-09-01' });
  expect(await row('fields', 1)).toEqual({ id: 1, ...source, email: 'pre1@tgt' });
  expect(await row('manual', 1)).toEqual({ id: 1, email: 'pre1@tgt', status: 'active', updated_at: '2026-03-01' });
  // merge: status from its SQL (active wins), the rest by last-write-wins.
  expect(await row('merge', 1)).toEqual({ id: 1, ...source, status: 'active' });
  expect(await row('merge', 2)).toEqual({ id: 2, email: 'pre2@tgt', status: 'active', updated_at: '2026-09-01' });
  // Each records the incoming row, the row it met and the row after the rule, at the copy's snapshot.
  const fields = (await byTable(1))['fields']!;
  expect(fields).toMatchObject({ strategy: 'fields', incoming: { id: 1, email: 'm1@src', status: 'inactive' },
    current: { id: 1, email: 'pre1@tgt', status: 'active' }, result: { id: 1, email: 'pre1@tgt', status: 'inactive' } });
  expect(fields.source_lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
  // What the rule let stand stays a local change (the next change of the key meets it); what it replaced is forgotten.
  expect(await localEntries(1)).toEqual(['m_manual', 'm_tw']);
});

test('a row the same as the copied one is no conflict; the rest of the table copies as usual', async () => {
  expect(await byTable(3)).toEqual({});
  expect((await conflicts()).filter((c) => c.key !== 1 && c.key !== 2)).toEqual([]);
  expect(await localEntries(3)).toEqual([]);
  for (const t of TABLES) {
    const problems = await compareTable(dbs(), { source: { schema: 'public', name: 'members' }, target: { schema: 'public', name: `m_${t}` }, key: ['id'],
      columns: ['id', 'email', 'status', 'updated_at'].map((c) => ({ target: c, expression: c })), where: 'id NOT IN (1, 2)', targetWhere: 'id NOT IN (1, 2, 900000)' });
    expect(problems).toEqual([]);
  }
  // The target tables that held rows were staged; the empty one went straight in.
  expect(progress.get('m_sw')!.pathReason).toBe('the target table already has rows');
  expect(progress.get('o_empty')).toMatchObject({ directChunks: progress.get('o_empty')!.chunks });
  expect((await rows(dbs().target, `SELECT 1 FROM syncctl.sync_conflicts WHERE table_name = 'o_empty'`)).length).toBe(0);
});

test('a row of a key the source did not have stays, and meets the source\'s insert of it in the stream', async () => {
  for (const t of TABLES) expect((await row(t, 900000))?.email).toBe('pre@tgt');
  worker = startWorker(sync);
  await dbs().source.query(`INSERT INTO members VALUES (900000, 'new@src', 'inactive', '2026-06-01')`);
  await waitFor('the insert met in every table', async () => Object.keys(await byTable(900000)).length === TABLES.length);
  expect(await outcomes(900000)).toEqual({
    sw: 'insert_exists applied', tw: 'insert_exists kept', lww: 'insert_exists applied', fields: 'insert_exists merged',
    manual: 'insert_exists pending', merge: 'insert_exists merged',
  });
  expect(await row('sw', 900000)).toEqual({ id: 900000, email: 'new@src', status: 'inactive', updated_at: '2026-06-01' });
});

test('a copy\'s pending conflict is resolved like any other; the key streams again', async () => {
  const pending = (await conflicts(`table_name = 'm_manual' AND key = jsonb_build_object('id', 1)`))[0]!;
  expect(pending.outcome).toBe('pending');
  const id = (await rows<{ id: string }>(dbs().target, `SELECT id::text FROM syncctl.sync_conflicts WHERE table_name = 'm_manual' AND key = jsonb_build_object('id', 1)`))[0]!.id;
  const resolved = await runSyncctl(['conflicts', 'resolve', id, '--use', 'incoming', '--specs', sync.file], { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
  expect(resolved.stderr).toBe('');
  expect(await row('manual', 1)).toEqual({ id: 1, email: 'm1@src', status: 'inactive', updated_at: '2026-06-01' });
  await dbs().source.query(`UPDATE members SET status = 'after' WHERE id = 1`);
  await waitFor('row 1 streaming again', async () => (await row('manual', 1))?.status === 'after');
});
