/**
 * `syncctl verify` on real servers, through the command line. Source tables mapped with concat,
 * CASE, row filters (the worker's and a publication's), natural keys (the target key is not the
 * source's primary key) and a user function (so the mapping is evaluated in the target, rows
 * looked up by key or by mapping the whole table), plus three tables with conflict rules.
 * - a clean sync verifies (exit 0), each table on its path, with the rows counted;
 * - under a write load, with a worker that lags on purpose, nothing is reported;
 * - drift made by hand (trigger bypassed) is found: missing, extra, different, one column only,
 *   values equal to Postgres but not as sent (numeric scale, interval units) included;
 * - rows a conflict rule keeps are excluded with the reason;
 * - --repair under a running stream and a write load: the target then equals the mapped source,
 *   and the runs are in syncctl.runs;
 * - with the worker stopped, candidates are unconfirmed (exit 1, the reason);
 * - exit 2 for a missing spec, an unknown table, an unreachable target.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import type { SyncVerification } from '../../src/verify/verification.ts';
import { rows, runSyncctl, syncSpec, useSpecDir } from '../support/cli.ts';
import {
  apply, churn, expectTargetMatches, loadSync, randomInt, startWorker, waitForStreaming, type Churn, type InProcessWorker, type MappedTable,
} from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';
import { runVerify, sortedDifferences, tableReport } from '../support/verify.ts';

const dbs = useTestDatabases('verify');
const specs = useSpecDir();

const PEOPLE_COLUMNS = `columns: { email: sql\`email\`, name: sql\`concat(first_name, ' ', last_name)\`, updated_at: sql\`updated_at\` }`;
const TABLES = `
    people: { from: 'public.users', to: 'orgs.people', key: ['email'], where: sql\`is_active\`, ${PEOPLE_COLUMNS} },
    members: {
      from: 'public.memberships', to: 'orgs.members', key: ['institute_id', 'user_id'], where: sql\`status <> 'DELETED'\`, replicaIdentity: 'full',
      columns: {
        institute_id: sql\`institute_id\`, user_id: sql\`user_id\`,
        role: sql\`CASE user_type WHEN 'TEACHER' THEN 'FACULTY' WHEN 'INSTRUCTOR' THEN 'FACULTY' WHEN 'ADMIN' THEN 'ADMIN' ELSE 'STUDENT' END\`,
        is_active: sql\`status = 'ACTIVE'\`,
      },
    },
    kinds: {
      from: 'public.kinds', to: 'orgs.kinds', key: ['id'],
      columns: { id: sql\`id\`, amount: sql\`amount\`, ratio: sql\`ratio\`, doc: sql\`doc\`, tags: sql\`tags\`, feeling: sql\`feeling\`, at: sql\`at\`, raw: sql\`raw\`, span: sql\`span\` },
    },
    items: { from: 'public.items', to: 'orgs.items', key: ['sku'], columns: { sku: sql\`sku\`, label: sql\`item_label(code)\`, qty: sql\`qty\` } },
    items_by_code: { from: 'public.items', to: 'orgs.items_by_code', key: ['code_key'], columns: { code_key: sql\`item_label(code)\`, qty: sql\`qty\` } },
    people_tw: { from: 'public.users', to: 'orgs.people_tw', key: ['email'], where: sql\`is_active\`, ${PEOPLE_COLUMNS}, conflict: { strategy: 'target-wins' } },
    people_fields: { from: 'public.users', to: 'orgs.people_fields', key: ['email'], where: sql\`is_active\`, ${PEOPLE_COLUMNS},
      conflict: { strategy: 'fields', owners: { name: 'target' } } },
    people_merge: { from: 'public.users', to: 'orgs.people_merge', key: ['email'], where: sql\`is_active\`, ${PEOPLE_COLUMNS},
      conflict: { strategy: 'merge', columns: { name: sql\`current.name\` } } },
    people_manual: { from: 'public.users', to: 'orgs.people_manual', key: ['email'], where: sql\`is_active\`, ${PEOPLE_COLUMNS}, conflict: { strategy: 'manual' } },`;
const PLAIN = ['people', 'members', 'kinds', 'items', 'items_by_code'];
const RULED = ['people_tw', 'people_fields', 'people_merge', 'people_manual'];

let sync: LoadedSync;
let dir: string;
let env: Record<string, string>;
let worker: InProcessWorker | undefined;
let load: Churn | undefined;

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  // The same function on both sides: the test's comparison maps on the source; verify, seeing a function that is not built in, maps in the target.
  const label = `CREATE FUNCTION item_label(code text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT upper(code) || '!' $$;
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`;
  await dbs().source.query(label);
  await dbs().target.query(label);
  await dbs().source.query(`
    CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL UNIQUE, first_name text, last_name text, is_active boolean NOT NULL,
                        updated_at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00');
    INSERT INTO users (id, email, first_name, last_name, is_active)
      SELECT g, 'u' || g || '@example.org', 'First' || g, CASE WHEN g % 11 = 0 THEN NULL ELSE 'Last' || g END, g % 7 <> 0 FROM generate_series(1, 400) g;
    CREATE TABLE memberships (institute_id int, user_id int, user_type text, status text NOT NULL, PRIMARY KEY (institute_id, user_id));
    INSERT INTO memberships SELECT i, u, (ARRAY['TEACHER', 'INSTRUCTOR', 'ADMIN', 'STUDENT', NULL])[1 + (i + u) % 5],
                                   (ARRAY['ACTIVE', 'INACTIVE', 'DELETED'])[1 + (i * u) % 3]
      FROM generate_series(1, 5) i, generate_series(1, 60) u;
    CREATE TABLE kinds (id int PRIMARY KEY, amount numeric, ratio float8, doc jsonb, tags text[], feeling mood, at timestamptz, raw bytea, span interval);
    INSERT INTO kinds SELECT g, round(g / 4.0, 2), g / 3.0, jsonb_build_object('g', g, 'list', jsonb_build_array(g, 'x', NULL)), ARRAY['a' || g, NULL],
                             (enum_range(NULL::mood))[1 + g % 3], timestamptz '2026-01-01 00:00:00+00' + g * interval '1 hour', decode(md5(g::text), 'hex'),
                             g * interval '90 minutes'
      FROM generate_series(1, 50) g;
    INSERT INTO kinds (id) VALUES (51);
    CREATE TABLE items (id int PRIMARY KEY, sku text NOT NULL UNIQUE, code text NOT NULL UNIQUE, qty int);
    INSERT INTO items SELECT g, 'SKU-' || g, 'c' || g, g * 3 FROM generate_series(1, 200) g`);
  await dbs().target.query(`
    CREATE SCHEMA orgs;
    CREATE TABLE orgs.people (email text PRIMARY KEY, name text, updated_at timestamptz, note text);
    CREATE TABLE orgs.people_tw (LIKE orgs.people INCLUDING ALL);
    CREATE TABLE orgs.people_fields (LIKE orgs.people INCLUDING ALL);
    CREATE TABLE orgs.people_merge (LIKE orgs.people INCLUDING ALL);
    CREATE TABLE orgs.people_manual (LIKE orgs.people INCLUDING ALL);
    CREATE TABLE orgs.members (institute_id int, user_id int, role text, is_active boolean, PRIMARY KEY (institute_id, user_id));
    CREATE TABLE orgs.kinds (id int PRIMARY KEY, amount numeric, ratio float8, doc jsonb, tags text[], feeling mood, at timestamptz, raw bytea, span interval);
    CREATE TABLE orgs.items (sku text PRIMARY KEY, label text, qty int);
    CREATE TABLE orgs.items_by_code (code_key text PRIMARY KEY, qty int)`);
  dir = specs.write({ 'verify.sync.ts': syncSpec({ name: 'verify', tables: TABLES }) });
  sync = await loadSync(dir, env);
  await apply(sync);
  worker = startWorker(sync);
  await waitForStreaming(dbs(), 'verify');
});

afterAll(async () => {
  await load?.stop().catch(() => {});
  await worker?.stop();
});

const verify = (args: readonly string[] = [], environment = env) => runVerify(dir, environment, args);
const table = tableReport;
const sorted = sortedDifferences;
/** The tables as the comparison helper reads them: without the columns the target owns, and `except` keys (SQL over both rows) left out. */
const mapped = (names: readonly string[], except: Record<string, string> = {}): MappedTable[] =>
  sync.tables.filter((t) => names.includes(t.name)).map((t) => ({
    ...t,
    columns: t.columns.filter((c) => !(t.conflict.strategy === 'fields' && t.conflict.owners[c.target] === 'target')),
    ...(except[t.name] ? { where: `(${t.where ?? 'true'}) AND ${except[t.name]}`, targetWhere: except[t.name] } : {}),
  }));
