/**
 * Two stream fixes of defect 11, through the worker on real servers:
 * - A source schema change inside a streamed (large, in-progress) transaction pauses the table
 *   only when that transaction commits. The worker decodes with logical_decoding_work_mem at
 *   64 kB, so the transaction reaches it in blocks, the new shape (a mapped column retyped, int to
 *   bigint, or dropped) included, while it is still open: rolled back, the table keeps streaming and later
 *   changes arrive; committed, the table is paused with the column named, and the transaction's
 *   changes of the other table are applied. The same for a mapped column dropped: the broken
 *   shape's changes are not staged at all (no staging can be built from a mapping that reads a
 *   column the shape lacks).
 * - Keys in syncctl.local_changes are forgotten when the worker writes their row although the
 *   source key's type is not the target's: a source `timestamp` key into a `timestamptz` key
 *   column, whose JSON text differs ("2024-01-01T10:00:00" against "…+00:00"). The entry of a
 *   locally changed row goes once the source's change of that row is applied, set-based (keys
 *   distinct, or repeated: the reduction) or in source order (a key change); the others stay.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import pg from 'pg';
import { rows, syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, startWorker, waitForStreaming, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('defect_11_stream');
const specs = useSpecDir();
const env = () => ({ SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
const workers: InProcessWorker[] = [];
/** A second source session, for the transaction held open while the worker receives it. */
let writer: pg.Client;

beforeAll(async () => {
  writer = new pg.Client({ connectionString: dbs().sourceUrl });
  await writer.connect();
});

afterAll(async () => {
  for (const w of workers) await w.stop().catch(() => {});
  await writer?.query('ROLLBACK').catch(() => {});
  await writer?.end();
});

async function tableState(sync: string, table: string): Promise<{ state: string; error: string | null }> {
  const r = await rows<{ state: string; error: string | null }>(dbs().target,
    'SELECT state, error FROM syncctl.sync_tables WHERE sync_name = $1 AND table_name = $2', [sync, table]);
  return r[0]!;
}

/** Staging tables of streamed transactions in the target (any session's temp schema), by segment. */
async function streamedStages(segment?: number): Promise<number> {
  const { rows: r } = await dbs().target.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_class WHERE relname ~ $1`, [`^syncctl_stage_x[0-9]+_${segment ?? '[0-9]+'}_`]);
  return r[0]!.n;
}

/** Staging tables in the target of source table `relid` for streamed transactions (any session's temp schema). */
async function streamedStagesOf(relid: number): Promise<number> {
  const { rows: r } = await dbs().target.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_class WHERE relname ~ $1`, [`^syncctl_stage_x[0-9]+_[0-9]+_${relid}_`]);
  return r[0]!.n;
}

const ddlCases = [
  { name: 'retyped', ddl: (w: string) => `ALTER TABLE ${w} ALTER COLUMN v TYPE bigint`, targetV: 'bigint', after: (w: string, from: number) =>
    `INSERT INTO ${w} SELECT g, -g, 'retyped ' || g FROM generate_series(${from + 5000}, ${from + 9999}) g`,
  reason: 'source column(s) v read by the mapping or row filter changed type' },
  { name: 'dropped', ddl: (w: string) => `ALTER TABLE ${w} DROP COLUMN note`, targetV: 'int', after: (w: string, from: number) =>
    `INSERT INTO ${w} SELECT g, -g FROM generate_series(${from + 5000}, ${from + 9999}) g`,
  reason: 'source column(s) note read by the mapping or row filter no longer exist' },
];

