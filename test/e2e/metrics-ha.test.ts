/**
 * `syncctl run --metrics-address`: the series a running sync exports, measured against what the
 * databases say; and high availability: two `syncctl run` processes for one sync, exactly one
 * applies, the other takes over within 10 s of the leader's death (kill -9, or its connections
 * cut), from the checkpoint, with nothing lost or applied twice.
 */
import { createServer } from 'node:net';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { LoadedSync } from '../../src/spec/loaded-sync.ts';
import { syncSpec, useSpecDir, waitFor } from '../support/cli.ts';
import { apply, churn, expectTargetMatches, loadSync, randomInt, sleep, spawnWorker, type ChildWorker } from '../support/stream.ts';
import { useTestDatabases } from '../support/test-databases.ts';

const dbs = useTestDatabases('metrics_ha');
const specs = useSpecDir();

const TABLES = `    accounts: {
      from: 'public.accounts', to: 'public.accounts_copy', key: ['id'],
      columns: { id: sql\`id\`, balance: sql\`balance\`, note: sql\`upper(note)\` },
    },
    transfers: {
      from: 'public.transfers', to: 'public.transfers_copy', key: ['id'],
      columns: { id: sql\`id\`, amount: sql\`amount\`, account: sql\`account\` },
    },`;

let specDir: string;
let env: Record<string, string>;
let sync: LoadedSync;
const workers: ChildWorker[] = [];

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function start(): Promise<{ worker: ChildWorker; port: number }> {
  const port = await freePort();
  const worker = spawnWorker(specDir, env, ['--metrics-address', `127.0.0.1:${port}`, '--heartbeat-interval', '1']);
  workers.push(worker);
  return { worker, port };
}

async function get(port: number, path: string): Promise<{ status: number; text: string } | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: response.status, text: await response.text() };
  } catch {
    return undefined;
  }
}

/** The samples of one metric, as label sets with values. */
function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const labels = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!]));
    out.push({ labels, value: Number(match[3]) });
  }
  return out;
}

function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  return samples(text, name).find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

async function stopAll(): Promise<void> {
  for (const w of workers.splice(0)) {
    if (w.child.exitCode === null && w.child.signalCode === null) {
      w.child.kill('SIGTERM');
      const exit = await Promise.race([w.exited, sleep(15_000).then(() => undefined)]);
      if (!exit) {
        w.child.kill('SIGKILL');
        await w.exited;
      }
    }
  }
}

beforeAll(async () => {
  env = { SRC_URL: dbs().sourceUrl, DST_URL: dbs().targetUrl };
  await dbs().source.query(`
    CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
    INSERT INTO accounts SELECT g, 100, 'note ' || g FROM generate_series(1, 200) g;
    CREATE TABLE transfers (id bigserial PRIMARY KEY, amount int NOT NULL, account int NOT NULL)`);
  await dbs().target.query(`
    CREATE TABLE accounts_copy (id int PRIMARY KEY, balance bigint NOT NULL CHECK (balance < 1000000), note text);
    CREATE TABLE transfers_copy (id bigint PRIMARY KEY, amount int NOT NULL, account int NOT NULL);
    CREATE TABLE audit (id bigint NOT NULL, op text NOT NULL);
    CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO audit VALUES (NEW.id, TG_OP); RETURN NULL; END $$;
    CREATE TRIGGER audit AFTER INSERT OR UPDATE ON transfers_copy FOR EACH ROW EXECUTE FUNCTION audit()`);
  specDir = specs.write({ 'ha.sync.ts': syncSpec({ name: 'ha', tables: TABLES }) });
  sync = await loadSync(specDir, env);
  await apply(sync);
});

afterAll(stopAll);

