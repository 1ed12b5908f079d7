/**
 * The slot lost under load, recovered without rewriting the target: `apply` makes a new slot with
 * an exported snapshot and copies every table again under it, but the copy writes only the rows
 * that differ from the target (changed, added or deleted while no slot recorded them); then the
 * worker streams from the new slot. The target equals the mapped source, and the rows written
 * are a small fraction of what a full recopy writes.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { syncSpec, useSpecDir } from '../support/cli.ts';
import { apply, churn, compareTable, expectTargetMatches, loadSync, randomInt, sleep, spawnWorker, waitForStreaming, type ChildWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';
import { applyAll } from '../../src/plan/reconcile.ts';

const dbs = useTestDatabases('slot_loss');
const specs = useSpecDir();
const ROWS = 20_000;
let sync: LoadedSync;
let env: Record<string, string>;
let dir: string;
let worker: ChildWorker | undefined;

const TABLES = `    accounts: {
      from: 'public.accounts', to: 'public.accounts_copy', key: ['id'], where: sql\`balance >= 0\`,
      columns: { id: sql\`id\`, balance: sql\`balance\`, note: sql\`upper(note)\`, tags: sql\`tags\`, doc: sql\`doc\` },
    },`;

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  await dbs().source.query(`
    CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text, tags text[], doc json);
    INSERT INTO accounts SELECT g, g % 500, 'note ' || g, ARRAY['a', g::text], json_build_object('g', g) FROM generate_series(1, ${ROWS}) g`);
  // json has no equality operator: the unchanged-row check must not need one.
  await dbs().target.query(`
    CREATE TABLE accounts_copy (id int PRIMARY KEY, balance bigint NOT NULL, note text, tags text[], doc json);
    CREATE TABLE writes (n bigint NOT NULL DEFAULT 0);
    INSERT INTO writes VALUES (0);
    CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE writes SET n = n + 1; RETURN NULL; END $$;
    CREATE TRIGGER count_write AFTER INSERT OR UPDATE OR DELETE ON accounts_copy FOR EACH ROW EXECUTE FUNCTION count_write()`);
  dir = specs.write({ 'loss.sync.ts': syncSpec({ name: 'loss', tables: TABLES }) });
  sync = await loadSync(dir, env);
  await apply(sync);
});

afterAll(async () => {
  if (worker && worker.child.exitCode === null && worker.child.signalCode === null) {
    worker.child.kill('SIGKILL');
    await worker.exited;
  }
});

function transaction(): string {
  const id = randomInt(1, ROWS + 2_000);
  const r = Math.random();
  if (r < 0.5) return `UPDATE accounts SET balance = balance + 1, note = note || '+' WHERE id = ${id}`;
  if (r < 0.7) return `INSERT INTO accounts VALUES (${id}, 7, 'new', NULL, NULL) ON CONFLICT (id) DO UPDATE SET balance = -1`;
  if (r < 0.85) return `DELETE FROM accounts WHERE id = ${id}`;
  return `UPDATE accounts SET doc = json_build_object('x', ${id}) WHERE id BETWEEN ${id} AND ${id + 3}`;
}

const written = async () => Number((await dbs().target.query<{ n: string }>(`SELECT n::text FROM writes`)).rows[0]!.n);

test('a slot lost under load: a new slot and a copy that writes only what differs, then the stream; target equals source', async () => {
  worker = spawnWorker(dir, env);
  await waitForStreaming(dbs(), 'loss');
  const load = churn(dbs().source, transaction);
  await sleep(1_500);
  // The slot is lost under load: the worker dies mid-stream, the slot goes, and changes go on
  // that no slot records. The load stops with the worker: while the slot is being dropped it
  // would add as many changes as the machine is fast (1,500-2,100 here), and the keys they
  // touch, not the re-anchor, would decide whether fewer than half the rows differ.
  worker.child.kill('SIGKILL');
  const streamed = await load.stop();
  await worker.exited;
  await dbs().source.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'syncctl_loss' AND active_pid IS NOT NULL`);
  await sleep(200);
  await dbs().source.query(`SELECT pg_drop_replication_slot('syncctl_loss')`);
  const MISSED = 400;
  for (let i = 0; i < MISSED; i++) await dbs().source.query(transaction());

  // A worker started now refuses: the slot is gone, and what it missed is unknown.
  const refused = spawnWorker(dir, env);
  expect((await refused.exited).code).not.toBe(0);
  expect(refused.stderr()).toMatch(/syncctl_loss/);

  // Every key that differs between the target and the mapped source now: what the re-anchor must write, and no more.
  const differing = Math.max(0, (await compareTable(dbs(), sync.tables[0]!, 1_000_000)).length - 1);
  const before = await written();
  await applyAll([sync], { allowDestroy: true });
  const reanchor = await written() - before;
  // Under load the recopy lands on the new snapshot; the changes after it arrive through the new slot.
  const load2 = churn(dbs().source, transaction);
  worker = spawnWorker(dir, env);
  await sleep(1_000);
  await load2.stop();
  await expectTargetMatches(dbs(), sync.tables, { timeoutMs: 60_000, what: 'after the re-anchor' });
  const rows = Number((await dbs().target.query<{ n: string }>(`SELECT count(*)::text AS n FROM accounts_copy`)).rows[0]!.n);
  console.log(`slot loss: ${streamed} source transactions under load, then ${MISSED} with the slot gone; ${differing} keys differed; ` +
    `the re-anchor wrote ${reanchor} rows of ${rows}`);
  expect(differing).toBeGreaterThan(0);
  // One write per differing key (insert, update or delete); a recopy without the check writes every row.
  expect(reanchor).toBeLessThanOrEqual(differing);
  expect(reanchor).toBeLessThan(rows / 2);
}, 180_000);
