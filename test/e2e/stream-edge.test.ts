/**
 * Edge cases of the stream worker:
 * - a 1,000,000-row source transaction (one INSERT … SELECT generate_series) flows through a `syncctl run` child process
 *   whose peak RSS stays bounded, and is never visible half-applied on the target;
 * - onError 'park': a row the target rejects is parked as apply_error (key, reason), the rest of
 *   its batch arrives; onError 'stop': the worker exits non-zero naming the table and the key;
 * - a partitioned source table (rows in two partitions, rows moving between them) mapped to one table;
 * - an idle slot advances past WAL that carries nothing for the sync;
 * - connection loss (walsender and target backend terminated): the worker reconnects, nothing lost.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import {
  apply, expectTargetMatches, loadSync, peakRssKb, positions, sleep, spawnWorker, startWorker, waitForStreaming, type InProcessWorker,
} from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('stream_edge');
const specs = useSpecDir();
const MILLION = 1_000_000;
let env: Record<string, string>;
let edge: LoadedSync;
let worker: InProcessWorker | undefined;

const EDGE_TABLES = `    checked: {
      from: 'public.checked', to: 'public.checked_copy', key: ['id'],
      columns: { id: sql\`id\`, qty: sql\`qty\`, label: sql\`label\` },
    },
    events: {
      from: 'public.events', to: 'public.events_all', key: ['region', 'id'],
      columns: { region: sql\`region\`, id: sql\`id\`, payload: sql\`upper(payload)\` },
    },`;

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  await dbs().source.query(`
    CREATE TABLE bulk (id int PRIMARY KEY, v int NOT NULL);
    CREATE TABLE checked (id int PRIMARY KEY, qty int NOT NULL, label text);
    CREATE TABLE strict (id int PRIMARY KEY, qty int NOT NULL);
    CREATE TABLE events (id int NOT NULL, region text NOT NULL, payload text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
    CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
    CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
    INSERT INTO events SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'event ' || g FROM generate_series(1, 200) g;
    CREATE TABLE noise (id bigserial PRIMARY KEY, t text)`);
  await dbs().target.query(`
    CREATE TABLE bulk_copy (id int PRIMARY KEY, v2 bigint NOT NULL);
    CREATE TABLE checked_copy (id int PRIMARY KEY, qty int NOT NULL CHECK (qty >= 0), label text);
    CREATE TABLE strict_copy (id int PRIMARY KEY, qty int NOT NULL CHECK (qty >= 0));
    CREATE TABLE events_all (region text NOT NULL, id int NOT NULL, payload text, PRIMARY KEY (region, id))`);
  edge = await loadSync(specs.write({ 'edge.sync.ts': syncSpec({ name: 'edge', tables: EDGE_TABLES }) }), env);
  await apply(edge);
  worker = startWorker(edge);
});

afterAll(async () => {
  await worker?.stop();
});

test('a 1,000,000-row source transaction flows through one target transaction with bounded memory', async () => {
  const dir = specs.write({ 'bulk.sync.ts': syncSpec({ name: 'bulk', tables: `    bulk: {
      from: 'public.bulk', to: 'public.bulk_copy', key: ['id'], columns: { id: sql\`id\`, v2: sql\`v::bigint * 2 + 1\` },
    },` }) });
  const bulk = await loadSync(dir, env);
  await apply(bulk);
  const child = spawnWorker(dir, env);
  try {
    await waitFor('the worker to stream', async () => (await dbs().source.query(
      `SELECT active FROM pg_replication_slots WHERE slot_name = 'syncctl_bulk'`)).rows[0]?.active === true, 30_000);
    const started = Date.now();
    // One source transaction of 1,000,000 rows.
    await dbs().source.query(`INSERT INTO bulk SELECT g, g % 1000 FROM generate_series(1, ${MILLION}) g`);
    const sourceMs = Date.now() - started;
    // Watch the target while the worker applies: the rows appear all at once or not at all.
    const seen = new Set<number>();
    let peak = 0;
    await waitFor('the 1M-row transaction to arrive', async () => {
      peak = Math.max(peak, peakRssKb(child.pid) ?? 0);
      if (child.child.exitCode !== null) throw new Error(`the worker exited:\n${child.stderr()}`);
      const { rows } = await dbs().target.query<{ n: number }>(`SELECT count(*)::int AS n FROM bulk_copy`);
      seen.add(rows[0]!.n);
      return rows[0]!.n === MILLION;
    }, 240_000);
    const appliedMs = Date.now() - started;
    peak = Math.max(peak, peakRssKb(child.pid) ?? 0);
    expect([...seen].filter((n) => n !== 0 && n !== MILLION), 'partial states seen on the target').toEqual([]);
    await expectTargetMatches(dbs(), bulk.tables, { timeoutMs: 60_000, what: 'after the 1M-row transaction' });
    console.log(`1M-row transaction: source ${sourceMs} ms, on the target after ${appliedMs} ms; worker peak RSS ${Math.round(peak / 1024)} MB; ` +
      `target counts seen while polling: ${[...seen].join(', ')}`);
    expect(peak).toBeGreaterThan(0);
    expect(peak / 1024).toBeLessThan(512);
  } finally {
    child.child.kill('SIGTERM');
    await child.exited;
  }
}, 300_000);

test("onError 'park': a row the target rejects is parked with its key and reason, the rest of the batch arrives", async () => {
  await dbs().source.query(`INSERT INTO checked VALUES (1, 5, 'a'), (2, 0, 'b'), (3, -1, 'rejected'), (4, 7, 'd'), (5, 1, 'e')`);
  const mapped = edge.tables.find((t) => t.name === 'checked')!;
  await expectTargetMatches(dbs(), [{ ...mapped, where: 'id <> 3' }], { what: 'the accepted rows' });
  const { rows } = await dbs().target.query(`SELECT table_name, kind, key, incoming, outcome, reason FROM syncctl.sync_conflicts WHERE sync_name = 'edge'`);
  expect(rows).toEqual([{
    table_name: 'checked', kind: 'apply_error', key: { id: 3 }, incoming: { id: 3, qty: -1, label: 'rejected' }, outcome: 'pending',
    reason: expect.stringMatching(/violates check constraint "checked_copy_qty_check"/),
  }]);
  // The stream goes on: later changes, also to the parked row's neighbours, arrive.
  await dbs().source.query(`UPDATE checked SET qty = qty + 10 WHERE id IN (1, 2); DELETE FROM checked WHERE id = 5`);
  await expectTargetMatches(dbs(), [{ ...mapped, where: 'id <> 3' }], { what: 'after later changes' });
  expect(worker!.finished()).toBe(false);
});

test("onError 'stop': the worker exits non-zero, naming the table and the key", async () => {
  const dir = specs.write({ 'strict.sync.ts': syncSpec({ name: 'strict', tables: `    strict: {
      from: 'public.strict', to: 'public.strict_copy', key: ['id'], onError: 'stop', columns: { id: sql\`id\`, qty: sql\`qty\` },
    },` }) });
  const strict = await loadSync(dir, env);
  await apply(strict);
  // Two source transactions: the first is fine, the second holds a row the target rejects.
  await dbs().source.query(`INSERT INTO strict VALUES (1, 1), (2, 2)`);
  await dbs().source.query(`INSERT INTO strict VALUES (7, -7), (8, 8)`);
  const child = spawnWorker(dir, env);
  const exit = await Promise.race([child.exited, sleep(60_000).then(() => undefined)]);
  expect(exit?.code).toBe(1);
  expect(child.stderr()).toContain('error: strict.strict: the target rejected the row with key {"id":7}');
  expect(child.stderr()).toMatch(/violates check constraint "strict_copy_qty_check"/);
  // Nothing of the rejected transaction arrived, nothing was parked, and the checkpoint stayed
  // before it: a restarted worker meets the same row and stops again.
  expect((await dbs().target.query(`SELECT id FROM strict_copy WHERE id IN (7, 8)`)).rows).toEqual([]);
  expect((await dbs().target.query(`SELECT count(*)::int AS n FROM syncctl.sync_conflicts WHERE sync_name = 'strict'`)).rows).toEqual([{ n: 0 }]);
  const again = spawnWorker(dir, env);
  expect((await Promise.race([again.exited, sleep(60_000).then(() => undefined)]))?.code).toBe(1);
  expect(again.stderr()).toContain('the target rejected the row with key {"id":7}');
});

test('a partitioned source table (two partitions, rows moving between them) maps to one target table', async () => {
  const events = edge.tables.filter((t) => t.name === 'events');
  await expectTargetMatches(dbs(), events, { what: 'after the initial copy of both partitions' });
  await dbs().source.query(`BEGIN;
    INSERT INTO events VALUES (1001, 'eu', 'new eu'), (1002, 'us', 'new us');
    UPDATE events SET payload = payload || '!' WHERE id % 10 = 0;
    UPDATE events SET region = 'us' WHERE id IN (2, 4);        -- moves rows to the other partition
    DELETE FROM events WHERE id IN (5, 6);
    COMMIT`);
  await expectTargetMatches(dbs(), events, { what: 'after changes in both partitions' });
  expect((await dbs().target.query(`SELECT region, id FROM events_all WHERE id IN (2, 4) ORDER BY id`)).rows)
    .toEqual([{ region: 'us', id: 2 }, { region: 'us', id: 4 }]);
});

test('an idle slot advances past WAL that carries nothing for the sync', async () => {
  const before = await positions(dbs(), 'edge');
  await dbs().source.query(`INSERT INTO noise (t) SELECT repeat('x', 100) FROM generate_series(1, 1000)`);
  const { rows } = await dbs().source.query<{ lsn: string }>(`SELECT pg_current_wal_insert_lsn()::text AS lsn`);
  const written = rows[0]!.lsn;
  const started = Date.now();
  await waitFor('the slot to confirm past the unpublished write', async () => {
    const { confirmed } = await positions(dbs(), 'edge');
    const r = await dbs().source.query<{ past: boolean }>(`SELECT $1::pg_lsn >= $2::pg_lsn AS past`, [confirmed, written]);
    return r.rows[0]!.past;
  }, 15_000);
  console.log(`idle slot: confirmed ${before.confirmed} -> past ${written} in ${Date.now() - started} ms`);
});

test('a Relation message sent again mid-batch (after ANALYZE, after ADD COLUMN) keeps the order of changes', async () => {
  // With the worker stopped, the changes pile up and arrive as one batch: a write, the table's
  // Relation again (ANALYZE invalidates pgoutput's cache), a delete of the same key; then a new
  // column (a Relation of another shape) between a write and a delete of another key.
  const mapped = edge.tables.find((t) => t.name === 'checked')!;
  await dbs().source.query(`INSERT INTO checked VALUES (50, 1, 'x'), (51, 1, 'y')`);
  await expectTargetMatches(dbs(), [{ ...mapped, where: 'id <> 3' }], { what: 'rows 50 and 51 on the target' });
  await worker!.stop();
  await dbs().source.query(`UPDATE checked SET label = 'written' WHERE id = 50`);
  await dbs().source.query(`ANALYZE checked`);
  await dbs().source.query(`DELETE FROM checked WHERE id = 50`);
  await dbs().source.query(`UPDATE checked SET label = 'written' WHERE id = 51`);
  await dbs().source.query(`ALTER TABLE checked ADD COLUMN note text`);
  await dbs().source.query(`DELETE FROM checked WHERE id = 51`);
  worker = startWorker(edge);
  await expectTargetMatches(dbs(), [{ ...mapped, where: 'id <> 3' }], { what: 'after Relation messages mid-batch' });
  expect((await dbs().target.query(`SELECT id FROM checked_copy WHERE id IN (50, 51)`)).rows).toEqual([]);
});

test('connection loss (walsender and target backend terminated): the worker reconnects and loses nothing', async () => {
  const tables = edge.tables;
  const kill = async () => {
    const walsender = await dbs().source.query(`SELECT pg_terminate_backend(active_pid) AS done FROM pg_replication_slots WHERE slot_name = 'syncctl_edge' AND active_pid IS NOT NULL`);
    const backend = await dbs().target.query(`SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity
      WHERE datname = current_database() AND application_name = 'syncctl run' AND pid <> pg_backend_pid()`);
    return walsender.rows.length + backend.rows.length;
  };
  for (let round = 0; round < 3; round++) {
    await waitForStreaming(dbs(), 'edge');
    await dbs().source.query(`INSERT INTO checked SELECT g, g, 'round ${round}' FROM generate_series(${100 + round * 100}, ${150 + round * 100}) g`);
    expect(await kill()).toBeGreaterThan(0);
    // Written while the worker is disconnected or reconnecting.
    await dbs().source.query(`BEGIN; UPDATE checked SET label = label || ' after loss' WHERE id >= 100; UPDATE events SET payload = payload || '+' WHERE region = 'eu'; COMMIT`);
    await dbs().source.query(`DELETE FROM checked WHERE id = ${120 + round * 100}`);
    await expectTargetMatches(dbs(), [{ ...tables[0]!, where: 'id <> 3' }, tables[1]!], { timeoutMs: 30_000, what: `after connection loss ${round + 1}` });
    await waitFor('the slot to be active again', async () => (await dbs().source.query(
      `SELECT active FROM pg_replication_slots WHERE slot_name = 'syncctl_edge'`)).rows[0]?.active === true, 20_000);
  }
  expect(worker!.finished()).toBe(false);
});
