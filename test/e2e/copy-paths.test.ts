/**
 * The initial copy's two paths give the same rows: chunks COPYed straight into the target table
 * (the mapping evaluated on the source) and chunks staged and applied like the stream (the mapping
 * evaluated in the target). Every table is compared whole with the mapped source.
 * - identity mappings go direct, also under target settings that print values ambiguously (DateStyle SQL:
 *   time zone abbreviations); expression mappings then stay staged;
 * - expression mappings (concat, CASE, casts, to_char, value output under the target's TimeZone,
 *   DateStyle order, bytea_output) go direct when the target's settings print values losslessly;
 * - a target that already has rows, a volatile function, a user-defined function stay staged;
 * - a chunk the target rejects (a CHECK) falls back to staging in the same transaction, which parks the bad rows;
 * - a direct copy killed mid-way (SIGKILL) resumes at its first unfinished chunk.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { CopyProgress } from '../../src/snapshot/initial-copy.ts';
import { applyAll } from '../../src/plan/reconcile.ts';
import { REPO_ROOT, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { compareTable, loadSync, type MappedTable } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('copy_paths');
const specs = useSpecDir();
const ROWS = 30_000;
/** Value settings of the target database, unlike the source's defaults (SQL prints "IST", which PG 15 reads as Israel's). */
const TARGET_SETTINGS = { TimeZone: 'Asia/Kolkata', DateStyle: 'SQL, DMY', IntervalStyle: 'sql_standard', bytea_output: 'escape' };
/** Then settings that print values losslessly, still unlike the source's. */
const LOSSLESS_SETTINGS = { TimeZone: 'Asia/Kolkata', DateStyle: 'ISO, DMY', IntervalStyle: 'postgres', bytea_output: 'escape' };

let env: Record<string, string>;

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  await dbs().source.query(`
    CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, price numeric(10,2), name text, created timestamptz,
      day date, ratio float8, blob bytea, span interval);
    INSERT INTO items SELECT g, g % 7, (g % 500) + 0.25, 'item ' || g, timestamptz '2024-01-01 00:00:00+00' + g * interval '37 minutes',
      date '2020-01-01' + g % 900, g / 7.0, decode(lpad(to_hex(g), 8, '0'), 'hex'), g * interval '1 minute 3.5 seconds'
      FROM generate_series(1, ${ROWS}) g;
    CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, payload text);
    INSERT INTO events SELECT g, 'k' || g % 13, repeat('p', 50) FROM generate_series(1, 120000) g`);
  // The comparison evaluates the mapping on the source: the function exists there too (a user function: never evaluated there by the copy).
  await dbs().source.query(`CREATE FUNCTION tgt_double(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2'`);
  // A sync reads each source table once: one copy of items per spec table.
  for (const name of [...Object.keys(TABLES), 'mapped_iso']) {
    await dbs().source.query(`CREATE TABLE items_${name} (LIKE items INCLUDING ALL); INSERT INTO items_${name} SELECT * FROM items`);
    await dbs().source.query(`VACUUM ANALYZE items_${name}`);
  }
  await dbs().source.query('VACUUM ANALYZE events');
  const target = dbs().target;
  for (const [name, value] of Object.entries(TARGET_SETTINGS)) {
    await target.query(`ALTER DATABASE ${dbs().targetDatabase} SET ${name} = '${value}'`);
  }
  await target.query(`
    CREATE TABLE items_ident (id int PRIMARY KEY, grp int NOT NULL, price numeric(10,2), name text, created timestamptz,
      day date, ratio float8, blob bytea, span interval);
    CREATE TABLE items_mapped (id int PRIMARY KEY, label text NOT NULL, total numeric, tier text, big_grp bigint,
      local_time text, day_text text, ratio_text text, blob bytea, span_text text);
    CREATE TABLE items_mapped_iso (LIKE items_mapped INCLUDING ALL);
    CREATE TABLE items_prefilled (id int PRIMARY KEY, grp int NOT NULL, name text);
    INSERT INTO items_prefilled SELECT g, -1, 'stale' FROM generate_series(1, ${ROWS}, 10) g;
    CREATE TABLE items_checked (id int PRIMARY KEY, total numeric CHECK (total <> 450.25));
    CREATE TABLE items_volatile (id int PRIMARY KEY, noise int);
    CREATE TABLE items_catalog (id int PRIMARY KEY, kind text);
    CREATE FUNCTION tgt_double(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
    CREATE TABLE items_target_fn (id int PRIMARY KEY, doubled int);
    CREATE TABLE events_copy (id bigint PRIMARY KEY, kind text NOT NULL, payload text);
    -- Slows each chunk down (one COPY or INSERT is one statement) so the crash test can kill the copy mid-way.
    CREATE FUNCTION slow_statement() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN PERFORM pg_sleep(0.4); RETURN NULL; END';
    CREATE TRIGGER slow AFTER INSERT ON events_copy FOR EACH STATEMENT EXECUTE FUNCTION slow_statement()`);
  // Several chunks per table.
  process.env['SYNCCTL_COPY_CHUNK_BLOCKS'] = '64';
});