/** Writes on the target that the change tracking does not see: drift, not a local change. */
const untracked = (sql: string) => dbs().target.query(`BEGIN; SET LOCAL session_replication_role = replica; ${sql}; COMMIT`);

let nextId = 10_000;
const SPARED = { users: 30, items: 10, institutes: 1 };

/**
 * Updates, inserts, deletes and filter transitions on every source table, a few statements per
 * transaction; `spare` leaves the first rows of each table alone (the ones the tests drift).
 */
function writeLoad(spare = SPARED): Churn {
  const user = () => randomInt(spare.users + 1, 400);
  return churn(dbs().source, () => {
    const statements = [
      `UPDATE users SET first_name = 'F${randomInt(1, 1e6)}', updated_at = now() WHERE id = ${user()}`,
      `UPDATE memberships SET status = (ARRAY['ACTIVE', 'INACTIVE', 'DELETED'])[${randomInt(1, 3)}] ` +
        `WHERE institute_id = ${randomInt(spare.institutes + 1, 5)} AND user_id = ${randomInt(1, 60)}`,
      `UPDATE items SET qty = qty + 1 WHERE id = ${randomInt(spare.items + 1, 200)}`,
    ];
    const n = nextId++;
    if (n % 3 === 0) statements.push(`INSERT INTO users (id, email, first_name, is_active) VALUES (${n}, 'n${n}@example.org', 'New', true)`);
    if (n % 3 === 1) statements.push(`DELETE FROM users WHERE id = ${n - 1}`);
    if (n % 5 === 0) statements.push(`UPDATE users SET is_active = NOT is_active WHERE id = ${user()}`);
    if (n % 7 === 0) statements.push(`INSERT INTO items VALUES (${n}, 'SKU-${n}', 'c${n}', 1)`);
    return `BEGIN; ${statements.join('; ')}; COMMIT`;
  }, { pauseMs: 2 });
}

