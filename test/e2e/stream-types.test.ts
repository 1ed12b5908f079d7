/**
 * PRODUCT.md scenario 5 from examples/type-mirror: a table with every data type mirrored 1:1 by a
 * mapped table (identity expressions), through both paths: the initial copy (COPY from the
 * source) and the stream (pgoutput text). Values of many megabytes (a 20 MB text, a 10 MB bytea)
 * survive updates that leave them unchanged (unchanged TOAST must never become NULL). NULL stays
 * apart from '' and '{}'. A generated column on the target is computed there. Everything is
 * compared as text, column by column, against the source.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { planAll } from '../../src/plan/reconcile.ts';
import { REPO_ROOT, syncSpec, useSpecDir } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('stream_types');
const specs = useSpecDir();
const example = (file: string) => path.join(REPO_ROOT, 'examples/type-mirror', file);
let sync: LoadedSync;
let worker: InProcessWorker | undefined;

/** Typical values of every column. */
const TYPICAL = `(1, true, 32767, -2147483648, 9223372036854775807, 3.14159, 2.718281828459045,
  123456789012345678901234567890.123456789012345678901234567890, 1234567890123456789012345678.123456789012, 1234.56,
  'ab', 'varchar value', 'plain text', '\\xdeadbeef', '2024-02-29', '23:59:59.999999', '12:34:56.789+05:30',
  '2024-02-29 12:34:56.123456', '2024-02-29 12:34:56.123456+01', '1 year 2 mons 3 days 04:05:06.789',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.1.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
  B'10101010', B'101', '{"a": [1, 2.50, "x"], "b": {"c": null}}', '{"a": [1, 2.50, "x"], "b": {"c": null}, "u": "\\u00e9\\u4e2d"}',
  '<root a="1">text &amp; more</root>', 'a fat cat sat on a mat', 'fat & (rat | cat)',
  '(1.5,-2)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(2,0))', '<(0,0),2.5>',
  '{1,2,3}', '{"a","b c","d,e"}', '{{1,2},{3,4}}', ARRAY['{"k": 1}'::jsonb, '[]'], 'happy', '{sad,happy}',
  ROW('Main St', 12345, '{a,b}'), ARRAY[ROW('A', 1, '{}')::address, ROW('B', NULL, NULL)::address],
  '[1,10)', '[-5,5]', '(1.5,2.5]', '[2024-01-01,2024-12-31)', '[2024-01-01 00:00,2024-01-02 00:00)', '[2024-01-01 00:00+00,infinity)',
  '[1.5,2.5)', '{[1,3),[5,7)}', '{[2024-01-01,2024-01-05)}', 42, 'a@b.example', '{1,2}',
  'a=>1, "b c"=>NULL, "quote\\"d"=>"va\\\\lue"', 4294967295, '16/B374D848')`;

/** Edge values: special floats and numerics, infinities, empty strings and arrays, NULL elements, escapes, unicode. */
const EDGES = `(2, false, -32768, 0, -9223372036854775808, 'NaN', '-Infinity', 'NaN', 'NaN', '-0.01',
  'a', '', E'tab\\there\\nnew line\\\\backslash\\r CR \\u0001 \\u00fcn\\u00efc\\u00f8d\\u00e9 \\U0001F389 "q" ''s''',
  '\\x005c00ff5c5c0a09', 'infinity', '24:00:00', '00:00:00-15:59', '-infinity', 'infinity', '-1 year -2 days +03:04:05.000001',
  '00000000-0000-0000-0000-000000000000', '::ffff:1.2.3.4/128', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00:00:00',
  B'00000000', B'', '  {"b": 1,   "a": 2, "a": 3}  ', 'null', E'<a>&lt;tag&gt; "q" ''s'' \\u00e9</a>', 'a:1A fat:2B,4C cat:5D', '!cat & (fat:* | rat)',
  '(1e-300,-1e+300)', '{0,1,0}', '[(0,0),(0,0)]', '(0,0),(0,0)', '((0,0))', '((0,0))', '<(0,0),0>',
  '{1,NULL,3}', '{NULL,"NULL","","\\\\",",","{}"}', '{{1,NULL},{NULL,4}}', ARRAY[NULL, 'null'::jsonb], 'it''s "complicated"',
  ARRAY[NULL, 'it''s "complicated"']::mood[], ROW(E'quo"te, comma (paren) \\\\ back', NULL, '{"x,y",NULL}'),
  ARRAY[NULL::address, ROW(NULL, NULL, NULL)::address], 'empty', '(,)', '[,5)', '(,)', 'empty', '(,)',
  'empty', '{}', '{}', 1, '@', '{}', '', 0, '0/0')`;

