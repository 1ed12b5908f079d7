/**
 * Which failures park a change and which retry it. Only a change that fails in source order
 * because of the row itself is parked, with its own transaction's position and the table's
 * strategy; transient errors (here: statement cancels while the worker waits on a lock) roll the
 * batch back and retry it, and park nothing. A value the target rejects while staging (an enum
 * label, a domain check the source lacks) parks that row alone: the table is staged as text from
 * then on, and every other row and table keeps streaming.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import pg from 'pg';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { syncSpec, useSpecDir } from '../support/cli.ts';
import { apply, expectTargetMatches, loadSync, sleep, startWorker, type InProcessWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('apply_errors');
const specs = useSpecDir();
let sync: LoadedSync;
let worker: InProcessWorker | undefined;

beforeAll(async () => {
  await dbs().source.query(`
    CREATE TYPE mood AS ENUM ('calm', 'busy');
    CREATE DOMAIN score AS int;
    CREATE TABLE payments (id int PRIMARY KEY, amount int NOT NULL);
    CREATE TABLE feelings (id int PRIMARY KEY, mood mood NOT NULL, points score);
    CREATE TABLE notes (id int PRIMARY KEY, body text)`);
  await dbs().target.query(`
    CREATE TYPE mood AS ENUM ('calm', 'busy');
    CREATE DOMAIN score AS int CHECK (VALUE >= 0);
    CREATE TABLE payments (id int PRIMARY KEY, amount int NOT NULL CHECK (amount >= 0));
    CREATE TABLE feelings (id int PRIMARY KEY, mood mood NOT NULL, points score);
    CREATE TABLE notes (id int PRIMARY KEY, body text)`);
  sync = await loadSync(specs.write({ 'errors.sync.ts': syncSpec({ name: 'errors', tables: `
    payments: { from: 'public.payments', to: 'public.payments', key: ['id'], columns: { id: sql\`id\`, amount: sql\`amount\` },
      conflict: { strategy: 'target-wins' } },
    feelings: { from: 'public.feelings', to: 'public.feelings', key: ['id'], columns: { id: sql\`id\`, mood: sql\`mood\`, points: sql\`points\` } },
    notes: { from: 'public.notes', to: 'public.notes', key: ['id'], columns: { id: sql\`id\`, body: sql\`body\` } },` }) }),
  { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl });
  await apply(sync);
});

afterAll(async () => {
  await worker?.stop();
});

const parked = async () => (await dbs().target.query(
  `SELECT table_name, key, strategy, source_lsn::text AS lsn, reason FROM syncctl.sync_conflicts ORDER BY id`)).rows;
const lsn = async () => (await dbs().source.query(`SELECT pg_current_wal_insert_lsn()::text AS l`)).rows[0].l as string;
const lsnNumber = (text: string) => { const [hi, lo] = text.split('/'); return BigInt(`0x${hi}`) * 2n ** 32n + BigInt(`0x${lo}`); };

test('a row the target rejects is parked alone, with its own transaction position and the table strategy', async () => {
  // Three transactions applied in one batch (the worker starts after them): the second one's row is bad.
  await dbs().source.query(`INSERT INTO payments VALUES (1, 10)`);
  const before = await lsn();
  await dbs().source.query(`BEGIN; INSERT INTO payments VALUES (2, -5); INSERT INTO notes VALUES (1, 'one'); COMMIT`);
  const after = await lsn();
  await dbs().source.query(`INSERT INTO payments VALUES (3, 30)`);
  worker = startWorker(sync);
  await expectTargetMatches(dbs(), [{ ...sync.tables[0]!, where: 'id <> 2' }, sync.tables[2]!], { what: 'all but the bad row' });
  const rows = await parked();
  expect(rows.map(({ lsn: _lsn, ...r }) => r)).toEqual([{
    table_name: 'payments', key: { id: 2 }, strategy: 'target-wins',
    reason: 'new row for relation "payments" violates check constraint "payments_amount_check"',
  }]);
  const at = lsnNumber(rows[0].lsn);
  expect(at > lsnNumber(before) && at <= lsnNumber(after)).toBe(true);
});

test('transient errors are retried, never parked: the worker cancelled three times while it waits on a lock', async () => {
  const locker = new pg.Client({ connectionString: dbs().targetUrl });
  await locker.connect();
  try {
    await locker.query(`BEGIN; SELECT * FROM payments WHERE id = 1 FOR UPDATE`);
    await dbs().source.query(`BEGIN; UPDATE payments SET amount = 11 WHERE id = 1; INSERT INTO payments VALUES (4, 40); COMMIT`);
    let cancels = 0;
    for (let i = 0; i < 200 && cancels < 3; i++) {
      // Inside the locker's transaction pg_stat_activity is a snapshot taken at its first read: a
      // worker session started after it (the batch is retried by a new session) would stay unseen.
      await locker.query('SELECT pg_stat_clear_snapshot()');
      const { rows } = await locker.query(`SELECT pg_cancel_backend(pid) AS ok FROM pg_stat_activity
        WHERE application_name = 'syncctl run' AND wait_event_type = 'Lock' AND datname = current_database()`);
      cancels += rows.filter((r) => r.ok).length;
      await sleep(100);
    }
    expect(cancels).toBe(3);
  } finally {
    await locker.query('ROLLBACK');
    await locker.end();
  }
  await expectTargetMatches(dbs(), [{ ...sync.tables[0]!, where: 'id <> 2' }], { what: 'after the cancels', timeoutMs: 60_000 });
  expect((await parked()).map((r) => r.key)).toEqual([{ id: 2 }]);
  expect(worker!.finished()).toBe(false);
});

test('an enum label and a domain value the target rejects while staging: that row parked, the rest streams', async () => {
  await dbs().source.query(`ALTER TYPE mood ADD VALUE 'angry'`);
  await dbs().source.query(`BEGIN; INSERT INTO feelings VALUES (1, 'calm', 1), (2, 'angry', 2), (3, 'busy', -3), (4, 'busy', 4);
    INSERT INTO notes VALUES (2, 'two'); COMMIT`);
  await dbs().source.query(`INSERT INTO feelings VALUES (5, 'calm', 5); INSERT INTO notes VALUES (3, 'three')`);
  await expectTargetMatches(dbs(), [{ ...sync.tables[1]!, where: 'id NOT IN (2, 3)' }, sync.tables[2]!], { what: 'feelings and notes', timeoutMs: 60_000 });
  const rows = (await parked()).filter((r) => r.table_name === 'feelings');
  expect(rows.map((r) => r.key)).toEqual([{ id: 2 }, { id: 3 }]);
  expect(rows[0].reason).toMatch(/invalid input value for enum mood: "angry"/);
  expect(rows[1].reason).toMatch(/value for domain score violates check constraint/);
  // Later rows of the table arrive too (it stays staged as text).
  await dbs().source.query(`INSERT INTO feelings VALUES (6, 'busy', 6)`);
  await expectTargetMatches(dbs(), [{ ...sync.tables[1]!, where: 'id NOT IN (2, 3)' }], { what: 'feelings after' });
  expect(worker!.finished()).toBe(false);
});

test('a source TRUNCATE of a table referenced from outside the sync: rows deleted instead, or the table paused with what to do', async () => {
  await dbs().target.query(`CREATE TABLE local_refs (id int PRIMARY KEY, note_id int REFERENCES notes)`);
  await dbs().source.query(`TRUNCATE notes; INSERT INTO notes VALUES (10, 'ten')`);
  await expectTargetMatches(dbs(), [sync.tables[2]!], { what: 'notes after a TRUNCATE the target could only do as a DELETE' });
  await dbs().target.query(`INSERT INTO local_refs VALUES (1, 10)`);
  await dbs().source.query(`TRUNCATE notes`);
  await dbs().source.query(`INSERT INTO payments VALUES (5, 50); INSERT INTO notes VALUES (11, 'eleven')`);
  await expectTargetMatches(dbs(), [{ ...sync.tables[0]!, where: 'id <> 2' }], { what: 'payments go on' });
  const state = await dbs().target.query(`SELECT state, error FROM syncctl.sync_tables WHERE sync_name = 'errors' AND table_name = 'notes'`);
  expect(state.rows[0].state).toBe('paused');
  expect(state.rows[0].error).toMatch(/^a source TRUNCATE could not be applied to public\.notes: update or delete on table "notes" violates foreign key constraint .* then run syncctl apply to copy the table again$/);
  // Untouched: nothing half-applied, and the later insert of a paused table is not applied either.
  expect((await dbs().target.query(`SELECT id FROM notes ORDER BY id`)).rows).toEqual([{ id: 10 }]);
  expect(worker!.finished()).toBe(false);
});