afterAll(() => {
  delete process.env['SYNCCTL_COPY_CHUNK_BLOCKS'];
});

const TABLES: Record<string, { spec: string; compare: MappedTable }> = {};
function table(name: string, to: string, columns: Record<string, string>, where?: string, into = TABLES): void {
  const spec = `    ${name}: { from: 'public.items_${name}', to: 'public.${to}', key: ['id'],${where ? ` where: sql\`${where}\`,` : ''}
      columns: { ${Object.entries(columns).map(([c, e]) => `${c}: sql\`${e}\``).join(', ')} } },`;
  into[name] = {
    spec,
    compare: {
      source: { schema: 'public', name: `items_${name}` }, target: { schema: 'public', name: to }, key: ['id'],
      columns: Object.entries(columns).map(([target, expression]) => ({ target, expression })), ...(where ? { where } : {}),
    },
  };
}
const ident = (names: string[]) => Object.fromEntries(names.map((n) => [n, n]));
table('ident', 'items_ident', ident(['id', 'grp', 'price', 'name', 'created', 'day', 'ratio', 'blob', 'span']));
const MAPPED = {
  id: 'id', label: `concat('g', grp, ' ', name, ' at ', created)`, total: 'price * 2',
  tier: `CASE WHEN price < 100 THEN 'small' WHEN price < 300 THEN 'medium' ELSE 'large' END`, big_grp: 'grp',
  local_time: `to_char(created, 'YYYY-MM-DD HH24:MI TZH')`, day_text: 'day::text', ratio_text: 'ratio::text', blob: 'blob', span_text: 'span::text',
};
table('mapped', 'items_mapped', MAPPED, 'grp <> 3');
const ISO_TABLES: typeof TABLES = {};
table('mapped_iso', 'items_mapped_iso', MAPPED, 'grp <> 3', ISO_TABLES);
table('prefilled', 'items_prefilled', ident(['id', 'grp', 'name']));
table('checked', 'items_checked', { id: 'id', total: 'price' });
table('volatile', 'items_volatile', { id: 'id', noise: 'CASE WHEN random() < 2 THEN id END' });
table('catalog', 'items_catalog', { id: 'id', kind: `'pg_class'::regclass::text || id` });
table('target_fn', 'items_target_fn', { id: 'id', doubled: 'tgt_double(id)' });

/** The test's own sessions compare values as the target prints them. */
async function withSettings(settings: Record<string, string>): Promise<void> {
  for (const client of [dbs().source, dbs().target]) {
    for (const [name, value] of Object.entries(settings)) await client.query(`SELECT set_config($1, $2, false)`, [name, value]);
  }
}

test('direct and staged chunks give the target the mapped source, whole tables compared', async () => {
  const sync = await loadSync(specs.write({ 'paths.sync.ts': syncSpec({ name: 'paths', tables: Object.values(TABLES).map((t) => t.spec).join('\n') }) }), env);
  const progress = new Map<string, CopyProgress>();
  await applyAll([sync], { onCopyProgress: (p) => progress.set(p.table, p) });
  const direct = (name: string) => ({ chunks: progress.get(name)!.chunks, direct: progress.get(name)!.directChunks, reason: progress.get(name)!.pathReason });

  expect(direct('ident').chunks).toBeGreaterThan(2);
  expect(direct('ident').direct, direct('ident').reason).toBe(direct('ident').chunks);
  expect(direct('mapped')).toMatchObject({ direct: 0, reason: expect.stringContaining('cannot print values as the target does (DateStyle = SQL, DMY') });
  expect(direct('prefilled')).toMatchObject({ direct: 0, reason: 'the target table already has rows' });
  expect(direct('volatile')).toMatchObject({ direct: 0, reason: expect.stringContaining('random(), which is volatile') });
  expect(direct('catalog')).toMatchObject({ direct: 0, reason: expect.stringContaining('object name') });
  expect(direct('target_fn')).toMatchObject({ direct: 0, reason: expect.stringContaining('tgt_double(), which is not built in') });
  // Eligible, but the target's CHECK rejects a row of the first chunk: staged from there on.
  expect(direct('checked').reason).toContain('computed on the source');
  expect(direct('checked').direct).toBe(0);

  await withSettings(TARGET_SETTINGS);
  const parked = await dbs().target.query<{ n: number }>(`SELECT count(*)::int AS n FROM syncctl.sync_conflicts WHERE table_name = 'checked'`);
  expect(parked.rows[0]!.n).toBe(await dbs().source.query<{ n: number }>(`SELECT count(*)::int AS n FROM items WHERE price = 450.25`).then((r) => r.rows[0]!.n));
  for (const [name, t] of Object.entries(TABLES)) {
    const compare = name === 'checked' ? { ...t.compare, where: 'price <> 450.25' } : t.compare;
    expect(await compareTable(dbs(), compare), name).toEqual([]);
  }
});

test('expression mappings go direct under target settings that print losslessly, and equal what the target computes', async () => {
  for (const [name, value] of Object.entries(LOSSLESS_SETTINGS)) {
    await dbs().target.query(`ALTER DATABASE ${dbs().targetDatabase} SET ${name} = '${value}'`);
  }
  const sync = await loadSync(specs.write({ 'iso.sync.ts': syncSpec({ name: 'iso', tables: ISO_TABLES['mapped_iso']!.spec }) }), env);
  let last: CopyProgress | undefined;
  await applyAll([sync], { onCopyProgress: (p) => { last = p; } });
  expect(last!.chunks).toBeGreaterThan(2);
  expect(last!.directChunks, last!.pathReason).toBe(last!.chunks);
  await withSettings(LOSSLESS_SETTINGS);
  expect(await compareTable(dbs(), ISO_TABLES['mapped_iso']!.compare)).toEqual([]);
  // Spot checks that the target's settings, not the source's defaults, made the text.
  const sample = await dbs().target.query<{ local_time: string; blob: string }>(`SELECT local_time, blob::text FROM items_mapped_iso WHERE id = 1`);
  expect(sample.rows[0]).toEqual({ local_time: '2024-01-01 06:07 +05', blob: '\\000\\000\\000\\001' });
});

test('a direct copy killed mid-way resumes at its first unfinished chunk and ends equal to the source', async () => {
  const dir = specs.write({ 'resume.sync.ts': syncSpec({ name: 'resume', tables: `    events: { from: 'public.events', to: 'public.events_copy', key: ['id'],
      columns: { id: sql\`id\`, kind: sql\`kind\`, payload: sql\`payload\` } },` }) });
  const sync = await loadSync(dir, env);
  const childEnv: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith('VITEST') && name !== 'NODE_OPTIONS') childEnv[name] = value;
  }
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'syncctl'), 'apply', dir], {
    cwd: REPO_ROOT, env: { ...childEnv, ...env, SYNCCTL_LOG_LEVEL: 'warn' }, stdio: 'ignore',
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const chunks = async () => (await dbs().target.query<{ n: number; done: number }>(
    `SELECT count(*)::int AS n, count(done_at)::int AS done FROM syncctl.snapshot_chunks WHERE sync_name = 'resume'`)).rows[0]!;
  await waitFor('two chunks copied', async () => (await chunks()).done >= 2, 60_000);
  child.kill('SIGKILL');
  await exited;
  const cut = await chunks();
  expect(cut.done).toBeLessThan(cut.n);

  const progress: CopyProgress[] = [];
  await applyAll([sync], { onCopyProgress: (p) => progress.push(p) });
  const after = await chunks();
  expect(after).toEqual({ n: cut.n, done: cut.n });
  // Only the unfinished chunks were copied again, straight into the table.
  const last = progress[progress.length - 1]!;
  expect(last.directChunks).toBe(cut.n - cut.done);
  expect(await compareTable(dbs(), sync.tables[0]!)).toEqual([]);
});