/** Empty values next to NULL: '' and '{}' must not become NULL, nor the reverse. */
const EMPTIES = `(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '     ', '', '', '', NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, B'', '{}', '{}', '<empty/>', '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  '{}', '{}', '{}', '{}', NULL, '{}', ROW(NULL, NULL, NULL), '{}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{}', NULL,
  NULL, NULL, '{}', '', NULL, NULL)`;

const BIG_TEXT = `(SELECT string_agg(md5(g::text) || E'\\t\\\\ \\u00e9', '') FROM generate_series(1, 20 * 1024 * 1024 / 37) g)`;
const BIG_BYTEA = `(SELECT string_agg(decode(md5(g::text), 'hex') || '\\x005c'::bytea, ''::bytea) FROM generate_series(1, 10 * 1024 * 1024 / 18) g)`;

const matches = (what: string) => expectTargetMatches(dbs(), sync.tables, { what, timeoutMs: 60_000 });
const src = (sql: string) => dbs().source.query(sql);

beforeAll(async () => {
  const schema = readFileSync(example('schema.sql'), 'utf8');
  await dbs().source.query(schema);
  await dbs().target.query(schema);
  // A generated column that only the target has, and one that only the source has (not mapped: ignored).
  await dbs().target.query(`ALTER TABLE every_type ADD COLUMN c_text_length integer GENERATED ALWAYS AS (length(c_text)) STORED`);
  await dbs().source.query(`ALTER TABLE every_type ADD COLUMN c_doubled integer GENERATED ALWAYS AS (c_int2 * 2) STORED`);
  for (const row of [TYPICAL, EDGES, EMPTIES, '(4)']) await src(`INSERT INTO every_type VALUES ${row}`);
  // A big row before the copy: the copy path carries it.
  await src(`UPDATE every_type SET c_text = ${BIG_TEXT}, c_bytea = ${BIG_BYTEA} WHERE id = 4`);
  sync = await loadSync(example('types.sync.ts'), { TYPES_SOURCE_URL: dbs().sourceUrl, TYPES_TARGET_URL: dbs().targetUrl });
});

afterAll(async () => {
  await worker?.stop();
});

async function generatedColumnIsRight(): Promise<void> {
  const { rows } = await dbs().target.query(`SELECT id FROM every_type WHERE c_text_length IS DISTINCT FROM length(c_text)`);
  expect(rows).toEqual([]);
}

test('the initial copy carries every type exactly, big values and empties included', async () => {
  const sizes = await src(`SELECT length(c_text) AS t, length(c_bytea) AS b, pg_column_size(c_text) AS stored FROM every_type WHERE id = 4`);
  expect(sizes.rows[0].t).toBeGreaterThan(20_000_000);
  expect(sizes.rows[0].b).toBeGreaterThan(10_000_000);
  await apply(sync);
  worker = startWorker(sync);
  await matches('after the initial copy');
  await generatedColumnIsRight();
  // Spot checks that the comparison itself cannot hide: NULL versus empty, special values.
  const { rows } = await dbs().target.query(`SELECT id, c_text IS NULL AS text_null, c_int_array IS NULL AS array_null, c_float4::text AS f4,
      c_numeric::text AS num, c_timestamptz::text AS ts, octet_length(c_bytea) AS bytes FROM every_type WHERE id IN (2, 3) ORDER BY id`);
  expect(rows).toEqual([
    { id: 2, text_null: false, array_null: false, f4: 'NaN', num: 'NaN', ts: 'infinity', bytes: 8 },
    { id: 3, text_null: false, array_null: false, f4: null, num: null, ts: null, bytes: 0 },
  ]);
});

