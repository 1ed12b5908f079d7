/**
 * A sync's slot dropped by hand, or invalidated by Postgres (wal_status 'lost', here through
 * max_slot_wal_keep_size on a server of this test's own): the changes between the checkpoint and
 * the new slot are gone from the stream. `syncctl run` refuses to stream; `syncctl apply` creates
 * a new slot and copies every mapped table again under its snapshot, removing from the target the
 * rows the source deleted meanwhile. Then the worker streams from the new slot: the target equals
 * the mapped source after inserts, updates and deletes made while no slot existed.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../src/embedded/local-cluster.ts';
import { SyncctlError } from '../../src/errors.ts';
import { applyAll } from '../../src/plan/reconcile.ts';
import { ReplicationStream } from '../../src/stream/replication-stream.ts';
import { rows, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, type Databases, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('slot_recreated');
const specs = useSpecDir();
let worker: InProcessWorker | undefined;
let cluster: LocalCluster | undefined;
let ownSource: pg.Client | undefined;

afterAll(async () => {
  await worker?.stop().catch(() => {});
  await ownSource?.end().catch(() => {});
  await cluster?.stop();
});

const SOURCE_TABLES = `
  CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
  INSERT INTO items SELECT g, 'item ' || g, g % 17 FROM generate_series(1, 3000) g;
  CREATE TABLE notes (id int PRIMARY KEY, body text, hidden boolean NOT NULL DEFAULT false);
  INSERT INTO notes SELECT g, 'note ' || g, g % 9 = 0 FROM generate_series(1, 500) g`;
const TARGET_TABLES = `
  CREATE TABLE %p_items (id int PRIMARY KEY, label text NOT NULL, qty int NOT NULL);
  CREATE TABLE %p_notes (id int PRIMARY KEY, body text)`;
const tables = (prefix: string) => `
    items: { from: 'public.items', to: 'public.${prefix}_items', key: ['id'], columns: { id: sql\`id\`, label: sql\`upper(name)\`, qty: sql\`qty\` } },
    notes: { from: 'public.notes', to: 'public.${prefix}_notes', key: ['id'], where: sql\`NOT hidden\`, columns: { id: sql\`id\`, body: sql\`body\` } },`;

/** Inserts, updates (also out of the filter) and deletes on both tables, different each round. */
async function churn(source: pg.Client, round: number): Promise<void> {
  const base = 10_000 * round;
  await source.query(`
    INSERT INTO items SELECT g, 'new ' || g, 1 FROM generate_series(${base + 1}, ${base + 200}) g;
    UPDATE items SET qty = qty + ${round}, name = name || '+' WHERE id % 7 = ${round % 7};
    DELETE FROM items WHERE id % 11 = ${round % 11} AND id < 3000;
    INSERT INTO notes SELECT g, 'new note ' || g FROM generate_series(${base + 1}, ${base + 50}) g;
    UPDATE notes SET hidden = NOT hidden WHERE id % 13 = ${round % 13};
    DELETE FROM notes WHERE id % 5 = ${round % 5} AND id < 500`);
}

const snapshotLsns = async (target: pg.Client, sync: string) => (await rows<{ table_name: string; lsn: string }>(target,
  `SELECT table_name, snapshot_lsn::text AS lsn FROM syncctl.sync_tables WHERE sync_name = $1 ORDER BY table_name`, [sync]));

/** Provisions, streams one round of changes, and stops the worker. */
async function provisionAndStream(db: Databases, dir: string, env: Record<string, string>, name: string) {
  const sync = await loadSync(dir, env);
  await apply(sync);
  worker = startWorker(sync);
  await churn(db.source, 1);
  await expectTargetMatches(db, sync.tables, { what: `${name}: streamed before the slot went` });
  await worker.stop();
  worker = undefined;
  return sync;
}

/** The worker must refuse to stream from the lost or missing slot, and write nothing. */
async function expectRunRefused(db: Databases, sync: Awaited<ReturnType<typeof loadSync>>, prefix: string) {
  const before = await rows(db.target, `SELECT count(*)::int AS n, sum(qty)::int AS q FROM ${prefix}_items`);
  const refused = startWorker(sync);
  await expect(refused.done).rejects.toMatchObject({ code: 'PLAN_PENDING' });
  expect(await rows(db.target, `SELECT count(*)::int AS n, sum(qty)::int AS q FROM ${prefix}_items`)).toEqual(before);
}