test('metrics: applied changes, transactions, conflicts, parked errors, slot, lag and table states match the databases', async () => {
  const { worker, port } = await start();
  await waitFor('the worker ready', async () => (await get(port, '/readyz'))?.status === 200, 30_000).catch((error: Error) => {
    throw new Error(`${error.message}\n${worker.stderr()}`);
  });
  expect((await get(port, '/healthz'))?.status).toBe(200);
  expect((await get(port, '/nope'))?.status).toBe(404);
  const before = (await get(port, '/metrics'))!.text;
  const base = (table: string, op: string) => value(before, 'syncctl_applied_changes_total', { sync: 'ha', table, op }) ?? 0;
  const baseTx = value(before, 'syncctl_applied_transactions_total', { sync: 'ha' }) ?? 0;

  // 30 inserts, 20 updates, 5 deletes in 3 transactions; then one change at fault (the target's CHECK refuses it: parked).
  await dbs().source.query(`INSERT INTO transfers (amount, account) SELECT g, g FROM generate_series(1, 30) g`);
  await dbs().source.query(`UPDATE accounts SET balance = balance + 1 WHERE id <= 20`);
  await dbs().source.query(`DELETE FROM accounts WHERE id > 195`);
  await expectTargetMatches(dbs(), sync.tables, { timeoutMs: 30_000 });
  // A local edit on the target meets a source update of the same row (source-wins: applied, logged).
  await dbs().target.query(`UPDATE accounts_copy SET note = 'LOCAL' WHERE id = 50`);
  await dbs().source.query(`UPDATE accounts SET note = 'zz-value-of-a-row' WHERE id = 50`);
  await dbs().source.query(`UPDATE accounts SET balance = 5000000 WHERE id = 60`);
  await waitFor('the parked change', async () => (await dbs().target.query(`SELECT 1 FROM syncctl.sync_conflicts WHERE kind = 'apply_error'`)).rowCount === 1);

  const text = await waitFor('the monitor sampled the parked change', async () => {
    const t = (await get(port, '/metrics'))!.text;
    return value(t, 'syncctl_apply_errors_pending', { sync: 'ha', table: 'accounts' }) === 1 ? t : undefined;
  }, 15_000);
  const delta = (table: string, op: string) => (value(text, 'syncctl_applied_changes_total', { sync: 'ha', table, op }) ?? 0) - base(table, op);
  expect(delta('transfers', 'insert')).toBe(30);
  expect(delta('accounts', 'update')).toBe(22);
  expect(delta('accounts', 'delete')).toBe(5);
  expect(value(text, 'syncctl_applied_transactions_total', { sync: 'ha' })! - baseTx).toBeGreaterThanOrEqual(5);
  expect(value(text, 'syncctl_conflicts_total', { sync: 'ha', table: 'accounts', kind: 'locally_modified', outcome: 'applied' })).toBe(1);
  expect(value(text, 'syncctl_conflicts_total', { sync: 'ha', table: 'accounts', kind: 'apply_error', outcome: 'pending' })).toBe(1);
  expect(value(text, 'syncctl_conflicts_pending', { sync: 'ha', table: 'accounts' })).toBe(0);
  expect(value(text, 'syncctl_leader', { sync: 'ha' })).toBe(1);
  expect(value(text, 'syncctl_slot_active', { sync: 'ha' })).toBe(1);
  expect(value(text, 'syncctl_slot_wal_status', { sync: 'ha', status: 'reserved' })).toBe(1);
  expect(value(text, 'syncctl_slot_wal_status', { sync: 'ha', status: 'lost' })).toBe(0);
  expect(value(text, 'syncctl_slot_retained_wal_bytes', { sync: 'ha' })).toBeGreaterThan(0);
  expect(value(text, 'syncctl_table_state', { sync: 'ha', table: 'transfers', state: 'streaming' })).toBe(1);
  expect(value(text, 'syncctl_table_state', { sync: 'ha', table: 'transfers', state: 'paused' })).toBe(0);
  expect(value(text, 'syncctl_copy_rows_total', { sync: 'ha', table: 'accounts' })).toBe(200);
  expect(samples(text, 'syncctl_batch_duration_seconds_count').length).toBe(1);
  expect(value(text, 'syncctl_build_info')).toBe(1);
  // Caught up and idle, with heartbeats every second: lag stays small, and heartbeats get applied.
  const lag = value(text, 'syncctl_replication_lag_seconds', { sync: 'ha' });
  expect(lag).toBeGreaterThanOrEqual(0);
  expect(lag).toBeLessThan(3);
  expect(value(text, 'syncctl_heartbeat_timestamp_seconds', { sync: 'ha' })).toBeGreaterThan(Date.now() / 1000 - 30);
  // No connection string, password or row value in any series.
  expect(text).not.toContain(dbs().sourceUrl);
  expect(text).not.toContain('postgres://');
  expect(text.toLowerCase()).not.toContain('zz-value-of-a-row');
  // The row's value as a whole number, not digits inside a float (process_cpu_system_seconds_total 0.06729500000000001 once matched).
  expect(text).not.toMatch(/(^|[^0-9.])5000000([^0-9.]|$)/m);

  // The same counts, committed with the rows, for `syncctl status`.
  const counted = await dbs().target.query<{ table_name: string; changes_applied: string }>(
    `SELECT table_name, changes_applied::text FROM syncctl.sync_tables WHERE sync_name = 'ha' ORDER BY 1`);
  expect(counted.rows).toEqual([
    { table_name: 'accounts', changes_applied: String(base('accounts', 'update') + base('accounts', 'delete') + 22 + 5) },
    { table_name: 'transfers', changes_applied: String(base('transfers', 'insert') + 30) },
  ]);

  // A stalled worker shows growing lag: stop it (SIGSTOP) while the source keeps committing.
  worker.child.kill('SIGSTOP');
  await dbs().source.query(`INSERT INTO transfers (amount, account) VALUES (1, 1)`);
  await sleep(2_500);
  worker.child.kill('SIGCONT');
  const stalled = await waitFor('the lag after the stall', async () => value((await get(port, '/metrics'))!.text, 'syncctl_replication_lag_seconds', { sync: 'ha' }));
  expect(stalled).toBeGreaterThan(1.5);
  await waitFor('the lag back to small', async () => (value((await get(port, '/metrics'))!.text, 'syncctl_replication_lag_seconds', { sync: 'ha' }) ?? 99) < 1.5, 15_000);
  await dbs().target.query(`DELETE FROM syncctl.sync_conflicts`);
  await dbs().source.query(`UPDATE accounts SET balance = 100 WHERE id = 60`);
  await expectTargetMatches(dbs(), sync.tables, { timeoutMs: 30_000 });
  await stopAll();
}, 120_000);