for (const c of ddlCases) {
  test(`a mapped column ${c.name} inside a streamed transaction: rolled back, the table streams on; committed, it is paused`, async () => {
    const sync = `ddl_${c.name}`;
    const W = `wide_${c.name}`;
    const S = `side_${c.name}`;
    await dbs().source.query(`
      DROP TABLE IF EXISTS ${W}, ${S};
      CREATE TABLE ${W} (id int PRIMARY KEY, v int NOT NULL, note text);
      CREATE TABLE ${S} (id int PRIMARY KEY, v int NOT NULL);
      INSERT INTO ${W} SELECT g, g, 'seed ' || g FROM generate_series(1, 100) g;
      INSERT INTO ${S} SELECT g, g FROM generate_series(1, 10) g`);
    await dbs().target.query(`
      DROP TABLE IF EXISTS ${W}, ${S};
      CREATE TABLE ${W} (id int PRIMARY KEY, v ${c.targetV} NOT NULL, note text);
      CREATE TABLE ${S} (id int PRIMARY KEY, v int NOT NULL)`);
    const loaded = await loadSync(specs.write({ [`${sync}.sync.ts`]: syncSpec({ name: sync, tables: `
      ${W}: { from: 'public.${W}', to: 'public.${W}', key: ['id'], columns: { id: sql\`id\`, v: sql\`v\`, note: sql\`note\` } },
      ${S}: { from: 'public.${S}', to: 'public.${S}', key: ['id'], columns: { id: sql\`id\`, v: sql\`v\` } },` }) }), env());
    await apply(loaded);
    const worker = startWorker(loaded, { decodingWorkMemKb: 64 });
    workers.push(worker);
    await waitForStreaming(dbs(), sync);
    const sideTable = loaded.tables.find((t) => t.name === S)!;
    await expectTargetMatches(dbs(), loaded.tables, { what: 'after the copy' });
    const sideOid = Number((await dbs().source.query(`SELECT 'public.${S}'::regclass::oid AS o`)).rows[0].o);

    /**
     * Opens a transaction that outgrows 64 kB, changes wide in it and goes on writing both
     * tables: returns once the worker has staged side's changes made after the DDL, so it has
     * received the Relation of wide's new shape (and wide's changes under it) while the
     * transaction is still in progress.
     */
    const ddlInsideStreamed = async (from: number) => {
      await writer.query('BEGIN');
      await writer.query(`INSERT INTO ${W} SELECT g, g, 'streamed ' || g FROM generate_series(${from}, ${from + 4999}) g`);
      await waitFor('the open transaction to be staged', async () => (await streamedStages(0)) > 0);
      await writer.query(c.ddl(W));
      await writer.query(c.after(W, from));
      await writer.query(`UPDATE ${W} SET v = v + 1 WHERE id <= 10`);
      await writer.query(`INSERT INTO ${S} SELECT g, g FROM generate_series(${from}, ${from + 4999}) g`);
      await waitFor('side\'s changes after the DDL to be staged', async () => {
        if (worker.finished()) throw new Error(`the worker stopped: ${String(worker.error())}`);
        const now = await tableState(sync, W);
        if (now.state !== 'streaming') throw new Error(`${W} is ${now.state} (${now.error}) while the transaction is still open`);
        return (await streamedStagesOf(sideOid)) > 0;
      });
    };

    try {
      // Rolled back: the DDL never happened. Nothing is paused, neither while the transaction
      // runs nor after; the next transactions of both tables arrive.
      await ddlInsideStreamed(10_001);
      expect(await tableState(sync, W)).toEqual({ state: 'streaming', error: null });
      await writer.query('ROLLBACK');
      await waitFor('the rolled-back transaction\'s staging to be dropped', async () => (await streamedStages()) === 0);
      await dbs().source.query(`UPDATE ${W} SET v = v * 10, note = note || '!' WHERE id <= 20; INSERT INTO ${W} VALUES (101, 101, 'after the rollback')`);
      await dbs().source.query(`INSERT INTO ${S} VALUES (11, 11)`);
      await expectTargetMatches(dbs(), loaded.tables, { what: 'after the rolled-back DDL' });
      expect(await tableState(sync, W)).toEqual({ state: 'streaming', error: null });
      expect(worker.finished()).toBe(false);

      // Committed: wide is paused at the commit, with the column named; side's changes of the
      // same transaction are applied, and side keeps streaming.
      await ddlInsideStreamed(20_001);
      expect(await tableState(sync, W)).toEqual({ state: 'streaming', error: null });
      await writer.query('COMMIT');
      const paused = await waitFor('wide paused', async () => {
        const s = await tableState(sync, W);
        return s.state === 'paused' ? s : undefined;
      });
      expect(paused.error).toBe(c.reason);
      await expectTargetMatches(dbs(), [sideTable], { what: 'side, written in the committed transaction' });
      await dbs().source.query(`INSERT INTO ${S} VALUES (12, 12)`);
      await expectTargetMatches(dbs(), [sideTable], { what: 'side after the pause' });
      // Nothing of the committed transaction reached the paused table.
      expect(await rows(dbs().target, `SELECT id FROM ${W} WHERE id > 20000`)).toEqual([]);
      expect(worker.finished()).toBe(false);
    } finally {
      await writer.query('ROLLBACK');
    }
    await worker.stop();
  }, 120_000);
}

