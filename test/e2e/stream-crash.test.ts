/**
 * The crash test: `node bin/syncctl run` is killed with SIGKILL at random moments while a write
 * workload runs (inserts, updates, deletes, multi-row and multi-table transactions, natural-key
 * changes), then restarted; 20+ rounds. After every round, once the restarted worker has caught
 * up, the target equals the mapped source and syncctl.sync_conflicts is empty.
 *
 * Duplicates are visible too: transfers are insert-only on the source, and an audit trigger on
 * the target logs every row version the worker writes. A source transaction applied twice would
 * write a transfer a second time (an UPDATE through ON CONFLICT), which the audit shows.
 *
 * SIGTERM: the worker finishes its batch, checkpoints and exits 0; the slot's confirmed position
 * equals the checkpoint.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { syncSpec, useSpecDir } from '../support/cli.ts';
import {
  apply, churn, expectTargetMatches, loadSync, positions, randomInt, sleep, spawnWorker, waitForStreaming, type ChildWorker,
} from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('stream_crash');
const specs = useSpecDir();
const ROUNDS = Number(process.env['SYNCCTL_CRASH_ROUNDS'] ?? 20);

const TABLES = `    accounts: {
      from: 'public.accounts', to: 'public.accounts_copy', key: ['owner'], where: sql\`balance >= 0\`,
      columns: { owner: sql\`owner\`, source_id: sql\`id\`, balance: sql\`balance\`, note: sql\`upper(note)\` },
    },
    transfers: {
      from: 'public.transfers', to: 'public.transfers_copy', key: ['id'], where: sql\`amount > 0\`,
      columns: { id: sql\`id\`, amount: sql\`amount\`, route: sql\`from_id || '->' || to_id\` },
    },`;

let specDir: string;
let env: Record<string, string>;
let sync: LoadedSync;
let worker: ChildWorker | undefined;
let nextAccount = 1_001;

const pick = () => randomInt(1, nextAccount);

/** One source transaction of the workload. */
function transaction(): string {
  const r = Math.random();
  if (r < 0.35) {
    // A transfer: two accounts and an insert, several rows in one transaction (negative amounts are filtered out).
    const [a, b, amount] = [pick(), pick(), randomInt(-5, 300)];
    return `BEGIN; UPDATE accounts SET balance = balance - ${amount} WHERE id = ${a};
      UPDATE accounts SET balance = balance + ${amount} WHERE id = ${b};
      INSERT INTO transfers (from_id, to_id, amount) VALUES (${a}, ${b}, ${amount}); COMMIT`;
  }
  if (r < 0.5) return `INSERT INTO accounts (id, owner, balance, note) VALUES (${nextAccount++}, 'owner-${nextAccount}', 0, 'new')`;
  // A natural-key change; sometimes two owners swap in one transaction.
  if (r < 0.6) return `UPDATE accounts SET owner = owner || '+' WHERE id = ${pick()}`;
  if (r < 0.65) {
    const [a, b] = [pick(), pick()];
    return `BEGIN; UPDATE accounts SET owner = 'swap-' || id WHERE id = ${a};
      UPDATE accounts SET owner = (SELECT owner FROM accounts WHERE id = ${a}) || '!' WHERE id = ${b}; COMMIT`;
  }
  if (r < 0.75) {
    const from = pick();
    return `UPDATE accounts SET note = 'batch ' || ${from}, balance = balance + 1 WHERE id BETWEEN ${from} AND ${from + 40}`;
  }
  if (r < 0.82) return `BEGIN; DELETE FROM transfers WHERE id IN (SELECT id FROM transfers ORDER BY random() LIMIT 3); COMMIT`;
  if (r < 0.88) return `DELETE FROM accounts WHERE id = ${pick()}`;
  // Balances cross zero: the account leaves the target (row filter) and comes back.
  return `UPDATE accounts SET balance = -balance WHERE id = ${pick()}`;
}

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  await dbs().source.query(`
    CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL UNIQUE, balance bigint NOT NULL, note text);
    INSERT INTO accounts SELECT g, 'owner-' || g, 1000, 'note ' || g FROM generate_series(1, 1000) g;
    CREATE TABLE transfers (id bigserial PRIMARY KEY, from_id int NOT NULL, to_id int NOT NULL, amount int NOT NULL)`);
  await dbs().target.query(`
    CREATE TABLE accounts_copy (owner text PRIMARY KEY, source_id int NOT NULL, balance bigint NOT NULL, note text);
    CREATE TABLE transfers_copy (id bigint PRIMARY KEY, amount int NOT NULL, route text NOT NULL);
    CREATE TABLE audit (id bigint NOT NULL, op text NOT NULL);
    CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO audit VALUES (NEW.id, TG_OP); RETURN NULL; END $$;
    CREATE TRIGGER audit AFTER INSERT OR UPDATE ON transfers_copy FOR EACH ROW EXECUTE FUNCTION audit()`);
  specDir = specs.write({ 'crash.sync.ts': syncSpec({ name: 'crash', tables: TABLES }) });
  sync = await loadSync(specDir, env);
  await apply(sync);
});

