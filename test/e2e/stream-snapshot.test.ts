/**
 * The hand-over from the initial copy to the stream, under a concurrent write workload:
 * - `apply` copies a 300k-row table in several ctid chunks while another connection inserts,
 *   updates (also the key and the filtered column) and deletes rows; the worker then streams;
 *   the target equals the mapped source: no gap, no duplicate.
 * - A table added to the spec of a running sync: `apply` copies it under its own snapshot while
 *   the workload goes on; the running worker reads the edited spec when the new table's first
 *   change arrives, holds its changes until the copy is done, then applies them and streams it,
 *   without stopping and without the other table waiting; no gap, no duplicate.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { loadSpecs } from '../../src/spec/load-specs.ts';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, churn, expectTargetMatches, loadSync, randomInt, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('stream_snapshot');
const specs = useSpecDir();
const ROWS = 300_000;

const BIG = `    big: {
      from: 'public.big', to: 'public.big_copy', key: ['id'], where: sql\`grp <> 13\`,
      columns: { id: sql\`id\`, v2: sql\`v::bigint * 2\`, label: sql\`note || ':' || grp\` },
    },`;
const EXTRA = `    extra: {
      from: 'public.extra', to: 'public.extra_copy', key: ['sku'],
      columns: { sku: sql\`sku\`, qty: sql\`qty\`, total: sql\`qty * price\` },
    },`;

let env: Record<string, string>;
let worker: InProcessWorker | undefined;
let nextId = ROWS + 1;
let nextSku = 1_000_000;

/** One source transaction on big: an insert, an update (sometimes moving the row out of or into the filter), a delete, sometimes a key change or a multi-row update. */
function bigTransaction(): string {
  const statements = [
    `INSERT INTO big VALUES (${nextId++}, ${randomInt(0, 96)}, ${randomInt(0, 1000)}, 'new ${nextId}')`,
    `UPDATE big SET v = v + 1, grp = (grp + ${randomInt(0, 2)}) % 97 WHERE id = ${randomInt(1, nextId)}`,
    `DELETE FROM big WHERE id = ${randomInt(1, nextId)}`,
  ];
  if (Math.random() < 0.2) statements.push(`UPDATE big SET id = ${nextId++} WHERE id = ${randomInt(1, nextId)}`);
  if (Math.random() < 0.1) {
    const from = randomInt(1, nextId);
    statements.push(`UPDATE big SET note = note || '!' WHERE id BETWEEN ${from} AND ${from + 30}`);
  }
  return `BEGIN; ${statements.join('; ')}; COMMIT`;
}

function extraTransaction(): string {
  const sku = (n: number) => `'sku-${n}'`;
  return `BEGIN; INSERT INTO extra VALUES (${sku(nextSku++)}, ${randomInt(0, 50)}, ${randomInt(1, 9999) / 100});
    UPDATE extra SET qty = qty + 1 WHERE sku = ${sku(randomInt(1, 20_000))};
    DELETE FROM extra WHERE sku = ${sku(randomInt(1, 20_000))};
    UPDATE extra SET sku = ${sku(nextSku++)} WHERE sku = ${sku(randomInt(1, 20_000))}; COMMIT`;
}

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  await dbs().source.query(`
    CREATE TABLE big (id int PRIMARY KEY, grp int NOT NULL, v int NOT NULL, note text);
    INSERT INTO big SELECT g, g % 97, g, 'row ' || g || repeat('x', 40) FROM generate_series(1, ${ROWS}) g;
    CREATE TABLE extra (sku text PRIMARY KEY, qty int NOT NULL, price numeric(10, 2));
    INSERT INTO extra SELECT 'sku-' || g, g % 50, (g % 1000) / 10.0 FROM generate_series(1, 20000) g`);
  await dbs().source.query('VACUUM ANALYZE big');
  await dbs().target.query(`
    CREATE TABLE big_copy (id int PRIMARY KEY, v2 bigint NOT NULL, label text);
    CREATE TABLE extra_copy (sku text PRIMARY KEY, qty int, total numeric)`);
  // About six chunks for the 300k rows.
  const { rows } = await dbs().source.query<{ blocks: number }>(`SELECT (pg_relation_size('big') / 8192)::int AS blocks`);
  process.env['SYNCCTL_COPY_CHUNK_BLOCKS'] = String(Math.ceil(rows[0]!.blocks / 6));
});

afterAll(async () => {
  delete process.env['SYNCCTL_COPY_CHUNK_BLOCKS'];
  await worker?.stop().catch(() => {});
});