async function leaderOf(pair: readonly { worker: ChildWorker; port: number }[]): Promise<{ worker: ChildWorker; port: number } | undefined> {
  const ready: { worker: ChildWorker; port: number }[] = [];
  for (const p of pair) if ((await get(p.port, '/readyz'))?.status === 200) ready.push(p);
  expect(ready.length, 'two processes ready (leading) at once').toBeLessThanOrEqual(1);
  return ready[0];
}

async function expectNoDuplicates(): Promise<void> {
  // The source never updates a transfer: an UPDATE on the target is a change applied twice.
  expect((await dbs().target.query(`SELECT id, op FROM audit WHERE op <> 'INSERT' LIMIT 5`)).rows, 'transfers written twice').toEqual([]);
  expect((await dbs().target.query(`SELECT id FROM audit GROUP BY id HAVING count(*) > 1 LIMIT 5`)).rows, 'transfers inserted twice').toEqual([]);
}

/** Source transactions: transfers (insert only) and account updates. */
function transaction(): string {
  const a = randomInt(1, 195);
  return Math.random() < 0.6
    ? `BEGIN; INSERT INTO transfers (amount, account) VALUES (${randomInt(1, 500)}, ${a}); UPDATE accounts SET balance = balance + 1 WHERE id = ${a}; COMMIT`
    : `UPDATE accounts SET note = 'n' || ${randomInt(1, 1000)} WHERE id BETWEEN ${a} AND ${a + 5}`;
}