test('the stream carries every type exactly: inserts, updates to edge values, deletes', async () => {
  await src(`INSERT INTO every_type SELECT id + 100, c_bool, c_int2, c_int4, c_int8, c_float4, c_float8, c_numeric, c_numeric_scaled, c_money,
      c_char, c_varchar, c_text, c_bytea, c_date, c_time, c_timetz, c_timestamp, c_timestamptz, c_interval, c_uuid, c_inet, c_cidr,
      c_macaddr, c_macaddr8, c_bit, c_varbit, c_json, c_jsonb, c_xml, c_tsvector, c_tsquery, c_point, c_line, c_lseg, c_box, c_path,
      c_polygon, c_circle, c_int_array, c_text_array, c_int_matrix, c_jsonb_array, c_mood, c_mood_array, c_address, c_address_array,
      c_int4range, c_int8range, c_numrange, c_daterange, c_tsrange, c_tstzrange, c_floatrange, c_int4multirange, c_datemultirange,
      c_positive, c_email, c_positive_array, c_hstore, c_oid, c_pg_lsn FROM every_type WHERE id <= 3`);
  await matches('after streamed inserts');
  // Row 101 takes row 2's edge values and row 102 row 3's empties, column by column, in one UPDATE.
  const columns = (await src(`SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) AS list FROM pg_attribute
      WHERE attrelid = 'every_type'::regclass AND attnum > 1 AND NOT attisdropped AND attgenerated = ''`)).rows[0].list as string;
  await src(`UPDATE every_type AS t SET (${columns}) = (SELECT ${columns} FROM every_type AS s WHERE s.id = t.id - 99) WHERE t.id IN (101, 102)`);
  await src(`UPDATE every_type SET c_text = NULL, c_int_array = NULL WHERE id = 103`);
  await src(`DELETE FROM every_type WHERE id = 1`);
  await matches('after streamed updates and a delete');
  await generatedColumnIsRight();
});

test('a 20 MB text and a 10 MB bytea: streamed in, kept through updates of other columns (unchanged TOAST), replaced, deleted', async () => {
  // Streamed in: a second big row.
  await src(`INSERT INTO every_type (id, c_int4, c_text, c_bytea) VALUES (5, 1, ${BIG_TEXT}, ${BIG_BYTEA})`);
  await matches('after streaming a 30 MB row');
  // Updates that touch another column: the big values are not in the stream (unchanged TOAST).
  await src(`UPDATE every_type SET c_int4 = 7 WHERE id IN (4, 5)`);
  await src(`BEGIN; UPDATE every_type SET c_jsonb = '{"x": 1}' WHERE id = 4; UPDATE every_type SET c_int4 = 8 WHERE id = 4; COMMIT`);
  await matches('after updates that leave the big values unchanged');
  const big = await dbs().target.query(`SELECT id, length(c_text) > 20000000 AS text_kept, octet_length(c_bytea) > 10000000 AS bytea_kept, c_int4
      FROM every_type WHERE id IN (4, 5) ORDER BY id`);
  expect(big.rows).toEqual([{ id: 4, text_kept: true, bytea_kept: true, c_int4: 8 }, { id: 5, text_kept: true, bytea_kept: true, c_int4: 7 }]);
  // One big value replaced, the other unchanged, in the same update; then the whole row's key updated.
  await src(`UPDATE every_type SET c_text = 'small now', c_int2 = 5 WHERE id = 4`);
  await src(`UPDATE every_type SET id = 6 WHERE id = 5`);
  await matches('after replacing a big value and moving a big row');
  await generatedColumnIsRight();
  await src(`DELETE FROM every_type WHERE id = 6`);
  await matches('after deleting a big row');
  expect(worker!.finished()).toBe(false);
  expect((await dbs().target.query(`SELECT count(*)::int AS n FROM syncctl.sync_conflicts`)).rows).toEqual([{ n: 0 }]);
}, 240_000);

test('a mapping that reads a generated source column is refused by plan, with the reason and the fix', async () => {
  const reading = await loadSync(specs.write({ 'gen.sync.ts': syncSpec({ name: 'gen_check', tables: `    doubled: {
      from: 'public.every_type', to: 'public.every_type', key: ['id'], columns: { id: sql\`id\`, c_int4: sql\`c_doubled + 1\` },
    },` }) }), { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
  const error = await planAll([reading]).then(() => undefined, (e: unknown) => e as { code: string; problems: { path: string; message: string }[] });
  expect(error?.code).toBe('CATALOG_MISMATCH');
  expect(error?.problems.map((p) => `${p.path}: ${p.message}`)).toEqual([
    'tables.doubled.columns.c_int4: reads generated source column(s) c_doubled of public.every_type: generated columns are not replicated ' +
    '(Postgres before 18 cannot publish them, and syncctl does not); compute the value in the mapping from the columns it is generated from',
  ]);
});