afterAll(async () => {
  if (worker && worker.child.exitCode === null && worker.child.signalCode === null) {
    worker.child.kill('SIGKILL');
    await worker.exited;
  }
});

async function expectNoDuplicatesOrConflicts(): Promise<void> {
  // The source never updates a transfer: an UPDATE on the target is a change applied twice.
  const dup = await dbs().target.query(`SELECT id, op FROM audit WHERE op <> 'INSERT' LIMIT 5`);
  expect(dup.rows, 'transfers written more than once').toEqual([]);
  const conflicts = await dbs().target.query(`SELECT kind, key, reason FROM syncctl.sync_conflicts LIMIT 5`);
  expect(conflicts.rows).toEqual([]);
}

test(`kill -9 at random moments under a write workload, ${ROUNDS} rounds: after each, the target equals the mapped source`, async () => {
  const started = Date.now();
  const stats = { killed: 0, exitedEarly: 0, committedDuring: 0 };
  worker = spawnWorker(specDir, env);
  for (let round = 1; round <= ROUNDS; round++) {
    const load = churn(dbs().source, transaction);
    // Kill at a random moment: during startup, while catching up, or mid-batch.
    await sleep(randomInt(150, 1_500));
    if (worker.child.exitCode !== null) {
      stats.exitedEarly++;
      throw new Error(`round ${round}: the worker exited on its own (${worker.child.exitCode}):\n${worker.stderr()}`);
    }
    worker.child.kill('SIGKILL');
    expect((await worker.exited).signal).toBe('SIGKILL');
    stats.killed++;
    // The workload goes on a little while the worker is down.
    await sleep(randomInt(0, 300));
    stats.committedDuring += await load.stop();
    worker = spawnWorker(specDir, env);
    const restarted = worker;
    await expectTargetMatches(dbs(), sync.tables, { timeoutMs: 60_000, what: `round ${round}` }).catch((error: Error) => {
      const state = restarted.child.exitCode !== null ? `exited with ${restarted.child.exitCode}` : 'running';
      throw new Error(`${error.message}\n  restarted worker: ${state}; its log:\n${restarted.stderr().slice(-3000)}`);
    });
    await expectNoDuplicatesOrConflicts();
  }
  const { rows } = await dbs().target.query(`SELECT (SELECT count(*) FROM accounts_copy)::int AS accounts, (SELECT count(*) FROM transfers_copy)::int AS transfers`);
  expect(rows[0].transfers).toBeGreaterThan(ROUNDS);
  console.log(`crash test: ${stats.killed} kills, ${stats.committedDuring} source transactions, ` +
    `${rows[0].accounts} accounts / ${rows[0].transfers} transfers on the target, ${Math.round((Date.now() - started) / 1000)} s`);
}, 240_000);

test('SIGTERM under load: the worker finishes its batch and exits 0; the slot confirmed its checkpoint', async () => {
  if (!worker || worker.child.exitCode !== null || worker.child.signalCode !== null) worker = spawnWorker(specDir, env);
  await waitForStreaming(dbs(), 'crash');
  const load = churn(dbs().source, transaction);
  await sleep(1_500);
  const stopping = Date.now();
  worker!.child.kill('SIGTERM');
  const exit = await worker!.exited;
  const stopMs = Date.now() - stopping;
  expect(exit, worker!.stderr()).toEqual({ code: 0, signal: null });
  expect(stopMs).toBeLessThan(5_000);
  await load.stop();
  // The slot confirmed exactly what the target checkpointed: nothing applied is sent again, nothing
  // confirmed is missing from the target.
  const { checkpoint, confirmed } = await positions(dbs(), 'crash');
  expect(checkpoint).toBeDefined();
  expect(confirmed).toBe(checkpoint);
  worker = spawnWorker(specDir, env);
  await expectTargetMatches(dbs(), sync.tables, { timeoutMs: 60_000, what: 'after SIGTERM and restart' });
  await expectNoDuplicatesOrConflicts();
  await waitForStreaming(dbs(), 'crash');
  worker.child.kill('SIGTERM');
  expect(await worker.exited).toEqual({ code: 0, signal: null });
  // Stopped while idle (the slot confirmed keepalive positions past the last commit): still equal.
  const after = await positions(dbs(), 'crash');
  expect(after.confirmed).toBe(after.checkpoint);
});