for (const death of ['kill -9', 'connections cut'] as const) {
  test(`HA, ${death}: one of two processes applies; the other takes over within 10 s from the checkpoint, nothing lost or applied twice`, async () => {
    await stopAll();
    // Whatever the test before left parked is superseded by the rows' next changes.
    await dbs().source.query(`UPDATE accounts SET balance = 100 WHERE balance >= 1000000`);
    await dbs().target.query('TRUNCATE audit');
    const pair = [await start(), await start()];
    const first = await waitFor('a leader', () => leaderOf(pair), 30_000);
    const standby = pair.find((p) => p !== first)!;
    const standbyMetrics = (await get(standby.port, '/metrics'))!.text;
    expect(value(standbyMetrics, 'syncctl_leader', { sync: 'ha' })).toBe(0);
    expect((await get(standby.port, '/readyz'))?.status).toBe(503);
    const load = churn(dbs().source, transaction);
    await sleep(1_500);
    const dying = Date.now();
    if (death === 'kill -9') {
      first.worker.child.kill('SIGKILL');
    } else {
      // Every connection of the leader's, on both servers: its lock, its target sessions, its walsender.
      const { rows } = await dbs().target.query<{ leader_pid: number }>(`SELECT leader_pid FROM syncctl.checkpoints WHERE sync_name = 'ha'`);
      expect(rows[0]!.leader_pid).toBe(first.worker.pid);
      for (const db of [dbs().target, dbs().source]) {
        await db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'syncctl run%' AND pid <> pg_backend_pid()
          AND datname = current_database()`);
      }
    }
    const next = await waitFor('the other process leading', async () => {
      const l = await leaderOf(pair);
      return l === standby ? l : undefined;
    }, 20_000);
    const tookOverMs = Date.now() - dying;
    expect(next).toBe(standby);
    expect(tookOverMs, `took over after ${tookOverMs} ms`).toBeLessThan(10_000);
    const { rows } = await dbs().target.query<{ leader_pid: number }>(`SELECT leader_pid FROM syncctl.checkpoints WHERE sync_name = 'ha'`);
    expect(rows[0]!.leader_pid).toBe(standby.worker.pid);
    await sleep(1_000);
    const committed = await load.stop();
    expect(committed).toBeGreaterThan(10);
    await expectTargetMatches(dbs(), sync.tables, { timeoutMs: 60_000, what: `after ${death}` }).catch((error: Error) => {
      throw new Error(`${error.message}\n--- new leader's log:\n${standby.worker.stderr().slice(-3000)}`);
    });
    await expectNoDuplicates();
    if (death === 'connections cut') {
      // The old leader lives on and stands by: it did not apply beside the new one.
      expect(first.worker.child.exitCode).toBe(null);
      await waitFor('the old leader standing by', async () => (await get(first.port, '/readyz'))?.status === 503);
    }
    console.log(`HA ${death}: the standby led ${tookOverMs} ms after the leader's death; ${committed} source transactions meanwhile`);
    await stopAll();
    // The run history: the dead leader's session closed as lost, the new leader's stopped by SIGTERM with its counts.
    const runs = await dbs().target.query<{ outcome: string; pid: number; changes: number | null }>(
      `SELECT outcome, pid, (counts->>'changes')::int AS changes FROM syncctl.runs WHERE sync_name = 'ha' AND kind = 'worker' ORDER BY id DESC LIMIT 2`);
    expect(runs.rows.map((r) => [r.outcome, r.pid])).toEqual([['stopped', standby.worker.pid], ['lost', first.worker.pid]]);
    expect(runs.rows[0]!.changes).toBeGreaterThan(0);
  }, 150_000);
}