test('a local change is forgotten when the worker writes its row, though the source key type is not the target key type', async () => {
  await dbs().source.query(`
    CREATE TABLE events (ts timestamp PRIMARY KEY, v int NOT NULL);
    INSERT INTO events VALUES ('2024-01-01 10:00', 1), ('2024-01-02 10:00', 1), ('2024-01-03 10:00', 1), ('2024-01-04 10:00', 1)`);
  await dbs().target.query(`CREATE TABLE events (ts timestamptz PRIMARY KEY, v int NOT NULL)`);
  const sync = await loadSync(specs.write({ 'keys.sync.ts': syncSpec({ name: 'keys', tables: `
    events: { from: 'public.events', to: 'public.events', key: ['ts'], columns: { ts: sql\`ts\`, v: sql\`v\` } },` }) }), env());
  await apply(sync);
  const worker = startWorker(sync);
  workers.push(worker);
  await waitForStreaming(dbs(), 'keys');
  const events = sync.tables[0]!;
  await expectTargetMatches(dbs(), [events], { what: 'after the copy' });

  /** The local_changes entries of events, by the key's timestamp (as the source has it). */
  const local = async () => (await rows<{ ts: string; operation: string }>(dbs().target,
    `SELECT to_char((key->>'ts')::timestamptz, 'YYYY-MM-DD HH24:MI') AS ts, operation FROM syncctl.local_changes
      WHERE target_table = 'public.events' ORDER BY 1`)).map((r) => `${r.ts} ${r.operation}`);
  /** Waits until the target row of the source row `ts` has the source's values. */
  const applied = (ts: string) => expectTargetMatches(dbs(), [{ ...events, where: `ts = '${ts}'::timestamp`, targetWhere: `ts = '${ts}'::timestamp` }],
    { what: `the row ${ts}` });

  // A person changes every row on the target: each is recorded under the target row's key.
  await dbs().target.query(`UPDATE events SET v = 100`);
  expect(await local()).toEqual(['2024-01-01 10:00 UPDATE', '2024-01-02 10:00 UPDATE', '2024-01-03 10:00 UPDATE', '2024-01-04 10:00 UPDATE']);
  // The recorded key is the timestamptz's JSON, which is not the source timestamp's.
  const { rows: [json] } = await dbs().target.query<{ recorded: string; source: string }>(
    `SELECT min(key->>'ts') AS recorded, to_jsonb('2024-01-01 10:00'::timestamp)->>0 AS source FROM syncctl.local_changes WHERE target_table = 'public.events'`);
  expect(json!.recorded).not.toBe(json!.source);

  // A source update of one row, keys distinct (the stage read directly).
  await dbs().source.query(`UPDATE events SET v = 2 WHERE ts = '2024-01-01 10:00'`);
  await applied('2024-01-01 10:00');
  expect(await local()).toEqual(['2024-01-02 10:00 UPDATE', '2024-01-03 10:00 UPDATE', '2024-01-04 10:00 UPDATE']);

  // The same key twice in one transaction (the reduction to the last change per key).
  await dbs().source.query(`BEGIN; UPDATE events SET v = 3 WHERE ts = '2024-01-02 10:00'; UPDATE events SET v = 4 WHERE ts = '2024-01-02 10:00'; COMMIT`);
  await applied('2024-01-02 10:00');
  expect(await local()).toEqual(['2024-01-03 10:00 UPDATE', '2024-01-04 10:00 UPDATE']);

  // A key change (applied in source order): the row moves, the old key's entry goes.
  await dbs().source.query(`UPDATE events SET ts = '2024-02-03 10:00', v = 5 WHERE ts = '2024-01-03 10:00'`);
  await applied('2024-02-03 10:00');
  expect(await rows(dbs().target, `SELECT 1 FROM events WHERE ts = '2024-01-03 10:00'::timestamp`)).toEqual([]);
  expect(await local()).toEqual(['2024-01-04 10:00 UPDATE']);

  // The row the source did not touch keeps its local value and its entry.
  expect(await rows(dbs().target, `SELECT v FROM events WHERE ts = '2024-01-04 10:00'::timestamp`)).toEqual([{ v: 100 }]);
  expect(worker.finished()).toBe(false);
  await worker.stop();
});