test('a 300k-row table copied in chunks while the source is written, then streamed: no gap, no duplicate', async () => {
  snapDir = specs.write({ 'snap.sync.ts': syncSpec({ name: 'snap', tables: BIG }) });
  const sync = await loadSync(snapDir, env);
  const writer = churn(dbs().source, bigTransaction);
  await waitFor('the workload to start', async () => writer.committed() >= 20);
  const before = writer.committed();
  const started = Date.now();
  const applied = await apply(sync);
  const copyMs = Date.now() - started;
  const duringCopy = writer.committed() - before;
  expect(applied).toContain('slot:syncctl_snap');

  const chunks = (await dbs().target.query<{ chunk: number; rows_copied: string; done: boolean }>(
    `SELECT chunk, rows_copied, done_at IS NOT NULL AS done FROM syncctl.snapshot_chunks WHERE sync_name = 'snap' ORDER BY chunk`)).rows;
  expect(chunks.length).toBeGreaterThan(1);
  expect(chunks.every((c) => c.done)).toBe(true);
  // Every row of the snapshot was copied exactly once across the chunks (the filter drops grp = 13).
  expect(chunks.reduce((sum, c) => sum + Number(c.rows_copied), 0)).toBeGreaterThan(ROWS * 0.98);
  // The workload really ran while the copy did.
  expect(duringCopy, `transactions committed during the ${copyMs} ms copy`).toBeGreaterThan(20);

  worker = startWorker(sync, { reload });
  await waitFor('some streaming under load', async () => writer.committed() >= before + duringCopy + 200, 60_000);
  await writer.stop();
  await expectTargetMatches(dbs(), sync.tables, { timeoutMs: 90_000, what: 'after copy + stream under load' });
  const { rows } = await dbs().target.query(`SELECT count(*)::int AS n FROM syncctl.sync_conflicts`);
  expect(rows).toEqual([{ n: 0 }]);
});

let withExtra: LoadedSync;
let snapDir: string;
/** What `syncctl run` does: read the spec files again. */
const reload = async () => (await loadSpecs(snapDir, env, { fresh: true }))[0];

test('a table added to a running sync is copied by apply and taken over by the running worker', async () => {
  const writer = churn(dbs().source, () => (Math.random() < 0.5 ? bigTransaction() : extraTransaction()));
  await waitFor('the workload to start', async () => writer.committed() >= 20);
  // The spec file the worker runs is edited, then applied, as a user would.
  writeFileSync(path.join(snapDir, 'snap.sync.ts'), syncSpec({ name: 'snap', tables: `${BIG}\n${EXTRA}` }));
  withExtra = (await reload())!;
  const bigDone = await dbs().target.query<{ n: number }>(`SELECT count(*)::int AS n FROM big_copy`);
  const applied = await apply(withExtra);
  expect(applied).toContain('copy:snap:extra');
  expect(applied).toContain('publication-table:syncctl_snap:public.extra');
  expect(applied).not.toContain('slot:syncctl_snap');
  const registered = await dbs().target.query(`SELECT state, snapshot_lsn IS NOT NULL AS has_snapshot FROM syncctl.sync_tables WHERE table_name = 'extra'`);
  expect(registered.rows).toEqual([{ state: 'streaming', has_snapshot: true }]);
  expect(bigDone.rows[0]!.n).toBeGreaterThan(0);

  const afterCopy = writer.committed();
  await waitFor('more writes after the copy', async () => writer.committed() >= afterCopy + 300, 60_000);
  await writer.stop();
  await expectTargetMatches(dbs(), withExtra.tables, { timeoutMs: 60_000, what: 'after adding a table' });
  // The same worker, never stopped, streams both tables; nothing is left held.
  expect(worker!.finished(), String(worker!.error())).toBe(false);
  const held = await dbs().target.query(`SELECT count(*)::int AS n FROM syncctl.held_changes`);
  expect(held.rows).toEqual([{ n: 0 }]);
});

test('apply again changes nothing; SIGTERM-style stop leaves the checkpoint where the slot is', async () => {
  expect(await apply(withExtra)).toEqual([]);
  await worker!.stop();
  worker = undefined;
  const { rows } = await dbs().source.query<{ confirmed: string }>(
    `SELECT confirmed_flush_lsn::text AS confirmed FROM pg_replication_slots WHERE slot_name = 'syncctl_snap'`);
  const checkpoint = await dbs().target.query<{ lsn: string }>(`SELECT commit_lsn::text AS lsn FROM syncctl.checkpoints WHERE sync_name = 'snap'`);
  const cmp = await dbs().source.query<{ ge: boolean }>(`SELECT $1::pg_lsn >= $2::pg_lsn AS ge`, [rows[0]!.confirmed, checkpoint.rows[0]!.lsn]);
  expect(cmp.rows[0]!.ge).toBe(true);
});
