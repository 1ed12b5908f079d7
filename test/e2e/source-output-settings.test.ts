/**
 * Values travel from the source as text: pgoutput prints each column with the walsender session's
 * settings, the initial copy's COPY with its source session's. A source database whose own
 * settings print values ambiguously or lossily (ALTER DATABASE … SET) must not change what
 * arrives: DateStyle SQL, DMY (2024-06-05 printed 05/06/2024, read back as May 6 by an MDY
 * target; time zone abbreviations such as IST), IntervalStyle sql_standard (one sign for every
 * field), extra_float_digits 0 (rounded floats). Both copy paths (direct, staged) and the stream.
 *
 * money prints through lc_monetary: when the source's differs from the target's, plan refuses,
 * naming the sync, the table and the column.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { expectStatus, rows, runSyncctl, syncSpec, useSpecDir } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('source_output_settings');
const specs = useSpecDir();
let worker: InProcessWorker | undefined;
let env: Record<string, string>;

afterAll(async () => { await worker?.stop().catch(() => {}); });

/** How the source database prints values to every new session, the walsender included. */
const SOURCE_SETTINGS = { DateStyle: 'SQL, DMY', IntervalStyle: 'sql_standard', extra_float_digits: '0', TimeZone: 'Asia/Kolkata' };

const COLUMNS = 'id int PRIMARY KEY, d date, ts timestamp, tstz timestamptz, iv interval, f4 float4, f8 float8';
/** Rows `from`..`to`: days above and below 12, negative intervals, floats that need 17 digits. */
const values = (from: number, to: number) => `SELECT g, date '2024-01-01' + g * 7, timestamp '2024-06-05 10:11:12.345678' + g * interval '1 day 1 hour',
  timestamptz '2024-06-05 10:11:12.345678+00' + g * interval '17 hours', g * interval '-1 day -2 hours -3.5 seconds' + interval '1 mon',
  (1.2345678 + g / 3.0)::float4, 0.1::float8 + g::float8 / 3 FROM generate_series(${from}, ${to}) g`;

const tables = `
    direct: { from: 'public.vals_direct', to: 'public.vals_direct', key: ['id'],
      columns: { id: sql\`id\`, d: sql\`d\`, ts: sql\`ts\`, tstz: sql\`tstz\`, iv: sql\`iv\`, f4: sql\`f4\`, f8: sql\`f8\` } },
    staged: { from: 'public.vals_staged', to: 'public.vals_staged', key: ['id'],
      columns: { id: sql\`id\`, d: sql\`d\`, ts: sql\`ts\`, tstz: sql\`tstz\`, iv: sql\`iv\`, f4: sql\`f4\`,
        f8: sql\`CASE WHEN random() < 2 THEN f8 END\` } },`;

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  // The test's own sessions were opened before the ALTER DATABASE: they print as the target does.
  for (const client of [dbs().source, dbs().target]) {
    await client.query(`SET DateStyle = 'ISO, MDY'; SET IntervalStyle = postgres; SET extra_float_digits = 1; SET TimeZone = 'UTC'`);
  }
  for (const [name, value] of Object.entries(SOURCE_SETTINGS)) {
    await dbs().source.query(`ALTER DATABASE ${dbs().sourceDatabase} SET ${name} = '${value}'`);
  }
});