test('a clean sync verifies with no differences (exit 0): every table compared on its path, its rows counted', async () => {
  await expectTargetMatches(dbs(), mapped([...PLAIN, ...RULED]));
  const { result, sync: s } = await verify();
  expect(result.status).toBe(0);
  expect(s.ok).toBe(true);
  const members = (await rows<{ n: number }>(dbs().source, `SELECT count(*)::int AS n FROM memberships WHERE status <> 'DELETED'`))[0]!.n;
  expect(Object.fromEntries(s.tables.map((t) => [t.table, [t.path, t.rows.source, t.rows.target, t.differences.length, t.excluded.length, t.unconfirmed.length]]))).toEqual({
    people: ['direct', 343, 343, 0, 0, 0], members: ['direct', members, members, 0, 0, 0], kinds: ['direct', 51, 51, 0, 0, 0], items: ['staged', 200, 200, 0, 0, 0], items_by_code: ['staged', 200, 200, 0, 0, 0],
    people_tw: ['direct', 343, 343, 0, 0, 0], people_fields: ['direct', 343, 343, 0, 0, 0], people_merge: ['direct', 343, 343, 0, 0, 0],
    people_manual: ['direct', 343, 343, 0, 0, 0],
  });
  expect(table(s, 'items').pathReason).toMatch(/item_label/);
  // The fields rule's target-owned columns are the target's: written on insert only, never compared.
  expect(table(s, 'people_fields').targetOwned).toEqual(['name']);
  expect(table(s, 'people').targetOwned).toBeUndefined();
  const text = await runSyncctl(['verify', dir], env);
  expect(text.status).toBe(0);
  expect(text.stdout).toMatch(/^ {2}people -> orgs\.people \(mapped on the source\): 343 source row\(s\), 343 target row\(s\): no differences$/m);
  expect(text.stdout).toMatch(/^ {2}items -> orgs\.items \(mapped in the target\): 200 source row\(s\), 200 target row\(s\): no differences$/m);
  expect(text.stdout).toMatch(/^ {4}not compared: name \(owned by the target under the fields rule\)$/m);
  expect(text.stdout).toContain(`verify: no differences; 9 table(s) and ${343 * 5 + members + 51 + 400} row(s) compared\n`);
}, 120_000);