/** apply made a new slot and copied both tables again; the target equals the source at once, then streams. */
async function expectRecopiedAndStreaming(db: Databases, dir: string, env: Record<string, string>, lsnsBefore: { lsn: string }[], name: string) {
  const sync = await loadSync(dir, env);
  const lsnsAfter = await snapshotLsns(db.target, sync.name);
  expect(lsnsAfter.map((r) => r.table_name)).toEqual(['items', 'notes']);
  for (const [i, r] of lsnsAfter.entries()) expect(r.lsn, `${r.table_name}: the snapshot of the new slot`).not.toBe(lsnsBefore[i]!.lsn);
  const checkpoint = await rows<{ lsn: string }>(db.target, `SELECT commit_lsn::text AS lsn FROM syncctl.checkpoints WHERE sync_name = $1`, [sync.name]);
  const slot = await rows<{ lsn: string }>(db.source, `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`, [`syncctl_${sync.name}`]);
  expect(checkpoint).toEqual(slot);
  expect(await rows(db.target, `SELECT count(*)::int AS n FROM syncctl.snapshot_chunks WHERE sync_name = $1 AND (done_at IS NULL OR chunk < 0)`, [sync.name]))
    .toEqual([{ n: 0 }]);
  await expectTargetMatches(db, sync.tables, { what: `${name}: right after apply`, timeoutMs: 1000 });
  worker = startWorker(sync);
  await churn(db.source, 3);
  await expectTargetMatches(db, sync.tables, { what: `${name}: streamed from the new slot` });
  await worker.stop();
  worker = undefined;
}

beforeAll(async () => {
  await dbs().source.query(SOURCE_TABLES);
});

test('a slot dropped by hand: run refuses, apply copies every table again (pruning), run streams from the new slot', async () => {
  await dbs().target.query(TARGET_TABLES.replaceAll('%p', 'dropped'));
  const env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  const dir = specs.write({ 'dropped.sync.ts': syncSpec({ name: 'dropped', tables: tables('dropped') }) });
  const sync = await provisionAndStream(dbs(), dir, env, 'dropped');
  const lsnsBefore = await snapshotLsns(dbs().target, 'dropped');

  await dbs().source.query(`SELECT pg_drop_replication_slot('syncctl_dropped')`);
  await churn(dbs().source, 2);
  await expectRunRefused(dbs(), sync, 'dropped');
  await expect(ReplicationStream.open(dbs().sourceUrl, { slot: 'syncctl_dropped', publications: ['syncctl_dropped'], startLsn: 0n }))
    .rejects.toMatchObject({ code: 'PLAN_PENDING', message: expect.stringContaining('replication slot syncctl_dropped does not exist on the source') });

  expect(await apply(await loadSync(dir, env))).toContain('slot:syncctl_dropped');
  await expectRecopiedAndStreaming(dbs(), dir, env, lsnsBefore, 'dropped');
});

test('a slot invalidated by max_slot_wal_keep_size (wal_status lost): run refuses, apply --allow-destroy recreates and copies again', async () => {
  cluster = await startLocalCluster({ settings: { max_slot_wal_keep_size: '32MB' } });
  ownSource = new pg.Client({ connectionString: cluster.url() });
  ownSource.on('error', () => {});
  await ownSource.connect();
  await ownSource.query(SOURCE_TABLES);
  await dbs().target.query(TARGET_TABLES.replaceAll('%p', 'lost'));
  const db = { source: ownSource, target: dbs().target };
  const env = { SRC_URL: cluster.url(), DST_URL: dbs().targetUrl };
  const dir = specs.write({ 'lost.sync.ts': syncSpec({ name: 'lost', tables: tables('lost') }) });
  const sync = await provisionAndStream(db, dir, env, 'lost');
  const lsnsBefore = await snapshotLsns(dbs().target, 'lost');

  await churn(ownSource, 2);
  // More WAL than the slot may keep (two 16 MB segments), then a checkpoint: Postgres invalidates it.
  for (let i = 0; i < 5; i++) await ownSource.query(`INSERT INTO notes VALUES (${900_000 + i}, 'wal'); SELECT pg_switch_wal()`);
  await ownSource.query('CHECKPOINT');
  await waitFor('the slot lost', async () => (await rows<{ s: string }>(ownSource!,
    `SELECT wal_status AS s FROM pg_replication_slots WHERE slot_name = 'syncctl_lost'`))[0]?.s === 'lost');

  await expectRunRefused(db, sync, 'lost');
  const opened = ReplicationStream.open(cluster.url(), { slot: 'syncctl_lost', publications: ['syncctl_lost'], startLsn: 0n });
  await expect(opened).rejects.toBeInstanceOf(SyncctlError);
  await expect(opened).rejects.toMatchObject({
    code: 'PLAN_PENDING', message: expect.stringContaining('replication slot syncctl_lost can no longer stream: the WAL it needs was removed (wal_status lost'),
  });
  await expect(opened).rejects.toMatchObject({ message: expect.stringContaining('Run syncctl apply --allow-destroy') });

  const applied = await applyAll([await loadSync(dir, env)], { allowDestroy: true });
  expect(applied[0]!.changes.map((c) => `${c.action} ${c.id}`)).toEqual(expect.arrayContaining(['delete slot:syncctl_lost', 'update slot:syncctl_lost']));
  await expectRecopiedAndStreaming(db, dir, env, lsnsBefore, 'lost');
});