test('dates, timestamps, intervals and floats arrive exactly under odd source settings: copy (direct and staged) and stream', async () => {
  await dbs().source.query(`
    CREATE TABLE vals_direct (${COLUMNS}); CREATE TABLE vals_staged (${COLUMNS});
    INSERT INTO vals_direct VALUES (0, '2024-06-05', '2024-06-05 10:11:12.345678', '2024-06-05 10:11:12.345678+00',
      '-1 day -02:00:03.5', 1.2345678, 0.1::float8 + 0.2::float8);
    INSERT INTO vals_direct ${values(1, 60)};
    INSERT INTO vals_staged SELECT * FROM vals_direct`);
  await dbs().target.query(`CREATE TABLE vals_direct (${COLUMNS}); CREATE TABLE vals_staged (${COLUMNS})`);
  const sync = await loadSync(specs.write({ 'vals.sync.ts': syncSpec({ name: 'vals', tables }) }), env);

  await apply(sync);
  // The exact text of row 0, as an ISO target prints it.
  const row0 = `SELECT d::text, ts::text, tstz::text, iv::text, f4::text, f8::text FROM %s WHERE id = 0`;
  const expected = { d: '2024-06-05', ts: '2024-06-05 10:11:12.345678', tstz: '2024-06-05 10:11:12.345678+00', iv: '-1 days -02:00:03.5', f4: '1.2345678', f8: '0.30000000000000004' };
  expect(await rows(dbs().target, row0.replace('%s', 'vals_direct'))).toEqual([expected]);
  expect(await rows(dbs().target, row0.replace('%s', 'vals_staged'))).toEqual([expected]);
  await expectTargetMatches(dbs(), sync.tables, { what: 'after the initial copy', timeoutMs: 1000 });

  worker = startWorker(sync);
  for (const table of ['vals_direct', 'vals_staged']) {
    await dbs().source.query(`
      INSERT INTO ${table} VALUES (1000, '2024-06-05', '2024-06-05 10:11:12.345678', '2024-06-05 10:11:12.345678+00',
        '-1 day -02:00:03.5', 1.2345678, 0.1::float8 + 0.2::float8);
      INSERT INTO ${table} ${values(61, 120)};
      UPDATE ${table} SET f8 = f8 * 3, iv = iv * 2, d = d + 1, tstz = tstz + interval '1 minute' WHERE id % 3 = 0;
      DELETE FROM ${table} WHERE id % 10 = 7`);
  }
  await expectTargetMatches(dbs(), sync.tables, { what: 'streamed' });
  expect(await rows(dbs().target, row0.replace('%s', 'vals_direct').replace('id = 0', 'id = 1000'))).toEqual([expected]);
  expect(await rows(dbs().target, row0.replace('%s', 'vals_staged').replace('id = 0', 'id = 1000'))).toEqual([expected]);
  expect(await rows(dbs().target, `SELECT count(*)::int AS n FROM syncctl.sync_conflicts`)).toEqual([{ n: 0 }]);
  await worker.stop();
  worker = undefined;
});

test('a money column with different lc_monetary on source and target: plan names the sync, table and column', async () => {
  const targetMonetary = (await rows<{ v: string }>(dbs().target, `SELECT current_setting('lc_monetary') AS v`))[0]!.v;
  // The locales every glibc has; C.utf8 is a different locale name from C (and POSIX, its alias).
  const other = /^c\.utf-?8$/i.test(targetMonetary) ? 'C' : 'C.utf8';
  await dbs().source.query(`ALTER DATABASE ${dbs().sourceDatabase} SET lc_monetary = '${other}'`);
  await dbs().source.query(`CREATE TABLE prices (id int PRIMARY KEY, amount money, note text);
    INSERT INTO prices VALUES (1, 12.5, 'a'), (2, -1234567.89, 'b')`);
  await dbs().target.query(`CREATE TABLE prices (id int PRIMARY KEY, amount money, note text)`);
  const dir = specs.write({ 'money.sync.ts': syncSpec({ name: 'money', tables: `
    prices: { from: 'public.prices', to: 'public.prices', key: ['id'], columns: { id: sql\`id\`, amount: sql\`amount\`, note: sql\`note\` } },` }) });

  const refused = expectStatus(await runSyncctl(['plan', dir], env), 2);
  expect(refused.stderr).toContain('money: the spec does not fit the live databases');
  const line = refused.stderr.split('\n').find((l) => l.includes('tables.prices.columns.amount'));
  expect(line, refused.stderr).toBeDefined();
  expect(line).toContain(`${dir}/money.sync.ts: tables.prices.columns.amount: `);
  expect(line).toContain('source column "amount" of public.prices is money');
  expect(line).toContain(`lc_monetary = '${other}'`);
  expect(line).toContain(`lc_monetary = '${targetMonetary}'`);
  // apply refuses the same way, before anything is created.
  expectStatus(await runSyncctl(['apply', dir], env), 2);
  expect(await rows(dbs().source, `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = 'syncctl_money'`)).toEqual([{ n: 0 }]);

  // The same lc_monetary on both sides: planned, copied and streamed exactly.
  await dbs().source.query(`ALTER DATABASE ${dbs().sourceDatabase} SET lc_monetary = '${targetMonetary}'`);
  const sync = await loadSync(dir, env);
  await apply(sync);
  worker = startWorker(sync);
  await dbs().source.query(`INSERT INTO prices VALUES (3, 99.99, 'c'); UPDATE prices SET amount = amount * 2 WHERE id = 1`);
  await expectTargetMatches(dbs(), sync.tables, { what: 'money streamed' });
  await worker.stop();
  worker = undefined;
});