test('under a write load, with a worker that lags behind on purpose, nothing is reported', async () => {
  await worker!.stop();
  // Batches held open 300 ms: the target is always a little behind the source.
  worker = startWorker(sync, { batchMs: 300 });
  await waitForStreaming(dbs(), 'verify');
  load = writeLoad();
  try {
    let rechecked = 0;
    for (let i = 0; i < 2; i++) {
      const { result, sync: s } = await verify(['--timeout', '30']);
      expect(s.tables.flatMap((t) => [...t.differences, ...t.unconfirmed]), result.stderr).toEqual([]);
      expect(result.status).toBe(0);
      rechecked += s.tables.reduce((n, t) => n + t.rechecked, 0);
    }
    // The lag made candidates, and every one of them was cleared by the re-check.
    expect(rechecked).toBeGreaterThan(0);
  } finally {
    expect(await load.stop()).toBeGreaterThan(0);
    load = undefined;
  }
  await worker.stop();
  worker = startWorker(sync);
  await waitForStreaming(dbs(), 'verify');
  await expectTargetMatches(dbs(), mapped([...PLAIN, ...RULED]));
}, 240_000);

test('drift made by hand is found on every path: missing, extra, different (named columns); unmapped columns are not compared', async () => {
  await untracked(`
    DELETE FROM orgs.people WHERE email = 'u1@example.org';
    INSERT INTO orgs.people VALUES ('ghost@example.org', 'Ghost', now(), NULL);
    UPDATE orgs.people SET name = 'Wrong' WHERE email = 'u2@example.org';
    UPDATE orgs.people SET name = 'Wrong', updated_at = '2000-01-01' WHERE email = 'u3@example.org';
    UPDATE orgs.people SET note = 'not mapped' WHERE email = 'u4@example.org';
    UPDATE orgs.members SET role = 'NOBODY' WHERE (institute_id, user_id) = (1, 1);
    DELETE FROM orgs.members WHERE (institute_id, user_id) = (1, 4);
    UPDATE orgs.items SET label = 'C5?' WHERE sku = 'SKU-5';
    INSERT INTO orgs.items VALUES ('SKU-none', 'X', 0);
    DELETE FROM orgs.items_by_code WHERE code_key = 'C6!';
    UPDATE orgs.kinds SET amount = 1.5 WHERE id = 6;
    UPDATE orgs.kinds SET span = interval '1 day' WHERE id = 16;
    UPDATE orgs.kinds SET doc = doc || '{"g": 7}' WHERE id = 7`);
  const { result, sync: s } = await verify();
  expect(result.status).toBe(1);
  expect(s.ok).toBe(false);
  expect(sorted(table(s, 'people').differences)).toEqual([
    { key: { email: 'ghost@example.org' }, kind: 'extra', columns: [] },
    { key: { email: 'u1@example.org' }, kind: 'missing', columns: [] },
    { key: { email: 'u2@example.org' }, kind: 'different', columns: ['name'] },
    { key: { email: 'u3@example.org' }, kind: 'different', columns: ['name', 'updated_at'] },
  ]);
  expect(sorted(table(s, 'members').differences)).toEqual([
    { key: { institute_id: '1', user_id: '1' }, kind: 'different', columns: ['role'] },
    { key: { institute_id: '1', user_id: '4' }, kind: 'missing', columns: [] },
  ]);
  expect(sorted(table(s, 'items').differences)).toEqual([
    { key: { sku: 'SKU-5' }, kind: 'different', columns: ['label'] },
    { key: { sku: 'SKU-none' }, kind: 'extra', columns: [] },
  ]);
  expect(table(s, 'items_by_code').differences).toEqual([{ key: { code_key: 'C6!' }, kind: 'missing', columns: [] }]);
  // Equal as values, not as what the source sends: 1.50 and 1.5, 24:00:00 and 1 day differ. The jsonb is unchanged.
  expect(sorted(table(s, 'kinds').differences)).toEqual([
    { key: { id: '16' }, kind: 'different', columns: ['span'] },
    { key: { id: '6' }, kind: 'different', columns: ['amount'] },
  ]);
  for (const name of RULED) expect(table(s, name).differences).toEqual([]);

  const text = await runSyncctl(['verify', dir, '--table', 'people'], env);
  expect(text.status).toBe(1);
  expect(text.stdout).toMatch(/^ {2}people -> orgs\.people \(mapped on the source\): (\d+) source row\(s\), \1 target row\(s\): 4 difference\(s\)$/m);
  expect(text.stdout).toMatch(/^ {4}missing {4}email=u1@example\.org$/m);
  expect(text.stdout).toMatch(/^ {4}extra {6}email=ghost@example\.org$/m);
  expect(text.stdout).toMatch(/^ {4}different {2}email=u3@example\.org \(name, updated_at\)$/m);
  expect(text.stdout).not.toContain('members');
  expect(text.stdout).toMatch(/^verify: 4 key\(s\) differ in 1 table\(s\); 1 table\(s\) and \d+ row\(s\) compared$/m);
}, 120_000);

test('rows a conflict rule keeps different are not drift: listed as kept, with the reason', async () => {
  // Local writes, tracked: each table's rule then meets a source change of the same row.
  await dbs().target.query(`
    UPDATE orgs.people_tw SET name = 'Local' WHERE email = 'u10@example.org';
    UPDATE orgs.people_fields SET name = 'Local' WHERE email = 'u10@example.org';
    UPDATE orgs.people_merge SET name = 'Local' WHERE email = 'u10@example.org';
    UPDATE orgs.people_manual SET name = 'Local' WHERE email = 'u10@example.org';
    UPDATE orgs.people SET name = 'Local, not met yet' WHERE email = 'u12@example.org'`);
  await dbs().source.query(`UPDATE users SET last_name = 'Changed', updated_at = '2026-02-01' WHERE id = 10`);
  await waitForConflicts(4);
  const { result, sync: s } = await verify(RULED.flatMap((t) => ['--table', t]));
  expect(result.status).toBe(0);
  expect(s.tables.map((t) => t.table)).toEqual(RULED);
  const kept = Object.fromEntries(s.tables.map((t) => [t.table, t.excluded]));
  expect(kept['people_tw']).toEqual([{ key: { email: 'u10@example.org' }, kind: 'different', columns: ['name', 'updated_at'],
    reason: expect.stringMatching(/^target-wins: a local UPDATE \(by \w+ at \d{4}-\d\d-\d\dT[\d:]+Z\) is still recorded$/) }]);
  // The merge rule kept the local name (current.name): the row is as that conflict left it.
  expect(kept['people_merge']).toEqual([{ key: { email: 'u10@example.org' }, kind: 'different', columns: ['name'],
    reason: expect.stringMatching(/^merge: the row is as conflict #\d+ \(locally_modified, merged\) left it$/) }]);
  // Under fields the target owns name, which is not compared: the rest of the row came from the source.
  expect(kept['people_fields']).toEqual([]);
  expect((await rows(dbs().target, `SELECT name FROM orgs.people_fields WHERE email = 'u10@example.org'`))).toEqual([{ name: 'Local' }]);
  expect(kept['people_manual']).toEqual([{ key: { email: 'u10@example.org' }, kind: 'different', columns: ['name', 'updated_at'],
    reason: expect.stringMatching(/^manual: a local UPDATE .* is still recorded, conflict #\d+ pending$/) }]);
  for (const t of s.tables) expect(t.differences).toEqual([]);

  // A local change no source change has met yet is kept too; the drift beside it is still drift.
  const people = table((await verify(['--table', 'people'])).sync, 'people');
  expect(people.excluded).toEqual([{ key: { email: 'u12@example.org' }, kind: 'different', columns: ['name'], reason: expect.stringMatching(/^source-wins: a local UPDATE/) }]);
  expect(people.differences).toHaveLength(4);
  const text = await runSyncctl(['verify', dir, '--table', 'people_tw'], env);
  expect(text.stdout).toMatch(/^ {4}kept by conflict rule: different email=u10@example\.org \(name, updated_at\): target-wins: a local UPDATE/m);
  expect(text.stdout).toMatch(/^verify: no differences; 1 table\(s\) and \d+ row\(s\) compared; 1 kept by a conflict rule$/m);
}, 120_000);

async function waitForConflicts(n: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await rows<{ n: number }>(dbs().target, `SELECT count(*)::int AS n FROM syncctl.sync_conflicts WHERE sync_name = 'verify'`))[0]!.n < n) {
    if (Date.now() > deadline) throw new Error(`fewer than ${n} conflicts after 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test('--repair under a running stream and a write load: exactly the differing keys are re-applied; the target then equals the mapped source', async () => {
  // The drifted and conflicting rows are left alone: the stream would otherwise rewrite some of them first.
  load = writeLoad();
  let repaired: SyncVerification;
  try {
    const { result, sync: s } = await verify(['--repair', '--timeout', '30']);
    repaired = s;
    expect(result.status, result.stderr).toBe(0);
  } finally {
    await load.stop();
    load = undefined;
  }
  const repairOf = (name: string) => table(repaired, name).repair;
  expect(repairOf('people')).toMatchObject({ keys: 4, repaired: 4, remaining: [], unconfirmed: [] });
  expect(repairOf('items')).toMatchObject({ keys: 2, repaired: 2, deletes: 1, remaining: [] });
  expect(repairOf('items_by_code')).toMatchObject({ keys: 1, repaired: 1, remaining: [] });
  expect(repairOf('members')).toMatchObject({ keys: 2, repaired: 2, remaining: [] });
  expect(repairOf('kinds')).toMatchObject({ keys: 2, repaired: 2, rows: 2, deletes: 0, remaining: [] });
  // Rules' rows are not drift: nothing to repair there, and the local change in people stays.
  for (const name of RULED) expect(repairOf(name)).toBeUndefined();
  expect(table(repaired, 'people').excluded).toHaveLength(1);

  await expectTargetMatches(dbs(), mapped(PLAIN, { people: `email <> 'u12@example.org'` }));
  expect((await rows(dbs().target, `SELECT name FROM orgs.people WHERE email = 'u12@example.org'`))).toEqual([{ name: 'Local, not met yet' }]);
  const again = await verify();
  expect(again.result.status).toBe(0);

  const runs = await rows<{ kind: string; table_name: string | null; outcome: string; counts: Record<string, number> }>(dbs().target,
    `SELECT kind, table_name, outcome, counts FROM syncctl.runs WHERE sync_name = 'verify' AND kind IN ('verify', 'repair') ORDER BY id`);
  expect(runs.filter((r) => r.kind === 'repair').map((r) => [r.table_name, r.outcome, r.counts['keys'], r.counts['repaired']]))
    .toEqual(expect.arrayContaining([['people', 'ok', 4, 4], ['items', 'ok', 2, 2], ['items_by_code', 'ok', 1, 1]]));
  // The verify run of the repair: the one just before the first repair run.
  const beforeRepair = runs[runs.findIndex((r) => r.kind === 'repair') - 1];
  expect(beforeRepair).toMatchObject({ kind: 'verify', outcome: 'ok', counts: expect.objectContaining({ tables: 9, extra: 2, excluded: 4 }) });
  expect(runs.at(-1)).toMatchObject({ kind: 'verify', outcome: 'ok', counts: expect.objectContaining({ missing: 0, extra: 0, different: 0 }) });
}, 240_000);

test('with the worker stopped, a difference cannot be confirmed: unconfirmed, with the reason, exit 1', async () => {
  await worker!.stop();
  worker = undefined;
  await untracked(`UPDATE orgs.people SET name = 'Stale' WHERE email = 'u20@example.org'`);
  const { result, sync: s } = await verify(['--table', 'people', '--timeout', '2']);
  expect(result.status).toBe(1);
  expect(table(s, 'people').differences).toEqual([]);
  // The local change of u12 is kept by its rule, confirmed or not.
  expect(table(s, 'people').excluded.map((d) => d.key)).toEqual([{ email: 'u12@example.org' }]);
  expect(table(s, 'people').unconfirmed).toEqual([{ key: { email: 'u20@example.org' }, kind: 'different', columns: ['name'],
    reason: expect.stringMatching(/^the worker is not running or is behind: the sync's checkpoint \([0-9A-F/]+\) did not reach the source position [0-9A-F/]+ within 2 s$/) }]);
  const text = await runSyncctl(['verify', dir, '--table', 'people', '--timeout', '1'], env);
  expect(text.status).toBe(1);
  expect(text.stdout).toMatch(/^ {4}unconfirmed: different email=u20@example\.org \(name\): the worker is not running or is behind/m);
  const runs = await rows<{ outcome: string; detail: string }>(dbs().target, `SELECT outcome, detail FROM syncctl.runs WHERE kind = 'verify' ORDER BY id DESC LIMIT 1`);
  expect(runs[0]).toMatchObject({ outcome: 'failed', detail: expect.stringMatching(/^the worker is not running or is behind/) });

  // With the worker back, the repair applies it.
  worker = startWorker(sync);
  await waitForStreaming(dbs(), 'verify');
  const fixed = await verify(['--table', 'people', '--repair']);
  expect(fixed.result.status).toBe(0);
  expect(table(fixed.sync, 'people').repair).toMatchObject({ keys: 1, repaired: 1 });
}, 120_000);

test('exit 2: a spec that cannot be loaded, a table the sync does not have, a target that cannot be reached (without its password)', async () => {
  const missing = await runSyncctl(['verify', `${dir}/nothing-here`], env);
  expect(missing.status).toBe(2);
  const unknown = await runSyncctl(['verify', dir, '--table', 'nope'], env);
  expect(unknown.status).toBe(2);
  expect(unknown.stderr).toMatch(/^error: no table nope in sync verify \(tables: people, members, kinds, items, /m);
  const badTarget = 'postgres://someone:s3cret-pw@127.0.0.1:1/nothing';
  const unreachable = await runSyncctl(['verify', dir, '--json'], { ...env, DST_URL: badTarget });
  expect(unreachable.status).toBe(2);
  expect(unreachable.stderr).toMatch(/^error: sync verify: cannot connect to the target database/m);
  expect(`${unreachable.stdout}${unreachable.stderr}`).not.toContain('s3cret-pw');
  expect(JSON.parse(unreachable.stdout)).toEqual([{ sync: 'verify', tables: [], error: expect.stringContaining('cannot connect'), ok: false }]);
}, 60_000);

test('values moved from one row to another are found, between two rows of one bucket too', async () => {
  // kinds is small: 64 buckets, by the key's hash. In each bucket with two rows or more, two rows trade amounts. A sum of
  // unseeded row hashes misses such a trade unless the sum happens to wrap differently: with this many, it misses some.
  const pairs = await rows<{ a: number; b: number }>(dbs().target, `SELECT min(id) AS a, max(id) AS b FROM orgs.kinds
    WHERE id <= 50 GROUP BY hash_record_extended(ROW(id), 0) & 63 HAVING count(*) >= 2`);
  expect(pairs.length).toBeGreaterThanOrEqual(8);
  const trades = pairs.flatMap(({ a, b }) => [`(${a}, ${b})`, `(${b}, ${a})`]).join(', ');
  await untracked(`UPDATE orgs.kinds AS k SET amount = o.amount FROM orgs.kinds AS o WHERE (k.id, o.id) IN (${trades})`);
  const { result, sync: s } = await verify(['--table', 'kinds', '--repair']);
  expect(result.status).toBe(0);
  const traded = pairs.flatMap(({ a, b }) => [a, b]).map((id) => ({ key: { id: String(id) }, kind: 'different' as const, columns: ['amount'] }));
  expect(sorted(table(s, 'kinds').differences)).toEqual(sorted(traded));
  expect(table(s, 'kinds').repair).toMatchObject({ keys: traded.length, repaired: traded.length, remaining: [] });
  await expectTargetMatches(dbs(), mapped(['kinds']));
}, 120_000);
